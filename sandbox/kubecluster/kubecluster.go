// Package kubecluster runs a real Kubernetes control plane on the local machine
// as child processes: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, which plays the kubelet for fake nodes so that pods
// are scheduled, become Running and Ready, and Helm's waits work for real.
//
// The apiserver's service account issuer has the GKE form
// https://container.googleapis.com/v1/projects/P/locations/L/clusters/C, so
// TokenRequest returns the same tokens a GKE cluster would hand to the metadata
// server, and each configured node pool gets kwok nodes labelled
// cloud.google.com/gke-nodepool=<pool>.
//
// The binaries come from `make tools` (see Tools). Stop ends exactly the
// processes Start launched: each runs in a process group of its own.
//
// Tests share one cluster per package run with Shared (see its documentation).
package kubecluster

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Label and annotation keys of the fake nodes.
const (
	// NodePoolLabel is the label GKE puts on every node of a node pool.
	NodePoolLabel = "cloud.google.com/gke-nodepool"
	// KwokNodeAnnotation marks the nodes kwok manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
)

// Ports are the local TCP ports of the cluster; 0 picks a free one.
type Ports struct {
	EtcdClient int
	EtcdPeer   int
	APIServer  int
	// Kwok is where kwok serves its health and metrics endpoints.
	Kwok int
}

// Options configure a cluster. The zero value works.
type Options struct {
	// Dir holds the certificates, kubeconfig, etcd data and process logs. Empty
	// means a temporary directory that Stop removes; a given Dir is kept.
	Dir string
	// Project, Location and Cluster name the GKE cluster this one stands for, in
	// the service account issuer. Defaults: gkewi-sandbox, europe-west1, sandbox.
	Project  string
	Location string
	Cluster  string
	// NodePools get NodesPerPool kwok nodes each (default one pool "default-pool",
	// one node).
	NodePools    []string
	NodesPerPool int
	// NodeLabels are extra labels on every node.
	NodeLabels map[string]string
	// Tools locates the binaries; empty fields come from DefaultTools.
	Tools Tools
	Ports Ports
	// Log receives progress lines; nil discards them. Component output always goes
	// to Dir/logs/<component>.log.
	Log io.Writer
	// StartTimeout bounds each wait of Start; default 2 minutes.
	StartTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Project == "" {
		o.Project = "gkewi-sandbox"
	}
	if o.Location == "" {
		o.Location = "europe-west1"
	}
	if o.Cluster == "" {
		o.Cluster = "sandbox"
	}
	if len(o.NodePools) == 0 {
		o.NodePools = []string{"default-pool"}
	}
	if o.NodesPerPool <= 0 {
		o.NodesPerPool = 1
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 2 * time.Minute
	}
	o.Tools = o.Tools.withDefaults()
	return o
}

// IssuerURL is the service account issuer of a GKE cluster.
func IssuerURL(project, location, cluster string) string {
	return fmt.Sprintf("https://container.googleapis.com/v1/projects/%s/locations/%s/clusters/%s", project, location, cluster)
}

// Cluster is a running local control plane.
type Cluster struct {
	opts    Options
	dir     string
	ownsDir bool
	pki     *pki
	issuer  string
	apiURL  string

	kubeconfigPath string
	restConfig     *rest.Config
	client         kubernetes.Interface

	procs   []*process
	nodes   []string
	readyIn time.Duration
	version string

	stopOnce sync.Once
	stopErr  error
}

// Start launches the control plane and returns once the apiserver is ready, the
// controllers run and every fake node is Ready and schedulable.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if !platformSupported {
		return nil, errors.New("kubecluster: the local control plane runs on Linux only")
	}
	begin := time.Now()
	opts = opts.withDefaults()
	if err := opts.Tools.Check(); err != nil {
		return nil, fmt.Errorf("kubecluster: %w", err)
	}
	ports, err := resolvePorts(opts.Ports)
	if err != nil {
		return nil, fmt.Errorf("kubecluster: %w", err)
	}

	c := &Cluster{opts: opts, issuer: IssuerURL(opts.Project, opts.Location, opts.Cluster)}
	if opts.Dir == "" {
		if c.dir, err = os.MkdirTemp("", "gkewi-kube-"); err != nil {
			return nil, err
		}
		c.ownsDir = true
	} else {
		if c.dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
			err = fmt.Errorf("kubecluster: %w", err)
		}
	}()
	logDir := filepath.Join(c.dir, "logs")
	for _, d := range []string{logDir, filepath.Join(c.dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	c.progress("starting in %s (ports: etcd %d, apiserver %d)", c.dir, ports.EtcdClient, ports.APIServer)

	if c.pki, err = writePKI(filepath.Join(c.dir, "pki")); err != nil {
		return nil, fmt.Errorf("writing certificates: %w", err)
	}
	c.apiURL = "https://127.0.0.1:" + strconv.Itoa(ports.APIServer)
	identities, err := c.writeIdentities()
	if err != nil {
		return nil, err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports.EtcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports.EtcdPeer)
	etcd, err := c.launch("etcd", opts.Tools.Etcd, logDir,
		"--name=default",
		"--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// Throwaway data: durability buys nothing and fsync is slow.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "etcd health", []*process{etcd}, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return nil, err
	}

	apiserver, err := c.launch("kube-apiserver", opts.Tools.KubeAPIServer, logDir,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports.APIServer),
		"--cert-dir="+filepath.Join(c.dir, "pki"),
		"--tls-cert-file="+c.pki.servingCertFile,
		"--tls-private-key-file="+c.pki.servingKeyFile,
		"--client-ca-file="+c.pki.caCertFile,
		"--token-auth-file="+identities.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer="+c.issuer,
		// Where GKE publishes the cluster's keys (clusters.getJwks).
		"--service-account-jwks-uri="+c.issuer+"/jwks",
		"--service-account-key-file="+c.pki.saPubFile,
		"--service-account-signing-key-file="+c.pki.saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/16", // room for the benchmark's thousands of Services
		"--allow-privileged=true",
		// 127.0.0.1 is not a valid endpoint address for the kubernetes service.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	)
	if err != nil {
		return nil, err
	}
	c.restConfig = c.configFor(identities.admin)
	if c.client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(c.restConfig)
	if err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "kube-apiserver /readyz", []*process{etcd, apiserver}, func(ctx context.Context) error {
		return httpOK(ctx, httpClient, c.apiURL+"/readyz")
	}); err != nil {
		return nil, err
	}
	c.progress("apiserver ready after %s", time.Since(begin).Round(time.Millisecond))
	if v, err := c.client.Discovery().ServerVersion(); err == nil {
		c.version = v.GitVersion
		if strings.HasPrefix(v.GitVersion, "v0.0.0") {
			// Charts with a kubeVersion constraint refuse such a cluster.
			c.progress("warning: kube-apiserver reports version %s: it was built without version stamping (go build -ldflags \"-X k8s.io/component-base/version.gitVersion=%s ...\")", v.GitVersion, KubernetesVersion)
		}
	}

	kcm, err := c.launch("kube-controller-manager", opts.Tools.KubeControllerManager, logDir,
		"--kubeconfig="+identities.kubeconfigs["kube-controller-manager"],
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.pki.saKeyFile,
		"--root-ca-file="+c.pki.caCertFile,
		"--cluster-signing-cert-file="+c.pki.caCertFile,
		"--cluster-signing-key-file="+c.pki.caKeyFile,
		// Every default controller, node-lifecycle included: it removes the
		// not-ready taint from new nodes, without which no pod is scheduled.
		"--controllers=*",
		// Sized for the benchmark's thousands of releases: client-side rate
		// limits and sync workers that keep up with them, and a node grace
		// period for kwok's fake nodes, which only look dead when kwok lags
		// behind on a loaded machine (their pods would be marked not ready).
		"--kube-api-qps=300", "--kube-api-burst=600",
		"--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20",
		"--node-monitor-grace-period=10m",
	)
	if err != nil {
		return nil, err
	}
	scheduler, err := c.launch("kube-scheduler", opts.Tools.KubeScheduler, logDir,
		"--kubeconfig="+identities.kubeconfigs["kube-scheduler"],
		"--secure-port=0",
		"--leader-elect=false",
		"--kube-api-qps=300", "--kube-api-burst=600",
	)
	if err != nil {
		return nil, err
	}
	stages, err := writeStages(opts.Tools.KwokStages, c.dir)
	if err != nil {
		return nil, err
	}
	kwok, err := c.launch("kwok", opts.Tools.Kwok, logDir,
		"--kubeconfig="+identities.kubeconfigs["kwok"],
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		"--server-address=127.0.0.1:"+strconv.Itoa(ports.Kwok),
		// Pod IPs for thousands of pods (the default /24 runs out at 254).
		"--cidr=10.64.0.0/12",
	)
	if err != nil {
		return nil, err
	}

	if err := c.bootstrap(ctx); err != nil {
		return nil, err
	}
	all := []*process{etcd, apiserver, kcm, scheduler, kwok}
	if err := c.waitFor(ctx, "nodes Ready without the not-ready taint", all, c.nodesReady); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "the default service account", all, func(ctx context.Context) error {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	c.readyIn = time.Since(begin)
	c.progress("ready after %s: %d node(s), issuer %s, kubeconfig %s",
		c.readyIn.Round(time.Millisecond), len(c.nodes), c.issuer, c.kubeconfigPath)
	return c, nil
}

// identities are the static tokens and kubeconfigs of the cluster's users.
type identities struct {
	tokenFile   string
	admin       string
	kubeconfigs map[string]string
}

// writeIdentities writes the static token file and one kubeconfig per component.
// The components log in as the users their bootstrap RBAC roles are bound to.
func (c *Cluster) writeIdentities() (identities, error) {
	ids := identities{tokenFile: filepath.Join(c.dir, "pki", "tokens.csv"), kubeconfigs: map[string]string{}}
	users := []struct {
		component, user, groups string
	}{
		{"admin", "gkewi-admin", "system:masters"},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
		{"kube-scheduler", "system:kube-scheduler", ""},
		{"kwok", "kwok", "system:masters"},
	}
	var lines []string
	for _, u := range users {
		token, err := randomToken()
		if err != nil {
			return ids, err
		}
		lines = append(lines, fmt.Sprintf("%s,%s,%s,%q", token, u.user, u.user, u.groups))
		path := filepath.Join(c.dir, u.component+".kubeconfig")
		if u.component == "admin" {
			ids.admin = token
			path = filepath.Join(c.dir, "kubeconfig")
			c.kubeconfigPath = path
		}
		if err := c.writeKubeconfig(path, u.user, token); err != nil {
			return ids, err
		}
		ids.kubeconfigs[u.component] = path
	}
	return ids, os.WriteFile(ids.tokenFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func (c *Cluster) writeKubeconfig(path, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["gkewi-sandbox"] = &clientcmdapi.Cluster{Server: c.apiURL, CertificateAuthorityData: c.pki.caCertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["gkewi-sandbox"] = &clientcmdapi.Context{Cluster: "gkewi-sandbox", AuthInfo: user}
	cfg.CurrentContext = "gkewi-sandbox"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) configFor(token string) *rest.Config {
	return &rest.Config{
		Host:            c.apiURL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caCertPEM},
		QPS:             100,
		Burst:           200,
	}
}

func (c *Cluster) launch(name, path, logDir string, args ...string) (*process, error) {
	p, err := startProcess(name, path, args, logDir)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// bootstrap makes the issuer's discovery documents public, as GKE does, and
// registers the fake nodes.
func (c *Cluster) bootstrap(ctx context.Context) error {
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gkewi-sandbox:service-account-issuer-discovery"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"}},
	}
	if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding issuer discovery: %w", err)
	}
	for _, pool := range c.opts.NodePools {
		for i := range c.opts.NodesPerPool {
			name := fmt.Sprintf("gke-%s-%s-%d", c.opts.Cluster, pool, i)
			if _, err := c.client.CoreV1().Nodes().Create(ctx, fakeNode(name, pool, c.opts.NodeLabels), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating node %s: %w", name, err)
			}
			c.nodes = append(c.nodes, name)
		}
	}
	return nil
}

func fakeNode(name, pool string, extra map[string]string) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"type":                   "kwok",
		NodePoolLabel:            pool,
	}
	for k, v := range extra {
		labels[k] = v
	}
	// Fake nodes, sized so that the tests and the benchmark (thousands of
	// releases, each with pods) never run out of room.
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2000"),
		corev1.ResourceMemory: resource.MustParse("8Ti"),
		corev1.ResourcePods:   resource.MustParse("10000"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      labels,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
}

// nodesReady is nil once every fake node is Ready and free of the not-ready taint.
func (c *Cluster) nodesReady(ctx context.Context) error {
	for _, name := range c.nodes {
		n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return fmt.Errorf("node %s is not Ready (kwok did not report it)", name)
		}
		for _, t := range n.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady {
				return fmt.Errorf("node %s still has the %s taint (node-lifecycle controller)", name, t.Key)
			}
		}
	}
	return nil
}

// waitFor polls cond until it returns nil, failing early when one of procs exits.
func (c *Cluster) waitFor(ctx context.Context, what string, procs []*process, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, p := range procs {
			if p.hasExited() {
				return fmt.Errorf("waiting for %s: %w", what, p.failure())
			}
		}
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		last = cond(callCtx)
		callCancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v; component logs in %s)", what, ctx.Err(), last, filepath.Join(c.dir, "logs"))
		case <-tick.C:
		}
	}
}

func (c *Cluster) progress(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "kubecluster: "+format+"\n", args...)
}

// Stop stops every process Start launched, each with its whole process group,
// and removes the directory if Start created it. It is safe to call twice.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		// Reverse order: clients before the apiserver, the apiserver before etcd.
		for i := len(c.procs) - 1; i >= 0; i-- {
			if err := c.procs[i].stop(10 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", c.procs[i].name, err))
			}
		}
		if c.ownsDir {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// RESTConfig returns a copy of the admin (system:masters) client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// KubeconfigPath is the admin kubeconfig, usable with kubectl and helm.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfigPath }

// Issuer is the service account issuer, in the GKE form.
func (c *Cluster) Issuer() string { return c.issuer }

// WorkloadPool is the Workload Identity pool of the project the cluster stands for.
func (c *Cluster) WorkloadPool() string { return c.opts.Project + ".svc.id.goog" }

// Dir is the cluster's directory (certificates, kubeconfig, logs).
func (c *Cluster) Dir() string { return c.dir }

// APIServerURL is the https URL of the apiserver.
func (c *Cluster) APIServerURL() string { return c.apiURL }

// CACertPEM is the CA that signed the apiserver's serving certificate.
func (c *Cluster) CACertPEM() []byte { return append([]byte(nil), c.pki.caCertPEM...) }

// ServiceAccountPublicKey verifies the service account tokens of the cluster.
func (c *Cluster) ServiceAccountPublicKey() crypto.PublicKey { return c.pki.saPublicKey }

// Nodes are the names of the fake nodes.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.nodes...) }

// Version is the apiserver's reported version, e.g. v1.36.3.
func (c *Cluster) Version() string { return c.version }

// ReadyIn is how long Start took.
func (c *Cluster) ReadyIn() time.Duration { return c.readyIn }

// PIDs maps each component to its process id (also its process group id).
func (c *Cluster) PIDs() map[string]int {
	m := make(map[string]int, len(c.procs))
	for _, p := range c.procs {
		m[p.name] = p.pid()
	}
	return m
}

// OpenIDConfiguration returns the issuer's discovery document, as served at
// /.well-known/openid-configuration.
func (c *Cluster) OpenIDConfiguration(ctx context.Context) ([]byte, error) {
	return c.client.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
}

// JWKSURI is where the discovery document says the keys are: GKE's
// clusters.getJwks URL, {issuer}/jwks. The local apiserver serves the same keys
// at /openid/v1/jwks (see JWKS).
func (c *Cluster) JWKSURI() string { return c.issuer + "/jwks" }

// JWKS returns the key set that verifies the cluster's service account tokens, as
// served at /openid/v1/jwks.
func (c *Cluster) JWKS(ctx context.Context) ([]byte, error) {
	return c.client.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
}

// SetNodePoolLabels sets labels on every node of a pool; an empty value removes
// the label. The sandbox uses it to mirror what GKE does when a node pool moves to
// GKE_METADATA (iam.gke.io/gke-metadata-server-enabled=true).
func (c *Cluster) SetNodePoolLabels(ctx context.Context, pool string, labels map[string]string) error {
	nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: NodePoolLabel + "=" + pool})
	if err != nil {
		return err
	}
	if len(nodes.Items) == 0 {
		return fmt.Errorf("no nodes in pool %q", pool)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		for k, v := range labels {
			if v == "" {
				delete(n.Labels, k)
			} else {
				n.Labels[k] = v
			}
		}
		if _, err := c.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("labelling node %s: %w", n.Name, err)
		}
	}
	return nil
}

// ServiceAccountRESTConfig returns a client configuration authenticated as a
// Kubernetes service account, with a token from TokenRequest valid for lifetime
// (at least 10 minutes).
func (c *Cluster) ServiceAccountRESTConfig(ctx context.Context, namespace, name string, lifetime time.Duration) (*rest.Config, error) {
	seconds := int64(lifetime / time.Second)
	if seconds < 600 {
		seconds = 600
	}
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for %s/%s: %w", namespace, name, err)
	}
	return c.configFor(tr.Status.Token), nil
}

// resolvePorts picks free ports for the zero fields and checks the others are free.
func resolvePorts(p Ports) (Ports, error) {
	fields := []struct {
		name string
		port *int
	}{
		{"EtcdClient", &p.EtcdClient}, {"EtcdPeer", &p.EtcdPeer}, {"APIServer", &p.APIServer}, {"Kwok", &p.Kwok},
	}
	// Hold every listener until all are chosen so no two fields get the same port.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, f := range fields {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*f.port))
		if err != nil {
			return p, fmt.Errorf("port %d on 127.0.0.1 (Ports.%s) is already in use: choose another, or 0 for a free one: %w", *f.port, f.name, err)
		}
		held = append(held, l)
		*f.port = l.Addr().(*net.TCPAddr).Port
	}
	return p, nil
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
