package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/workflows"
)

// The release's own truth: what the grant binds, annotates and verifies is the
// KSA the release's pods run as, read from the rendered chart and the cluster.

// A chart that uses a KSA it does not create (the CARTO chart's
// commonBackendServiceAccount.create: false, as its KOTS install does) gets
// that KSA granted and annotated; gkewi creates none.
func TestOnboardExistingKSAOfTheChart(t *testing.T) {
	requireSandbox(t)
	ctx := context.Background()
	req := onboardRequest(t, "rt-existing-ksa")
	req.Helm.Values = map[string]any{"commonBackendServiceAccount": map[string]any{"create": false, "name": "carto-backend"}}

	// Refused before any change while the KSA is missing.
	id := startOnboard(t, req)
	d := waitClosed(t, id, 2*time.Minute)
	require.Equal(t, statusFailed, d.WorkflowExecutionInfo.Status)
	s := queryStatus(t, id)
	st := mustStep(t, s, "render-release")
	assert.Equal(t, workflows.StepFailed, st.State)
	assert.Contains(t, st.LastError, "rt-existing-ksa/carto-backend")
	assert.Contains(t, st.LastError, "does not exist")
	assert.Empty(t, s.GSAEmail, "nothing was created")
	assert.False(t, gsaExists(t, req.GSA.AccountID+"@"+req.Project+".iam.gserviceaccount.com"))

	// Made beforehand by the operator, it is the one granted.
	_, err := sandbox.KubeClient().CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: req.Namespace}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "carto-backend"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	s = approveAndComplete(t, id)
	assert.Equal(t, "carto-backend", s.KSA)
	assert.Contains(t, gsaMembers(t, s.GSAEmail)["roles/iam.workloadIdentityUser"],
		"serviceAccount:"+req.Project+".svc.id.goog["+req.Namespace+"/carto-backend]")
	sa, err := sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, "carto-backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, s.GSAEmail, sa.Annotations["iam.gke.io/gcp-service-account"])
	assert.NotContains(t, sa.Annotations, "meta.helm.sh/release-name", "not handed to Helm: the chart does not own it")
	_, err = sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, demoChartKSA, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no KSA of gkewi's own: %v", err)
	assert.Contains(t, mustStep(t, s, "verify-release").Detail, "run as "+req.Namespace+"/carto-backend")
}

// A chart of the 2023 interface takes the connection in extraEnvVars.
func TestOnboardLegacyInterfaceChart(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "rt-legacy")
	req.Helm.Chart = filepath.Join(sandbox.RepoDir(), "sandbox", "charts", "carto-legacy")
	id := startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	s := approveAndComplete(t, id)
	assert.Equal(t, "carto-legacy-common-backend", s.KSA)
	assert.Contains(t, mustStep(t, s, "render-release").Detail, "connection values: extraEnvVars")
	env := kubectl(t, "get", "deployment", "-n", req.Namespace, req.Helm.Release+"-workspace-api",
		"-o", `jsonpath={.spec.template.spec.serviceAccountName} {.spec.template.spec.containers[0].env}`)
	assert.True(t, strings.HasPrefix(env, "carto-legacy-common-backend "), env)
	assert.Contains(t, env, `"name":"WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL","value":"`+s.GSAEmail+`"`)
}

// A KSA the request names that no workload runs as is refused before any change.
func TestOnboardRefusesAKSANoPodUses(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "rt-wrong-ksa")
	req.KSA = req.Helm.Release + "-common-backend"
	id := startOnboard(t, req)
	d := waitClosed(t, id, 2*time.Minute)
	require.Equal(t, statusFailed, d.WorkflowExecutionInfo.Status)
	s := queryStatus(t, id)
	st := mustStep(t, s, "render-release")
	assert.Contains(t, st.LastError, `no workload runs as ksa "prod-common-backend"`)
	assert.Contains(t, st.LastError, demoChartKSA+" (deployment/prod-carto-demo-workspace-api")
	for _, later := range []string{"enable-iamcredentials", "service-account", "helm"} {
		assert.Equal(t, workflows.StepPending, mustStep(t, s, later).State, later)
	}
}

// Without the permissions a chart's kind needs, the onboarding stops at the
// access check, before any change, printing a Role; applied, it completes.
func TestOnboardMissingKubernetesAccessPrintsTheRole(t *testing.T) {
	requireSandbox(t)
	ctx := context.Background()
	admin := sandbox.KubeClient()
	req := onboardRequest(t, "rt-rbac")

	// The worker's release role without pod disruption budgets.
	roles := admin.RbacV1().ClusterRoles()
	orig, err := roles.Get(ctx, "gkewi-worker-release", metav1.GetOptions{})
	require.NoError(t, err)
	cut := orig.DeepCopy()
	cut.Rules = slices.DeleteFunc(cut.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.APIGroups, "policy") })
	require.Less(t, len(cut.Rules), len(orig.Rules))
	_, err = roles.Update(ctx, cut, metav1.UpdateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		cur, err := roles.Get(context.Background(), orig.Name, metav1.GetOptions{})
		if err == nil {
			cur.Rules = orig.Rules
			_, _ = roles.Update(context.Background(), cur, metav1.UpdateOptions{})
		}
	})

	start := time.Now()
	id := startOnboard(t, req)
	d := waitClosed(t, id, 2*time.Minute)
	require.Equal(t, statusFailed, d.WorkflowExecutionInfo.Status)
	s := queryStatus(t, id)
	st := mustStep(t, s, "kubernetes-access")
	assert.Equal(t, workflows.StepFailed, st.State)
	assert.Contains(t, st.LastError, "policy/poddisruptionbudgets in namespace "+req.Namespace)
	assert.Contains(t, st.LastError, "nothing was changed")
	for _, r := range callsSince(start) {
		assert.False(t, isMutating(r.Method), "Google Cloud changed before the access check: %s", r.Method)
	}
	_, err = admin.CoreV1().Namespaces().Get(ctx, req.Namespace, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no namespace created: %v", err)

	// The printed Role (what `gkewi rbac` prints), applied as is.
	msg := st.LastError
	require.Contains(t, msg, "---\n")
	manifest := msg[strings.Index(msg, "---\n"):]
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: req.Namespace}}
	_, err = admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	require.NoError(t, err)
	apply := exec.Command(sandbox.KubectlPath(), "apply", "-f", "-")
	apply.Env = append(os.Environ(), sandbox.Env()...)
	apply.Stdin = strings.NewReader(manifest)
	out, err := apply.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "role.rbac.authorization.k8s.io/gkewi-release-prod created")

	startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	s = approveAndComplete(t, id)
	assert.Equal(t, workflows.StepDone, mustStep(t, s, "kubernetes-access").State)
}
