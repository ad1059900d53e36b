package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/workflows"
)

// An onboarding waiting for support survives a crashed worker and a restarted
// Temporal server: the wait is durable, and the approval sent while the worker
// is down is taken when a new one starts.
func TestWaitingOnboardingSurvivesWorkerCrashAndServerRestart(t *testing.T) {
	sb := requireSandbox(t)
	req := onboardRequest(t, "e2e-durable")
	id := startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oldPID := sb.WorkerPID()
	require.NoError(t, sb.KillWorker())
	assert.Zero(t, sb.WorkerPID())
	require.NoError(t, sb.RestartTemporal(ctx))

	// Support answers while no worker runs: the signal waits in the history.
	signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-3"})
	require.NoError(t, sb.StartWorker(ctx))
	assert.NotEqual(t, oldPID, sb.WorkerPID())

	s := waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	assert.Equal(t, approver, s.Approval.Approver)
	assert.Contains(t, gsaMembers(t, s.GSAEmail)["roles/iam.workloadIdentityUser"], workloadMember(req.WithDefaults()))
}
