package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
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

	assert.Equal(t, []string{
		"Preflight", "CheckIdentitySameness", "EnableService", "SetWorkloadPool",
		"ListNodePools", "SetNodePoolMetadata", "SetNodePoolMetadata",
		"EnsureServiceAccount", "AddServiceAccountIAMMember", "NotifySupport",
		"AddServiceAccountIAMMember", "AnnotateServiceAccount", "GrantBigQueryAccess",
		"HelmUpgradeInstall", "VerifyAccess", "DeleteSchedule", "NotifySupport",
	}, fake.names())
	// A grant without expiry drops a revocation schedule an earlier run may have left.
	assert.Equal(t, []any{activities.ScheduleRef{ScheduleID: "gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto-common-backend"}},
		fake.inputs("DeleteSchedule"))

	cluster := activities.ClusterRef{Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster"}
	assert.Equal(t, []any{activities.PreflightInput{Cluster: cluster, Namespace: "carto", KSA: "carto-common-backend", Release: "carto"}}, fake.inputs("Preflight"))
	assert.Equal(t, []any{activities.EnableServiceInput{Project: "my-project", Service: "iamcredentials.googleapis.com"}}, fake.inputs("EnableService"))
	assert.Equal(t, []any{cluster}, fake.inputs("SetWorkloadPool"))
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
	assert.Equal(t, []any{activities.AnnotateInput{Cluster: cluster, Namespace: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA, Release: "carto"}},
		fake.inputs("AnnotateServiceAccount"))
	assert.Equal(t, []any{activities.BigQueryAccessInput{
		Member: "serviceAccount:" + wantGSA, DataProject: "my-data-project", BillingProject: "my-billing-project", TempDataset: "carto_temp",
	}}, fake.inputs("GrantBigQueryAccess"))
	assert.Equal(t, []any{activities.HelmInput{
		Cluster: cluster, Namespace: "carto", Release: "carto", Chart: "carto", RepoURL: "https://helm.carto.com",
		Values:   req.Helm.Values,
		GSAEmail: wantGSA,
		Connection: &activities.ConnectionValues{
			TempDataset: "carto_temp", BillingProject: "my-billing-project", ServiceAccount: wantGSA, ConnectionOwnerID: "auth0|owner",
		},
	}}, fake.inputs("HelmUpgradeInstall"))
	assert.Equal(t, []any{activities.VerifyInput{
		Cluster: cluster, Namespace: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA, BigQueryProject: "my-billing-project",
	}}, fake.inputs("VerifyAccess"))

	notes := fake.inputs("NotifySupport")
	require.Len(t, notes, 2)
	request := notes[0].(activities.Notification)
	assert.Equal(t, "approval-request", request.Kind)
	assert.Equal(t, []string{"support@example.com", "https://hooks.example.com/gkewi"}, request.Targets)
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
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto",
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
		assert.Equalf(t, StepDone, st.State, "step %s", st.Name)
		if st.Name != "approval" {
			assert.Equalf(t, 1, st.Attempts, "step %s", st.Name)
		}
	}
	assert.Equal(t, []string{
		"preflight", "identity-sameness", "enable-iamcredentials", "workload-pool", "list-node-pools",
		"node-pool/default-pool", "node-pool/gpu-pool", "service-account", "token-creator",
		"approval-request", "approval", "workload-identity-user", "annotate-ksa", "bigquery", "helm",
		"verify", "outcome-notification",
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
