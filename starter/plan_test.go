package starter

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

const planGSA = "carto-prod@acme-prod.iam.gserviceaccount.com"

// partlyOnboarded: the API is on, the cluster has its pool, one of two node
// pools is switched, the GSA exists and may mint its own tokens; nothing after
// the approval is done. The release runs as an existing KSA.
func partlyOnboarded() onboardState {
	return onboardState{
		req: workflows.OnboardRequest{
			Project: "acme-prod", Location: "europe-west1", Cluster: "carto",
			GSA:       workflows.GSASpec{AccountID: "carto-prod"},
			Namespace: "carto", KSA: "carto-common-backend",
			Helm: workflows.HelmSpec{Release: "prod", Chart: "carto", RepoURL: "https://charts.example/carto", Version: "1.2.3"},
		},
		gsa:            planGSA,
		release:        activities.RenderResult{KSA: "carto-common-backend", KSASource: activities.KSAExisting, Detail: "chart carto 1.2.3: 2 workload(s) run as carto/carto-common-backend"},
		iamCredentials: "ENABLED",
		workloadPool:   "acme-prod.svc.id.goog",
		nodePools: []activities.NodePoolMode{
			{Name: "default-pool", Mode: "GKE_METADATA"},
			{Name: "highmem", Mode: "GCE_METADATA"},
		},
		sa: activities.ServiceAccountState{Exists: true, Policy: &activities.Policy{Bindings: []*activities.Binding{
			{Role: roleTokenCreator, Members: []string{"serviceAccount:" + planGSA}},
			// A conditional binding is not the grant.
			{Role: roleWorkloadIdentityUser, Members: []string{"serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]"},
				Condition: &activities.Condition{Expression: "request.time < timestamp('2020-01-01T00:00:00Z')"}},
		}}},
		ksaExists: true,
		helm: activities.ReleaseState{
			Deployed: true, Revision: 3, NamespaceExists: true, ChartName: "carto", ChartVersion: "1.2.3",
			Values: map[string]any{"commonBackendServiceAccount": map[string]any{
				"enableGCPWorkloadIdentity": true,
				"annotations":               map[string]any{activities.GSAAnnotation: planGSA},
			}},
		},
	}
}

// commandsOf are the plan's command lines (heredoc bodies included), without
// the comments.
func commandsOf(out string) []string {
	var cmds []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

func TestPlanPrintsOnlyWhatIsMissing(t *testing.T) {
	steps, err := onboardSteps(partlyOnboarded())
	require.NoError(t, err)
	var b bytes.Buffer
	writePlan(&b, nil, steps, "nothing")
	assert.Equal(t, `
# node-pool/highmem: node pool highmem has workload metadata mode GCE_METADATA
gcloud container node-pools update highmem --project acme-prod --cluster carto --location europe-west1 --workload-metadata GKE_METADATA

# after support's approval
# workload-identity-user: carto/carto-common-backend may not act as carto-prod@acme-prod.iam.gserviceaccount.com yet (roles/iam.workloadIdentityUser)
gcloud iam service-accounts add-iam-policy-binding carto-prod@acme-prod.iam.gserviceaccount.com --role roles/iam.workloadIdentityUser --member 'serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]'

# after support's approval
# annotate-ksa: carto/carto-common-backend is annotated (none)
kubectl annotate serviceaccount carto-common-backend -n carto iam.gke.io/gcp-service-account=carto-prod@acme-prod.iam.gserviceaccount.com --overwrite

# after support's approval
# helm: release carto/prod revision 3 has other values or another chart than carto 1.2.3 with the grant's values
helm upgrade --install prod carto --namespace carto --repo https://charts.example/carto --version 1.2.3 --wait -f - <<'GKEWI_VALUES'
commonBackendServiceAccount:
  annotations:
    iam.gke.io/gcp-service-account: carto-prod@acme-prod.iam.gserviceaccount.com
  enableGCPWorkloadIdentity: true
GKEWI_VALUES
`, b.String())
}

func TestPlanFromNothingFollowsOnboardsOrder(t *testing.T) {
	st := partlyOnboarded()
	st.iamCredentials, st.workloadPool = "DISABLED", ""
	st.nodePools[0].Mode = "GCE_METADATA"
	st.sa = activities.ServiceAccountState{}
	st.ksaExists = false
	st.helm = activities.ReleaseState{Values: st.helm.Values}
	st.req.BigQuery = &workflows.BigQuerySpec{DataProject: "carto-data", BillingProject: "carto-billing", TempDataset: "tmp_prod"}
	st.bigQuery = &activities.BigQueryState{
		TempDatasetProject: "carto-billing", TempDataset: "tmp_prod", TempDatasetLocation: "US",
		Grants: []activities.BigQueryGrantState{
			{Role: "roles/bigquery.dataEditor", Project: "carto-data"},
			{Role: "roles/bigquery.jobUser", Project: "carto-billing", Held: true},
			{Role: "roles/bigquery.dataEditor", DatasetProject: "carto-billing", Dataset: "tmp_prod"},
		},
	}
	steps, err := onboardSteps(st)
	require.NoError(t, err)
	var names []string
	for _, s := range steps {
		names = append(names, s.name)
		assert.Equal(t, s.afterApproval, !slices.Contains([]string{"enable-iamcredentials", "workload-pool", "node-pool/default-pool", "node-pool/highmem", "service-account", "token-creator"}, s.name), s.name)
	}
	assert.Equal(t, []string{"enable-iamcredentials", "workload-pool", "node-pool/default-pool", "node-pool/highmem",
		"service-account", "token-creator", "workload-identity-user", "annotate-ksa", "bigquery", "helm"}, names)

	var b bytes.Buffer
	writePlan(&b, onboardHeader(st), steps, "nothing")
	cmds := commandsOf(b.String())
	assert.Contains(t, cmds, "gcloud services enable iamcredentials.googleapis.com --project acme-prod")
	assert.Contains(t, cmds, "gcloud container clusters update carto --project acme-prod --location europe-west1 --workload-pool acme-prod.svc.id.goog")
	assert.Contains(t, cmds, "gcloud iam service-accounts create carto-prod --project acme-prod --display-name 'gkewi: carto/carto-common-backend on carto'")
	assert.Contains(t, cmds, "gcloud iam service-accounts add-iam-policy-binding "+planGSA+" --role roles/iam.serviceAccountTokenCreator --member serviceAccount:"+planGSA)
	assert.Contains(t, cmds, "bq --project_id carto-billing mk --dataset --location US carto-billing:tmp_prod")
	assert.Contains(t, cmds, "gcloud projects add-iam-policy-binding carto-data --role roles/bigquery.dataEditor --member serviceAccount:"+planGSA+" --condition None")
	assert.Contains(t, cmds, "bq --project_id carto-billing --location US query --nouse_legacy_sql 'GRANT `roles/bigquery.dataEditor` ON SCHEMA `carto-billing.tmp_prod` TO \"serviceAccount:"+planGSA+"\"'")
	assert.NotContains(t, b.String(), "roles/bigquery.jobUser --member", "a held role prints nothing")
	assert.Contains(t, b.String(), "--create-namespace", "the namespace does not exist")
}

func TestPlanOfACompleteGrantIsEmpty(t *testing.T) {
	st := partlyOnboarded()
	st.nodePools[1].Mode = "GKE_METADATA"
	st.sa.Policy.AddMember(roleWorkloadIdentityUser, "serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]")
	st.ksaAnnotation = planGSA
	st.helm.UpToDate = true
	steps, err := onboardSteps(st)
	require.NoError(t, err)
	assert.Empty(t, steps)

	// A chart that creates the KSA without the annotation: annotated after Helm.
	st.release.KSASource = activities.KSAFromChartUnannotated
	st.ksaAnnotation = ""
	st.helm.UpToDate = false
	steps, err = onboardSteps(st)
	require.NoError(t, err)
	require.Len(t, steps, 2)
	assert.Equal(t, "helm", steps[0].name)
	assert.Equal(t, "annotate-ksa", steps[1].name)

	// The chart annotates it itself: no kubectl.
	st.release.KSASource = activities.KSAFromChart
	steps, err = onboardSteps(st)
	require.NoError(t, err)
	require.Len(t, steps, 1)
	assert.Equal(t, "helm", steps[0].name)
}

func TestPlanOnAutopilotLeavesTheNodePoolsToGKE(t *testing.T) {
	st := partlyOnboarded()
	st.autopilot, st.nodePools = true, nil
	steps, err := onboardSteps(st)
	require.NoError(t, err)
	for _, s := range steps {
		assert.NotContains(t, s.name, "node-pool/")
	}

	st.workloadPool = "other.svc.id.goog"
	_, err = onboardSteps(st)
	assert.ErrorContains(t, err, "GKE manages it on Autopilot clusters")
}

func TestPlanRefusesWhatOnboardRefuses(t *testing.T) {
	st := partlyOnboarded()
	st.sa.Disabled = true
	_, err := onboardSteps(st)
	assert.ErrorContains(t, err, "is disabled")

	st = partlyOnboarded()
	st.req.GSA = workflows.GSASpec{Email: planGSA}
	st.sa = activities.ServiceAccountState{}
	_, err = onboardSteps(st)
	assert.ErrorContains(t, err, "does not exist")
}

func TestPlanRevocation(t *testing.T) {
	member := "serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]"
	st := revokeState{
		req: workflows.RevokeRequest{Project: "acme-prod", Location: "europe-west1", Cluster: "carto", Namespace: "carto",
			Release: "prod", KSA: "carto-common-backend", GSAEmail: planGSA, RemoveAnnotation: true},
		sa: activities.ServiceAccountState{Exists: true, Policy: &activities.Policy{Bindings: []*activities.Binding{
			{Role: roleWorkloadIdentityUser, Members: []string{member}},
		}}},
		ksaExists: true, ksaAnnotation: planGSA, kubeContext: "gke_acme-prod_europe-west1_carto",
		bigQuery: &activities.BigQueryState{Grants: []activities.BigQueryGrantState{
			{Role: "roles/bigquery.dataEditor", DatasetProject: "carto-data", Dataset: "analytics", DatasetLocation: "EU", Held: true},
			{Role: "roles/bigquery.jobUser", Project: "carto-billing"},
		}},
	}
	var b bytes.Buffer
	writePlan(&b, nil, revokeSteps(st), "nothing")
	assert.Equal(t, []string{
		"gcloud iam service-accounts remove-iam-policy-binding " + planGSA + " --role roles/iam.workloadIdentityUser --member 'serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]'",
		"bq --project_id carto-data --location EU query --nouse_legacy_sql 'REVOKE `roles/bigquery.dataEditor` ON SCHEMA `carto-data.analytics` FROM \"serviceAccount:" + planGSA + "\"'",
		"kubectl annotate serviceaccount carto-common-backend -n carto iam.gke.io/gcp-service-account- --context gke_acme-prod_europe-west1_carto",
	}, commandsOf(b.String()))
	assert.NotContains(t, b.String(), approvalMarker, "a revocation needs no approval")

	// Already revoked; the annotation names another grant's GSA.
	st.sa.Policy.RemoveMember(roleWorkloadIdentityUser, member)
	st.bigQuery.Grants[0].Held = false
	st.ksaAnnotation = "other@acme-prod.iam.gserviceaccount.com"
	assert.Empty(t, revokeSteps(st))
}

func TestShellWordQuotesOnlyWhatNeedsIt(t *testing.T) {
	assert.Equal(t, "serviceAccount:a@b.iam.gserviceaccount.com", text.ShellWord("serviceAccount:a@b.iam.gserviceaccount.com"))
	assert.Equal(t, "'P.svc.id.goog[ns/ksa]'", text.ShellWord("P.svc.id.goog[ns/ksa]"))
	assert.Equal(t, `'it'\''s'`, text.ShellWord("it's"))
	assert.Equal(t, "''", text.ShellWord(""))
}

func TestPlanUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"plan"}, "-f request.yaml is required"},
		{[]string{"plan", "-f", "testdata/onboard.yaml", "--remove-annotation"}, "--remove-annotation goes with --revoke"},
		{[]string{"plan", "-f", "testdata/onboard-invalid.yaml"}, "is not a valid onboarding request"},
		{[]string{"plan", "-f", "testdata/onboard.yaml", "--gcp-endpoint", "iam"}, `--gcp-endpoint "iam": want API=URL`},
		{[]string{"plan", "--revoke", "-f", "testdata/onboard.yaml"}, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, nil, "", tc.args...)
			assert.Equal(t, ExitUsage, r.code, "%s", r.stderr)
			assert.Contains(t, r.stderr, tc.want)
		})
	}
}
