package workflows

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// Temporal terminates a run whose history reaches 50,000 events (and warns
// from 10,240); gkewi's runs stay well below the warning.
const (
	historyEventLimit = 50_000
	historyEventWarn  = 10_240
)

// eventsAtMost bounds the history of a run from what the test environment can
// count: an activity takes at most six events (scheduled, started, closed and
// the workflow task that follows), a timer five (started, fired or canceled,
// and a workflow task), a signal or an update four. historyOverhead covers the
// rest: start, close, the first workflow task, state search attributes, the
// memo and version markers. TestEventsAtMostHoldsForRecordedHistories checks it
// against real histories.
func eventsAtMost(activities, timers, messages int) int {
	return 6*activities + 5*timers + 4*messages + historyOverhead
}

const historyOverhead = 40

func TestEventsAtMostHoldsForRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		file, err := os.Open(f)
		require.NoError(t, err)
		hist, err := client.HistoryFromJSON(file, client.HistoryJSONOptions{})
		require.NoError(t, file.Close())
		require.NoError(t, err)
		var acts, timers, messages int
		for _, e := range hist.Events {
			switch e.GetEventType() {
			case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, enumspb.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
				acts++
			case enumspb.EVENT_TYPE_TIMER_STARTED:
				timers++
			case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
				enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
				messages++
			}
		}
		assert.LessOrEqualf(t, len(hist.Events), eventsAtMost(acts, timers, messages),
			"%s: %d activities, %d timers, %d messages", filepath.Base(f), acts, timers, messages)
	}
}

// countingEnv counts the activities and timers of the run in env.
type countingEnv struct{ activities, timers int }

func countRun(env *testsuite.TestWorkflowEnvironment) *countingEnv {
	c := &countingEnv{}
	env.SetOnActivityStartedListener(func(*activity.Info, context.Context, converter.EncodedValues) { c.activities++ })
	env.SetOnTimerScheduledListener(func(string, time.Duration) { c.timers++ })
	return c
}

func TestReminderSpacing(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout, want string
	}{
		{"24h", "168h", "24h"}, // the defaults: 6 reminders
		{"1h", "48h", "1h"},    // 47 reminders
		{"1m", "49m", "1m"},    // 48 reminders, the most
		{"1m", "50m", "2m"},    // 49 would be too many
		{"1m", "168h", "3h26m"},
		{"1m", "2562047h", "52286h41m"}, // the longest duration Go parses
	} {
		interval, timeout, want := mustParse(t, tc.interval), mustParse(t, tc.timeout), mustParse(t, tc.want)
		got := reminderSpacing(interval, timeout)
		assert.Equalf(t, want, got, "%s within %s", tc.interval, tc.timeout)
		// Reminder k goes at k*got, before the timeout.
		assert.LessOrEqualf(t, int((timeout-1)/got), maxReminders, "%s within %s", tc.interval, tc.timeout)
	}
}

func mustParse(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	require.NoError(t, err)
	return d
}

// The most reminders the validator lets a request ask for: every minute (the
// least support.reminderInterval) until the approval timeout, which has no
// upper bound. Without the bound that is 10,079 reminders in 168h (about
// 110,000 events) and 525,599 in a year; with it 48, spread over the timeout,
// and the status says so.
func TestWorstCaseApprovalWaitIsBounded(t *testing.T) {
	for _, tc := range []struct {
		timeout string
		every   time.Duration
		set     func(*SupportSpec)
	}{
		{"168h", 3*time.Hour + 26*time.Minute, func(s *SupportSpec) { s.ApprovalTimeout = "168h" }},
		{"8760h", 178*time.Hour + 47*time.Minute, func(s *SupportSpec) { s.ApprovalTimeout = "8760h" }},
	} {
		t.Run(tc.timeout, func(t *testing.T) {
			fake := newFakeCloud()
			req := validRequest()
			req.Support.ReminderInterval = "1m"
			tc.set(&req.Support)
			require.NoError(t, req.Validate())
			env := newOnboardEnv(t, fake, req)
			n := countRun(env)
			var waiting Status
			env.RegisterDelayedCallback(func() { waiting = queryStatus(t, env) }, time.Hour)

			env.ExecuteWorkflow(Onboard, req)

			assert.Equal(t, ErrTypeApprovalTimedOut, workflowAppError(t, env).Type())
			assert.Equal(t, maxReminders, countOf(fake.notifications(), "reminder"))
			s := queryStatus(t, env)
			assert.Equal(t, maxReminders, s.Approval.RemindersSent)
			assert.Contains(t, mustStep(t, s, "approval").Warnings,
				"reminders every "+tc.every.String()+", not every 1m0s (support.reminderInterval): at most 48 reminders within support.approvalTimeout "+tc.timeout)
			assert.Equal(t, testStart.Add(tc.every), waiting.Approval.NextReminderAt)

			events := eventsAtMost(n.activities, n.timers, 0)
			t.Logf("%d activities, %d timers: at most %d events", n.activities, n.timers, events)
			assert.Less(t, events, 1000)
		})
	}
}

// Runs waiting in the approval when the bound came keep their reminders.
func TestApprovalWaitBeforeTheBoundKeepsItsReminders(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Support.ReminderInterval = "1m"
	req.Support.ApprovalTimeout = "60m"
	env := newOnboardEnv(t, fake, req)
	env.OnGetVersion(changeBoundedReminders, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, ErrTypeApprovalTimedOut, workflowAppError(t, env).Type())
	assert.Equal(t, 59, countOf(fake.notifications(), "reminder"))
	assert.Empty(t, mustStep(t, queryStatus(t, env), "approval").Warnings)
}

// outage is a retryable failure that does not heal.
func outage() error {
	return temporal.NewApplicationError("the service is currently unavailable", "Outage")
}

// A cluster step failing fast and retryably for good: 40 executions over
// about 9h40m, not 148 over 12h (the 200 of the policy never come).
func TestWorstCaseClusterStepIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		version  workflow.Version
		attempts int
	}{
		{"bounded", 1, maxStepAttempts},
		{"before the bound", workflow.DefaultVersion, 148},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeCloud()
			for range 250 {
				fake.failNext("SetNodePoolMetadata", outage())
			}
			req := validRequest()
			req.NodePools = []string{"pool-a"}
			env := newOnboardEnv(t, fake, req)
			env.OnGetVersion(changeBoundedRetries, workflow.DefaultVersion, 1).Return(tc.version)
			signalAt(env, time.Minute, approve(alice))
			n := countRun(env)

			env.ExecuteWorkflow(Onboard, req)

			appErr := workflowAppError(t, env)
			assert.Equal(t, "Outage", appErr.Type())
			assert.Equal(t, tc.attempts, fake.count("SetNodePoolMetadata"))
			step := mustStep(t, queryStatus(t, env), "node-pool/pool-a")
			assert.Equal(t, tc.attempts, step.Attempts)
			events := eventsAtMost(n.activities, n.timers, 1)
			t.Logf("%d executions over %s; run: %d activities, %d timers, at most %d events",
				step.Attempts, step.EndedAt.Sub(step.StartedAt), n.activities, n.timers, events)
			if tc.version == 1 {
				assert.Less(t, events, 600)
			}
		})
	}
}

func TestBoundedClusterPolicy(t *testing.T) {
	p := clusterOptions().retry.bounded()
	assert.Equal(t, maxStepAttempts, p.maximumAttempts)
	assert.Equal(t, 18*time.Minute, p.maximumInterval)
	var span time.Duration
	for attempt := 1; attempt < p.maximumAttempts; attempt++ {
		span += p.delay(outage(), attempt)
	}
	assert.Less(t, span, p.giveUpAfter, "the attempts run out first")
	assert.Greater(t, span, 9*time.Hour, "still patient")
	assert.Equal(t, iamOptions().retry, iamOptions().retry.bounded(), "policies within the bound stay")
}

// failuresSurvived is the most failed executions a step with policy p can
// have and still succeed, when failures come at once.
func failuresSurvived(p retryPolicy) int {
	var span time.Duration
	for n := 1; ; n++ {
		d := p.delay(outage(), n)
		if !p.retryable(outage(), n) || (p.giveUpAfter > 0 && span+d > p.giveUpAfter) {
			return n - 1
		}
		span += d
	}
}

// The worst onboarding the validator accepts that still ends well: every step
// fails as often as its policy allows, support is reminded every minute for a
// week and approves at the last hour, verification is denied until the end of
// its wait. Its history stays below Temporal's warning; each further node pool
// can add up to 435 events (40 executions, 39 retry timers).
func TestWorstCaseOnboardingHistoryIsBounded(t *testing.T) {
	fake := newFakeCloud()
	cluster := clusterOptions().retry.bounded()
	failures := map[string]int{}
	for name, p := range map[string]retryPolicy{
		"Preflight": preflightOptions().retry, "CheckAccess": preflightOptions().retry,
		"CheckIdentitySameness": preflightOptions().retry, "EnableService": enableServiceOptions().retry,
		"RenderRelease": renderOptions().retry, "EnsureWorkloadPool": cluster, "SetNodePoolMetadata": cluster,
		"EnsureServiceAccount": iamOptions().retry, "AddServiceAccountIAMMember": iamOptions().retry,
		"VerifyRelease":       verifyReleaseOptions().retry,
		"GrantBigQueryAccess": iamOptions().retry, "HelmUpgradeInstall": helmOptions().retry,
		"NotifySupport": notifyOptions().retry, "VerifyAccess": verifyOptions().retry,
		"SetRevocationTime": scheduleOptions().retry,
	} {
		failures[name] = failuresSurvived(p)
		for range failures[name] {
			fake.failNext(name, outage())
		}
	}
	fake.setVerify(func(n int) activities.VerifyResult {
		if n < 10 {
			return deniedAt("generate-access-token")
		}
		return allowed()
	})
	req := validRequest()
	req.NodePools = []string{"pool-a"}
	req.Expiry = &ExpirySpec{TTL: "720h"}
	req.Support.ReminderInterval = "1m"
	require.NoError(t, req.Validate())
	env := newOnboardEnv(t, fake, req)
	signalAt(env, 167*time.Hour, approve(alice))
	n := countRun(env)

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, maxReminders, countOf(fake.notifications(), "reminder"))
	for name, n := range failures {
		assert.Greaterf(t, fake.count(name), n, "%s failed %d times, then succeeded", name, n)
	}
	assert.Equal(t, maxStepAttempts, fake.count("SetNodePoolMetadata"))
	events := eventsAtMost(n.activities, n.timers, 1)
	t.Logf("%d activities, %d timers: at most %d events", n.activities, n.timers, events)
	assert.Less(t, events, historyEventWarn)
}
