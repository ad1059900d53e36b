package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// Every Google Cloud method fails now and then (5% 503, 2% 429) and answers
// slowly (50-500ms): fifty onboardings at once all complete.
func TestFaultTransientErrorsOnEveryMethod(t *testing.T) {
	requireSandbox(t)
	const n = 50
	withFaults(t,
		gcpemu.FaultRule{Method: "*", ErrorRate: 0.05, Code: 503,
			LatencyMin: gcpemu.Duration(50 * time.Millisecond), LatencyMax: gcpemu.Duration(500 * time.Millisecond)},
		gcpemu.FaultRule{Method: "*", ErrorRate: 0.02, Code: 429},
	)
	since := time.Now()
	runs := make([]client.WorkflowRun, n)
	for i := range n {
		runs[i] = startApproved(t, onboardRequest(t, fmt.Sprintf("f-flaky-%d", i)))
	}
	errs := awaitRuns(runs, 6*time.Minute)
	for i, err := range errs {
		s, _ := sdkStatus(runs[i].GetID())
		assert.NoError(t, err, "%s: state %s, steps %s", runs[i].GetID(), s.State, stepSummary(s))
	}
	injected := map[int]int{}
	for _, r := range callsSince(since) {
		if r.Status == 503 || r.Status == 429 {
			injected[r.Status]++
		}
	}
	t.Logf("%d onboardings took %s with %d injected 503 and %d injected 429", n, time.Since(since).Round(time.Second), injected[503], injected[429])
	assert.NotZero(t, injected[503]+injected[429], "the faults were injected")
}

// A permission the operator lacks fails the onboarding within seconds, naming
// the permission, after a bounded number of calls (no retry storm).
func TestFaultPermissionDeniedFailsFast(t *testing.T) {
	requireSandbox(t)
	const perm = "iam.serviceAccounts.create"
	withFaults(t, gcpemu.FaultRule{Method: callSACreate, ErrorRate: 1, Code: 403,
		Message: fmt.Sprintf("Permission '%s' denied on resource (or it may not exist).", perm)})
	req := onboardRequest(t, "f-denied")
	since := time.Now()
	run := startApproved(t, req)

	err := awaitRuns([]client.WorkflowRun{run}, 60*time.Second)[0]
	elapsed := time.Since(since)
	require.Error(t, err, "the onboarding must fail")
	s, ok := sdkStatus(run.GetID())
	require.True(t, ok)
	assert.Equal(t, workflows.StateFailed, s.State)
	assert.Contains(t, s.Error, perm, "the status names the missing permission")
	st, _ := s.Step("service-account")
	assert.Equal(t, workflows.StepFailed, st.State)
	assert.Less(t, elapsed, 20*time.Second, "failed fast")

	creates := countCalls(since, callSACreate, 0)
	assert.GreaterOrEqual(t, creates, 1)
	assert.LessOrEqual(t, creates, 2, "calls to %s: no retry of a permission error", callSACreate)
	total := len(callsSince(since))
	assert.Less(t, total, 60, "Google Cloud calls in all before the failure")
	assert.False(t, gsaExists(t, "e2e-f-denied@"+req.Project+".iam.gserviceaccount.com"))
}
