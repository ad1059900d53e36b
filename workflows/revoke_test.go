package workflows

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

func revokeRequest() RevokeRequest {
	return RevokeRequest{
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto", Release: "carto",
		KSA: "carto-common-backend", GSAEmail: wantGSA, RemoveAnnotation: true,
		BigQuery: validRequest().BigQuery, Reason: "contract ended",
	}
}

func TestRevokeWaitsForTokensThenProvesAccessGone(t *testing.T) {
	fake := newFakeCloud()
	// IAM still lets the first walk through (the verifier is handed a 5-minute
	// token), then refuses.
	fake.verify = func(n int) activities.VerifyResult {
		if n == 1 {
			return allowedUntil(testStart.Add(5 * time.Minute))
		}
		return deniedAt("generate-access-token")
	}
	req := revokeRequest()
	fake.schedules[RevocationScheduleID(req)] = activities.ScheduleStatus{Exists: true, NextActionAt: testStart.Add(48 * time.Hour)}
	env := newEnv(t, fake, RevokeWorkflowID(req))
	var waiting Status
	env.RegisterDelayedCallback(func() { waiting = queryStatus(t, env) }, 10*time.Minute)
	var states []string
	env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
		if s, ok := args.Get(0).(temporal.SearchAttributes).GetKeyword(temporal.NewSearchAttributeKeyKeyword(SearchAttrState)); ok {
			states = append(states, s)
		}
	})

	env.ExecuteWorkflow(Revoke, req)

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))

	assert.Equal(t, []string{
		"DescribeWorkflowRun", "RemoveServiceAccountIAMMember", "RevokeBigQueryAccess", "RemoveServiceAccountAnnotation",
		"VerifyAccess", "VerifyAccess", "VerifyAccess", "DeleteSchedule",
	}, fake.names())
	assert.Equal(t, []any{activities.DescribeWorkflowRunInput{
		WorkflowID: "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto", KeywordAttributes: []string{"GkewiState"},
	}}, fake.inputs("DescribeWorkflowRun"))
	assert.Equal(t, []any{activities.ServiceAccountIAMInput{
		ServiceAccountEmail: wantGSA, Role: "roles/iam.workloadIdentityUser", Member: wantWIMember,
	}}, fake.inputs("RemoveServiceAccountIAMMember"))
	assert.Equal(t, []any{activities.BigQueryAccessInput{
		Member: "serviceAccount:" + wantGSA, DataProject: "my-data-project", BillingProject: "my-billing-project", TempDataset: "carto_temp",
	}}, fake.inputs("RevokeBigQueryAccess"))
	assert.Equal(t, []any{activities.AnnotateInput{Cluster: activities.ClusterRef{Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster"}, Namespace: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA}},
		fake.inputs("RemoveServiceAccountAnnotation"))
	assert.Equal(t, "my-billing-project", fake.inputs("VerifyAccess")[0].(activities.VerifyInput).BigQueryProject)
	// Revoking early removes the pending revocation schedule.
	assert.Equal(t, []any{activities.ScheduleRef{ScheduleID: "gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto"}},
		fake.inputs("DeleteSchedule"))
	assert.Empty(t, fake.schedules)

	// Refused 15s after the removal (one pause for IAM propagation); then the
	// 30m default wait for the workload's tokens, counted from the refusal, which
	// outlasts the verifier's own 5-minute token.
	refused := testStart.Add(15 * time.Second)
	end := refused.Add(30 * time.Minute)
	assert.Equal(t, end, env.Now().UTC())
	assert.Equal(t, StateRevoked, res.State)
	assert.Equal(t, refused, res.RefusedAt)
	assert.Equal(t, end, res.TokensValidUntil)
	assert.Equal(t, end, res.AccessEndedAt)
	assert.Equal(t, "generate-access-token", res.DeniedStage)
	assert.Empty(t, res.Warnings)

	assert.Equal(t, StateWaitingTokenExpiry, waiting.State)
	assert.Equal(t, end, waiting.WaitUntil)
	assert.Equal(t, refused, waiting.RefusedAt)
	assert.True(t, waiting.AccessEndedAt.IsZero(), "not ended while tokens may be in use")
	wait := mustStep(t, waiting, "token-expiry-wait")
	assert.Equal(t, StepRunning, wait.State)
	assert.Equal(t, "until 2026-06-01T08:30:15Z", wait.Detail)

	assert.Equal(t, []string{"running", "waiting-token-expiry", "running", "revoked"}, states)
	s := queryStatus(t, env)
	assert.Equal(t, StateRevoked, s.State)
	assert.Equal(t, end, s.AccessEndedAt)
	var names []string
	for _, st := range s.Steps {
		names = append(names, st.Name)
		assert.Equalf(t, StepDone, st.State, "step %s", st.Name)
	}
	assert.Equal(t, []string{
		"onboarding", "remove-workload-identity-user", "revoke-bigquery", "remove-annotation",
		"verify-refused", "token-expiry-wait", "verify-revoked", "delete-revocation-schedule",
	}, names)
	assert.Equal(t, "no onboarding gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto", mustStep(t, s, "onboarding").Detail)
	v := mustStep(t, s, "verify-refused")
	assert.Equal(t, 2, v.Attempts)
	assert.Equal(t, "denied at generate-access-token: Permission 'iam.serviceAccounts.getAccessToken' denied", v.Detail)
	assert.Equal(t, "tokens handed out before 2026-06-01T08:00:15Z expired by 2026-06-01T08:30:15Z (tokenExpiryWait 30m)", mustStep(t, s, "token-expiry-wait").Detail)
	final := mustStep(t, s, "verify-revoked")
	assert.Equal(t, 1, final.Attempts)
	assert.Equal(t, end, final.EndedAt)
	assert.Equal(t, "denied at generate-access-token: Permission 'iam.serviceAccounts.getAccessToken' denied; no token handed out before 2026-06-01T08:00:15Z is valid after 2026-06-01T08:30:15Z", final.Detail)
	assert.Equal(t, "deleted schedule gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto", mustStep(t, s, "delete-revocation-schedule").Detail)
}

func TestRevokeWaitShorterThanATokenHandedOutWaitsForTheToken(t *testing.T) {
	// The verifier was handed a token valid for an hour while the removal
	// propagated; a 1m tokenExpiryWait cannot prove that token expired, so the
	// run waits for it instead of recording an end that has not happened.
	fake := newFakeCloud()
	tokenExpiry := testStart.Add(time.Hour)
	fake.verify = func(n int) activities.VerifyResult {
		if n == 1 {
			return allowedUntil(tokenExpiry)
		}
		return deniedAt("generate-access-token")
	}
	req := revokeRequest()
	req.TokenExpiryWait = "1m"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, testStart.Add(15*time.Second), res.RefusedAt)
	assert.Equal(t, tokenExpiry, res.TokensValidUntil)
	assert.Equal(t, tokenExpiry, res.AccessEndedAt)
	assert.Equal(t, tokenExpiry, env.Now().UTC(), "the revocation is recorded only once the token expired")
	assert.Equal(t, []string{"token-expiry-wait: a token handed out before the refusal is valid until 2026-06-01T09:00:00Z, past tokenExpiryWait 1m: waiting for it to expire"}, res.Warnings)
	assert.Equal(t, 3, fake.count("VerifyAccess"))
}

func TestRevokeWithoutWaitRecordsTheRefusal(t *testing.T) {
	fake := newFakeCloud()
	fake.verify = func(int) activities.VerifyResult { return deniedAt("sts-exchange") }
	req := revokeRequest()
	req.BigQuery, req.RemoveAnnotation, req.TokenExpiryWait = nil, false, "0s"
	env := newEnv(t, fake, "revoke-from-a-schedule-2026-06-01T08:00:00Z")

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, []string{"DescribeWorkflowRun", "RemoveServiceAccountIAMMember", "VerifyAccess", "VerifyAccess", "DeleteSchedule"}, fake.names())
	assert.Equal(t, testStart, env.Now().UTC())
	assert.Equal(t, testStart, res.AccessEndedAt)
	assert.Equal(t, "sts-exchange", res.DeniedStage)
	s := queryStatus(t, env)
	for _, name := range []string{"revoke-bigquery", "remove-annotation", "token-expiry-wait"} {
		assert.Equalf(t, StepSkipped, mustStep(t, s, name).State, "step %s", name)
	}
	assert.Equal(t, "tokenExpiryWait is 0s and no token handed out before the refusal is still valid", mustStep(t, s, "token-expiry-wait").Detail)
	assert.Equal(t, "no schedule gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto", mustStep(t, s, "delete-revocation-schedule").Detail)
	assert.Empty(t, fake.inputs("VerifyAccess")[0].(activities.VerifyInput).BigQueryProject, "no BigQuery call without a connection")
}

func TestRevokeDoesNotTakeABigQueryDenialForARefusal(t *testing.T) {
	// BigQuery refusing (its roles went first) while IAM still hands out GSA
	// tokens is not a revocation.
	fake := newFakeCloud()
	fake.verify = func(n int) activities.VerifyResult {
		if n == 1 {
			res := deniedAt("bigquery-call")
			res.TokenExpiresAt = testStart.Add(5 * time.Minute)
			return res
		}
		return deniedAt("generate-access-token")
	}
	req := revokeRequest()
	req.TokenExpiryWait = "0s"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, testStart.Add(15*time.Second), res.RefusedAt, "the BigQuery denial did not count")
	assert.Equal(t, testStart.Add(5*time.Minute), res.AccessEndedAt, "the GSA token it got had to expire")
	assert.Equal(t, "generate-access-token", res.DeniedStage)
}

func TestRevokeNoticesAccessComingBackDuringTheWait(t *testing.T) {
	// Refused, then during the wait someone grants access again for a moment:
	// the final walk gets a token, and the run waits for that one too.
	fake := newFakeCloud()
	regranted := testStart.Add(30*time.Minute + 15*time.Minute) // the token from the final walk
	fake.verify = func(n int) activities.VerifyResult {
		if n == 2 {
			return allowedUntil(regranted)
		}
		return deniedAt("generate-access-token")
	}
	req := revokeRequest()
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, testStart, res.RefusedAt)
	assert.Equal(t, regranted, res.AccessEndedAt)
	assert.Equal(t, regranted, env.Now().UTC())
	assert.Equal(t, 4, fake.count("VerifyAccess"), "refused, allowed, refused, and refused again after that token expired")
	assert.Contains(t, res.Warnings, "verify-revoked: the token chain handed out a token after the wait, valid until 2026-06-01T08:45:00Z: waiting for it and checking again")
}

func TestRevokeFailsWhenAccessStaysAllowed(t *testing.T) {
	fake := newFakeCloud()
	req := revokeRequest()
	req.TokenExpiryWait = "1m"
	fake.schedules[RevocationScheduleID(req)] = activities.ScheduleStatus{Exists: true}
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeAccessStillAllowed, appErr.Type())
	assert.Contains(t, appErr.Message(), "access still allowed after 15m0s (")
	assert.Contains(t, appErr.Message(), "carto/carto-common-backend can still get tokens for "+wantGSA)
	assert.GreaterOrEqual(t, fake.count("VerifyAccess"), 5)
	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.True(t, s.AccessEndedAt.IsZero())
	assert.Equal(t, StepFailed, mustStep(t, s, "verify-refused").State)
	assert.Equal(t, StepPending, mustStep(t, s, "verify-revoked").State)
	assert.Zero(t, fake.count("DeleteSchedule"), "a failed revocation keeps the schedule, which tries again at the expiry")
}

func TestRevokeCancelsAnOnboardingAwaitingApproval(t *testing.T) {
	fake := newFakeCloud()
	onboardID := "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto"
	fake.onboarding = &activities.WorkflowRunDescription{Found: true, Run: activities.WorkflowRun{
		WorkflowID: onboardID, RunID: "run-1", WorkflowType: OnboardWorkflowName, Status: activities.WorkflowStatusRunning,
		Keywords: map[string]string{SearchAttrState: "awaiting-approval"},
	}}
	fake.canceled = canceledOnboarding(t, onboardID, "run-1", Status{
		State: StateCanceled, GSAEmail: wantGSA, GSACreated: true,
		Steps: []Step{
			{Name: "service-account", State: StepDone}, {Name: "approval", State: StepFailed},
			{Name: "workload-identity-user", State: StepPending}, {Name: "delete-service-account", State: StepDone},
		},
	})
	req := revokeRequest()
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, StateOnboardingCanceled, res.State)
	assert.Equal(t, "run-1", res.CanceledOnboarding)
	assert.True(t, res.AccessEndedAt.IsZero())
	assert.Equal(t, []string{"DescribeWorkflowRun", "CancelWorkflowRun", "DescribeWorkflowRun", "DeleteSchedule"}, fake.names(),
		"nothing to remove: the GSA the onboarding created is gone")
	assert.Equal(t, []any{activities.CancelWorkflowRunInput{WorkflowID: onboardID, RunID: "run-1"}}, fake.inputs("CancelWorkflowRun"))
	assert.Equal(t, activities.DescribeWorkflowRunInput{WorkflowID: onboardID, RunID: "run-1", Query: "status"}, fake.inputs("DescribeWorkflowRun")[1])
	assert.Equal(t, testStart, env.Now().UTC(), "no token wait: nothing was ever granted")

	s := queryStatus(t, env)
	assert.Equal(t, StateOnboardingCanceled, s.State)
	st := mustStep(t, s, "onboarding")
	assert.Equal(t, StepDone, st.State)
	assert.True(t, st.Changed)
	assert.Equal(t, "canceled onboarding run run-1, which was awaiting-approval; it had not reached the grant and deleted "+wantGSA+", which it had created", st.Detail)
	assert.Equal(t, StepSkipped, mustStep(t, s, "remove-workload-identity-user").State)
}

func TestRevokeOfACanceledOnboardingOnAReusedGSARevokesToo(t *testing.T) {
	// The onboarding reused an existing GSA, which an earlier grant of the same
	// KSA may rest on: after the cancellation the revocation goes on.
	fake := newFakeCloud()
	fake.verify = func(int) activities.VerifyResult { return deniedAt("generate-access-token") }
	onboardID := "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto"
	fake.onboarding = &activities.WorkflowRunDescription{Found: true, Run: activities.WorkflowRun{WorkflowID: onboardID, RunID: "run-2", Status: activities.WorkflowStatusRunning}}
	fake.canceled = canceledOnboarding(t, onboardID, "run-2", Status{
		State: StateCanceled, GSAEmail: wantGSA,
		Steps: []Step{{Name: "workload-identity-user", State: StepPending}},
	})
	req := revokeRequest()
	req.TokenExpiryWait = "0s"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, StateRevoked, res.State)
	assert.Equal(t, "run-2", res.CanceledOnboarding)
	assert.Equal(t, 1, fake.count("RemoveServiceAccountIAMMember"))
}

func TestRevokeGoesOnWhenTheOnboardingCannotBeRead(t *testing.T) {
	fake := newFakeCloud().failNext("DescribeWorkflowRun",
		temporal.NewNonRetryableApplicationError("describe workflow: permission denied by Temporal", contract.ErrTypePermissionDenied, nil))
	fake.verify = func(int) activities.VerifyResult { return deniedAt("generate-access-token") }
	req := revokeRequest()
	req.TokenExpiryWait = "0s"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	var res RevokeResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, StateRevoked, res.State)
	assert.Equal(t, []string{"onboarding: could not look at the onboarding gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto (describe workflow: permission denied by Temporal); revoking anyway"}, res.Warnings)
}

func TestRevokeOfADeletedGSAFindsNothingToRemove(t *testing.T) {
	fake := newFakeCloud().failNext("RemoveServiceAccountIAMMember",
		temporal.NewNonRetryableApplicationError("service account "+wantGSA+" not found", contract.ErrTypeNotFound, nil))
	fake.verify = func(int) activities.VerifyResult { return deniedAt("generate-access-token") }
	req := revokeRequest()
	req.BigQuery, req.RemoveAnnotation, req.TokenExpiryWait = nil, false, "0s"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	st := mustStep(t, queryStatus(t, env), "remove-workload-identity-user")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, "service account "+wantGSA+" does not exist: no member left to remove", st.Detail)
}

func TestRevokeRefusesAnInvalidRequest(t *testing.T) {
	fake := newFakeCloud()
	req := revokeRequest()
	req.TokenExpiryWait = "24h"
	env := newEnv(t, fake, RevokeWorkflowID(req))

	env.ExecuteWorkflow(Revoke, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeInvalidRequest, appErr.Type())
	assert.Equal(t, `invalid request: tokenExpiryWait "24h": must be between 0s and 12h`, appErr.Message())
	assert.Empty(t, fake.names())
}

func TestOnboardResultRevokesTheSameGrant(t *testing.T) {
	// The revoke request an onboarding returns removes exactly the member it added.
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))
	env.ExecuteWorkflow(Onboard, req)
	var onboarded OnboardResult
	require.NoError(t, env.GetWorkflowResult(&onboarded))

	revokeFake := newFakeCloud()
	revokeFake.verify = func(int) activities.VerifyResult { return deniedAt("generate-access-token") }
	renv := newEnv(t, revokeFake, RevokeWorkflowID(onboarded.Revoke))
	renv.ExecuteWorkflow(Revoke, onboarded.Revoke)
	require.NoError(t, renv.GetWorkflowError())

	added := fake.inputs("AddServiceAccountIAMMember")[1]
	assert.Equal(t, []any{added}, revokeFake.inputs("RemoveServiceAccountIAMMember"))
	assert.Equal(t, fake.inputs("GrantBigQueryAccess"), revokeFake.inputs("RevokeBigQueryAccess"))
}

// allowedUntil is a token chain that went through, handing out a GSA token
// valid until expiry.
func allowedUntil(expiry time.Time) activities.VerifyResult {
	res := allowed()
	res.TokenExpiresAt = expiry
	return res
}

// canceledOnboarding is how DescribeWorkflowRun sees an onboarding after its
// cancellation, its status query included.
func canceledOnboarding(t *testing.T, id, runID string, s Status) *activities.WorkflowRunDescription {
	t.Helper()
	raw, err := json.Marshal(s)
	require.NoError(t, err)
	return &activities.WorkflowRunDescription{Found: true, QueryResult: raw, Run: activities.WorkflowRun{
		WorkflowID: id, RunID: runID, WorkflowType: OnboardWorkflowName, Status: activities.WorkflowStatusCanceled,
	}}
}
