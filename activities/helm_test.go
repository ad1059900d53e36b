package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/provenance"
	helmregistry "helm.sh/helm/v4/pkg/registry"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/contract"
)

// helmDemoChartDir is the stand-in for the vendor chart.
func helmDemoChartDir(t *testing.T) string {
	t.Helper()
	return repoChartDir(t, "deploy", "charts", "carto-demo")
}

// repoChartDir is the absolute path of a chart of the repository.
func repoChartDir(t *testing.T, parts ...string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join(append([]string{".."}, parts...)...))
	require.NoError(t, err)
	return dir
}

// chartDefaults are a chart's default values.
func chartDefaults(t *testing.T, dir string) map[string]any {
	t.Helper()
	ch, err := loader.Load(dir)
	require.NoError(t, err)
	return ch.Values
}

func newKubeTestHelm(t *testing.T, cfg *rest.Config, mods ...func(*HelmConfig)) *Helm {
	t.Helper()
	hc := HelmConfig{
		RESTConfig:        cfg,
		ArtifactsDir:      t.TempDir(),
		CacheDir:          t.TempDir(),
		Timeout:           90 * time.Second,
		HeartbeatInterval: time.Second,
	}
	for _, m := range mods {
		m(&hc)
	}
	return NewHelm(hc)
}

func helmTestInput(ns string) HelmInput {
	return HelmInput{
		Namespace: ns,
		Release:   "carto",
		Values: map[string]any{
			"workspaceApi": map[string]any{
				"replicaCount": 2,
				"extraEnvVars": []any{map[string]any{"name": "LOG_LEVEL", "value": "debug"}},
			},
		},
		GSAEmail: kubeTestGSA,
		Connection: &ConnectionValues{
			TempDataset:       "carto_temp",
			BillingProject:    "acme-billing",
			ConnectionOwnerID: "auth0|5f0c",
		},
	}
}

// helmHistory returns the release's revisions and their statuses, oldest first.
func helmHistory(t *testing.T, cfg *rest.Config, ns, name string) []string {
	t.Helper()
	h := NewHelm(HelmConfig{RESTConfig: cfg, CacheDir: t.TempDir()})
	ac, _, err := h.actionConfig(helmTestConn(t, h), ns)
	require.NoError(t, err)
	hist, err := action.NewHistory(ac).Run(name)
	require.NoError(t, err)
	out := make([]string, len(hist))
	for i, r := range hist {
		rel := r.(*release.Release)
		out[i] = fmt.Sprintf("%d:%s", rel.Version, rel.Info.Status)
	}
	return out
}

func requireDeploymentReady(t *testing.T, client kubernetes.Interface, ns, name string, replicas int32) *appsv1.Deployment {
	t.Helper()
	d, err := client.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotNil(t, d.Spec.Replicas)
	assert.Equal(t, replicas, *d.Spec.Replicas, "%s replicas", name)
	assert.Equal(t, replicas, d.Status.ReadyReplicas, "%s is rolled out when the step returns", name)
	assert.Equal(t, replicas, d.Status.UpdatedReplicas, "%s is rolled out when the step returns", name)
	return d
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestHelmInstallAdoptsAnnotatedKSAAndUpgradeKeepsIt(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-adopt")

	// Step 6 then step 7 of the onboarding: the KSA exists before the release.
	_, err := NewKube(client).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "carto-demo-common-backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)

	h := newKubeTestHelm(t, c.RESTConfig())
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	start := time.Now()
	res, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err, "helm install adopts the KSA gkewi created")
	t.Logf("install took %s", time.Since(start).Round(time.Millisecond))
	assert.True(t, res.Changed)
	assert.Equal(t, 1, res.Revision)
	assert.Equal(t, "deployed", res.Status)

	api := requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-api", 2)
	requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-subscriber", 1)
	pod := api.Spec.Template.Spec
	assert.Equal(t, "carto-demo-common-backend", pod.ServiceAccountName)
	ctr := pod.Containers[0]
	level, _ := envValue(ctr, "LOG_LEVEL")
	assert.Equal(t, "debug", level, "the operator's own variables stay")
	// The connection reaches the backends' ConfigMaps, as the CARTO chart writes them.
	for _, component := range []string{"workspace-api", "workspace-subscriber"} {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "carto-carto-demo-"+component, metav1.GetOptions{})
		require.NoError(t, err)
		for name, want := range map[string]string{
			EnvWIBillingProject:  "acme-billing",
			EnvWIWorkflowsTemp:   "acme-billing.carto_temp",
			EnvWIServiceAccount:  kubeTestGSA,
			EnvWIConnectionOwner: "auth0|5f0c",
		} {
			assert.Equal(t, want, cm.Data[name], "%s %s", component, name)
		}
	}
	_, hasKeyFile := envValue(ctr, "GOOGLE_APPLICATION_CREDENTIALS")
	assert.False(t, hasKeyFile, "no key file with Workload Identity")

	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "carto-demo-common-backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])
	assert.Equal(t, "Helm", sa.Labels["app.kubernetes.io/managed-by"])
	assert.Equal(t, "carto-demo", sa.Labels["app.kubernetes.io/name"], "the chart now manages the KSA")

	// The customizations.yaml an operator would have written.
	require.Equal(t, filepath.Join(h.cfg.ArtifactsDir, ns, "carto", "customizations.yaml"), res.ValuesFile)
	raw, err := os.ReadFile(res.ValuesFile)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(raw), "# Values of Helm release \"carto\""))
	var kept map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &kept))
	want, err := HelmValues(in, chartDefaults(t, helmDemoChartDir(t)))
	require.NoError(t, err)
	assert.True(t, sameJSON(want, kept), "customizations.yaml holds the applied values:\n%s", raw)

	// A later upgrade with other values keeps the annotation.
	in.Values["workspaceApi"].(map[string]any)["replicaCount"] = 1
	res, err = h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, 2, res.Revision)
	requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-api", 1)
	sa, err = client.CoreV1().ServiceAccounts(ns).Get(ctx, "carto-demo-common-backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])

	// And gkewi's annotate step, run again, finds nothing to do.
	again, err := NewKube(client).AnnotateServiceAccount(ctx, AnnotateInput{Namespace: ns, KSA: "carto-demo-common-backend", GSAEmail: kubeTestGSA, Release: "carto"})
	require.NoError(t, err)
	assert.False(t, again.Changed, again.Detail)
}

func TestHelmUpgradeWithUnchangedValuesMakesNoRevision(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-noop")
	h := newKubeTestHelm(t, c.RESTConfig())
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)

	first, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	require.Equal(t, 1, first.Revision)

	// The same request, as a workflow retry or replay would send it.
	in = helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	second, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.False(t, second.Changed)
	assert.Equal(t, 1, second.Revision)
	assert.Equal(t, "deployed", second.Status)
	assert.Equal(t, first.ValuesFile, second.ValuesFile)
	assert.Equal(t, []string{"1:deployed"}, helmHistory(t, c.RESTConfig(), ns, "carto"))

	// Another GSA is a change.
	in.GSAEmail = kubeTestOtherGSA
	third, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.True(t, third.Changed)
	assert.Equal(t, 2, third.Revision)
}

func TestHelmFailedUpgradeRollsBack(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-rollback")
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	_, err := newKubeTestHelm(t, c.RESTConfig()).HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)

	// Pods that fit no node never become ready: the upgrade times out.
	in.Values["workspaceApi"].(map[string]any)["nodeSelector"] = map[string]any{"cloud.google.com/gke-nodepool": "no-such-pool"}
	short := newKubeTestHelm(t, c.RESTConfig(), func(hc *HelmConfig) { hc.Timeout = 8 * time.Second })
	_, err = short.HelmUpgradeInstall(ctx, in)
	appErr := requireKubeAppError(t, err, contract.ErrTypeHelmNotReady, false)
	assert.Contains(t, appErr.Error(), "rolled back")

	assert.Equal(t, []string{"1:superseded", "2:failed", "3:deployed"}, helmHistory(t, c.RESTConfig(), ns, "carto"))
	api := requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-api", 2)
	assert.NotContains(t, api.Spec.Template.Spec.NodeSelector, "cloud.google.com/gke-nodepool", "the rollback restored revision 1")
	sa, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "carto-demo-common-backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubeTestGSA, sa.Annotations[GSAAnnotation])
}

func TestHelmFailedFirstInstallIsUninstalled(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-install-fail")
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	// Rejected by the API server: replicas must not be negative.
	in.Values["workspaceApi"].(map[string]any)["replicaCount"] = -1
	_, err := newKubeTestHelm(t, c.RESTConfig()).HelmUpgradeInstall(ctx, in)
	require.Error(t, err)
	var appErr interface{ NonRetryable() bool }
	require.True(t, errors.As(err, &appErr))
	assert.True(t, appErr.NonRetryable(), "an invalid object is final: %v", err)
	assert.Contains(t, err.Error(), "replicas")

	secrets, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=carto"})
	require.NoError(t, err)
	assert.Empty(t, secrets.Items, "a failed first install leaves no release behind")
}

func TestHelmInstallFromHTTPRepository(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-repo")

	dir := t.TempDir()
	pkg := helmPackageDemoChart(t, dir)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	digest, err := provenance.DigestFile(pkg)
	require.NoError(t, err)
	ch, err := loader.Load(pkg)
	require.NoError(t, err)
	index := repo.NewIndexFile()
	require.NoError(t, index.MustAdd(ch.Metadata, filepath.Base(pkg), srv.URL, digest))
	require.NoError(t, index.WriteFile(filepath.Join(dir, "index.yaml"), 0o644))

	h := newKubeTestHelm(t, c.RESTConfig())
	in := helmTestInput(ns)
	in.Chart, in.RepoURL, in.Version = "carto-demo", srv.URL, ch.Metadata.Version
	res, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Revision)
	requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-api", 2)
	raw, err := os.ReadFile(res.ValuesFile)
	require.NoError(t, err)
	assert.Contains(t, string(raw), "--repo "+srv.URL)

	// Unchanged through the repository as well.
	res, err = h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.False(t, res.Changed)

	in.Version = "9.9.9"
	_, err = h.HelmUpgradeInstall(ctx, in)
	appErr := requireKubeAppError(t, err, contract.ErrTypeHelmChart, true)
	assert.Contains(t, appErr.Error(), "9.9.9")
}

func TestHelmUnreachableRepositoryIsRetried(t *testing.T) {
	h := newKubeTestHelm(t, kubeUnreachableConfig())
	in := helmTestInput("carto")
	in.Chart, in.RepoURL = "carto-demo", "http://127.0.0.1:1"
	_, err := h.HelmUpgradeInstall(context.Background(), in)
	assertKubeAppError(t, err, contract.ErrTypeUnavailable, false)
}

func TestHelmMissingLocalChartIsFinal(t *testing.T) {
	h := newKubeTestHelm(t, kubeUnreachableConfig())
	in := helmTestInput("carto")
	in.Chart = filepath.Join(t.TempDir(), "no-chart-here")
	_, err := h.HelmUpgradeInstall(context.Background(), in)
	assertKubeAppError(t, err, contract.ErrTypeHelmChart, true)

	in.Release = "Not_A_Release"
	_, err = h.HelmUpgradeInstall(context.Background(), in)
	assertKubeAppError(t, err, contract.ErrTypeInvalidArgument, true)
}

func TestHelmInstallFromOCIRegistry(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-oci")

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	pkg := helmPackageDemoChart(t, t.TempDir())
	data, err := os.ReadFile(pkg)
	require.NoError(t, err)
	pusher, err := helmregistry.NewClient(helmregistry.ClientOptPlainHTTP(),
		helmregistry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "config.json")))
	require.NoError(t, err)
	_, err = pusher.Push(data, host+"/charts/carto-demo:0.2.0", helmregistry.PushOptStrictMode(true))
	require.NoError(t, err)

	h := newKubeTestHelm(t, c.RESTConfig(), func(hc *HelmConfig) { hc.RegistryPlainHTTP = true })
	in := helmTestInput(ns)
	in.Chart, in.Version = "oci://"+host+"/charts/carto-demo", "0.2.0"
	res, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.True(t, res.Changed)
	requireDeploymentReady(t, client, ns, "carto-carto-demo-workspace-api", 2)

	in.Version = "9.9.9" // not in the registry
	_, err = h.HelmUpgradeInstall(ctx, in)
	assertKubeAppError(t, err, contract.ErrTypeHelmChart, true)
}

func TestHelmHeartbeatsWhileWaiting(t *testing.T) {
	c := kubeTestCluster(t)
	client := c.Client()
	ns := kubeTestNamespace(t, client, "helm-heartbeat")
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	h := newKubeTestHelm(t, c.RESTConfig(), func(hc *HelmConfig) { hc.HeartbeatInterval = 100 * time.Millisecond })

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(h)
	var beats atomic.Int32
	env.SetOnActivityHeartbeatListener(func(*activity.Info, converter.EncodedValues) { beats.Add(1) })
	val, err := env.ExecuteActivity(h.HelmUpgradeInstall, in)
	require.NoError(t, err)
	var res HelmResult
	require.NoError(t, val.Get(&res))
	assert.Equal(t, 1, res.Revision)
	assert.Positive(t, beats.Load(), "the install heartbeats while Helm waits for the rollout")
}

func TestHelmValuesLayering(t *testing.T) {
	in := HelmInput{
		Values: map[string]any{
			"commonBackendServiceAccount": map[string]any{
				"enableGCPWorkloadIdentity": false,
				"annotations":               map[string]any{"team": "geo", GSAAnnotation: "stale@x.iam.gserviceaccount.com"},
			},
			"workspaceSubscriber": map[string]any{
				"extraEnvVars": []any{
					map[string]any{"name": EnvWIBillingProject, "value": "stale"},
					map[string]any{"name": "KEEP_ME", "value": "1"},
				},
			},
			"router": map[string]any{"replicaCount": 3},
		},
		GSAEmail:   kubeTestGSA,
		Connection: &ConnectionValues{TempDataset: "tmp", BillingProject: "bill", ServiceAccount: "conn@x.iam.gserviceaccount.com", ConnectionOwnerID: "u1"},
	}
	got, err := HelmValues(in, chartDefaults(t, legacyChartDir(t)))
	require.NoError(t, err)
	wantYAML := `
commonBackendServiceAccount:
  enableGCPWorkloadIdentity: true
  annotations:
    team: geo
    iam.gke.io/gcp-service-account: carto-backend@acme-prod.iam.gserviceaccount.com
router:
  replicaCount: 3
workspaceApi:
  extraEnvVars:
    - {name: WORKSPACE_WORKLOAD_IDENTITY_TEMP_DATASET, value: tmp}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_WORKFLOWS_TEMP, value: bill.tmp}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT, value: bill}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL, value: conn@x.iam.gserviceaccount.com}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_CONNECTION_OWNER_ID, value: u1}
workspaceSubscriber:
  extraEnvVars:
    - {name: KEEP_ME, value: "1"}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_TEMP_DATASET, value: tmp}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_WORKFLOWS_TEMP, value: bill.tmp}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT, value: bill}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL, value: conn@x.iam.gserviceaccount.com}
    - {name: WORKSPACE_WORKLOAD_IDENTITY_CONNECTION_OWNER_ID, value: u1}
`
	var want map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(wantYAML), &want))
	assert.True(t, sameJSON(want, got), "got %#v", got)
	// The request is not modified.
	assert.Equal(t, false, in.Values["commonBackendServiceAccount"].(map[string]any)["enableGCPWorkloadIdentity"])

	plain, err := HelmValues(HelmInput{Values: map[string]any{"a": 1}}, nil)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": float64(1)}, plain, "no GSA: the operator's values only")

	_, err = HelmValues(HelmInput{GSAEmail: kubeTestGSA, Connection: &ConnectionValues{}, Values: map[string]any{
		"workspaceApi": map[string]any{"extraEnvVars": "not a list"},
	}}, nil)
	assert.ErrorContains(t, err, "workspaceApi.extraEnvVars")
}

func TestHelmReleaseComparison(t *testing.T) {
	ch, err := loader.Load(helmDemoChartDir(t))
	require.NoError(t, err)
	values := map[string]any{"workspaceApi": map[string]any{"replicaCount": 2}}
	stored := &release.Release{
		Info:   &release.Info{Status: rcommon.StatusDeployed},
		Chart:  ch,
		Config: map[string]any{"workspaceApi": map[string]any{"replicaCount": float64(2)}},
	}
	assert.True(t, helmReleaseMatches(stored, ch, values), "ints and JSON numbers compare equal")

	assert.False(t, helmReleaseMatches(stored, ch, map[string]any{"workspaceApi": map[string]any{"replicaCount": 3}}))
	failed := *stored
	failed.Info = &release.Info{Status: rcommon.StatusFailed}
	assert.False(t, helmReleaseMatches(&failed, ch, values), "a failed release is upgraded")

	bumped, err := loader.Load(helmDemoChartDir(t))
	require.NoError(t, err)
	bumped.Metadata.Version = "0.1.1"
	assert.False(t, helmReleaseMatches(stored, bumped, values))

	edited, err := loader.Load(helmDemoChartDir(t))
	require.NoError(t, err)
	edited.Templates[0].Data = append(edited.Templates[0].Data, []byte("\n# edited\n")...)
	assert.False(t, helmReleaseMatches(stored, edited, values), "same version, other templates")
}

func TestHelmErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err          string
		errType      string
		nonRetryable bool
	}{
		{"another operation (install/upgrade/rollback) is in progress", contract.ErrTypeHelmBusy, false},
		{`Unable to continue with install: ServiceAccount "x" in namespace "n" exists and cannot be imported into the current release: invalid ownership metadata`, contract.ErrTypeHelmOwnership, true},
		{"release carto failed, and has been rolled back due to rollback-on-failure being set: context deadline exceeded", contract.ErrTypeHelmNotReady, false},
		{"release carto failed, and has been rolled back due to rollback-on-failure being set: template: bad", contract.ErrTypeHelmRelease, true},
		{`template: carto-demo/templates/x.yaml:3:4: executing "x" at <.Values.a.b>: nil pointer`, contract.ErrTypeHelmRelease, true},
		{"an error occurred while uninstalling the release. original install error: resource Deployment/ns/x not ready: context deadline exceeded: failed to delete release: x", contract.ErrTypeHelmRelease, true},
		{`an error occurred while rolling back the release. original upgrade error: boom: deployments.apps "x" is forbidden: User "u" cannot patch resource "deployments"`, contract.ErrTypePermissionDenied, true},
		{"resource Deployment/ns/x not ready. status: InProgress: context deadline exceeded", contract.ErrTypeHelmNotReady, false},
	} {
		err := classifyHelmError("helm upgrade", errors.New(tc.err))
		assertKubeAppError(t, err, tc.errType, tc.nonRetryable)
	}
}

// helmPackageDemoChart packages the demo chart as a .tgz into dir.
func helmPackageDemoChart(t *testing.T, dir string) string {
	t.Helper()
	ch, err := loader.Load(helmDemoChartDir(t))
	require.NoError(t, err)
	pkg, err := chartutil.Save(ch, dir)
	require.NoError(t, err)
	return pkg
}

// helmRender renders a chart as `helm template` would.
func helmRender(t *testing.T, chartDir, releaseName, namespace string, values map[string]any) map[string]string {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	rel, err := install.Run(ch, values)
	require.NoError(t, err)
	return releaseutil.SplitManifests(rel.(*release.Release).Manifest)
}

// helmRenderedObjects decodes the rendered documents of one kind.
func helmRenderedObjects[T any](t *testing.T, docs map[string]string, kind string) []T {
	t.Helper()
	var out []T
	for _, doc := range docs {
		var head struct {
			Kind string `json:"kind"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head))
		if head.Kind != kind {
			continue
		}
		var obj T
		require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &obj))
		out = append(out, obj)
	}
	return out
}

func TestHelmDemoChartRendersWorkloadIdentity(t *testing.T) {
	in := helmTestInput("carto")
	values, err := HelmValues(in, chartDefaults(t, helmDemoChartDir(t)))
	require.NoError(t, err)
	docs := helmRender(t, helmDemoChartDir(t), "carto", "carto", values)

	sas := map[string]corev1.ServiceAccount{}
	for _, sa := range helmRenderedObjects[corev1.ServiceAccount](t, docs, "ServiceAccount") {
		sas[sa.Name] = sa
	}
	require.Len(t, sas, 2)
	assert.Equal(t, kubeTestGSA, sas["carto-demo-common-backend"].Annotations[GSAAnnotation], "named after the chart, annotated from the values")
	assert.NotContains(t, sas["carto-carto-demo-workspace-www"].Annotations, GSAAnnotation)

	deps := map[string]appsv1.Deployment{}
	for _, d := range helmRenderedObjects[appsv1.Deployment](t, docs, "Deployment") {
		deps[d.Name] = d
	}
	require.Len(t, deps, 3)
	for _, name := range []string{"carto-carto-demo-workspace-api", "carto-carto-demo-workspace-subscriber"} {
		assert.Equal(t, "carto-demo-common-backend", deps[name].Spec.Template.Spec.ServiceAccountName, name)
	}
	assert.Equal(t, "carto-carto-demo-workspace-www", deps["carto-carto-demo-workspace-www"].Spec.Template.Spec.ServiceAccountName,
		"the front end runs as its own KSA")
	cms := helmRenderedObjects[corev1.ConfigMap](t, docs, "ConfigMap")
	require.Len(t, cms, 2)
	for _, cm := range cms {
		assert.Equal(t, kubeTestGSA, cm.Data[EnvWIServiceAccount], cm.Name)
	}
	assert.Len(t, helmRenderedObjects[policyv1.PodDisruptionBudget](t, docs, "PodDisruptionBudget"), 3)

	// Without Workload Identity: the backends read a key file and no connection.
	plain := helmRender(t, helmDemoChartDir(t), "carto", "carto", map[string]any{"googleCredentialsSecret": map[string]any{"name": "carto-google"}})
	for _, d := range helmRenderedObjects[appsv1.Deployment](t, plain, "Deployment") {
		if d.Name == "carto-carto-demo-workspace-www" {
			continue
		}
		_, ok := envValue(d.Spec.Template.Spec.Containers[0], "GOOGLE_APPLICATION_CREDENTIALS")
		assert.True(t, ok, d.Name)
	}
	for _, cm := range helmRenderedObjects[corev1.ConfigMap](t, plain, "ConfigMap") {
		assert.NotContains(t, cm.Data, EnvWIServiceAccount)
	}
}

// deployRBACClusterRoles reads the ClusterRoles of deploy/rbac/gkewi-worker.yaml.
func deployRBACClusterRoles(t *testing.T) map[string]rbacv1.ClusterRole {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "rbac", "gkewi-worker.yaml"))
	require.NoError(t, err)
	docs := map[string]string{}
	for i, doc := range strings.Split(string(raw), "\n---\n") {
		docs[fmt.Sprint(i)] = doc
	}
	roles := map[string]rbacv1.ClusterRole{}
	for _, r := range helmRenderedObjects[rbacv1.ClusterRole](t, docs, "ClusterRole") {
		roles[r.Name] = r
	}
	require.Len(t, roles, 2)
	return roles
}

func TestHelmWorkerChartRBACMatchesDeployRBAC(t *testing.T) {
	plain := deployRBACClusterRoles(t)
	chartDir := filepath.Join("..", "deploy", "charts", "gkewi-worker")
	docs := helmRender(t, chartDir, "gkewi-worker", "gkewi-system", map[string]any{
		"serviceAccount": map[string]any{"gcpServiceAccount": "gkewi@ops.iam.gserviceaccount.com"},
		"rbac":           map[string]any{"releaseNamespaces": []any{"carto", "carto-staging"}},
	})
	rendered := map[string]rbacv1.ClusterRole{}
	for _, r := range helmRenderedObjects[rbacv1.ClusterRole](t, docs, "ClusterRole") {
		rendered[r.Name] = r
	}
	require.Len(t, rendered, 2)
	assert.Equal(t, plain["gkewi-worker-cluster"].Rules, rendered["gkewi-worker-cluster"].Rules)
	assert.Equal(t, plain["gkewi-worker-release"].Rules, rendered["gkewi-worker-release"].Rules)

	bindings := helmRenderedObjects[rbacv1.RoleBinding](t, docs, "RoleBinding")
	var namespaces []string
	for _, b := range bindings {
		namespaces = append(namespaces, b.Namespace)
		assert.Equal(t, "gkewi-worker-release", b.RoleRef.Name)
		assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "gkewi-worker", Namespace: "gkewi-system"}}, b.Subjects)
	}
	assert.ElementsMatch(t, []string{"carto", "carto-staging"}, namespaces)
	crbs := helmRenderedObjects[rbacv1.ClusterRoleBinding](t, docs, "ClusterRoleBinding")
	require.Len(t, crbs, 1, "the release role is bound per namespace only")
	assert.Equal(t, "gkewi-worker-cluster", crbs[0].RoleRef.Name)

	sas := helmRenderedObjects[corev1.ServiceAccount](t, docs, "ServiceAccount")
	require.Len(t, sas, 1)
	assert.Equal(t, "gkewi@ops.iam.gserviceaccount.com", sas[0].Annotations[GSAAnnotation])
	deps := helmRenderedObjects[appsv1.Deployment](t, docs, "Deployment")
	require.Len(t, deps, 1)
	assert.Equal(t, "gkewi-worker", deps[0].Spec.Template.Spec.ServiceAccountName)

	// Without namespaces the release role is bound cluster-wide.
	all := helmRender(t, chartDir, "gkewi-worker", "gkewi-system", nil)
	assert.Len(t, helmRenderedObjects[rbacv1.ClusterRoleBinding](t, all, "ClusterRoleBinding"), 2)
	assert.Empty(t, helmRenderedObjects[rbacv1.RoleBinding](t, all, "RoleBinding"))
}

// A worker that dies mid-upgrade leaves the release pending; Helm then refuses
// every operation. A young pending revision is waited for, an old one is marked
// failed and the upgrade goes on.
func TestHelmRecoversReleaseLeftPending(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	ns := kubeTestNamespace(t, c.Client(), "helm-pending")
	h := newKubeTestHelm(t, c.RESTConfig(), func(hc *HelmConfig) { hc.Timeout = 30 * time.Second })
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	_, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)

	ac, pending := leavePendingUpgrade(t, h, ns, 10*time.Second)

	in.Values["workspaceApi"].(map[string]any)["replicaCount"] = 1
	_, err = h.HelmUpgradeInstall(ctx, in)
	appErr := requireKubeAppError(t, err, contract.ErrTypeHelmBusy, false)
	assert.Contains(t, appErr.Error(), "pending-upgrade")

	pending.Info.LastDeployed = time.Now().Add(-2 * time.Minute)
	require.NoError(t, ac.Releases.Update(pending))
	res, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.Equal(t, 3, res.Revision)
	assert.Equal(t, []string{"1:superseded", "2:failed", "3:deployed"}, helmHistory(t, c.RESTConfig(), ns, "carto"))
	requireDeploymentReady(t, c.Client(), ns, "carto-carto-demo-workspace-api", 1)
}

// gkewi's own interrupted operation is told apart by its lease: while the lease
// is renewed the release is busy, once it expired the pending revision is taken
// over at once (no wait for twice the Helm timeout), and a finished operation
// leaves no lease behind.
func TestHelmTakesOverAReleaseWhoseLeaseExpired(t *testing.T) {
	c := kubeTestCluster(t)
	ctx := kubeTestContext(t)
	ns := kubeTestNamespace(t, c.Client(), "helm-lease")
	h := newKubeTestHelm(t, c.RESTConfig(), func(hc *HelmConfig) { hc.Timeout = 30 * time.Second })
	in := helmTestInput(ns)
	in.Chart = helmDemoChartDir(t)
	_, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	leases := c.Client().CoordinationV1().Leases(ns)
	_, err = leases.Get(ctx, "gkewi-helm-carto", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "no lease after a finished operation: %v", err)

	// A dead worker's upgrade: revision 2 pending a moment ago, its lease held.
	leavePendingUpgrade(t, h, ns, 5*time.Second)
	renewed := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "gkewi-helm-carto", Namespace: ns},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("gkewi-onboard/x/12#1@dead-worker/1"),
			LeaseDurationSeconds: ptr.To(int32(20)), RenewTime: &renewed},
	}
	lease, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	require.NoError(t, err)

	in.Values["workspaceApi"].(map[string]any)["replicaCount"] = 1
	_, err = h.HelmUpgradeInstall(ctx, in)
	appErr := requireKubeAppError(t, err, contract.ErrTypeHelmBusy, false)
	assert.Contains(t, appErr.Error(), "held by gkewi-onboard/x/12#1@dead-worker/1 for ")
	assert.InDelta(t, 21*time.Second, appErr.NextRetryDelay(), float64(2*time.Second), "retried once the lease runs out")

	expired := metav1.NewMicroTime(time.Now().Add(-21 * time.Second))
	lease.Spec.RenewTime = &expired
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	require.NoError(t, err)
	res, err := h.HelmUpgradeInstall(ctx, in)
	require.NoError(t, err)
	assert.Equal(t, 3, res.Revision)
	assert.Equal(t, []string{"1:superseded", "2:failed", "3:deployed"}, helmHistory(t, c.RESTConfig(), ns, "carto"))
	_, err = leases.Get(ctx, "gkewi-helm-carto", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the lease is released: %v", err)
}

// leavePendingUpgrade records release carto's revision 2 as an upgrade
// interrupted age ago leaves it (pending-upgrade), and returns it with the
// Helm configuration that stores it.
func leavePendingUpgrade(t *testing.T, h *Helm, ns string, age time.Duration) (*action.Configuration, *release.Release) {
	t.Helper()
	ac, _, err := h.actionConfig(helmTestConn(t, h), ns)
	require.NoError(t, err)
	last, err := ac.Releases.Last("carto")
	require.NoError(t, err)
	pending := *last.(*release.Release)
	info := *pending.Info
	pending.Info = &info
	pending.Version = 2
	pending.Info.Status = rcommon.StatusPendingUpgrade
	pending.Info.LastDeployed = time.Now().Add(-age)
	require.NoError(t, ac.Releases.Create(&pending))
	return ac, &pending
}

// helmTestConn is the connection h uses for a request without a cluster.
func helmTestConn(t *testing.T, h *Helm) *clusterConn {
	t.Helper()
	conn, err := h.cfg.Clusters.conn(ClusterRef{})
	require.NoError(t, err)
	return conn
}
