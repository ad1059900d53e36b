package kubecluster

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func TestKubeClusterLifecycle(t *testing.T) {
	RequireTools(t, Tools{})
	ctx := context.Background()
	dir := t.TempDir()
	var log strings.Builder
	c, err := Start(ctx, Options{
		Dir:          dir,
		Project:      "acme-prod",
		Location:     "europe-west1",
		Cluster:      "carto",
		NodePools:    []string{"pool-a", "pool-b"},
		NodesPerPool: 2,
		Log:          &log,
	})
	require.NoError(t, err)
	t.Logf("cluster %s ready in %s", c.Version(), c.ReadyIn().Round(time.Millisecond))
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()
	assert.Contains(t, log.String(), "ready after")
	// Charts with a kubeVersion constraint (and gkewi's preflight) need the real
	// version: the binaries must be built with version stamping.
	assert.Equal(t, KubernetesVersion, c.Version(), "kube-apiserver built without -ldflags -X k8s.io/component-base/version.gitVersion=...")

	t.Run("nodes are Ready, schedulable and labelled with their pool", func(t *testing.T) {
		nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		pools := map[string]int{}
		for _, n := range nodes.Items {
			pools[n.Labels[NodePoolLabel]]++
			assert.Equal(t, "fake", n.Annotations[KwokNodeAnnotation])
			assert.True(t, nodeReady(&n), "node %s not Ready", n.Name)
			for _, taint := range n.Spec.Taints {
				assert.NotEqual(t, corev1.TaintNodeNotReady, taint.Key, "node %s", n.Name)
			}
		}
		assert.Equal(t, map[string]int{"pool-a": 2, "pool-b": 2}, pools)
		assert.Len(t, c.Nodes(), 4)
	})

	t.Run("issuer discovery has the GKE form and is public", func(t *testing.T) {
		want := "https://container.googleapis.com/v1/projects/acme-prod/locations/europe-west1/clusters/carto"
		assert.Equal(t, want, c.Issuer())

		raw, err := c.OpenIDConfiguration(ctx)
		require.NoError(t, err)
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		require.NoError(t, json.Unmarshal(raw, &doc))
		assert.Equal(t, want, doc.Issuer)
		assert.Equal(t, want+"/jwks", doc.JWKSURI, "GKE's clusters.getJwks URL")
		assert.Equal(t, doc.JWKSURI, c.JWKSURI())

		// Anonymous, like GKE's public discovery endpoint.
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(c.CACertPEM()))
		anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := anon.Get(c.APIServerURL() + "/openid/v1/jwks")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var jwks struct {
			Keys []struct {
				Kty string `json:"kty"`
				Alg string `json:"alg"`
			} `json:"keys"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&jwks))
		require.Len(t, jwks.Keys, 1)
		assert.Equal(t, "RSA", jwks.Keys[0].Kty)
		assert.Equal(t, "RS256", jwks.Keys[0].Alg)
	})

	t.Run("TokenRequest returns a JWT for the workload pool signed by the cluster", func(t *testing.T) {
		client := c.Client()
		ns := createNamespace(t, client, "tokens")
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "backend"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "backend", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{c.WorkloadPool()}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		require.NoError(t, err)

		parts := strings.Split(tr.Status.Token, ".")
		require.Len(t, parts, 3)
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		require.NoError(t, err)
		var claims struct {
			Iss string   `json:"iss"`
			Aud []string `json:"aud"`
			Sub string   `json:"sub"`
		}
		require.NoError(t, json.Unmarshal(payload, &claims))
		assert.Equal(t, c.Issuer(), claims.Iss)
		assert.Equal(t, []string{"acme-prod.svc.id.goog"}, claims.Aud)
		assert.Equal(t, "system:serviceaccount:"+ns+":backend", claims.Sub)

		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		require.NoError(t, err)
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		pub, ok := c.ServiceAccountPublicKey().(*rsa.PublicKey)
		require.True(t, ok)
		assert.NoError(t, rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig))
	})

	t.Run("a deployment rolls out to Ready pods on the selected pool", func(t *testing.T) {
		client := c.Client()
		ns := createNamespace(t, client, "rollout")
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
					Spec: corev1.PodSpec{
						NodeSelector: map[string]string{NodePoolLabel: "pool-b"},
						Containers:   []corev1.Container{{Name: "web", Image: "example.invalid/web:1"}},
					},
				},
			},
		}
		_, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
		require.NoError(t, err)
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.ReadyReplicas == 2 && d.Status.UpdatedReplicas == 2, nil
		})
		require.NoError(t, err, "deployment never became ready")
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		require.NoError(t, err)
		require.Len(t, pods.Items, 2)
		for _, p := range pods.Items {
			assert.Equal(t, corev1.PodRunning, p.Status.Phase)
			assert.Contains(t, p.Spec.NodeName, "-pool-b-")
		}
	})

	t.Run("a pod with the ready-delay annotation becomes ready after it", func(t *testing.T) {
		client := c.Client()
		ns := createNamespace(t, client, "slow")
		pod := func(name string, annotations map[string]string) *corev1.Pod {
			return &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{NodePoolLabel: "pool-a"},
					Containers:   []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
				},
			}
		}
		ready := func(name string) func(ctx context.Context) (bool, error) {
			return func(ctx context.Context) (bool, error) {
				p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for _, cond := range p.Status.Conditions {
					if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
						return true, nil
					}
				}
				return false, nil
			}
		}
		begin := time.Now()
		_, err := client.CoreV1().Pods(ns).Create(ctx, pod("slow", map[string]string{PodReadyDelayAnnotation: "2s"}), metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = client.CoreV1().Pods(ns).Create(ctx, pod("quick", nil), metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, ready("quick")))
		quick := time.Since(begin)
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, ready("slow")))
		slow := time.Since(begin)
		assert.Less(t, quick, 2*time.Second, "a pod without the annotation is ready at once")
		assert.GreaterOrEqual(t, slow, 2*time.Second)
	})

	t.Run("node pool labels can be changed", func(t *testing.T) {
		require.NoError(t, c.SetNodePoolLabels(ctx, "pool-a", map[string]string{"iam.gke.io/gke-metadata-server-enabled": "true"}))
		nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "iam.gke.io/gke-metadata-server-enabled=true"})
		require.NoError(t, err)
		require.Len(t, nodes.Items, 2)
		for _, n := range nodes.Items {
			assert.Equal(t, "pool-a", n.Labels[NodePoolLabel])
		}
		require.NoError(t, c.SetNodePoolLabels(ctx, "pool-a", map[string]string{"iam.gke.io/gke-metadata-server-enabled": ""}))
		nodes, err = c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "iam.gke.io/gke-metadata-server-enabled"})
		require.NoError(t, err)
		assert.Empty(t, nodes.Items)
		assert.Error(t, c.SetNodePoolLabels(ctx, "no-such-pool", map[string]string{"a": "b"}))
	})

	t.Run("the kubeconfig file works and service accounts obey RBAC", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
		require.NoError(t, err)
		admin, err := kubernetes.NewForConfig(cfg)
		require.NoError(t, err)
		_, err = admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)

		ns := createNamespace(t, admin, "rbac")
		_, err = admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		saCfg, err := c.ServiceAccountRESTConfig(ctx, ns, "nobody", time.Hour)
		require.NoError(t, err)
		nobody, err := kubernetes.NewForConfig(saCfg)
		require.NoError(t, err)
		_, err = nobody.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `"system:serviceaccount:`+ns+`:nobody" cannot list resource "nodes"`)
	})

	pids := c.PIDs()
	require.Len(t, pids, 5)
	for name, pid := range pids {
		require.NoError(t, syscall.Kill(pid, 0), "%s should be running before Stop", name)
	}
	require.NoError(t, c.Stop())
	stopped = true
	require.NoError(t, c.Stop(), "a second Stop is a no-op")

	groups := map[int]string{}
	for name, pid := range pids {
		groups[pid] = name
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "%s (pid %d) still exists after Stop", name, pid)
	}
	for pid, pgid := range processGroups(t) {
		if name, ok := groups[pgid]; ok {
			t.Errorf("process %d of %s's group survived Stop", pid, name)
		}
	}
	// A directory given in Options is kept, logs included.
	_, err = os.Stat(filepath.Join(dir, "logs", "kube-apiserver.log"))
	assert.NoError(t, err)
}

func TestKubeClusterRemovesItsTemporaryDir(t *testing.T) {
	RequireTools(t, Tools{})
	c, err := Start(context.Background(), Options{})
	require.NoError(t, err)
	t.Logf("cluster ready in %s", c.ReadyIn().Round(time.Millisecond))
	dir := c.Dir()
	_, err = os.Stat(filepath.Join(dir, "kubeconfig"))
	require.NoError(t, err)
	assert.Equal(t, IssuerURL("gkewi-sandbox", "europe-west1", "sandbox"), c.Issuer())
	require.NoError(t, c.Stop())
	_, err = os.Stat(dir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "the temporary directory should be gone: %v", err)
}

func TestKubeClusterMissingToolNamesMakeTarget(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nowhere")
	_, err := Start(context.Background(), Options{Tools: Tools{
		Etcd:                  filepath.Join(missing, "etcd"),
		KubeAPIServer:         filepath.Join(missing, "kube-apiserver"),
		KubeControllerManager: filepath.Join(missing, "kube-controller-manager"),
		KubeScheduler:         filepath.Join(missing, "kube-scheduler"),
		Kwok:                  filepath.Join(missing, "kwok"),
		KwokStages:            filepath.Join(missing, "stages.yaml"),
	}})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrToolMissing)
	assert.Contains(t, err.Error(), "make tools")
	assert.Contains(t, err.Error(), "kube-apiserver not found at "+filepath.Join(missing, "kube-apiserver"))
}

func TestKubeClusterToolsFromEnvironment(t *testing.T) {
	t.Setenv("GKEWI_TOOLS_DIR", "/opt/tools")
	t.Setenv("GKEWI_KUBE_DIR", "/opt/kube")
	t.Setenv("GKEWI_ETCD", "")
	t.Setenv("GKEWI_KWOK", "/opt/kwok/kwok")
	t.Setenv("GKEWI_KWOK_STAGES", "")
	got := DefaultTools()
	assert.Equal(t, "/opt/tools/etcd-"+EtcdVersion+"/etcd", got.Etcd)
	assert.Equal(t, "/opt/kube/kube-apiserver", got.KubeAPIServer)
	assert.Equal(t, "/opt/kube/kube-scheduler", got.KubeScheduler)
	assert.Equal(t, "/opt/kwok/kwok", got.Kwok)
	assert.Equal(t, "/opt/tools/kwok-"+KwokVersion+"/stages.yaml", got.KwokStages)
}

func TestKubeClusterTakenPortIsReported(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = resolvePorts(Ports{APIServer: port})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "port "+strconv.Itoa(port)+" on 127.0.0.1 (Ports.APIServer) is already in use")

	got, err := resolvePorts(Ports{})
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, p := range []int{got.EtcdClient, got.EtcdPeer, got.APIServer, got.Kwok} {
		assert.NotZero(t, p)
		assert.False(t, seen[p], "port %d chosen twice", p)
		seen[p] = true
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func createNamespace(t *testing.T, client kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return ns.Name
}

// processGroups maps every live process to its process group, from /proc.
func processGroups(t *testing.T) map[int]int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	groups := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 3 {
			continue
		}
		pgid, err := strconv.Atoi(fields[2])
		if err == nil {
			groups[pid] = pgid
		}
	}
	return groups
}
