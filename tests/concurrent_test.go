package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/option"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/workflows"
)

// Method ids of GKE changes in the emulator's request log.
const (
	callClusterUpdate  = "container.projects.locations.clusters.update"
	callNodePoolUpdate = "container.projects.locations.clusters.nodePools.update"
)

// resetWorkloadIdentity turns Workload Identity off on the cluster, as on a
// cluster nobody onboarded yet, so the test sees the cluster-wide steps run. It
// acts as the project owner through the GKE API.
func resetWorkloadIdentity(t *testing.T) { setWorkloadIdentity(t, false) }

// setWorkloadIdentity turns Workload Identity on or off on the primary cluster:
// its workload pool and its node pools' metadata mode (and so its nodes' label).
func setWorkloadIdentity(t *testing.T, on bool) {
	t.Helper()
	ctx := context.Background()
	tok := sandbox.Emulator().MintAccessToken("user:owner@example.com")
	eps := activities.GCPEndpointsFromMap(sandbox.GCPEndpoints())
	svc, err := container.NewService(ctx, eps.ClientOptions(activities.APIContainer,
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))...)
	require.NoError(t, err)
	c := sandbox.Cluster()
	name := fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Name)
	wait := func(op *container.Operation) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for op.Status != "DONE" {
			require.True(t, time.Now().Before(deadline), "operation %s did not finish", op.Name)
			time.Sleep(100 * time.Millisecond)
			op, err = svc.Projects.Locations.Operations.Get(fmt.Sprintf("projects/%s/locations/%s/operations/%s", c.Project, c.Location, op.Name)).Do()
			require.NoError(t, err)
		}
	}
	setPool := func() {
		pool := ""
		if on {
			pool = c.Project + ".svc.id.goog"
		}
		op, err := svc.Projects.Locations.Clusters.Update(name, &container.UpdateClusterRequest{
			Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: pool}},
		}).Do()
		require.NoError(t, err)
		wait(op)
	}
	if on {
		setPool() // node pools need the workload pool first
	}
	mode := "GCE_METADATA"
	if on {
		mode = "GKE_METADATA"
	}
	for _, pool := range c.NodePools {
		op, err := svc.Projects.Locations.Clusters.NodePools.Update(name+"/nodePools/"+pool, &container.UpdateNodePoolRequest{
			WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: mode},
		}).Do()
		require.NoError(t, err)
		wait(op)
	}
	if !on {
		setPool()
	}
	cl, err := svc.Projects.Locations.Clusters.Get(name).Do()
	require.NoError(t, err)
	isOn := cl.WorkloadIdentityConfig != nil && cl.WorkloadIdentityConfig.WorkloadPool != ""
	require.Equal(t, on, isOn, "Workload Identity on")
}

func TestTwoOnboardingsOnOneClusterAtOnce(t *testing.T) {
	requireSandbox(t)
	resetWorkloadIdentity(t)
	since := time.Now()

	reqs := []workflows.OnboardRequest{onboardRequest(t, "e2e-conc-a"), onboardRequest(t, "e2e-conc-b")}
	ids := make([]string, len(reqs))
	results := make([]cmdResult, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		id, args := onboardCommand(t, r)
		ids[i] = id
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = execute(sandbox.TemporalCLIPath(), args...)
		}()
	}
	wg.Wait()
	for i := range reqs {
		require.NoError(t, errs[i])
		require.Equal(t, 0, results[i].code, "%s", results[i])
	}
	for _, id := range ids {
		s := waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
		require.Equal(t, workflows.StateAwaitingApproval, s.State, "%s: %s", id, s.Error)
	}
	for _, id := range ids {
		signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: approver})
	}
	for i, id := range ids {
		s := waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
		require.Equal(t, workflows.StateCompleted, s.State, "%s: %s", id, s.Error)
		members := gsaMembers(t, s.GSAEmail)
		assert.Contains(t, members["roles/iam.workloadIdentityUser"], workloadMember(reqs[i].WithDefaults()))
	}

	// The shared cluster settings were changed once, not once per onboarding:
	// the second writer waited out the first one's operation and found it done.
	succeeded := map[string]int{}
	for _, r := range callsSince(since) {
		if (r.Method == callClusterUpdate || r.Method == callNodePoolUpdate) && r.Status == 200 {
			succeeded[r.Method]++
		}
	}
	assert.Equal(t, 1, succeeded[callClusterUpdate], "workload pool updates")
	assert.Equal(t, len(sandbox.Cluster().NodePools), succeeded[callNodePoolUpdate], "node pool updates")
	nodes := kubectl(t, "get", "nodes", "-l", "iam.gke.io/gke-metadata-server-enabled=true", "-o", "name")
	assert.NotEmpty(t, nodes, "the nodes serve the GKE metadata server again")
}
