package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// scrape reads the worker's /metrics into series keyed as Prometheus prints
// them: name{label="value",...} with the labels sorted.
type scrape map[string]float64

func scrapeWorker(t *testing.T) scrape {
	t.Helper()
	body, code := get(t, "/metrics")
	require.Equal(t, http.StatusOK, code, body)
	out := scrape{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

func get(t *testing.T, path string) (string, int) {
	t.Helper()
	resp, err := http.Get(sandbox.WorkerHTTPURL() + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b), resp.StatusCode
}

// series names one series; labels alternate name and value.
func series(name string, labels ...string) string {
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	sort.Strings(pairs)
	if len(pairs) == 0 {
		return name
	}
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// delta is how much a series moved between two scrapes.
func (after scrape) delta(before scrape, key string) float64 { return after[key] - before[key] }

// sumDelta adds the moves of every series of name whose labels include all of
// match (name="value" strings).
func (after scrape) sumDelta(before scrape, name string, match ...string) float64 {
	total := 0.0
	for key, v := range after {
		if !strings.HasPrefix(key, name+"{") && key != name {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(key, m)
		}
		if ok {
			total += v - before[key]
		}
	}
	return total
}

func TestMetricsMoveWithAnOnboardingAndAFailure(t *testing.T) {
	requireSandbox(t)
	body, code := get(t, "/healthz")
	assert.Equal(t, http.StatusOK, code, body)
	body, code = get(t, "/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "worker: polling")
	assert.Contains(t, body, "temporal: ok")

	before := scrapeWorker(t)
	since := time.Now()

	// One onboarding, approved by support.
	req := onboardRequest(t, "e2e-metrics")
	id := startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	approveAndComplete(t, id)
	waitClosed(t, id, time.Minute)
	afterOnboard := scrapeWorker(t)

	t.Run("grant states and the approval wait", func(t *testing.T) {
		for _, state := range []workflows.State{workflows.StateAwaitingApproval, workflows.StateApproved, workflows.StateCompleted} {
			assert.Equal(t, 1.0, afterOnboard.delta(before, series("gkewi_grant_state_transitions_total",
				"workflow_type", workflows.OnboardWorkflowName, "state", string(state))), "state %s", state)
		}
		assert.Equal(t, 0.0, afterOnboard.sumDelta(before, "gkewi_grant_state_transitions_total", `state="failed"`))
		assert.Equal(t, 1.0, afterOnboard.delta(before, series("gkewi_approval_wait_seconds_count", "decision", "approved")))
		// Support answered within seconds: the first bucket holds it.
		assert.Equal(t, 1.0, afterOnboard.delta(before, series("gkewi_approval_wait_seconds_bucket", "decision", "approved", "le", "60")))
	})

	t.Run("steps and verification", func(t *testing.T) {
		assert.Equal(t, 1.0, afterOnboard.delta(before, series("gkewi_step_duration_seconds_count", "step", "EnsureServiceAccount", "outcome", "success")))
		assert.Equal(t, 0.0, afterOnboard.sumDelta(before, "gkewi_step_failures_total", `error_type="PermissionDenied"`))
		assert.Equal(t, 1.0, afterOnboard.delta(before, series("gkewi_verifications_total", "outcome", "allowed", "stage", "none")))
	})

	t.Run("Google API calls match the emulator's log", func(t *testing.T) {
		const setPolicy = "iam.projects.serviceAccounts.setIamPolicy"
		writes := countCalls(since, setPolicy, 200)
		require.Positive(t, writes)
		assert.Equal(t, float64(writes), afterOnboard.delta(before, series("gkewi_google_api_requests_total",
			"api", "iam", "method", setPolicy, "code", "200")))
		creates := countCalls(since, callSACreate, 200)
		assert.Equal(t, float64(creates), afterOnboard.delta(before, series("gkewi_google_api_requests_total",
			"api", "iam", "method", callSACreate, "code", "200")))
		// Each successful write of either policy is one coalescing observation.
		allWrites := writes + countCalls(since, "cloudresourcemanager.projects.setIamPolicy", 200)
		assert.Equal(t, float64(allWrites), afterOnboard.delta(before, "gkewi_iam_policy_write_changes_count"))
		assert.GreaterOrEqual(t, afterOnboard.delta(before, "gkewi_iam_policy_write_changes_sum"), float64(allWrites))
	})

	t.Run("the Temporal SDK's metrics", func(t *testing.T) {
		// tally hands them over every second.
		require.Eventually(t, func() bool {
			now := scrapeWorker(t)
			return now.sumDelta(before, "temporal_workflow_completed_total", `workflow_type="Onboard"`) >= 1 &&
				now.sumDelta(before, "temporal_activity_execution_latency_seconds_count", `activity_type="EnsureServiceAccount"`) >= 1
		}, 10*time.Second, 250*time.Millisecond)
		now := scrapeWorker(t)
		assert.Positive(t, now.sumDelta(scrape{}, "temporal_num_pollers"), "poller gauges")
		assert.Contains(t, strings.Join(keys(now), "\n"), "temporal_sticky_cache_size")
	})

	// One failure: IAM refuses the service account's creation.
	failSince := time.Now()
	withFaults(t, gcpemu.FaultRule{Method: callSACreate, ErrorRate: 1, Code: 403,
		Message: "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist)."})
	failReq := onboardRequest(t, "e2e-metrics-denied")
	run := startApproved(t, failReq)
	require.Error(t, awaitRuns([]client.WorkflowRun{run}, time.Minute)[0])
	sandbox.Emulator().SetFaults(nil)
	afterFailure := scrapeWorker(t)

	t.Run("the failure is counted by step and error type", func(t *testing.T) {
		denied := countCalls(failSince, callSACreate, 403)
		require.Positive(t, denied)
		assert.Equal(t, float64(denied), afterFailure.delta(afterOnboard, series("gkewi_google_api_errors_total",
			"api", "iam", "method", callSACreate, "code", "403")))
		assert.Equal(t, float64(denied), afterFailure.delta(afterOnboard, series("gkewi_google_api_requests_total",
			"api", "iam", "method", callSACreate, "code", "403")))
		failures := afterFailure.delta(afterOnboard, series("gkewi_step_failures_total", "step", "EnsureServiceAccount", "error_type", "PermissionDenied"))
		assert.GreaterOrEqual(t, failures, 1.0)
		assert.LessOrEqual(t, failures, float64(denied), "one failed attempt per refused call at most")
		assert.Equal(t, failures, afterFailure.delta(afterOnboard, series("gkewi_step_duration_seconds_count", "step", "EnsureServiceAccount", "outcome", "failure")))
		assert.Equal(t, 1.0, afterFailure.delta(afterOnboard, series("gkewi_grant_state_transitions_total",
			"workflow_type", workflows.OnboardWorkflowName, "state", string(workflows.StateFailed))))
		assert.Equal(t, 0.0, afterFailure.delta(afterOnboard, series("gkewi_grant_state_transitions_total",
			"workflow_type", workflows.OnboardWorkflowName, "state", string(workflows.StateCompleted))))
		// Decided before support was asked: no wait to measure.
		assert.Equal(t, 0.0, afterFailure.sumDelta(afterOnboard, "gkewi_approval_wait_seconds_count"))
	})

	t.Run("grants by state from visibility", func(t *testing.T) {
		// Counted at most every 30s, so the values may predate this test's runs.
		for _, state := range []string{"awaiting-approval", "completed", "revoked", "failed"} {
			_, ok := afterFailure[series("gkewi_grants", "state", state)]
			assert.True(t, ok, "gkewi_grants{state=%q} is reported", state)
		}
	})
}

func keys(s scrape) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
