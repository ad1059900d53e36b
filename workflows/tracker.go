package workflows

import (
	"slices"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/contract"
)

// tracker owns a run's Status and keeps the Temporal UI's current details and the
// GkewiState search attribute in step with it.
type tracker struct {
	status Status
	// listen adds channels to watch while a step waits on an activity or a retry
	// timer; Onboard takes in approval signals that way, as they arrive.
	listen func(workflow.Selector)
}

func newTracker(ctx workflow.Context, workflowName string) *tracker {
	return &tracker{status: Status{
		Workflow:  workflowName,
		State:     StateValidating,
		Steps:     []Step{},
		UpdatedAt: workflow.Now(ctx),
	}}
}

// registerQuery exposes the status. It must run before the workflow's first
// blocking call so the query works from the first workflow task.
func (t *tracker) registerQuery(ctx workflow.Context) error {
	return workflow.SetQueryHandlerWithOptions(ctx, contract.QueryStatus, func() (Status, error) {
		return t.status, nil
	}, workflow.QueryHandlerOptions{Description: "Steps, approval and overall state of the run"})
}

// plan lists steps as pending, so the status shows what is still to come.
func (t *tracker) plan(names ...string) {
	for _, n := range names {
		t.index(n)
	}
}

// index returns the position of the named step, appending it when new.
func (t *tracker) index(name string) int {
	for i := range t.status.Steps {
		if t.status.Steps[i].Name == name {
			return i
		}
	}
	t.status.Steps = append(t.status.Steps, Step{Name: name, State: StepPending})
	return len(t.status.Steps) - 1
}

func (t *tracker) step(name string) *Step { return &t.status.Steps[t.index(name)] }

// publish stamps the status and refreshes the UI summary.
func (t *tracker) publish(ctx workflow.Context) {
	t.status.UpdatedAt = workflow.Now(ctx)
	workflow.SetCurrentDetails(ctx, currentDetails(t.status))
}

// setState changes the overall state and its search attribute.
func (t *tracker) setState(ctx workflow.Context, s State) {
	if t.status.State != s {
		t.status.State = s
		upsertStateAttribute(ctx, s)
		t.countState(ctx, s)
	}
	t.publish(ctx)
}

// Metrics runs emit through workflow.GetMetricsHandler: a counter tagged
// "state" and a timer tagged "decision". The worker's handler turns them into
// gkewi_grant_state_transitions_total and gkewi_approval_wait_seconds.
const (
	MetricStateTransitions = "gkewi_grant_state_transitions"
	MetricApprovalWait     = "gkewi_approval_wait"
)

// countState reports the state entered and, once support decided, how long
// they took. The SDK's workflow metrics handler drops both on replay, and they
// add no command to the history.
func (t *tracker) countState(ctx workflow.Context, s State) {
	h := workflow.GetMetricsHandler(ctx)
	h.WithTags(map[string]string{"state": string(s)}).Counter(MetricStateTransitions).Inc(1)
	ap := t.status.Approval
	if ap == nil || ap.RequestedAt.IsZero() {
		return
	}
	switch s {
	case StateApproved, StateRejected, StateTimedOut:
		decided := ap.DecidedAt
		if decided.IsZero() {
			decided = workflow.Now(ctx)
		}
		h.WithTags(map[string]string{"decision": string(ap.Decision)}).Timer(MetricApprovalWait).Record(decided.Sub(ap.RequestedAt))
	}
}

// begin marks a step running; a step run again (verification) keeps its start.
func (t *tracker) begin(ctx workflow.Context, name string) {
	st := t.step(name)
	if st.StartedAt.IsZero() {
		st.StartedAt = workflow.Now(ctx)
	}
	st.State = StepRunning
	t.publish(ctx)
}

// done marks a step done with what it found or changed.
func (t *tracker) done(ctx workflow.Context, name, detail string, warnings []string) {
	st := t.step(name)
	st.State = StepDone
	st.EndedAt = workflow.Now(ctx)
	st.Detail = detail
	st.Warnings = append(st.Warnings, warnings...)
	for _, w := range warnings {
		t.status.Warnings = append(t.status.Warnings, name+": "+w)
	}
	t.publish(ctx)
}

// skip marks a step that does not apply to this request.
func (t *tracker) skip(ctx workflow.Context, name, why string) {
	st := t.step(name)
	st.State = StepSkipped
	st.Detail = why
	t.publish(ctx)
}

// failed marks a step failed with the error that ended it.
func (t *tracker) failed(ctx workflow.Context, name, errMsg string) {
	st := t.step(name)
	st.State = StepFailed
	st.EndedAt = workflow.Now(ctx)
	st.LastError = errMsg
	t.publish(ctx)
}

// warn records a warning that belongs to no single step outcome.
func (t *tracker) warn(ctx workflow.Context, name, msg string) {
	st := t.step(name)
	st.Warnings = append(st.Warnings, msg)
	t.status.Warnings = append(t.status.Warnings, name+": "+msg)
	t.publish(ctx)
}

// end records the final state and, for failures, the error.
func (t *tracker) end(ctx workflow.Context, s State, err error) {
	if err != nil {
		t.status.Error = errorMessage(err)
	}
	t.setState(ctx, s)
}

// insertAfter lists new pending steps right after the step named after.
func (t *tracker) insertAfter(after string, names ...string) {
	i := t.index(after) + 1
	var fresh []Step
	for _, n := range names {
		if !t.has(n) {
			fresh = append(fresh, Step{Name: n, State: StepPending})
		}
	}
	t.status.Steps = slices.Insert(t.status.Steps, i, fresh...)
}

func (t *tracker) has(name string) bool {
	_, ok := t.status.Step(name)
	return ok
}

// wait blocks until f is ready, handling what listen watches meanwhile, and
// decodes f's value into out.
func (t *tracker) wait(ctx workflow.Context, f workflow.Future, out any) error {
	if t.listen == nil {
		return f.Get(ctx, out)
	}
	ready := false
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(f, func(workflow.Future) { ready = true })
	t.listen(sel)
	for !ready {
		sel.Select(ctx)
	}
	return f.Get(ctx, out)
}

// sleep is workflow.Sleep that handles what listen watches meanwhile.
func (t *tracker) sleep(ctx workflow.Context, d time.Duration, summary string) error {
	return t.wait(ctx, workflow.NewTimerWithOptions(ctx, d, workflow.TimerOptions{Summary: summary}), nil)
}
