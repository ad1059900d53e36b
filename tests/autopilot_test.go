package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/workflows"
)

// autopilotCluster is the sandbox's Autopilot cluster (see setUp).
const autopilotCluster = "carto-autopilot"

// On an Autopilot cluster Workload Identity is always on and GKE answers node
// pool calls with 400: the onboarding reads that from the cluster, changes
// nothing there, says why in the status, and completes.
func TestOnboardingOnAutopilotCluster(t *testing.T) {
	requireSandbox(t)
	// The local control plane's nodes are the primary cluster's; the Autopilot
	// cluster's pods run on them. Autopilot nodes always run the GKE metadata
	// server, so the primary's node pools are switched to it first.
	setWorkloadIdentity(t, true)
	since := time.Now()

	req := onboardRequest(t, "e2e-autopilot")
	req.Cluster = autopilotCluster
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	s = approveAndComplete(t, id)

	wp := mustStep(t, s, "workload-pool")
	assert.Equal(t, workflows.StepDone, wp.State)
	assert.False(t, wp.Changed)
	assert.Contains(t, wp.Detail, "Autopilot cluster")
	list := mustStep(t, s, "list-node-pools")
	assert.Equal(t, workflows.StepSkipped, list.State)
	assert.Contains(t, list.Detail, "Autopilot cluster")
	assert.Equal(t, workflows.StepDone, mustStep(t, s, "verify-release").State)
	assert.Equal(t, workflows.StepDone, mustStep(t, s, "verify").State)

	for _, r := range callsSince(since) {
		assert.False(t, strings.Contains(r.Method, ".nodePools."), "node pool call %s (HTTP %d) on an Autopilot cluster", r.Method, r.Status)
		assert.NotEqual(t, callClusterUpdate, r.Method, "the cluster was updated")
	}
	assert.Contains(t, gsaMembers(t, s.GSAEmail)["roles/iam.workloadIdentityUser"], workloadMember(req.WithDefaults()))
}
