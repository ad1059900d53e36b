package e2e

import (
	"context"
	"slices"
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
// the lost step is noticed by its 20s heartbeat timeout and run again a second
// later; the rest is the onboarding's own time.
const restartWorkerBound = 2 * time.Minute

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

// The worker is killed with SIGKILL once in every step of one onboarding,
// as soon as the step is seen running (its Google calls answer in 300ms, so
// the kill lands before, during or just after a mutating call), and restarted.
// The onboarding completes, and the systems hold each grant exactly once.
func TestFaultWorkerKilledInEveryStep(t *testing.T) {
	requireSandbox(t)
	resetWorkloadIdentity(t)
	withFaults(t, gcpemu.FaultRule{Method: "*", LatencyMin: gcpemu.Duration(300 * time.Millisecond), LatencyMax: gcpemu.Duration(300 * time.Millisecond)})
	req := onboardRequest(t, "f-kill-every")
	since := time.Now()
	run := startApproved(t, req)

	var killed []string
	interrupted := func(name string) bool { return slices.Contains(killed, name) }
	for {
		// Steps run side by side: one kill interrupts every step running.
		var running []string
		s := pollStatus(t, run.GetID(), restartWorkerBound, "a step running that was not interrupted yet", func(s workflows.Status) bool {
			if s.State.Terminal() {
				return true
			}
			running = running[:0]
			fresh := false
			for _, st := range s.Steps {
				if st.State == workflows.StepRunning {
					running = append(running, st.Name)
					fresh = fresh || !interrupted(st.Name)
				}
			}
			return fresh
		})
		if s.State.Terminal() {
			break
		}
		killAndRestart(t)
		for _, name := range running {
			if !interrupted(name) {
				killed = append(killed, name)
			}
		}
	}
	s := finish(t, run, restartWorkerBound)
	t.Logf("killed the worker in %d steps: %v (%s in all)", len(killed), killed, time.Since(since).Round(time.Second))

	// Every step that calls Google Cloud or Helm runs long enough to be caught;
	// the ones that only ask the Kubernetes API (preflight, the access check,
	// the annotation) may end between two looks.
	for _, st := range s.Steps {
		if st.State == workflows.StepDone && st.Name != "approval" && st.Name != "annotate-ksa" &&
			st.Name != "preflight" && st.Name != "kubernetes-access" && st.Name != "outcome-notification" {
			assert.True(t, interrupted(st.Name), "step %s was never interrupted", st.Name)
		}
	}
	assert.Equal(t, 1, countCalls(since, callClusterUpdate, 200), "workload pool updates")
	assert.Equal(t, len(sandbox.Cluster().NodePools), countCalls(since, callNodePoolUpdate, 200), "node pool updates")
	assertGrantOnce(t, since, req, s, helmRevisionAfterKill(t, req))
}

// The worker is killed at precise points: in the middle of a Helm install (the
// release pending, its lease held) and while the workload pool update waits on
// its cluster operation.
func TestFaultWorkerKilledMidOnboarding(t *testing.T) {
	requireSandbox(t)
	t.Run("during helm", func(t *testing.T) {
		req := onboardRequest(t, "f-kill-helm")
		since := time.Now()
		run := startApproved(t, req)
		pollStatus(t, run.GetID(), toApproval, "helm running with the release's first revision", func(s workflows.Status) bool {
			return stepIn("helm", workflows.StepRunning)(s) && helmRevisions(s.Namespace) > 0
		})
		killAndRestart(t)
		s := finish(t, run, restartWorkerBound)
		assertGrantOnce(t, since, req, s, helmRevisionAfterKill(t, req))
	})

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

// helmRevisionAfterKill is the revision a release deployed by an onboarding
// whose worker was killed must be at: 1, or 2 when the kill interrupted the
// first install (revision 1 then marked failed, and superseded by revision 2).
func helmRevisionAfterKill(t *testing.T, req workflows.OnboardRequest) int {
	t.Helper()
	req = req.WithDefaults()
	secrets, err := sandbox.KubeClient().CoreV1().Secrets(req.Namespace).List(context.Background(),
		metav1.ListOptions{LabelSelector: "owner=helm,name=" + req.Helm.Release + ",version=1"})
	require.NoError(t, err)
	require.Len(t, secrets.Items, 1, "the release's first revision")
	if st := secrets.Items[0].Labels["status"]; st != "deployed" {
		require.Contains(t, []string{"failed", "superseded"}, st, "an interrupted first install")
		return 2
	}
	return 1
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
