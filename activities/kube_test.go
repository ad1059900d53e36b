package activities

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/gkewi/gkewi/contract"
)

const (
	kubeTestGSA      = "carto-backend@acme-prod.iam.gserviceaccount.com"
	kubeTestOtherGSA = "other@acme-prod.iam.gserviceaccount.com"
)

func TestKubeAnnotateServiceAccountCreatesItForHelm(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	k := NewKube(client)
	ns := fmt.Sprintf("annotate-new-%d", time.Now().UnixNano()%1_000_000)
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	in := AnnotateInput{Namespace: ns, KSA: "carto-common-backend", GSAEmail: kubeTestGSA, Release: "carto"}

	res, err := k.AnnotateServiceAccount(ctx, in)
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Contains(t, res.Detail, "created "+ns+"/carto-common-backend")

	_, err = client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err, "the namespace is created")
	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, in.KSA, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])
	assert.Equal(t, "Helm", sa.Labels["app.kubernetes.io/managed-by"])
	assert.Equal(t, "carto", sa.Annotations["meta.helm.sh/release-name"])
	assert.Equal(t, ns, sa.Annotations["meta.helm.sh/release-namespace"])

	again, err := k.AnnotateServiceAccount(ctx, in)
	require.NoError(t, err)
	assert.False(t, again.Changed, "a second run changes nothing: %s", again.Detail)
	assert.Contains(t, again.Detail, "already annotated")
	after, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, in.KSA, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, sa.ResourceVersion, after.ResourceVersion, "no write on the second run")

	in.GSAEmail = kubeTestOtherGSA
	moved, err := k.AnnotateServiceAccount(ctx, in)
	require.NoError(t, err)
	assert.True(t, moved.Changed)
	assert.Contains(t, moved.Detail, "(was "+kubeTestGSA+")")
	sa, err = client.CoreV1().ServiceAccounts(ns).Get(ctx, in.KSA, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestOtherGSA, sa.Annotations[GSAAnnotation])
	assert.Equal(t, "carto", sa.Annotations["meta.helm.sh/release-name"], "the ownership metadata stays")
	assert.Equal(t, "Helm", sa.Labels["app.kubernetes.io/managed-by"])
}

func TestKubeAnnotateExistingServiceAccountSetsOnlyItsFields(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "annotate-existing")
	_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name:        "backend",
		Labels:      map[string]string{"team": "geo"},
		Annotations: map[string]string{"owner": "alice"},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	k := NewKube(client)
	res, err := k.AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Contains(t, res.Detail, `with Helm ownership metadata for release "carto"`)

	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])
	assert.Equal(t, "alice", sa.Annotations["owner"], "other annotations are kept")
	assert.Equal(t, "geo", sa.Labels["team"], "other labels are kept")
	assert.Equal(t, "carto", sa.Annotations["meta.helm.sh/release-name"])
	managers := map[string]bool{}
	for _, mf := range sa.ManagedFields {
		managers[mf.Manager+"/"+string(mf.Operation)] = true
	}
	assert.True(t, managers["gkewi/Apply"], "gkewi applies its fields server-side: %v", managers)

	again, err := k.AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)
	assert.False(t, again.Changed)
}

func TestKubeAnnotateLeavesAnotherReleasesOwnership(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "annotate-owned")
	_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name:        "backend",
		Labels:      map[string]string{"app.kubernetes.io/managed-by": "Helm"},
		Annotations: map[string]string{"meta.helm.sh/release-name": "other", "meta.helm.sh/release-namespace": ns},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	res, err := NewKube(client).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], `belongs to Helm release "other"`)
	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])
	assert.Equal(t, "other", sa.Annotations["meta.helm.sh/release-name"], "another release's ownership is not taken")
}

func TestKubeRemoveServiceAccountAnnotation(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "annotate-remove")
	k := NewKube(client)
	in := AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestGSA, Release: "carto"}

	absent, err := k.RemoveServiceAccountAnnotation(ctx, in)
	require.NoError(t, err)
	assert.False(t, absent.Changed)
	assert.Contains(t, absent.Detail, "does not exist")

	_, err = k.AnnotateServiceAccount(ctx, in)
	require.NoError(t, err)
	removed, err := k.RemoveServiceAccountAnnotation(ctx, in)
	require.NoError(t, err)
	assert.True(t, removed.Changed)
	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, sa.Annotations, GSAAnnotation)
	assert.Equal(t, "carto", sa.Annotations["meta.helm.sh/release-name"], "only the GSA annotation goes")

	again, err := k.RemoveServiceAccountAnnotation(ctx, in)
	require.NoError(t, err)
	assert.False(t, again.Changed)

	// Annotated for another GSA since: that is another grant's, and it stays.
	_, err = k.AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestOtherGSA, Release: "carto"})
	require.NoError(t, err)
	kept, err := k.RemoveServiceAccountAnnotation(ctx, in)
	require.NoError(t, err)
	assert.False(t, kept.Changed)
	require.Len(t, kept.Warnings, 1)
	sa, err = client.CoreV1().ServiceAccounts(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestOtherGSA, sa.Annotations[GSAAnnotation])
}

func TestKubeAnnotateRejectsIncompleteInput(t *testing.T) {
	k := NewKube(fake.NewClientset())
	_, err := k.AnnotateServiceAccount(context.Background(), AnnotateInput{Namespace: "ns", KSA: "ksa"})
	assertKubeAppError(t, err, contract.ErrTypeInvalidArgument, true)
	_, err = k.RemoveServiceAccountAnnotation(context.Background(), AnnotateInput{KSA: "ksa"})
	assertKubeAppError(t, err, contract.ErrTypeInvalidArgument, true)
	_, err = k.Preflight(context.Background(), PreflightInput{Namespace: "ns"})
	assertKubeAppError(t, err, contract.ErrTypeInvalidArgument, true)
}

func TestKubeForbiddenIsFinalAndNamesThePermission(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	admin := c.Client()
	ns := kubeTestNamespace(t, admin, "forbidden")
	_, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg, err := c.ServiceAccountRESTConfig(ctx, ns, "nobody", time.Hour)
	require.NoError(t, err)
	nobody, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	_, err = NewKube(nobody).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "backend", GSAEmail: kubeTestGSA, Release: "carto"})
	appErr := requireKubeAppError(t, err, contract.ErrTypePermissionDenied, true)
	assert.Contains(t, appErr.Error(), `cannot get resource "namespaces"`)
	assert.Contains(t, appErr.Error(), "deploy/rbac")
}

func TestKubeErrorClassification(t *testing.T) {
	ctx := context.Background()
	// A refused connection is retried.
	unreachable := kubernetes.NewForConfigOrDie(kubeUnreachableConfig())
	_, err := NewKube(unreachable).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: "ns", KSA: "ksa", GSAEmail: kubeTestGSA})
	assertKubeAppError(t, err, contract.ErrTypeUnavailable, false)
}

func TestPreflightRefusesHostNetworkPods(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "preflight-hostnet")
	for _, sa := range []string{"carto-common-backend", "other"} {
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pod := func(name, release, sa string, hostNetwork bool) {
		_, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/instance": release}},
			Spec: corev1.PodSpec{
				ServiceAccountName: sa,
				HostNetwork:        hostNetwork,
				Containers:         []corev1.Container{{Name: "c", Image: "example.invalid/c:1"}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	k := NewKube(client)
	in := PreflightInput{Namespace: ns, KSA: "carto-common-backend", Release: "carto"}

	// Host-network pods of another KSA or another release do not matter.
	pod("carto-other-sa", "carto", "other", true)
	pod("elsewhere", "elsewhere", "carto-common-backend", true)
	pod("carto-api", "carto", "carto-common-backend", false)
	res, err := k.Preflight(ctx, in)
	require.NoError(t, err)
	assert.Contains(t, res.Detail, "no hostNetwork pods")

	pod("carto-router", "carto", "carto-common-backend", true)
	_, err = k.Preflight(ctx, in)
	appErr := requireKubeAppError(t, err, contract.ErrTypePreflightRefused, true)
	assert.Contains(t, appErr.Error(), "carto-router")
	assert.NotContains(t, appErr.Error(), "carto-api")
	assert.Contains(t, appErr.Error(), "hostNetwork")
}

func TestPreflightWarnsAboutIstio(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	k := NewKube(client)

	plain := kubeTestNamespace(t, client, "preflight-plain")
	res, err := k.Preflight(ctx, PreflightInput{Namespace: plain, KSA: "carto-common-backend", Release: "carto"})
	require.NoError(t, err)
	assert.Empty(t, res.Warnings)
	assert.Contains(t, res.Detail, "version v1.")

	for _, labels := range []map[string]string{{"istio-injection": "enabled"}, {"istio.io/rev": "asm-managed"}} {
		ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "preflight-istio-", Labels: labels},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
		res, err := k.Preflight(ctx, PreflightInput{Namespace: ns.Name, KSA: "carto-common-backend", Release: "carto"})
		require.NoError(t, err)
		require.Len(t, res.Warnings, 1, "labels %v", labels)
		assert.Contains(t, res.Warnings[0], "Istio")
	}

	// A namespace that does not exist yet has nothing to check.
	res, err = k.Preflight(ctx, PreflightInput{Namespace: "not-created-yet", KSA: "carto-common-backend", Release: "carto"})
	require.NoError(t, err)
	assert.Contains(t, res.Detail, "namespace absent")
}

// The version and 3000-KSA checks use a fake clientset: a real cluster is
// neither that old nor that big.
func TestPreflightRefusesClustersOlderThan112(t *testing.T) {
	client := fake.NewClientset()
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{Major: "1", Minor: "11", GitVersion: "v1.11.10-gke.5"}
	_, err := NewKube(client).Preflight(context.Background(), PreflightInput{Namespace: "ns", KSA: "ksa"})
	appErr := requireKubeAppError(t, err, contract.ErrTypePreflightRefused, true)
	assert.Contains(t, appErr.Error(), "v1.11.10-gke.5 is older than 1.12")

	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{Major: "1", Minor: "12", GitVersion: "v1.12.0"}
	res, err := NewKube(client).Preflight(context.Background(), PreflightInput{Namespace: "ns", KSA: "ksa"})
	require.NoError(t, err)
	assert.Empty(t, res.Warnings)

	// An unstamped development build is unknown, not old.
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v0.0.0-master+$Format:%H$"}
	res, err = NewKube(client).Preflight(context.Background(), PreflightInput{Namespace: "ns", KSA: "ksa"})
	require.NoError(t, err)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "1.12 minimum was not checked")
}

func TestPreflightWarnsAboveThreeThousandServiceAccounts(t *testing.T) {
	objects := make([]runtime.Object, 0, 3001)
	for i := range 3001 {
		objects = append(objects, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sa-%d", i), Namespace: fmt.Sprintf("ns-%d", i%7)}})
	}
	client := fake.NewClientset(objects...)
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.33.2-gke.1"}
	res, err := NewKube(client).Preflight(context.Background(), PreflightInput{Namespace: "ns-1", KSA: "sa-1"})
	require.NoError(t, err)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "more than 3000 Kubernetes service accounts")

	small := fake.NewClientset(objects[:3000]...)
	small.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.33.2-gke.1"}
	res, err = NewKube(small).Preflight(context.Background(), PreflightInput{Namespace: "ns-1", KSA: "sa-1"})
	require.NoError(t, err)
	assert.Empty(t, res.Warnings)
	assert.Contains(t, res.Detail, "3000 service accounts")
}

func TestTokenRequestForKSAHasGKEIssuerAndPoolAudience(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "token")
	_, err := NewKube(client).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "carto-common-backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)

	pool := ClusterRef{Project: kubeTestProject}.WorkloadPool()
	before := time.Now()
	token, expiry, err := RequestKSAToken(ctx, client, ns, "carto-common-backend", pool, time.Minute)
	require.NoError(t, err)
	// Lifetimes under ten minutes are raised to the API server's minimum.
	assert.WithinDuration(t, before.Add(10*time.Minute), expiry, 30*time.Second)

	parts := strings.Split(token, ".")
	require.Len(t, parts, 3, "a JWT")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims struct {
		Iss string   `json:"iss"`
		Aud []string `json:"aud"`
		Sub string   `json:"sub"`
		Exp int64    `json:"exp"`
	}
	require.NoError(t, json.Unmarshal(payload, &claims))
	assert.Equal(t, "https://container.googleapis.com/v1/projects/acme-prod/locations/europe-west1/clusters/carto", claims.Iss)
	assert.Equal(t, c.Issuer(), claims.Iss)
	assert.Equal(t, []string{"acme-prod.svc.id.goog"}, claims.Aud)
	assert.Equal(t, "system:serviceaccount:"+ns+":carto-common-backend", claims.Sub)
	assert.Equal(t, expiry.Unix(), claims.Exp)

	_, _, err = RequestKSAToken(ctx, client, ns, "no-such-ksa", pool, time.Hour)
	assertKubeAppError(t, err, contract.ErrTypeNotFound, true)
	_, _, err = RequestKSAToken(ctx, client, ns, "carto-common-backend", "", time.Hour)
	assertKubeAppError(t, err, contract.ErrTypeInvalidArgument, true)
}

// kubeUnreachableConfig points at a port where nothing listens.
func kubeUnreachableConfig() *rest.Config {
	return &rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second}
}
