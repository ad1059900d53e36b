package workflows

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

func TestRetryableErrorThenSuccessKeepsGoing(t *testing.T) {
	fake := newFakeCloud().failNext("EnableService",
		temporal.NewApplicationError("enable iamcredentials.googleapis.com: Google API unavailable (HTTP 503), will retry", contract.ErrTypeUnavailable))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, 2, fake.count("EnableService"))
	st := mustStep(t, queryStatus(t, env), "enable-iamcredentials")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.Equal(t, "enable iamcredentials.googleapis.com: Google API unavailable (HTTP 503), will retry", st.LastError)
	assert.Equal(t, testStart, st.StartedAt)
	assert.Equal(t, testStart.Add(10*time.Second), st.EndedAt, "retried after the initial interval")
}

func TestNonRetryableErrorFailsTheWorkflow(t *testing.T) {
	denied := "create service account carto-backend in project my-project: permission denied: the worker's Google identity lacks iam.serviceAccounts.create"
	fake := newFakeCloud().failNext("EnsureServiceAccount",
		errors.New("connection reset by peer"),
		temporal.NewNonRetryableApplicationError(denied, contract.ErrTypePermissionDenied, nil))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, "step service-account failed after 2 attempt(s): "+denied, appErr.Message())
	assert.Equal(t, 2, fake.count("EnsureServiceAccount"))
	assert.Empty(t, fake.notifications(), "support was never involved")
	assert.Zero(t, fake.count("AddServiceAccountIAMMember"))

	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.Equal(t, appErr.Message(), s.Error)
	st := mustStep(t, s, "service-account")
	assert.Equal(t, StepFailed, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.Equal(t, denied, st.LastError)
	// The GSA comes first: the cluster was not touched.
	assert.Equal(t, StepPending, mustStep(t, s, "workload-pool").State)
	assert.Zero(t, fake.count("EnsureWorkloadPool"))
	assert.Equal(t, StepPending, mustStep(t, s, "token-creator").State)
}

func TestErrorTypeNeedingAFixIsNotRetried(t *testing.T) {
	// Retryable as sent, but of a type that retrying cannot fix.
	fake := newFakeCloud().failNext("EnsureWorkloadPool",
		temporal.NewApplicationError("update cluster: permission denied", contract.ErrTypePermissionDenied))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	// It failed while support was deciding: the wait ended at once, what this
	// run created went, and support was told.
	assert.Equal(t, "step workload-pool failed after 1 attempt(s): update cluster: permission denied; deleted service account "+wantGSA+", created by this run", appErr.Message())
	assert.Equal(t, 1, fake.count("EnsureWorkloadPool"))
	assert.Equal(t, testStart, env.Now().UTC(), "no wait for a decision that cannot be used")
	assert.Equal(t, []string{"approval-request", "outcome"}, fake.notifications())
	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.Equal(t, StepFailed, mustStep(t, s, "approval").State)
	assert.Equal(t, DecisionPending, s.Approval.Decision)
}

func TestRetriesStopAtMaximumAttempts(t *testing.T) {
	fake := newFakeCloud()
	for range 5 {
		fake.failNext("Preflight", errors.New("dial tcp 10.0.0.1:443: i/o timeout"))
	}
	req := validRequest()
	env := newOnboardEnv(t, fake, req)

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeStepFailed, appErr.Type())
	assert.Equal(t, "step preflight failed after 5 attempt(s): dial tcp 10.0.0.1:443: i/o timeout", appErr.Message())
	// 5s, 10s, 20s, 40s between the attempts.
	assert.Equal(t, testStart.Add(75*time.Second), env.Now().UTC())
}

func TestClusterBusyIsWaitedOut(t *testing.T) {
	fake := newFakeCloud().failNext("EnsureWorkloadPool", busy(), busy(), busy())
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var during Status
	env.RegisterDelayedCallback(func() { during = queryStatus(t, env) }, 40*time.Second)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, 4, fake.count("EnsureWorkloadPool"))
	assert.Equal(t, 2, fake.count("SetNodePoolMetadata"))

	st := mustStep(t, during, "workload-pool")
	assert.Equal(t, StepRunning, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.Contains(t, st.LastError, "the cluster is busy")

	st = mustStep(t, queryStatus(t, env), "workload-pool")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, 4, st.Attempts)
	// 30s, 45s and 67.5s of backoff.
	assert.Equal(t, testStart.Add(142500*time.Millisecond), st.EndedAt)
}

// A step lost with its worker (no heartbeat) runs again a second later, not
// after the step's backoff (30s for cluster steps); other timeouts back off.
func TestStepLostWithItsWorkerIsRunAgainAtOnce(t *testing.T) {
	fake := newFakeCloud().
		failNext("EnsureWorkloadPool", temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil)).
		failNext("SetNodePoolMetadata", temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_START_TO_CLOSE, nil))
	req := validRequest()
	req.NodePools = []string{"pool-a"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	pool := mustStep(t, s, "workload-pool")
	assert.Equal(t, 2, pool.Attempts)
	assert.Equal(t, testStart.Add(lostWorkerRetryDelay), pool.EndedAt, "run again after %s", lostWorkerRetryDelay)
	np := mustStep(t, s, "node-pool/pool-a")
	assert.Equal(t, 2, np.Attempts)
	assert.Equal(t, pool.EndedAt.Add(30*time.Second), np.EndedAt, "a start-to-close timeout takes the step's backoff")
}

func TestActivityAskedRetryDelayIsHonoured(t *testing.T) {
	fake := newFakeCloud().failNext("SetNodePoolMetadata", temporal.NewApplicationErrorWithOptions(
		"node pool busy", contract.ErrTypeClusterBusy, temporal.ApplicationErrorOptions{NextRetryDelay: 7 * time.Minute}))
	req := validRequest()
	req.NodePools = []string{"pool-a"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	assert.Equal(t, testStart.Add(7*time.Minute), mustStep(t, s, "node-pool/pool-a").EndedAt)
	assert.Zero(t, fake.count("ListNodePools"), "pools named in the request are not listed")
	assert.Equal(t, StepSkipped, mustStep(t, s, "list-node-pools").State)
}

func TestWrongWorkflowIDIsRefused(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newEnv(t, fake, "onboard-carto-by-hand")

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeWrongWorkflowID, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, `workflow ID "onboard-carto-by-hand" does not match the request: start Onboard for this grant with workflow ID "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto"`, appErr.Message())
	assert.Empty(t, fake.names())
}

func TestInvalidRequestFailsBeforeAnyStep(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.GSA.AccountID = "ab"
	req.Support.Approvers = nil
	env := newOnboardEnv(t, fake, req)

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeInvalidRequest, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, `invalid request: gsa.accountId "ab": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`, appErr.Message())
	var problems []FieldError
	require.NoError(t, appErr.Details(&problems))
	assert.Equal(t, []FieldError{
		{Field: "gsa.accountId", Value: "ab", Rule: ruleGoogleName},
	}, problems)
	assert.Empty(t, fake.names())
	assert.Equal(t, StateFailed, queryStatus(t, env).State)
}

func TestExpiryInThePastIsRefusedAtStart(t *testing.T) {
	req := validRequest()
	req.Expiry = &ExpirySpec{At: "2026-05-31T08:00:00Z"}
	env := newOnboardEnv(t, newFakeCloud(), req)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, `invalid request: expiry.at "2026-05-31T08:00:00Z": must be in the future (now 2026-06-01T08:00:00Z)`, workflowAppError(t, env).Message())
}

func TestRerunWithNothingToChangeCompletes(t *testing.T) {
	fake := newFakeCloud()
	fake.changed, fake.saCreated = false, false
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, StateCompleted, res.State)
	assert.False(t, res.GSACreated)
	assert.Empty(t, res.Changed)
	s := queryStatus(t, env)
	assert.Equal(t, "reusing "+wantGSA, mustStep(t, s, "service-account").Detail)
	assert.Equal(t, "already as wanted", mustStep(t, s, "workload-identity-user").Detail)
	assert.Equal(t, "revision 3 (deployed), values unchanged", mustStep(t, s, "helm").Detail)
	for _, st := range s.Steps {
		if st.Name == stepAnnotate {
			continue // the chart annotates its KSA
		}
		assert.Equalf(t, StepDone, st.State, "step %s", st.Name)
		assert.Falsef(t, st.Changed, "step %s", st.Name)
	}
}

func TestVerifyWaitsForIAMPropagation(t *testing.T) {
	fake := newFakeCloud()
	fake.verify = func(n int) activities.VerifyResult {
		if n < 3 {
			return deniedAt("generate-access-token")
		}
		return allowed()
	}
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	st := mustStep(t, queryStatus(t, env), "verify")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, 3, st.Attempts)
	assert.Equal(t, "denied at generate-access-token: Permission 'iam.serviceAccounts.getAccessToken' denied", st.LastError)
	assert.Equal(t, testStart.Add(time.Hour+45*time.Second), st.EndedAt)
}

func TestVerifyErrorAfterManyDenialsIsStillRetried(t *testing.T) {
	// Retry budgets count per execution round, not over the whole verification.
	fake := newFakeCloud()
	fake.verify = func(n int) activities.VerifyResult {
		if n < 7 {
			return deniedAt("generate-access-token")
		}
		return allowed()
	}
	fake.verifyErr = func(n int) error {
		if n == 7 {
			return errors.New("sts.googleapis.com: connection reset by peer")
		}
		return nil
	}
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	st := mustStep(t, queryStatus(t, env), "verify")
	assert.Equal(t, 8, st.Attempts)
	assert.Equal(t, "sts.googleapis.com: connection reset by peer", st.LastError)
}

func TestInvalidReleaseIsNotAlsoBlamedOnTheDefaultKSA(t *testing.T) {
	req := validRequest()
	req.Helm.Release = "Carto"
	env := newOnboardEnv(t, newFakeCloud(), req)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, `invalid request: helm.release "Carto": must be a DNS-1123 label of at most 53 characters: lowercase letters, digits and hyphens, starting and ending with a letter or digit`,
		workflowAppError(t, env).Message())
}

func TestVerifyStillDeniedFailsNamingTheStage(t *testing.T) {
	fake := newFakeCloud()
	fake.verify = func(int) activities.VerifyResult { return deniedAt("sts-exchange") }
	req := validRequest()
	req.BigQuery = nil
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeAccessNotGranted, appErr.Type())
	n := fake.count("VerifyAccess")
	assert.Equal(t, "access still denied at stage sts-exchange after 15m0s ("+strconv.Itoa(n)+" attempts): Permission 'iam.serviceAccounts.getAccessToken' denied", appErr.Message())
	assert.GreaterOrEqual(t, n, 5)
	elapsed := env.Now().Sub(testStart.Add(time.Hour))
	assert.LessOrEqual(t, elapsed, 15*time.Minute)
	assert.Greater(t, elapsed, 10*time.Minute)
	s := queryStatus(t, env)
	assert.Equal(t, StepFailed, mustStep(t, s, "verify").State)
	assert.Equal(t, StepSkipped, mustStep(t, s, "bigquery").State)
	assert.Empty(t, fake.inputs("VerifyAccess")[0].(activities.VerifyInput).BigQueryProject, "no BigQuery call without a connection")
	assert.Equal(t, []string{"approval-request", "outcome"}, fake.notifications())
}

func TestExpiryTTLIsCountedFromCompletion(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Expiry = &ExpirySpec{TTL: "720h"}
	env := newOnboardEnv(t, fake, req)
	var expiry []time.Time
	env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
		if at, ok := args.Get(0).(temporal.SearchAttributes).GetTime(temporal.NewSearchAttributeKeyTime(SearchAttrExpiry)); ok {
			expiry = append(expiry, at)
		}
	})
	signalAt(env, 2*time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))
	want := testStart.Add(2*time.Hour + 720*time.Hour)
	assert.Equal(t, want, res.ExpiresAt)
	assert.Equal(t, []time.Time{want}, expiry)
	s := queryStatus(t, env)
	assert.Equal(t, want, s.ExpiresAt)
	st := mustStep(t, s, "schedule-revocation")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, "Revoke starts at 2026-07-01T10:00:00Z (schedule gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto)", st.Detail)
	in := fake.inputs("SetRevocationTime")
	require.Len(t, in, 1)
	assert.Equal(t, want, in[0].(activities.RevocationScheduleInput).At)
}

func TestExpiryAtPassedDuringTheWaitGrantsNothing(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Expiry = &ExpirySpec{At: "2026-06-02T08:00:00Z"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, 48*time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeExpiredBeforeGrant, appErr.Type())
	assert.Equal(t, "expiry.at 2026-06-02T08:00:00Z passed before the grant; nothing was granted; deleted service account "+wantGSA+", created by this run", appErr.Message())
	assert.Equal(t, 1, fake.count("AddServiceAccountIAMMember"))
}

// On an Autopilot cluster the workload pool is already set and GKE manages the
// node pools: nothing is changed there, and the status says why.
func TestAutopilotClusterSkipsTheNodePools(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(map[bool]string{false: "listed", true: "named in the request"}[named], func(t *testing.T) {
			fake := newFakeCloud()
			fake.autopilot = true
			req := validRequest()
			if named {
				req.NodePools = []string{"pool-1"}
			}
			env := newOnboardEnv(t, fake, req)
			signalAt(env, time.Hour, approve(alice))

			env.ExecuteWorkflow(Onboard, req)

			require.NoError(t, env.GetWorkflowError())
			assert.Equal(t, 1, fake.count("EnsureWorkloadPool"))
			assert.Zero(t, fake.count("ListNodePools"), "Autopilot answers node pool calls with 400")
			assert.Zero(t, fake.count("SetNodePoolMetadata"))
			s := queryStatus(t, env)
			assert.Equal(t, StateCompleted, s.State)
			wp := mustStep(t, s, stepWorkloadPool)
			assert.Equal(t, StepDone, wp.State)
			assert.False(t, wp.Changed)
			list := mustStep(t, s, stepListNodePools)
			assert.Equal(t, StepSkipped, list.State)
			assert.Contains(t, list.Detail, "Autopilot cluster")
			if named {
				assert.Equal(t, StepSkipped, mustStep(t, s, stepNodePoolPrefix+"pool-1").State)
			}
			for _, st := range s.Steps {
				assert.NotEqual(t, StepPending, st.State, "step %s left pending", st.Name)
			}
		})
	}
}

// Verification is told when this run enabled the IAM Credentials API, and
// only then: a SERVICE_DISABLED answer is "not yet" only right after enabling.
func TestVerificationKnowsWhenTheRunEnabledTheAPI(t *testing.T) {
	for _, changed := range []bool{true, false} {
		fake := newFakeCloud()
		fake.changed = changed
		req := validRequest()
		env := newOnboardEnv(t, fake, req)
		signalAt(env, time.Hour, approve(alice))
		env.ExecuteWorkflow(Onboard, req)
		require.NoError(t, env.GetWorkflowError())
		in := fake.inputs("VerifyAccess")
		require.Len(t, in, 1)
		if changed {
			assert.Equal(t, testStart, in[0].(activities.VerifyInput).ServiceEnabledAt)
		} else {
			assert.True(t, in[0].(activities.VerifyInput).ServiceEnabledAt.IsZero())
		}
	}
}
