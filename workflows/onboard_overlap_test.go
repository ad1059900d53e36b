package workflows

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

// busyCluster makes the first node pool update wait out n busy answers
// (30 s, 45 s, 67 s, ... of backoff).
func busyCluster(n int) *fakeCloud {
	fake := newFakeCloud()
	for range n {
		fake.failNext("SetNodePoolMetadata", busy())
	}
	return fake
}

func TestSupportIsAskedBeforeTheNodePoolsAreDone(t *testing.T) {
	fake := busyCluster(4)
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var midway Status
	env.RegisterDelayedCallback(func() { midway = queryStatus(t, env) }, 30*time.Second)
	signalAt(env, time.Minute, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	// Side by side: support is waited for while the node pool is retried.
	assert.Equal(t, StateAwaitingApproval, midway.State)
	assert.Equal(t, StepRunning, mustStep(t, midway, "approval").State)
	assert.Equal(t, StepRunning, mustStep(t, midway, "node-pool/default-pool").State)
	assert.Equal(t, StepDone, mustStep(t, midway, "approval-request").State)
	assert.Equal(t, StepDone, mustStep(t, midway, "enable-iamcredentials").State)

	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	asked := mustStep(t, s, "approval-request").EndedAt
	pools := mustStep(t, s, "node-pool/gpu-pool").EndedAt
	assert.Equal(t, testStart, asked, "support is asked as soon as the GSA exists")
	assert.True(t, pools.After(testStart.Add(4*time.Minute)), "the node pools took %s", pools.Sub(testStart))
	assert.Equal(t, testStart.Add(time.Minute), s.Approval.DecidedAt)
	// The binding needs only the approval and the workload pool; the rollout
	// waits for the node pools too.
	assert.Equal(t, s.Approval.DecidedAt, mustStep(t, s, "workload-identity-user").StartedAt)
	assert.Equal(t, s.Approval.DecidedAt, mustStep(t, s, "bigquery").StartedAt)
	assert.Equal(t, pools, mustStep(t, s, "helm").StartedAt)
	assert.Equal(t, 6, fake.count("SetNodePoolMetadata"), "four busy answers, then both pools")
}

func TestRejectionStopsTheClusterWorkAndUndoesWhatTheRunCreated(t *testing.T) {
	fake := busyCluster(10)
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Minute, ApprovalDecision{Approved: false, Approver: alice, Comment: "wrong cluster"})

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeRejected, appErr.Type())
	assert.Contains(t, appErr.Message(), "deleted service account "+wantGSA+", created by this run")
	assert.Less(t, env.Now().Sub(testStart), 2*time.Minute, "the run did not wait for the node pools")
	calls := fake.count("SetNodePoolMetadata")
	assert.Less(t, calls, 5, "the node pool retries stopped")
	assert.Equal(t, 1, fake.count("DeleteServiceAccount"))
	assert.Zero(t, fake.count("HelmUpgradeInstall"))

	s := queryStatus(t, env)
	assert.Equal(t, StateRejected, s.State)
	np := mustStep(t, s, "node-pool/default-pool")
	assert.Equal(t, StepFailed, np.State)
	assert.Equal(t, "canceled", np.LastError)
	assert.Equal(t, StepPending, mustStep(t, s, "node-pool/gpu-pool").State)
}

func TestNodePoolFailureAfterTheApprovalStopsTheRollout(t *testing.T) {
	fake := busyCluster(2).failNext("SetNodePoolMetadata",
		temporal.NewNonRetryableApplicationError("update node pool: quota exceeded", contract.ErrTypeQuotaExceeded, nil))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, 10*time.Second, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, contract.ErrTypeQuotaExceeded, appErr.Type())
	assert.Equal(t, "step node-pool/default-pool failed after 3 attempt(s): update node pool: quota exceeded", appErr.Message())
	// What was granted after the approval stays (fix the quota, run again);
	// nothing was deployed on nodes without the GKE metadata server.
	assert.Equal(t, 2, fake.count("AddServiceAccountIAMMember"))
	assert.Equal(t, 1, fake.count("GrantBigQueryAccess"))
	assert.Zero(t, fake.count("HelmUpgradeInstall"))
	assert.Zero(t, fake.count("DeleteServiceAccount"))
	assert.Equal(t, []string{"approval-request", "outcome"}, fake.notifications(), "support hears the approved grant did not complete")
	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.Equal(t, DecisionApproved, s.Approval.Decision)
	assert.Equal(t, StepPending, mustStep(t, s, "helm").State)
}

func TestGrantsAfterTheBindingRunSideBySide(t *testing.T) {
	fake := newFakeCloud()
	for range 3 {
		// Lost races on the dataset's policy: 2 s, 4 s, 8 s of backoff.
		fake.failNext("GrantBigQueryAccess", errors.New("googleapi: Error 412: Precondition check failed"))
	}
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	bound := mustStep(t, s, "workload-identity-user").EndedAt
	bq, helm := mustStep(t, s, "bigquery"), mustStep(t, s, "helm")
	assert.Equal(t, bound, bq.StartedAt)
	assert.Equal(t, bound, helm.StartedAt, "Helm does not wait for BigQuery")
	assert.Equal(t, bound.Add(14*time.Second), bq.EndedAt)
	assert.True(t, helm.EndedAt.Before(bq.EndedAt))
	assert.False(t, mustStep(t, s, "verify-release").StartedAt.Before(bq.EndedAt), "verification waits for every grant")
	in := fake.inputs("VerifyAccess")
	require.Len(t, in, 1)
	assert.True(t, in[0].(activities.VerifyInput).WaitAllowed, "the activity waits for the binding to propagate")
}

func TestAPIFailureAfterTheApprovalIsReportedAsItself(t *testing.T) {
	// The approval comes first; then enabling the API fails for good while the
	// workload pool is retried: the run fails with the API's error, not as
	// canceled, and undoes what it created.
	fake := newFakeCloud()
	for range 3 {
		fake.failNext("EnsureWorkloadPool", busy())
	}
	fake.failNext("EnableService", unavailable(),
		temporal.NewNonRetryableApplicationError("enable service: permission denied", contract.ErrTypePermissionDenied, nil))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Second, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	assert.Contains(t, appErr.Message(), "step enable-iamcredentials failed after 2 attempt(s): enable service: permission denied")
	assert.Contains(t, appErr.Message(), "deleted service account "+wantGSA)
	s := queryStatus(t, env)
	assert.Equal(t, StateFailed, s.State)
	assert.Equal(t, DecisionApproved, s.Approval.Decision)
	assert.Equal(t, 1, fake.count("AddServiceAccountIAMMember"), "nothing granted")
}
