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

func revokeRequest() RevokeRequest {
	return RevokeRequest{
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto",
		KSA: "carto-common-backend", GSAEmail: wantGSA, RemoveAnnotation: true,
		BigQuery: validRequest().BigQuery, Reason: "contract ended",
	}
}

func TestRevokeWaitsForTokensThenProvesAccessGone(t *testing.T) {
	fake := newFakeCloud()
	// IAM still lets the first check through.
	fake.verify = func(n int) activities.VerifyResult {
		if n == 1 {
			return allowed()
		}
		return deniedAt("generate-access-token")
	}
	req := revokeRequest()
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
		"RemoveServiceAccountIAMMember", "RevokeBigQueryAccess", "RemoveServiceAccountAnnotation", "VerifyAccess", "VerifyAccess",
	}, fake.names())
	assert.Equal(t, []any{activities.ServiceAccountIAMInput{
		ServiceAccountEmail: wantGSA, Role: "roles/iam.workloadIdentityUser", Member: wantWIMember,
	}}, fake.inputs("RemoveServiceAccountIAMMember"))
	assert.Equal(t, []any{activities.BigQueryAccessInput{
		Member: "serviceAccount:" + wantGSA, DataProject: "my-data-project", BillingProject: "my-billing-project", TempDataset: "carto_temp",
	}}, fake.inputs("RevokeBigQueryAccess"))
	assert.Equal(t, []any{activities.AnnotateInput{Namespace: "carto", KSA: "carto-common-backend", GSAEmail: wantGSA}},
		fake.inputs("RemoveServiceAccountAnnotation"))
	assert.Equal(t, "my-billing-project", fake.inputs("VerifyAccess")[0].(activities.VerifyInput).BigQueryProject)

	// The 30m default wait, then one 15s pause for IAM propagation.
	end := testStart.Add(30*time.Minute + 15*time.Second)
	assert.Equal(t, end, env.Now().UTC())
	assert.Equal(t, StateRevoked, res.State)
	assert.Equal(t, end, res.AccessEndedAt)
	assert.Equal(t, "generate-access-token", res.DeniedStage)

	assert.Equal(t, StateWaitingTokenExpiry, waiting.State)
	assert.Equal(t, testStart.Add(30*time.Minute), waiting.WaitUntil)
	wait := mustStep(t, waiting, "token-expiry-wait")
	assert.Equal(t, StepRunning, wait.State)
	assert.Equal(t, "until 2026-06-01T08:30:00Z", wait.Detail)

	assert.Equal(t, []string{"running", "waiting-token-expiry", "running", "revoked"}, states)
	s := queryStatus(t, env)
	assert.Equal(t, StateRevoked, s.State)
	assert.Equal(t, end, s.AccessEndedAt)
	assert.Equal(t, StepDone, mustStep(t, s, "token-expiry-wait").State)
	v := mustStep(t, s, "verify-revoked")
	assert.Equal(t, StepDone, v.State)
	assert.Equal(t, 2, v.Attempts)
	assert.Equal(t, "denied at generate-access-token: Permission 'iam.serviceAccounts.getAccessToken' denied", v.Detail)
}

func TestRevokeWithoutWaitOrExtras(t *testing.T) {
	fake := newFakeCloud()
	fake.verify = func(int) activities.VerifyResult { return deniedAt("sts-exchange") }
	req := revokeRequest()
	req.BigQuery, req.RemoveAnnotation, req.TokenExpiryWait = nil, false, "0s"
	env := newEnv(t, fake, "revoke-from-a-schedule-2026-06-01T08:00:00Z")

	env.ExecuteWorkflow(Revoke, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, []string{"RemoveServiceAccountIAMMember", "VerifyAccess"}, fake.names())
	assert.Equal(t, testStart, env.Now().UTC())
	s := queryStatus(t, env)
	for _, name := range []string{"revoke-bigquery", "remove-annotation", "token-expiry-wait"} {
		assert.Equalf(t, StepSkipped, mustStep(t, s, name).State, "step %s", name)
	}
	assert.Equal(t, "my-project", fake.inputs("VerifyAccess")[0].(activities.VerifyInput).BigQueryProject)
}

func TestRevokeFailsWhenAccessStaysAllowed(t *testing.T) {
	fake := newFakeCloud()
	req := revokeRequest()
	req.TokenExpiryWait = "1m"
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
	assert.Equal(t, StepFailed, mustStep(t, s, "verify-revoked").State)
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
