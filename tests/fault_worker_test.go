package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// restartWorkerBound bounds an onboarding's completion after a worker crash:
// the lost activity is retried after its timeout (heartbeat 2m for cluster
// operations, start-to-close 2m for IAM and Kubernetes calls) plus backoff.
const restartWorkerBound = 4 * time.Minute

// killAndRestart kills the worker with SIGKILL and starts a new one.
func killAndRestart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := sandbox.WorkerPID()
	require.NoError(t, sandbox.KillWorker())
	require.NoError(t, sandbox.StartWorker(ctx))
	require.NotEqual(t, old, sandbox.WorkerPID())
}

// helmRevisions counts the Helm release records in a namespace.
func helmRevisions(ns string) int {
	l, err := sandbox.KubeClient().CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil {
		return 0
	}
	return len(l.Items)
}

func finish(t *testing.T, run client.WorkflowRun, timeout time.Duration) workflows.Status {
	t.Helper()
	err := awaitRuns([]client.WorkflowRun{run}, timeout)[0]
	s, _ := sdkStatus(run.GetID())
	require.NoError(t, err, "state %s, steps %s", s.State, stepSummary(s))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	return s
}

// A worker killed while the onboarding waits for support loses nothing: the
// approval is taken by the next worker and every grant is made exactly once.
func TestFaultWorkerKilledWhileAwaitingApproval(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "f-kill-approval")
	since := time.Now()
	run, err := sandbox.TemporalClient().ExecuteWorkflow(context.Background(),
		client.StartWorkflowOptions{ID: workflows.OnboardWorkflowID(req), TaskQueue: workflows.TaskQueue},
		workflows.OnboardWorkflowName, req)
	require.NoError(t, err)
	pollStatus(t, run.GetID(), toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval))

	killAndRestart(t)
	signalDecision(t, run.GetID(), workflows.ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-K"})
	s := finish(t, run, restartWorkerBound)
	assertGrantOnce(t, since, req, s, 1)
}

// The worker is killed at step boundaries and in the middle of steps; each
// onboarding still completes with every grant made once. Slow (each crash waits
// out the lost activity's timeout): GKEWI_HEAVY=1.
func TestFaultWorkerKilledMidOnboarding(t *testing.T) {
	requireSandbox(t)
	if !heavy() {
		t.Skip("GKEWI_HEAVY=1 runs the worker-crash variants (several minutes each)")
	}
	cases := []struct {
		name string
		ns   string
		at   func(workflows.Status) bool
	}{
		{"right after the service account step", "f-kill-sa", stepIn("service-account", workflows.StepDone)},
		// The release's first revision exists: the Helm activity is executing.
		{"during helm", "f-kill-helm", func(s workflows.Status) bool {
			return stepIn("helm", workflows.StepRunning)(s) && helmRevisions(s.Namespace) > 0
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := onboardRequest(t, c.ns)
			since := time.Now()
			run := startApproved(t, req)
			pollStatus(t, run.GetID(), toApproval, c.name, c.at)
			killAndRestart(t)
			s := finish(t, run, restartWorkerBound)
			assertGrantOnce(t, since, req, s, 1)
		})
	}

	t.Run("while SetWorkloadPool waits on its operation", func(t *testing.T) {
		resetWorkloadIdentity(t)
		// Slow operation polls hold the activity on the running operation.
		withFaults(t, gcpemu.FaultRule{Method: "container.projects.locations.operations.get",
			LatencyMin: gcpemu.Duration(3 * time.Second), LatencyMax: gcpemu.Duration(3 * time.Second)})
		req := onboardRequest(t, "f-kill-pool")
		since := time.Now()
		run := startApproved(t, req)
		pollStatus(t, run.GetID(), toApproval, "the workload pool update issued", func(s workflows.Status) bool {
			return stepIn("workload-pool", workflows.StepRunning)(s) && countCalls(since, callClusterUpdate, 200) == 1
		})
		killAndRestart(t)
		sandbox.Emulator().SetFaults(nil)
		s := finish(t, run, restartWorkerBound)
		assert.Equal(t, 1, countCalls(since, callClusterUpdate, 200), "workload pool updates")
		assertGrantOnce(t, since, req, s, 1)
	})
}

// Temporal restarted (same SQLite file) while activities run: the onboarding
// carries on and completes. (The restart while awaiting approval is covered in
// durability_test.go.)
func TestFaultTemporalRestartMidOnboarding(t *testing.T) {
	sb := requireSandbox(t)
	// Latency keeps the onboarding in its Google Cloud steps during the restart.
	withFaults(t, gcpemu.FaultRule{Method: "iam.*", LatencyMin: gcpemu.Duration(300 * time.Millisecond), LatencyMax: gcpemu.Duration(300 * time.Millisecond)})
	req := onboardRequest(t, "f-temporal-restart")
	since := time.Now()
	run := startApproved(t, req)
	pollStatus(t, run.GetID(), toApproval, "the service account step", stepIn("service-account", workflows.StepRunning, workflows.StepDone))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, sb.RestartTemporal(ctx))
	s := finish(t, run, restartWorkerBound)
	assertGrantOnce(t, since, req, s, 1)
}
