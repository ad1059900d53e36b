package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/workflows"
)

// Many workloads bound to one shared GSA at once: their read-modify-writes of
// the GSA's IAM policy race, and no member is lost.
func TestFaultManyGrantsOnOneSharedGSA(t *testing.T) {
	requireSandbox(t)
	const n = 100
	since := time.Now()
	reqs := make([]workflows.OnboardRequest, n)
	runs := make([]client.WorkflowRun, n)
	for i := range n {
		reqs[i] = onboardRequest(t, fmt.Sprintf("f-shared-%d", i))
		reqs[i].GSA.AccountID = "e2e-f-shared-gsa"
		runs[i] = startApproved(t, reqs[i])
	}
	errs := awaitRuns(runs, 8*time.Minute)
	for i, err := range errs {
		s, _ := sdkStatus(runs[i].GetID())
		assert.NoError(t, err, "%s: state %s, steps %s", runs[i].GetID(), s.State, stepSummary(s))
	}
	gsa := "e2e-f-shared-gsa@" + reqs[0].Project + ".iam.gserviceaccount.com"
	members := gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"]
	for _, r := range reqs {
		assert.Contains(t, members, workloadMember(r.WithDefaults()))
	}
	assert.Len(t, members, n, "one member per workload, none duplicated")
	writes, conflicts := 0, 0
	for _, r := range callsSince(since) {
		if r.Method == "iam.projects.serviceAccounts.setIamPolicy" {
			writes++
			if r.Status == 409 {
				conflicts++
			}
		}
	}
	t.Logf("%d grants on one GSA: %d setIamPolicy calls (%d refused with 409) in %s", n, writes, conflicts, time.Since(since).Round(time.Second))
	assert.Equal(t, 1, countCalls(since, callSACreate, 200), "the shared GSA is created once")
}

// Twenty onboardings on one cluster without Workload Identity at once: none
// fails on the busy cluster, and the cluster is updated once.
func TestFaultTwentyOnboardingsOnOneClusterAtOnce(t *testing.T) {
	requireSandbox(t)
	resetWorkloadIdentity(t)
	since := time.Now()
	runs := make([]client.WorkflowRun, 20)
	for i := range runs {
		runs[i] = startApproved(t, onboardRequest(t, fmt.Sprintf("f-cluster-%d", i)))
	}
	errs := awaitRuns(runs, 6*time.Minute)
	for i, err := range errs {
		s, _ := sdkStatus(runs[i].GetID())
		require.NoError(t, err, "%s: state %s, steps %s", runs[i].GetID(), s.State, stepSummary(s))
	}
	assert.Equal(t, 1, countCalls(since, callClusterUpdate, 200), "successful %s", callClusterUpdate)
	assert.Equal(t, len(sandbox.Cluster().NodePools), countCalls(since, callNodePoolUpdate, 200), "successful %s", callNodePoolUpdate)
	t.Logf("cluster updates attempted %d (refused: %d)", countCalls(since, callClusterUpdate, 0),
		countCalls(since, callClusterUpdate, 0)-countCalls(since, callClusterUpdate, 200))
}
