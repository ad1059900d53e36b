package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/toolpath"
)

// The Schedules and Grants activities run against a real Temporal dev server,
// started from the Temporal CLI that `make tools` builds. Stand-in workflows play
// Revoke and Onboard: only what the activities see of them matters here.

const (
	devTaskQueue = "gkewi-activities-test"
	// Search attributes the stand-ins set, named and typed as gkewi's.
	attrState  = "GkewiState"
	attrExpiry = "GkewiExpiry"
)

func TestSchedulesSetRevocationTimeOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	startStandIns(t, c)
	s := NewSchedules(c)
	ctx := context.Background()

	input := json.RawMessage(`{"project":"acme-prod","ksa":"carto-common-backend","tokenExpiryWait":"30m"}`)
	action := WorkflowAction{WorkflowType: "Revoke", WorkflowID: "gkewi-revoke/acme-prod/europe-west1/carto/ns/ksa", TaskQueue: devTaskQueue, Input: input}
	id := "gkewi-expiry/acme-prod/europe-west1/carto/ns/ksa"
	at := time.Now().Add(2*time.Hour + 300*time.Millisecond)

	res, err := s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: id, At: at, Action: action, Note: "grant expires"})
	require.NoError(t, err)
	want := at.UTC().Truncate(time.Second).Add(time.Second)
	assert.Equal(t, ScheduleResult{ScheduleID: id, At: want, Created: true}, res, "rounded up to the second, never earlier")

	st, err := s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.True(t, st.Exists)
	assert.Equal(t, want, st.NextActionAt)
	assert.Equal(t, "grant expires", st.Note)

	// The schedule takes exactly one action, at that one instant.
	desc, err := c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	require.NoError(t, err)
	require.Len(t, desc.Info.NextActionTimes, 1, "a single time: %v", desc.Info.NextActionTimes)
	assert.True(t, desc.Schedule.State.LimitedActions)
	assert.Equal(t, 1, desc.Schedule.State.RemainingActions)
	wfAction, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	require.True(t, ok)
	assert.Equal(t, "Revoke", wfAction.Workflow)
	assert.Equal(t, action.WorkflowID, wfAction.ID)
	assert.Equal(t, devTaskQueue, wfAction.TaskQueue)

	// Setting it again moves it: an extension.
	later := want.Add(24 * time.Hour)
	res, err = s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: id, At: later, Action: action})
	require.NoError(t, err)
	assert.Equal(t, ScheduleResult{ScheduleID: id, At: later, Created: false}, res)
	st, err = s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.Equal(t, later, st.NextActionAt)

	// Triggered now (as `temporal schedule trigger` does), it starts Revoke with the input.
	require.NoError(t, c.ScheduleClient().GetHandle(ctx, id).Trigger(ctx, client.ScheduleTriggerOptions{}))
	runID := waitForScheduledRun(t, s, id)
	assert.True(t, strings.HasPrefix(runID, action.WorkflowID+"-"), "run ID %s", runID)
	assert.JSONEq(t, string(input), string(standInResult(t, c, runID)))

	// Deleting the schedule leaves nothing to fire, and deleting again is fine.
	del, err := s.DeleteSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.True(t, del.Changed)
	st, err = s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.Equal(t, ScheduleStatus{ScheduleID: id}, st)
	del, err = s.DeleteSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.False(t, del.Changed)
}

func TestSchedulesFireOnceAtTheTimeOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	startStandIns(t, c)
	s := NewSchedules(c)
	ctx := context.Background()
	action := WorkflowAction{WorkflowType: "Revoke", WorkflowID: "gkewi-revoke/p/l/c/ns/fires", TaskQueue: devTaskQueue, Input: json.RawMessage(`{"reason":"expired"}`)}
	id := "gkewi-expiry/p/l/c/ns/fires"

	res, err := s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: id, At: time.Now().Add(3 * time.Second), Action: action})
	require.NoError(t, err)
	require.False(t, res.Triggered)

	runID := waitForScheduledRun(t, s, id)
	assert.Equal(t, action.WorkflowID+"-"+res.At.Format(time.RFC3339), runID, "started for the scheduled instant")
	assert.JSONEq(t, `{"reason":"expired"}`, string(standInResult(t, c, runID)))
	st, err := s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.True(t, st.Exists, "the schedule stays until Revoke deletes it")
	assert.True(t, st.NextActionAt.IsZero(), "nothing left to fire: %v", st.NextActionAt)
	assert.Equal(t, []string{runID}, st.RecentWorkflowIDs)

	// A time already past is triggered at once rather than never.
	pastID := "gkewi-expiry/p/l/c/ns/past"
	past := action
	past.WorkflowID = "gkewi-revoke/p/l/c/ns/past"
	res, err = s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: pastID, At: time.Now().Add(-time.Minute), Action: past})
	require.NoError(t, err)
	assert.True(t, res.Triggered)
	pastRun := waitForScheduledRun(t, s, pastID)
	assert.True(t, strings.HasPrefix(pastRun, past.WorkflowID+"-"), "run ID %s", pastRun)
}

func TestSchedulesFollowTemporalCLIUpdatesOnDevServer(t *testing.T) {
	// The plain temporal CLI can extend, trigger and delete a revocation
	// schedule with the commands the README gives.
	srv := temporalTestServer(t)
	c := srv.Client()
	startStandIns(t, c)
	s := NewSchedules(c)
	ctx := context.Background()
	id := "gkewi-expiry/p/l/c/ns/cli"
	input := `{"project":"acme-prod","ksa":"cli","reason":"grant expired"}`
	_, err := s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: id, At: time.Now().Add(time.Hour),
		Action: WorkflowAction{WorkflowType: "Revoke", WorkflowID: "gkewi-revoke/p/l/c/ns/cli", TaskQueue: devTaskQueue, Input: json.RawMessage(input)}})
	require.NoError(t, err)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(toolpath.TemporalCLI(), append(args, "--address", srv.FrontendHostPort())...).CombinedOutput()
		require.NoError(t, err, "temporal %s: %s", strings.Join(args, " "), out)
		return string(out)
	}

	// The input, as `temporal schedule describe -o json | jq -r '...data | @base64d'` reads it.
	var desc struct {
		Schedule struct {
			Action struct {
				StartWorkflow struct {
					Input struct {
						Payloads []struct {
							Data []byte `json:"data"`
						} `json:"payloads"`
					} `json:"input"`
				} `json:"startWorkflow"`
			} `json:"action"`
		} `json:"schedule"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli("schedule", "describe", "--schedule-id", id, "-o", "json")), &desc))
	payloads := desc.Schedule.Action.StartWorkflow.Input.Payloads
	require.Len(t, payloads, 1)
	assert.JSONEq(t, input, string(payloads[0].Data))

	later := time.Date(time.Now().Year()+1, 8, 1, 10, 0, 0, 0, time.UTC)
	cli("schedule", "update", "--schedule-id", id,
		"--calendar", fmt.Sprintf(`{"year":"%d","month":"8","dayOfMonth":"1","hour":"10","minute":"0","second":"0"}`, later.Year()),
		"--remaining-actions", "1", "--catchup-window", "8760h",
		"--workflow-id", "gkewi-revoke/p/l/c/ns/cli", "--type", "Revoke", "--task-queue", devTaskQueue,
		"--input", string(payloads[0].Data))
	st, err := s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.Equal(t, later, st.NextActionAt, "what the sweep reads follows the update")

	cli("schedule", "trigger", "--schedule-id", id)
	run := waitForScheduledRun(t, s, id)
	assert.JSONEq(t, input, string(standInResult(t, c, run)))

	cli("schedule", "delete", "--schedule-id", id)
	st, err = s.DescribeRevocationSchedule(ctx, ScheduleRef{ScheduleID: id})
	require.NoError(t, err)
	assert.False(t, st.Exists)
}

func TestSchedulesEnsureSweepScheduleOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	s := NewSchedules(c)
	ctx := context.Background()
	in := RecurringScheduleInput{
		ScheduleID: "gkewi-sweep", Every: time.Hour, Note: "revokes expired grants",
		Action: WorkflowAction{WorkflowType: "Sweep", WorkflowID: "gkewi-sweep", TaskQueue: devTaskQueue},
	}
	res, err := s.EnsureSweepSchedule(ctx, in)
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, "created schedule gkewi-sweep, every 1h0m0s", res.Detail)

	// An operator pauses it; a second call (a worker restart) leaves it so.
	h := c.ScheduleClient().GetHandle(ctx, "gkewi-sweep")
	require.NoError(t, h.Pause(ctx, client.SchedulePauseOptions{Note: "maintenance"}))
	res, err = s.EnsureSweepSchedule(ctx, in)
	require.NoError(t, err)
	assert.False(t, res.Changed)
	desc, err := h.Describe(ctx)
	require.NoError(t, err)
	assert.True(t, desc.Schedule.State.Paused)
	require.Len(t, desc.Schedule.Spec.Intervals, 1)
	assert.Equal(t, time.Hour, desc.Schedule.Spec.Intervals[0].Every)
	assert.Equal(t, enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, desc.Schedule.Policy.Overlap)
}

func TestSchedulesAndGrantsRefuseBadInput(t *testing.T) {
	ctx := context.Background()
	var nilSchedules *Schedules
	_, err := nilSchedules.SetRevocationTime(ctx, RevocationScheduleInput{})
	assertTemporalAppError(t, err, contract.ErrTypeFailedPrecondition, true)
	_, err = NewGrants(nil).ListWorkflowRuns(ctx, ListWorkflowRunsInput{Query: "x"})
	assertTemporalAppError(t, err, contract.ErrTypeFailedPrecondition, true)

	// A client is needed to get past the nil check; these fail before using it.
	s := &Schedules{client: unusedClient{}}
	_, err = s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: "x"})
	assertTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
	_, err = s.SetRevocationTime(ctx, RevocationScheduleInput{ScheduleID: "x", At: time.Now(), Action: WorkflowAction{WorkflowType: "Revoke"}})
	assertTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
	_, err = s.EnsureSweepSchedule(ctx, RecurringScheduleInput{ScheduleID: "x", Every: time.Millisecond})
	assertTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
	g := &Grants{client: unusedClient{}}
	_, err = g.ListWorkflowRuns(ctx, ListWorkflowRunsInput{})
	assertTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
	_, err = g.CancelWorkflowRun(ctx, CancelWorkflowRunInput{WorkflowID: "x"})
	assertTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
}

func TestScheduleTimeRounding(t *testing.T) {
	at := time.Date(2026, 7, 1, 10, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	assert.Equal(t, time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC), ceilSecond(at))
	assert.Equal(t, time.Date(2026, 7, 1, 8, 0, 1, 0, time.UTC), ceilSecond(at.Add(time.Millisecond)))
	spec := onceAt(time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC))
	require.Len(t, spec.Calendars, 1)
	cal := spec.Calendars[0]
	assert.Equal(t, [][]client.ScheduleRange{{{Start: 2026}}, {{Start: 12}}, {{Start: 31}}, {{Start: 23}}, {{Start: 59}}, {{Start: 58}}},
		[][]client.ScheduleRange{cal.Year, cal.Month, cal.DayOfMonth, cal.Hour, cal.Minute, cal.Second})
	assert.Empty(t, cal.DayOfWeek, "any day of the week")
}

func TestGrantsListWorkflowRunsOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	startStandIns(t, c)
	g := NewGrants(c)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)

	// Five onboardings: three completed and expired, one completed and not
	// expired, one still running.
	for i, tc := range []struct {
		state  string
		expiry time.Time
		finish bool
	}{
		{"completed", now.Add(-3 * time.Hour), true},
		{"completed", now.Add(-2 * time.Hour), true},
		{"completed", now.Add(-time.Hour), true},
		{"completed", now.Add(time.Hour), true},
		{"awaiting-approval", time.Time{}, false},
	} {
		id := fmt.Sprintf("gkewi-onboard/p/l/c/list-%d/ksa", i)
		startOnboardStandIn(t, c, id, standInOnboarding{State: tc.state, Expiry: tc.expiry})
		if tc.finish {
			require.NoError(t, c.SignalWorkflow(ctx, id, "", "finish", nil))
			require.NoError(t, c.GetWorkflow(ctx, id, "").Get(ctx, nil))
		}
	}
	query := fmt.Sprintf("WorkflowType = 'Onboard' AND ExecutionStatus = 'Completed' AND %s = 'completed' AND %s < '%s'",
		attrState, attrExpiry, now.Format(time.RFC3339Nano))
	in := ListWorkflowRunsInput{Query: query, KeywordAttributes: []string{attrState}, TimeAttributes: []string{attrExpiry}}

	g.pageSize = 2 // several pages
	var res ListWorkflowRunsResult
	require.Eventually(t, func() bool {
		var err error
		res, err = g.ListWorkflowRuns(ctx, in)
		require.NoError(t, err)
		return len(res.Runs) == 3
	}, 20*time.Second, 200*time.Millisecond, "visibility never listed the three expired onboardings")
	assert.False(t, res.Truncated)
	var ids []string
	for _, r := range res.Runs {
		ids = append(ids, r.WorkflowID)
		assert.Equal(t, "Onboard", r.WorkflowType)
		assert.Equal(t, WorkflowStatusCompleted, r.Status)
		assert.NotEmpty(t, r.RunID)
		assert.False(t, r.StartTime.IsZero())
		assert.False(t, r.CloseTime.Before(r.StartTime))
		assert.Equal(t, "completed", r.Keywords[attrState])
		assert.True(t, r.Times[attrExpiry].Before(now), "expiry %v", r.Times[attrExpiry])
	}
	slices.Sort(ids)
	assert.Equal(t, []string{"gkewi-onboard/p/l/c/list-0/ksa", "gkewi-onboard/p/l/c/list-1/ksa", "gkewi-onboard/p/l/c/list-2/ksa"}, ids)
	var expiries []time.Time
	for _, r := range res.Runs {
		expiries = append(expiries, r.Times[attrExpiry])
	}
	assert.ElementsMatch(t, []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Hour)}, expiries)

	in.Limit = 2
	res, err := g.ListWorkflowRuns(ctx, in)
	require.NoError(t, err)
	assert.Len(t, res.Runs, 2)
	assert.True(t, res.Truncated)

	_, err = g.ListWorkflowRuns(ctx, ListWorkflowRunsInput{Query: "GkewiState = "})
	appErr := requireTemporalAppError(t, err, contract.ErrTypeInvalidArgument, true)
	assert.Contains(t, appErr.Message(), `list workflows matching "GkewiState = ": Temporal refused the request`)
}

func TestGrantsCancelAnOnboardingOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	startStandIns(t, c)
	g := NewGrants(c)
	ctx := context.Background()
	id := "gkewi-onboard/p/l/c/cancel/ksa"
	startOnboardStandIn(t, c, id, standInOnboarding{State: "awaiting-approval"})

	d, err := g.DescribeWorkflowRun(ctx, DescribeWorkflowRunInput{WorkflowID: id, Query: "status", KeywordAttributes: []string{attrState}})
	require.NoError(t, err)
	require.True(t, d.Found)
	assert.Equal(t, WorkflowStatusRunning, d.Run.Status)
	assert.Equal(t, "Onboard", d.Run.WorkflowType)
	assert.JSONEq(t, `{"state":"awaiting-approval","cleanedUp":false}`, string(d.QueryResult))

	run, err := g.CancelWorkflowRun(ctx, CancelWorkflowRunInput{WorkflowID: id, RunID: d.Run.RunID})
	require.NoError(t, err)
	assert.Equal(t, WorkflowStatusCanceled, run.Status)
	assert.Equal(t, d.Run.RunID, run.RunID)

	// The run's clean-up was over when the cancellation returned; a closed run
	// still answers the query.
	d, err = g.DescribeWorkflowRun(ctx, DescribeWorkflowRunInput{WorkflowID: id, Query: "status"})
	require.NoError(t, err)
	assert.Equal(t, WorkflowStatusCanceled, d.Run.Status)
	assert.JSONEq(t, `{"state":"canceled","cleanedUp":true}`, string(d.QueryResult))

	// Cancelling a closed run changes nothing.
	run, err = g.CancelWorkflowRun(ctx, CancelWorkflowRunInput{WorkflowID: id, RunID: d.Run.RunID})
	require.NoError(t, err)
	assert.Equal(t, WorkflowStatusCanceled, run.Status)

	// No result for a canceled run; none of an unknown workflow.
	_, err = g.WorkflowRunResult(ctx, WorkflowRunRef{WorkflowID: id})
	assertTemporalAppError(t, err, contract.ErrTypeFailedPrecondition, true)
	d, err = g.DescribeWorkflowRun(ctx, DescribeWorkflowRunInput{WorkflowID: "gkewi-onboard/p/l/c/none/ksa"})
	require.NoError(t, err)
	assert.False(t, d.Found)

	// The same workflow ID takes a new run once the last one closed.
	startOnboardStandIn(t, c, id, standInOnboarding{State: "completed", Result: json.RawMessage(`{"state":"completed","gsaEmail":"x@p.iam.gserviceaccount.com"}`)})
	require.NoError(t, c.SignalWorkflow(ctx, id, "", "finish", nil))
	require.NoError(t, c.GetWorkflow(ctx, id, "").Get(ctx, nil))
	raw, err := g.WorkflowRunResult(ctx, WorkflowRunRef{WorkflowID: id})
	require.NoError(t, err)
	assert.JSONEq(t, `{"state":"completed","gsaEmail":"x@p.iam.gserviceaccount.com"}`, string(raw))
}

// standInOnboarding is the input of the Onboard stand-in.
type standInOnboarding struct {
	State  string          `json:"state"`
	Expiry time.Time       `json:"expiry,omitzero"`
	Result json.RawMessage `json:"result,omitempty"`
}

// standInStatus is what the Onboard stand-in's status query answers.
type standInStatus struct {
	State     string `json:"state"`
	CleanedUp bool   `json:"cleanedUp"`
}

// onboardStandIn sets the search attributes, answers "status", and completes
// on the "finish" signal; cancelled, it cleans up (one timer) first.
func onboardStandIn(ctx workflow.Context, in standInOnboarding) (json.RawMessage, error) {
	st := standInStatus{State: in.State}
	if err := workflow.SetQueryHandler(ctx, "status", func() (standInStatus, error) { return st, nil }); err != nil {
		return nil, err
	}
	updates := []temporal.SearchAttributeUpdate{temporal.NewSearchAttributeKeyKeyword(attrState).ValueSet(in.State)}
	if !in.Expiry.IsZero() {
		updates = append(updates, temporal.NewSearchAttributeKeyTime(attrExpiry).ValueSet(in.Expiry))
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		return nil, err
	}
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(workflow.GetSignalChannel(ctx, "finish"), func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil) })
	sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {})
	sel.Select(ctx)
	if err := ctx.Err(); err != nil {
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		st.State = "canceled"
		if err := workflow.Sleep(dctx, time.Second); err != nil {
			return nil, err
		}
		st.CleanedUp = true
		return nil, temporal.NewCanceledError()
	}
	return in.Result, nil
}

// revokeStandIn returns its input after a moment, so a test sees what a
// schedule started it with.
func revokeStandIn(ctx workflow.Context, in json.RawMessage) (json.RawMessage, error) {
	if err := workflow.Sleep(ctx, 500*time.Millisecond); err != nil {
		return nil, err
	}
	return in, nil
}

func startStandIns(t *testing.T, c client.Client) {
	t.Helper()
	w := worker.New(c, devTaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(onboardStandIn, workflow.RegisterOptions{Name: "Onboard"})
	w.RegisterWorkflowWithOptions(revokeStandIn, workflow.RegisterOptions{Name: "Revoke"})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
}

func startOnboardStandIn(t *testing.T, c client.Client, id string, in standInOnboarding) {
	t.Helper()
	_, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: devTaskQueue}, "Onboard", in)
	require.NoError(t, err)
}

// waitForScheduledRun waits until the schedule started a run and returns its
// workflow ID.
func waitForScheduledRun(t *testing.T, s *Schedules, scheduleID string) string {
	t.Helper()
	var st ScheduleStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = s.DescribeRevocationSchedule(context.Background(), ScheduleRef{ScheduleID: scheduleID})
		require.NoError(t, err)
		return len(st.RecentWorkflowIDs) > 0
	}, 30*time.Second, 200*time.Millisecond, "schedule %s never started its workflow", scheduleID)
	return st.RecentWorkflowIDs[len(st.RecentWorkflowIDs)-1]
}

func standInResult(t *testing.T, c client.Client, workflowID string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out json.RawMessage
	require.NoError(t, c.GetWorkflow(ctx, workflowID, "").Get(ctx, &out))
	return out
}

func requireTemporalAppError(t *testing.T, err error, errType string, nonRetryable bool) *temporal.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.Truef(t, errors.As(err, &appErr), "want an ApplicationError, got %T: %v", err, err)
	assert.Equal(t, errType, appErr.Type(), "error: %v", err)
	assert.Equal(t, nonRetryable, appErr.NonRetryable(), "non-retryable? error: %v", err)
	return appErr
}

// assertTemporalAppError is requireTemporalAppError for callers that need
// only the type and retryability checked.
func assertTemporalAppError(t *testing.T, err error, errType string, nonRetryable bool) {
	t.Helper()
	_ = requireTemporalAppError(t, err, errType, nonRetryable)
}

// unusedClient satisfies client.Client for input checks that never reach it.
type unusedClient struct{ client.Client }

// temporalTestClient starts a dev server with gkewi's search attributes for the
// test and returns its client. Without the Temporal CLI the test is skipped,
// except under CI=true, where a missing tool is a failure.
func temporalTestClient(t *testing.T) client.Client {
	t.Helper()
	return temporalTestServer(t).Client()
}

// temporalTestServer is temporalTestClient's server.
func temporalTestServer(t *testing.T) *testsuite.DevServer {
	t.Helper()
	path := toolpath.TemporalCLI()
	if _, err := os.Stat(path); err != nil {
		msg := "Temporal CLI not found at " + path + " (run `make tools` or set GKEWI_TEMPORAL)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  path,
		ClientOptions: &client.Options{Namespace: "default", Logger: logger},
		LogLevel:      "error",
		ExtraArgs: []string{
			"--search-attribute", attrState + "=Keyword",
			"--search-attribute", attrExpiry + "=Datetime",
		},
		Stdout: io.Discard,
	})
	require.NoError(t, err, "start the Temporal dev server")
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Logf("stop the Temporal dev server: %v", err)
		}
	})
	return srv
}
