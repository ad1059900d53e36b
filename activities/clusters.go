package activities

import (
	"sync"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Clusters hands out the Kubernetes connection of each GKE cluster the worker
// serves, built once per cluster and shared by every activity on it (clients,
// their connections and the API discovery Helm needs).
type Clusters struct {
	resolve func(ClusterRef) (*rest.Config, error)

	// single: every cluster is the same one (OneCluster), kept under the zero ref.
	single bool

	mu    sync.Mutex
	conns map[ClusterRef]*clusterConn
}

// clusterConn is one cluster's connection.
type clusterConn struct {
	config    *rest.Config
	client    kubernetes.Interface
	discovery discovery.CachedDiscoveryInterface
}

// NewClusters resolves each cluster's client configuration with resolve, the
// first time the cluster is asked for. resolve's error is returned as is: it
// should be an activity error saying what the operator must configure.
func NewClusters(resolve func(ClusterRef) (*rest.Config, error)) *Clusters {
	return &Clusters{resolve: resolve, conns: map[ClusterRef]*clusterConn{}}
}

// OneCluster serves every request from one cluster: config, or client when
// given (unit tests pass fakes; Helm needs config).
func OneCluster(config *rest.Config, client kubernetes.Interface) *Clusters {
	c := NewClusters(func(ClusterRef) (*rest.Config, error) {
		if config == nil {
			return nil, kubeInvalidInput("no Kubernetes client configuration for this cluster")
		}
		return config, nil
	})
	c.single = true
	if client != nil {
		c.conns[ClusterRef{}] = &clusterConn{config: config, client: client}
	}
	return c
}

func (c *Clusters) conn(ref ClusterRef) (*clusterConn, error) {
	if c == nil {
		return nil, kubeInvalidInput("no Kubernetes clusters configured")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.single {
		ref = ClusterRef{}
	}
	if conn, ok := c.conns[ref]; ok {
		return conn, nil
	}
	rc, err := c.resolve(ref)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, kubeInvalidInput("Kubernetes client of cluster %s: %v", ref, err)
	}
	conn := &clusterConn{config: rc, client: client, discovery: memory.NewMemCacheClient(client.Discovery())}
	c.conns[ref] = conn
	return conn, nil
}

// Client is the typed clientset of the cluster.
func (c *Clusters) Client(ref ClusterRef) (kubernetes.Interface, error) {
	conn, err := c.conn(ref)
	if err != nil {
		return nil, err
	}
	return conn.client, nil
}

// Config is the client configuration of the cluster.
func (c *Clusters) Config(ref ClusterRef) (*rest.Config, error) {
	conn, err := c.conn(ref)
	if err != nil {
		return nil, err
	}
	return rest.CopyConfig(conn.config), nil
}
