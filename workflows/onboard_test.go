package workflows

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

func TestOnboardHappyPathWithBigQuery(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var attrs []temporal.SearchAttributes
	env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
		attrs = append(attrs, args.Get(0).(temporal.SearchAttributes))
	})
	var midway Status
	env.RegisterDelayedCallback(func() { midway = queryStatus(t, env) }, 30*time.Minute)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))

	// The chart creates and annotates the KSA: no annotation step of gkewi's own.
	// Support is asked as soon as the GSA exists; the cluster work runs while
	// support decides, and the grants after the binding run side by side.
	assertPhases(t, fake.names(),
		[]string{"RenderRelease"}, []string{"Preflight"}, []string{"CheckAccess"}, []string{"CheckIdentitySameness"},
		[]string{"EnsureServiceAccount"}, []string{"AddServiceAccountIAMMember"},
		[]string{"NotifySupport", "EnableService", "EnsureWorkloadPool", "ListNodePools", "SetNodePoolMetadata", "SetNodePoolMetadata"},
		[]string{"AddServiceAccountIAMMember"}, []string{"GrantBigQueryAccess", "HelmUpgradeInstall"},
		[]string{"VerifyRelease"}, []string{"VerifyAccess"}, []string{"DeleteSchedule"}, []string{"NotifySupport"},
	)
	assert.Equal(t, testStart, mustStep(t, midway, "node-pool/gpu-pool").EndedAt, "the node pools were done before the approval")
	// A grant without expiry drops a revocation schedule an earlier run may have left.
	assert.Equal(t, []any{activities.ScheduleRef{ScheduleID: "gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto"}},
		fake.inputs("DeleteSchedule"))

	cluster := activities.ClusterRef{Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster"}
	helmInput := activities.HelmInput{
		Cluster: cluster, Namespace: "carto", Release: "carto", Chart: "carto", RepoURL: "https://helm.carto.com",
		Values:   req.Helm.Values,
		GSAEmail: wantGSA,
		Connection: &activities.ConnectionValues{
			TempDataset: "carto_temp", BillingProject: "my-billing-project", ServiceAccount: wantGSA, ConnectionOwnerID: "auth0|owner",
		},
	}
	// Rendered before any change, with exactly the values Helm installs later.
	assert.Equal(t, []any{activities.RenderInput{Helm: helmInput}}, fake.inputs("RenderRelease"))
	assert.Equal(t, []any{activities.AccessInput{Cluster: cluster, Namespace: "carto", Release: "carto",
		Access: []activities.AccessRule{{Namespace: "carto", Resource: "configmaps", Verbs: []string{"create"}}}}}, fake.inputs("CheckAccess"))
	assert.Equal(t, []any{activities.PreflightInput{Cluster: cluster, Namespace: "carto", KSA: "carto-common-backend", Release: "carto"}}, fake.inputs("Preflight"))
	assert.Equal(t, []any{activities.EnableServiceInput{Project: "my-project", Service: "iamcredentials.googleapis.com"}}, fake.inputs("EnableService"))
	assert.Equal(t, []any{cluster}, fake.inputs("EnsureWorkloadPool"))
	assert.Equal(t, []any{
		activities.NodePoolInput{Cluster: cluster, NodePool: "default-pool"},
		activities.NodePoolInput{Cluster: cluster, NodePool: "gpu-pool"},
	}, fake.inputs("SetNodePoolMetadata"))
	assert.Equal(t, []any{activities.EnsureServiceAccountInput{
		Project: "my-project", AccountID: "carto-backend", DisplayName: "gkewi: carto/carto-common-backend on prod-cluster",
	}}, fake.inputs("EnsureServiceAccount"))
	assert.Equal(t, []any{
		activities.ServiceAccountIAMInput{ServiceAccountEmail: wantGSA, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + wantGSA},
		activities.ServiceAccountIAMInput{ServiceAccountEmail: wantGSA, Role: "roles/iam.workloadIdentityUser", Member: wantWIMember},
	}, fake.inputs("AddServiceAccountIAMMember"))
	assert.Empty(t, fake.inputs("AnnotateServiceAccount"))
	assert.Equal(t, []any{activities.BigQueryAccessInput{
		Member: "serviceAccount:" + wantGSA, DataProject: "my-data-project", BillingProject: "my-billing-project", TempDataset: "carto_temp",
	}}, fake.inputs("GrantBigQueryAccess"))
	assert.Equal(t, []any{helmInput}, fake.inputs("HelmUpgradeInstall"))
	assert.Equal(t, []any{activities.VerifyReleaseInput{Cluster: cluster, Namespace: "carto", Release: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA}},
		fake.inputs("VerifyRelease"))
	assert.Equal(t, []any{activities.VerifyInput{
		Cluster: cluster, Namespace: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA, BigQueryProject: "my-billing-project",
		// This run enabled the IAM Credentials API: SERVICE_DISABLED right after is "not yet".
		ServiceEnabledAt: testStart,
		// The activity walks again while the binding propagates.
		WaitAllowed: true,
	}}, fake.inputs("VerifyAccess"))

	notes := fake.inputs("NotifySupport")
	require.Len(t, notes, 2)
	request := notes[0].(activities.Notification)
	assert.Equal(t, "approval-request", request.Kind)
	// The policy's approvers the request names, then support.notify.
	assert.Equal(t, []string{alice, "Bob@Example.com", "support@example.com", "https://hooks.example.com/gkewi"}, request.Targets)
	assert.Equal(t, OnboardWorkflowID(req), request.WorkflowID)
	assert.NotEmpty(t, request.RunID)
	assert.Equal(t, wantGSA, request.GSAEmail)
	outcome := notes[1].(activities.Notification)
	assert.Equal(t, "outcome", outcome.Kind)
	assert.Equal(t, "onboarding completed: carto/carto-common-backend on prod-cluster can act as "+wantGSA, outcome.Outcome)

	assert.Equal(t, StateCompleted, res.State)
	assert.Equal(t, wantGSA, res.GSAEmail)
	assert.True(t, res.GSACreated)
	assert.Equal(t, 3, res.HelmRevision)
	assert.Equal(t, testStart.Add(time.Hour), res.CompletedAt)
	assert.True(t, res.ExpiresAt.IsZero())
	assert.Equal(t, DecisionApproved, res.Approval.Decision)
	assert.Equal(t, alice, res.Approval.Approver)
	assert.Equal(t, "SUP-42", res.Approval.Ticket)
	assert.Equal(t, RevokeRequest{
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto", Release: "carto",
		KSA: "carto-common-backend", GSAEmail: wantGSA, BigQuery: req.BigQuery, TokenExpiryWait: "30m",
	}, res.Revoke)
	require.NoError(t, res.Revoke.Validate())
	assert.Contains(t, res.Changed, "workload-identity-user")

	// Half an hour in, the run waits for support.
	assert.Equal(t, StateAwaitingApproval, midway.State)
	assert.Equal(t, StepRunning, mustStep(t, midway, "approval").State)
	assert.Equal(t, StepPending, mustStep(t, midway, "helm").State)
	assert.Equal(t, testStart.Add(168*time.Hour), midway.Approval.Deadline)
	assert.Equal(t, testStart.Add(24*time.Hour), midway.Approval.NextReminderAt)

	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	assert.Equal(t, wantGSA, s.GSAEmail)
	assert.Equal(t, 3, s.HelmRevision)
	var names []string
	for _, st := range s.Steps {
		names = append(names, st.Name)
		if st.Name == "annotate-ksa" {
			assert.Equal(t, StepSkipped, st.State)
			assert.Contains(t, st.Detail, "the chart creates carto/carto-common-backend with the annotation")
			continue
		}
		assert.Equalf(t, StepDone, st.State, "step %s", st.Name)
		if st.Name != "approval" {
			assert.Equalf(t, 1, st.Attempts, "step %s", st.Name)
		}
	}
	assert.Equal(t, "carto", s.Release)
	assert.Equal(t, "carto-common-backend", s.KSA, "the KSA the rendered release runs as")
	assert.Equal(t, []string{
		"grant-policy", "render-release", "preflight", "kubernetes-access", "identity-sameness", "service-account", "token-creator",
		"approval-request", "enable-iamcredentials", "workload-pool", "list-node-pools",
		"node-pool/default-pool", "node-pool/gpu-pool", "approval", "workload-identity-user", "annotate-ksa", "bigquery", "helm",
		"verify-release", "verify", "outcome-notification",
	}, names)
	assert.Equal(t, "approved by alice@example.com (ticket SUP-42)", mustStep(t, s, "approval").Detail)
	assert.Equal(t, "allowed: ksa-token, sts-exchange, generate-access-token, bigquery-call", mustStep(t, s, "verify").Detail)
	assert.Equal(t, viaSignal, s.Approval.Via)
	assert.Equal(t, testStart.Add(time.Hour), s.Approval.DecidedAt)

	// Search attributes follow the run.
	final := temporal.NewSearchAttributes()
	states := []string{}
	for _, a := range attrs {
		for k, v := range a.GetUntypedValues() {
			final = mergeAttr(final, k, v)
			if k.GetName() == SearchAttrState {
				states = append(states, v.(string))
			}
		}
	}
	assert.Equal(t, []string{"running", "awaiting-approval", "approved", "completed"}, states)
	assertKeyword(t, final, SearchAttrProject, "my-project")
	assertKeyword(t, final, SearchAttrCluster, "prod-cluster")
	assertKeyword(t, final, SearchAttrNamespace, "carto")
	assertKeyword(t, final, SearchAttrKSA, "carto-common-backend")
	assertKeyword(t, final, SearchAttrGSA, wantGSA)
}

func mergeAttr(s temporal.SearchAttributes, k temporal.SearchAttributeKey, v any) temporal.SearchAttributes {
	updates := []temporal.SearchAttributeUpdate{}
	for key, val := range s.GetUntypedValues() {
		if key.GetName() != k.GetName() {
			updates = append(updates, keywordOrTime(key, val))
		}
	}
	updates = append(updates, keywordOrTime(k, v))
	return temporal.NewSearchAttributes(updates...)
}

func keywordOrTime(k temporal.SearchAttributeKey, v any) temporal.SearchAttributeUpdate {
	if at, ok := v.(time.Time); ok {
		return temporal.NewSearchAttributeKeyTime(k.GetName()).ValueSet(at)
	}
	return temporal.NewSearchAttributeKeyKeyword(k.GetName()).ValueSet(v.(string))
}

func assertKeyword(t *testing.T, s temporal.SearchAttributes, name, want string) {
	t.Helper()
	got, ok := s.GetKeyword(temporal.NewSearchAttributeKeyKeyword(name))
	assert.Truef(t, ok, "search attribute %s not set", name)
	assert.Equalf(t, want, got, "search attribute %s", name)
}

// Who annotates the KSA follows the rendered release: an existing KSA the chart
// only uses is annotated before Helm (it must exist), one the chart creates
// without the annotation once Helm has created it; gkewi never creates one.
func TestOnboardAnnotatesOnlyWhatTheChartDoesNot(t *testing.T) {
	for _, tc := range []struct {
		source string
		ksa    string
		order  []string
	}{
		// The existing KSA is annotated beside BigQuery and Helm; the chart's
		// only after Helm, with BigQuery beside both.
		{activities.KSAExisting, "carto-backend", []string{"AnnotateServiceAccount", "GrantBigQueryAccess", "HelmUpgradeInstall", "VerifyRelease"}},
		{activities.KSAFromChartUnannotated, "", []string{"HelmUpgradeInstall", "AnnotateServiceAccount", "VerifyRelease"}},
	} {
		t.Run(tc.source, func(t *testing.T) {
			fake := newFakeCloud()
			fake.ksaSource = tc.source
			req := validRequest()
			req.KSA = tc.ksa
			env := newOnboardEnv(t, fake, req)
			signalAt(env, time.Hour, approve(alice))
			env.ExecuteWorkflow(Onboard, req)
			require.NoError(t, env.GetWorkflowError())

			var after []string
			for _, n := range fake.names() {
				if slices.Contains(tc.order, n) {
					after = append(after, n)
				}
			}
			if tc.source == activities.KSAExisting {
				assertPhases(t, after, tc.order[:3], tc.order[3:])
			} else {
				assert.Equal(t, tc.order, after)
				assert.Less(t, slices.Index(fake.names(), "GrantBigQueryAccess"), slices.Index(fake.names(), "VerifyRelease"))
			}
			want := tc.ksa
			if want == "" {
				want = renderedKSA
			}
			cluster := activities.ClusterRef{Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster"}
			assert.Equal(t, []any{activities.AnnotateInput{Cluster: cluster, Namespace: "carto", KSA: want, GSAEmail: wantGSA, MustExist: true}},
				fake.inputs("AnnotateServiceAccount"), "no Helm ownership, never created")
			assert.Equal(t, tc.ksa, fake.inputs("RenderRelease")[0].(activities.RenderInput).KSA, "the request's KSA is checked by the rendering")
		})
	}
}

// A release that cannot serve the grant is refused by the rendering, before
// anything is changed or anyone is asked.
func TestOnboardRefusedByTheRenderingChangesNothing(t *testing.T) {
	fake := newFakeCloud()
	fake.failNext("RenderRelease", temporal.NewNonRetryableApplicationError(
		`render: release carto/carto (chart carto 1.0.0): no workload runs as ksa "carto-api"`, contract.ErrTypeReleaseIdentity, nil))
	req := validRequest()
	req.KSA = "carto-api"
	env := newOnboardEnv(t, fake, req)
	env.ExecuteWorkflow(Onboard, req)

	require.Error(t, env.GetWorkflowError())
	assert.Equal(t, contract.ErrTypeReleaseIdentity, workflowAppError(t, env).Type())
	assert.Equal(t, []string{"RenderRelease"}, fake.names(), "support was not asked, so not told")
	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.Contains(t, s.Error, `no workload runs as ksa "carto-api"`)
}

// A missing Kubernetes permission stops the onboarding at its check, before the
// first change.
func TestOnboardMissingAccessChangesNothing(t *testing.T) {
	fake := newFakeCloud()
	fake.failNext("CheckAccess", temporal.NewNonRetryableApplicationError(
		"access check: missing configmaps in namespace carto (create)", contract.ErrTypeAccessMissing, nil))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	env.ExecuteWorkflow(Onboard, req)

	require.Error(t, env.GetWorkflowError())
	assert.Equal(t, []string{"RenderRelease", "Preflight", "CheckAccess"}, fake.names())
	assert.Equal(t, StepFailed, mustStep(t, queryStatus(t, env), "kubernetes-access").State)
}
