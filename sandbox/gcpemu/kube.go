package gcpemu

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	nodePoolLabel       = "cloud.google.com/gke-nodepool"
	metadataServerLabel = "iam.gke.io/gke-metadata-server-enabled"
)

// NodeLabeler sets labels on the nodes of one node pool. A nil value removes the
// label. The emulator calls it when a node pool's workload metadata mode
// changes, standing in for GKE recreating the nodes.
type NodeLabeler interface {
	LabelNodePool(ctx context.Context, pool string, labels map[string]*string) error
}

// clusterRuntime is what the emulator needs of a cluster beyond its state: the
// node labeler and the service-account signing keys.
type clusterRuntime struct {
	cfg   ClusterConfig
	nodes NodeLabeler
	jwks  jwksSource

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey // by kid
	fetchedAt time.Time
	issuer    string // from OIDC discovery, when known
}

type jwksSource func(ctx context.Context) (keys []byte, issuer string, err error)

func newClusterRuntime(c ClusterConfig) *clusterRuntime {
	rt := &clusterRuntime{cfg: c, nodes: c.Nodes}
	if rt.nodes == nil && c.Kube != nil {
		rt.nodes = &kubeNodeLabeler{cfg: c.Kube}
	}
	switch {
	case c.JWKS != nil:
		rt.jwks = func(context.Context) ([]byte, string, error) {
			b, err := c.JWKS()
			return b, "", err
		}
	case c.Kube != nil:
		rt.jwks = func(ctx context.Context) ([]byte, string, error) { return fetchKubeJWKS(ctx, c.Kube) }
	}
	return rt
}

// kubeNodeLabeler relabels nodes through a Kubernetes API server.
type kubeNodeLabeler struct {
	cfg *rest.Config

	mu     sync.Mutex
	client kubernetes.Interface
}

func (k *kubeNodeLabeler) clientset() (kubernetes.Interface, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.client == nil {
		c, err := kubernetes.NewForConfig(k.cfg)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
		k.client = c
	}
	return k.client, nil
}

func (k *kubeNodeLabeler) LabelNodePool(ctx context.Context, pool string, labels map[string]*string) error {
	client, err := k.clientset()
	if err != nil {
		return err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: nodePoolLabel + "=" + pool})
	if err != nil {
		return fmt.Errorf("listing nodes of pool %s: %w", pool, err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		if _, err := client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("labelling node %s: %w", n.Name, err)
		}
	}
	return nil
}

// fetchKubeJWKS reads the API server's service-account issuer and keys.
func fetchKubeJWKS(ctx context.Context, cfg *rest.Config) ([]byte, string, error) {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes http client: %w", err)
	}
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cfg.Host, "/")+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return body, nil
	}
	disc, err := get("/.well-known/openid-configuration")
	if err != nil {
		return nil, "", err
	}
	var d struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(disc, &d); err != nil {
		return nil, "", fmt.Errorf("openid configuration: %w", err)
	}
	keys, err := get("/openid/v1/jwks")
	if err != nil {
		return nil, "", err
	}
	return keys, d.Issuer, nil
}

// key returns the signing key for kid, fetching the key set when it is not
// cached or the kid is unknown (keys rotate), at most once a second.
func (rt *clusterRuntime) key(ctx context.Context, kid string) (*rsa.PublicKey, string, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if k := rt.lookup(kid); k != nil {
		return k, rt.issuer, nil
	}
	if rt.jwks == nil {
		return nil, "", errors.New("no service-account keys are configured for this cluster")
	}
	if time.Since(rt.fetchedAt) < time.Second && rt.keys != nil {
		return nil, rt.issuer, nil
	}
	raw, issuer, err := rt.jwks(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("fetching the cluster's JWKS: %w", err)
	}
	keys, err := parseJWKS(raw)
	if err != nil {
		return nil, "", err
	}
	rt.keys, rt.issuer, rt.fetchedAt = keys, issuer, time.Now()
	return rt.lookup(kid), rt.issuer, nil
}

func (rt *clusterRuntime) lookup(kid string) *rsa.PublicKey {
	if k := rt.keys[kid]; k != nil {
		return k
	}
	if kid == "" && len(rt.keys) == 1 {
		for _, k := range rt.keys {
			return k
		}
	}
	return nil
}

func parseJWKS(raw []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("parsing JWKS: %w", err)
	}
	out := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err := base64.RawURLEncoding.DecodeString(k.N)
		if err != nil {
			return nil, fmt.Errorf("JWKS key %s: modulus: %w", k.Kid, err)
		}
		e, err := base64.RawURLEncoding.DecodeString(k.E)
		if err != nil {
			return nil, fmt.Errorf("JWKS key %s: exponent: %w", k.Kid, err)
		}
		out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	return out, nil
}
