package activities

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// helmRESTGetter hands Helm clients built from a rest.Config instead of a
// kubeconfig file, with a fixed default namespace. The API discovery is the
// cluster's, shared by every operation on it (rediscovering the API for each
// install costs the API server and the worker more than the install itself).
type helmRESTGetter struct {
	config    *rest.Config
	namespace string

	once      sync.Once
	discovery discovery.CachedDiscoveryInterface
	err       error
}

func newHelmRESTGetter(conn *clusterConn, namespace string) *helmRESTGetter {
	return &helmRESTGetter{config: conn.config, namespace: namespace, discovery: conn.discovery}
}

func (g *helmRESTGetter) ToRESTConfig() (*rest.Config, error) {
	return rest.CopyConfig(g.config), nil
}

func (g *helmRESTGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	g.once.Do(func() {
		if g.discovery != nil {
			return
		}
		dc, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.config))
		if err != nil {
			g.err = err
			return
		}
		g.discovery = memory.NewMemCacheClient(dc)
	})
	return g.discovery, g.err
}

func (g *helmRESTGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(dc)
	return restmapper.NewShortcutExpander(mapper, dc, nil), nil
}

func (g *helmRESTGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return helmClientConfig{getter: g}
}

// helmClientConfig answers Helm's kubeconfig questions from the getter.
type helmClientConfig struct {
	getter *helmRESTGetter
}

func (c helmClientConfig) RawConfig() (clientcmdapi.Config, error) {
	return *clientcmdapi.NewConfig(), nil
}

func (c helmClientConfig) ClientConfig() (*rest.Config, error) {
	return c.getter.ToRESTConfig()
}

func (c helmClientConfig) Namespace() (string, bool, error) {
	return c.getter.namespace, true, nil
}

func (c helmClientConfig) ConfigAccess() clientcmd.ConfigAccess {
	return clientcmd.NewDefaultClientConfigLoadingRules()
}
