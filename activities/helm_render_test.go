package activities

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/contract"
)

func legacyChartDir(t *testing.T) string {
	t.Helper()
	return repoChartDir(t, "sandbox", "charts", "carto-legacy")
}

func renderOffline(t *testing.T, chart, release, ksa string, values map[string]any) (RenderResult, error) {
	t.Helper()
	h := NewHelm(HelmConfig{CacheDir: t.TempDir()})
	in := RenderInput{KSA: ksa, Helm: HelmInput{
		Namespace: "carto-prod", Release: release, Chart: chart, Values: values, GSAEmail: kubeTestGSA,
		Connection: &ConnectionValues{TempDataset: "carto_temp", BillingProject: "acme-billing", ConnectionOwnerID: "auth0|5f0c"},
	}}
	return h.RenderOffline(context.Background(), in)
}

// The backend KSA is named after the chart, not the release: a release called
// "prod" still runs its backends as carto-demo-common-backend.
func TestRenderTakesTheKSATheWorkloadsRunAs(t *testing.T) {
	res, err := renderOffline(t, helmDemoChartDir(t), "prod", "", nil)
	require.NoError(t, err)
	assert.Equal(t, "carto-demo-common-backend", res.KSA)
	assert.Equal(t, KSAFromChart, res.KSASource, "the chart creates it with the annotation from the values")
	var names []string
	for _, w := range res.Workloads {
		names = append(names, w.String())
	}
	assert.ElementsMatch(t, []string{"deployment/prod-carto-demo-workspace-api", "deployment/prod-carto-demo-workspace-subscriber"}, names)
	assert.Equal(t, []string{"prod-carto-demo-workspace-www"}, res.OtherKSAs, "the front end's own KSA gets no identity")
	assert.Equal(t, ConnectionValuesKeys, res.ConnectionInterface)
	assert.Contains(t, res.Detail, "carto-prod/carto-demo-common-backend")

	// The access covers every kind the release renders, with Helm's verbs, and
	// no KSA writes of gkewi's own (the chart makes and annotates it).
	have := map[string][]string{}
	for _, r := range res.Access {
		have[r.Namespace+" "+r.Group+"/"+r.Resource] = r.Verbs
	}
	for _, k := range []string{"/configmaps", "/services", "/serviceaccounts", "apps/deployments", "policy/poddisruptionbudgets"} {
		verbs, ok := have["carto-prod "+k]
		require.True(t, ok, "access for %s: %v", k, have)
		assert.ElementsMatch(t, helmVerbs, verbs, k)
	}
	assert.Equal(t, []string{"list"}, have["carto-prod apps/replicasets"])
	assert.Equal(t, []string{"get"}, have[" /nodes"], "cluster-scoped: the pods' nodes")
	assert.ElementsMatch(t, helmVerbs, have["carto-prod /serviceaccounts"], "Helm's verbs only: gkewi adds none")
}

func TestRenderRefusesAKSANoWorkloadRunsAs(t *testing.T) {
	_, err := renderOffline(t, helmDemoChartDir(t), "prod", "prod-common-backend", nil)
	assertKubeAppError(t, err, contract.ErrTypeReleaseIdentity, true)
	assert.Contains(t, err.Error(), `no workload runs as ksa "prod-common-backend"`)
	assert.Contains(t, err.Error(), "carto-demo-common-backend (deployment/prod-carto-demo-workspace-api, deployment/prod-carto-demo-workspace-subscriber)")

	// A KSA the workloads do run as is taken, even the front end's own.
	res, err := renderOffline(t, helmDemoChartDir(t), "prod", "prod-carto-demo-workspace-www", nil)
	require.NoError(t, err)
	assert.Equal(t, KSAFromChartUnannotated, res.KSASource)
}

func TestRenderExistingKSA(t *testing.T) {
	values := map[string]any{"commonBackendServiceAccount": map[string]any{"create": false, "name": "carto-backend"}}
	res, err := renderOffline(t, helmDemoChartDir(t), "prod", "", values)
	require.NoError(t, err)
	assert.Equal(t, "carto-backend", res.KSA)
	assert.Equal(t, KSAExisting, res.KSASource)
	var saVerbs []string
	for _, r := range res.Access {
		if r.Namespace == "carto-prod" && r.Group == "" && r.Resource == "serviceaccounts" {
			saVerbs = r.Verbs
		}
	}
	assert.Subset(t, saVerbs, []string{"get", "patch"}, "gkewi annotates the existing KSA")
}

// Hooks run and go: the upgrade check Job runs as "default" but is no
// candidate, while its kind still needs access.
func TestRenderLeavesHooksOutOfTheCandidates(t *testing.T) {
	values := map[string]any{
		"upgradeCheck":                map[string]any{"enabled": true},
		"commonBackendServiceAccount": map[string]any{"create": false, "name": "carto-backend"},
	}
	res, err := renderOffline(t, helmDemoChartDir(t), "prod", "", values)
	require.NoError(t, err)
	assert.Equal(t, "carto-backend", res.KSA)
	assert.True(t, slices.ContainsFunc(res.Access, func(r AccessRule) bool { return r.Group == "batch" && r.Resource == "jobs" }))
}

func TestRenderRefusesSeveralCandidates(t *testing.T) {
	// Both KSAs are outside the chart: which one is the grant's is not for gkewi to guess.
	values := map[string]any{
		"commonBackendServiceAccount": map[string]any{"create": false, "name": "carto-backend"},
		"workspaceWww":                map[string]any{"serviceAccount": map[string]any{"create": false, "name": "www"}},
	}
	_, err := renderOffline(t, helmDemoChartDir(t), "prod", "", values)
	assertKubeAppError(t, err, contract.ErrTypeReleaseIdentity, true)
	assert.Contains(t, err.Error(), "name the one to grant with ksa: carto-backend (")
	assert.Contains(t, err.Error(), "www (deployment/prod-carto-demo-workspace-www)")
}

func TestRenderLegacyInterface(t *testing.T) {
	res, err := renderOffline(t, legacyChartDir(t), "prod", "", nil)
	require.NoError(t, err)
	assert.Equal(t, "carto-legacy-common-backend", res.KSA)
	assert.Equal(t, ConnectionExtraEnvVars, res.ConnectionInterface)
}

func TestHelmValuesFollowTheChartsInterface(t *testing.T) {
	in := HelmInput{GSAEmail: kubeTestGSA, Connection: &ConnectionValues{TempDataset: "carto_temp", BillingProject: "acme-billing", ConnectionOwnerID: "auth0|5f0c"}}
	keys := map[string]any{"appConfigValues": map[string]any{"workloadIdentityConnection": map[string]any{"enabled": false}}}
	got, err := HelmValues(in, keys)
	require.NoError(t, err)
	var want map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(`
commonBackendServiceAccount:
  enableGCPWorkloadIdentity: true
  annotations: {iam.gke.io/gcp-service-account: `+kubeTestGSA+`}
appConfigValues:
  workloadIdentityConnection:
    enabled: true
    workflowsTempLocation: acme-billing.carto_temp
    billingProject: acme-billing
    serviceAccountEmail: `+kubeTestGSA+`
    connectionOwner: auth0|5f0c
`), &want))
	assert.True(t, sameJSON(want, got), "got %#v", got)
	assert.NotContains(t, got, "workspaceApi", "no extraEnvVars for a chart with the keys")

	legacy, err := HelmValues(in, map[string]any{"workspaceApi": map[string]any{}})
	require.NoError(t, err)
	assert.NotContains(t, legacy, "appConfigValues")
	assert.Contains(t, legacy, "workspaceApi")
}

func TestAccessManifests(t *testing.T) {
	rules := []AccessRule{
		{Namespace: "carto-prod", Group: "", Resource: "configmaps", Verbs: []string{"patch", "create"}},
		{Group: "", Resource: "nodes", Verbs: []string{"get"}},
	}
	out, err := AccessManifests(rules, "carto-prod", "prod", SubjectOf("system:serviceaccount:gkewi-system:gkewi-worker"))
	require.NoError(t, err)
	docs := splitYAML(out)
	require.Len(t, docs, 4)
	var role rbacv1.ClusterRole
	require.NoError(t, yaml.Unmarshal([]byte(docs[0]), &role))
	assert.Equal(t, "ClusterRole", role.Kind)
	assert.Equal(t, []string{"nodes"}, role.Rules[0].Resources)
	var binding rbacv1.RoleBinding
	require.NoError(t, yaml.Unmarshal([]byte(docs[3]), &binding))
	assert.Equal(t, "RoleBinding", binding.Kind)
	assert.Equal(t, "carto-prod", binding.Namespace)
	assert.Equal(t, rbacv1.Subject{Kind: "ServiceAccount", Namespace: "gkewi-system", Name: "gkewi-worker"}, binding.Subjects[0])
	var r rbacv1.Role
	require.NoError(t, yaml.Unmarshal([]byte(docs[2]), &r))
	assert.Equal(t, []string{"create", "patch"}, r.Rules[0].Verbs, "sorted")
	assert.Equal(t, rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "alice"}, SubjectOf("alice"))
}

func splitYAML(s string) []string {
	var out []string
	for _, d := range strings.Split(s, "---\n") {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}
