package activities

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gkewi/gkewi/contract"
)

// The worker, bound only to the roles of deploy/rbac, runs every Kubernetes and
// Helm step; what lies outside those roles is refused.
func TestKubeLeastPrivilegeRBAC(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	admin := c.Client()

	workerNS := kubeTestNamespace(t, admin, "gkewi-system")
	releaseNS := kubeTestNamespace(t, admin, "lp-carto")
	_, err := admin.CoreV1().ServiceAccounts(workerNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "gkewi-worker"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "gkewi-worker", Namespace: workerNS}}

	// The ClusterRoles exactly as shipped, renamed so runs do not collide.
	roles := deployRBACClusterRoles(t)
	roleName := func(name string) string { return name + "-" + workerNS }
	for _, r := range roles {
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: roleName(r.Name)}, Rules: r.Rules}
		_, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = admin.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
		})
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: roleName("gkewi-worker-cluster")},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName("gkewi-worker-cluster")},
		Subjects:   subject,
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})
	_, err = admin.RbacV1().RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gkewi-worker-release"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName("gkewi-worker-release")},
		Subjects:   subject,
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	workerCfg, err := c.ServiceAccountRESTConfig(ctx, workerNS, "gkewi-worker", time.Hour)
	require.NoError(t, err)
	worker, err := kubernetes.NewForConfig(workerCfg)
	require.NoError(t, err)
	k := NewKube(worker)
	h := newKubeTestHelm(t, workerCfg)
	ksa := "carto-demo-common-backend"

	t.Run("every step passes", func(t *testing.T) {
		// A first install that never becomes ready is uninstalled, which takes
		// the delete permissions.
		broken := helmTestInput(releaseNS)
		broken.Chart, broken.Release = helmDemoChartDir(t), "broken"
		broken.Values["workspaceApi"].(map[string]any)["nodeSelector"] = map[string]any{"cloud.google.com/gke-nodepool": "no-such-pool"}
		_, err := newKubeTestHelm(t, workerCfg, func(hc *HelmConfig) { hc.Timeout = 5 * time.Second }).HelmUpgradeInstall(ctx, broken)
		appErr := requireKubeAppError(t, err, contract.ErrTypeHelmNotReady, false)
		assert.Contains(t, appErr.Error(), "uninstalled")
		left, err := admin.CoreV1().ServiceAccounts(releaseNS).Get(ctx, "broken-common-backend", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the failed release's KSA is gone: %v %v", left, err)
		_, err = admin.AppsV1().Deployments(releaseNS).Get(ctx, "broken-workspace-api", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the failed release's deployment is gone: %v", err)

		res, err := k.Preflight(ctx, PreflightInput{Namespace: releaseNS, KSA: ksa, Release: "carto"})
		require.NoError(t, err)
		assert.Empty(t, res.Warnings, "the KSA count is allowed too")

		res, err = k.AnnotateServiceAccount(ctx, AnnotateInput{Namespace: releaseNS, KSA: ksa, GSAEmail: kubeTestGSA, Release: "carto"})
		require.NoError(t, err)
		assert.True(t, res.Changed)

		in := helmTestInput(releaseNS)
		in.Chart = helmDemoChartDir(t)
		// The release's own needs, read from the rendered chart: the shipped
		// roles grant every one.
		rendered, err := h.RenderRelease(ctx, RenderInput{Helm: in})
		require.NoError(t, err)
		assert.Equal(t, ksa, rendered.KSA)
		access, err := k.CheckAccess(ctx, AccessInput{Namespace: releaseNS, Release: "carto", Access: rendered.Access})
		require.NoError(t, err, "the shipped RBAC deploys a chart shaped like the CARTO chart")
		assert.Contains(t, access.Detail, "2 asked one by one", "the namespace's listed rules answer for the rest; cluster-scoped ones are asked")

		hres, err := h.HelmUpgradeInstall(ctx, in)
		require.NoError(t, err)
		assert.Equal(t, 1, hres.Revision)
		requireDeploymentReady(t, admin, releaseNS, "carto-carto-demo-workspace-api", 2)

		hres, err = h.HelmUpgradeInstall(ctx, in)
		require.NoError(t, err)
		assert.False(t, hres.Changed)

		in.Values["workspaceApi"].(map[string]any)["replicaCount"] = 1
		hres, err = h.HelmUpgradeInstall(ctx, in)
		require.NoError(t, err)
		assert.Equal(t, 2, hres.Revision)

		// A failed upgrade is rolled back with the same permissions.
		in.Values["workspaceApi"].(map[string]any)["nodeSelector"] = map[string]any{"cloud.google.com/gke-nodepool": "no-such-pool"}
		short := newKubeTestHelm(t, workerCfg, func(hc *HelmConfig) { hc.Timeout = 8 * time.Second })
		_, err = short.HelmUpgradeInstall(ctx, in)
		assertKubeAppError(t, err, contract.ErrTypeHelmNotReady, false)
		assert.Equal(t, []string{"1:superseded", "2:superseded", "3:failed", "4:deployed"}, helmHistory(t, c.RESTConfig(), releaseNS, "carto"))

		token, _, err := RequestKSAToken(ctx, worker, releaseNS, ksa, ClusterRef{Project: kubeTestProject}.WorkloadPool(), time.Hour)
		require.NoError(t, err)
		assert.NotEmpty(t, token)

		res, err = k.RemoveServiceAccountAnnotation(ctx, AnnotateInput{Namespace: releaseNS, KSA: ksa, GSAEmail: kubeTestGSA})
		require.NoError(t, err)
		assert.True(t, res.Changed)
	})

	t.Run("what lies outside the roles is refused", func(t *testing.T) {
		// Namespaces may be created, but nothing inside one without the binding.
		unbound := fmt.Sprintf("lp-unbound-%d", time.Now().UnixNano()%1_000_000)
		t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), unbound, metav1.DeleteOptions{}) })
		_, err := k.AnnotateServiceAccount(ctx, AnnotateInput{Namespace: unbound, KSA: ksa, GSAEmail: kubeTestGSA, Release: "carto"})
		appErr := requireKubeAppError(t, err, contract.ErrTypePermissionDenied, true)
		assert.Contains(t, appErr.Error(), `cannot get resource "serviceaccounts"`)
		assert.Contains(t, appErr.Error(), unbound)

		_, err = worker.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
		assert.True(t, apierrors.IsForbidden(err), "secrets outside the release namespaces: %v", err)
		_, err = worker.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "escalate-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   subject,
		}, metav1.CreateOptions{})
		assert.True(t, apierrors.IsForbidden(err), "no RBAC changes: %v", err)
		err = worker.CoreV1().Namespaces().Delete(ctx, releaseNS, metav1.DeleteOptions{})
		assert.True(t, apierrors.IsForbidden(err), "no namespace deletion: %v", err)
		_, err = worker.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		assert.True(t, apierrors.IsForbidden(err), "no nodes: %v", err)
		_, err = worker.CoreV1().PersistentVolumeClaims(releaseNS).List(ctx, metav1.ListOptions{})
		assert.True(t, apierrors.IsForbidden(err), "no kinds the chart does not use: %v", err)

		// The access check says so before any change, with a Role to apply.
		_, err = k.CheckAccess(ctx, AccessInput{Namespace: releaseNS, Release: "carto", Access: []AccessRule{
			{Namespace: releaseNS, Resource: "persistentvolumeclaims", Verbs: []string{"get", "create"}, Why: "the chart renders it"},
			{Namespace: releaseNS, Resource: "configmaps", Verbs: []string{"get"}},
		}})
		appErr = requireKubeAppError(t, err, contract.ErrTypeAccessMissing, true)
		assert.Contains(t, appErr.Error(), "persistentvolumeclaims in namespace "+releaseNS+" (get, create): the chart renders it")
		assert.NotContains(t, appErr.Error(), "configmaps in namespace", "what is allowed is not listed")
		assert.Contains(t, appErr.Error(), "kind: Role")
	})
}
