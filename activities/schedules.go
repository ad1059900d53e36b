package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
)

// revocationCatchupWindow is how late a one-off schedule still fires after the
// Temporal service was unavailable at its time: a revocation should happen late
// rather than never. (The hourly sweep also catches what a schedule missed.)
const revocationCatchupWindow = 365 * 24 * time.Hour

// Schedules manages Temporal schedules: one-off schedules that revoke a grant
// when it expires, and the recurring sweep. Its methods are activities and can
// also be called directly (the CLI and the worker start do).
type Schedules struct {
	client client.Client
}

// NewSchedules returns schedule activities that act through c.
func NewSchedules(c client.Client) *Schedules {
	return &Schedules{client: c}
}

// SetRevocationTime makes the schedule in.ScheduleID start in.Action once, at
// in.At (rounded up to the second): it creates the schedule, or updates an
// existing one to the new time and action, so calling it again (a retry, a
// re-run of the onboarding, an extension) leaves one schedule with the latest
// time. When in.At is not in the future the action is triggered at once.
func (s *Schedules) SetRevocationTime(ctx context.Context, in RevocationScheduleInput) (ScheduleResult, error) {
	if err := s.ready(); err != nil {
		return ScheduleResult{}, err
	}
	if in.ScheduleID == "" || in.At.IsZero() {
		return ScheduleResult{}, invalidArgument("set revocation time: scheduleId and at are required")
	}
	if err := in.Action.validate(); err != nil {
		return ScheduleResult{}, err
	}
	at := ceilSecond(in.At)
	spec := onceAt(at)
	action := in.Action.scheduleAction()
	res := ScheduleResult{ScheduleID: in.ScheduleID, At: at, Created: true}

	sc := s.client.ScheduleClient()
	h, err := sc.Create(ctx, client.ScheduleOptions{
		ID:               in.ScheduleID,
		Spec:             spec,
		Action:           action,
		Overlap:          enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		CatchupWindow:    revocationCatchupWindow,
		RemainingActions: 1,
		Note:             in.Note,
	})
	if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		res.Created = false
		h = sc.GetHandle(ctx, in.ScheduleID)
		err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(cur client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			sched := cur.Description.Schedule
			sched.Spec = &spec
			sched.Action = action
			// A schedule that already fired, or was paused, fires again at the new time.
			sched.State = &client.ScheduleState{Note: in.Note, LimitedActions: true, RemainingActions: 1}
			policy := client.SchedulePolicies{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, CatchupWindow: revocationCatchupWindow}
			sched.Policy = &policy
			return &client.ScheduleUpdate{Schedule: &sched}, nil
		}})
	}
	if err != nil {
		return ScheduleResult{}, classifyTemporalError(err, "set schedule "+in.ScheduleID+" to "+at.Format(time.RFC3339))
	}
	if !at.After(time.Now()) {
		// The calendar time is past, so the schedule would never fire.
		if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
			return ScheduleResult{}, classifyTemporalError(err, "trigger schedule "+in.ScheduleID)
		}
		res.Triggered = true
	}
	return res, nil
}

// DescribeRevocationSchedule reports whether the schedule exists and when it
// fires next. A missing schedule is a result (Exists false), not an error.
func (s *Schedules) DescribeRevocationSchedule(ctx context.Context, in ScheduleRef) (ScheduleStatus, error) {
	if err := s.ready(); err != nil {
		return ScheduleStatus{}, err
	}
	if in.ScheduleID == "" {
		return ScheduleStatus{}, invalidArgument("describe schedule: scheduleId is required")
	}
	out := ScheduleStatus{ScheduleID: in.ScheduleID}
	desc, err := s.client.ScheduleClient().GetHandle(ctx, in.ScheduleID).Describe(ctx)
	if isNotFound(err) {
		return out, nil
	}
	if err != nil {
		return ScheduleStatus{}, classifyTemporalError(err, "describe schedule "+in.ScheduleID)
	}
	out.Exists = true
	actionsLeft := true
	if st := desc.Schedule.State; st != nil {
		out.Paused = st.Paused
		out.Note = st.Note
		actionsLeft = !st.LimitedActions || st.RemainingActions > 0
	}
	if actionsLeft && len(desc.Info.NextActionTimes) > 0 {
		out.NextActionAt = desc.Info.NextActionTimes[0].UTC()
	}
	for _, w := range desc.Info.RunningWorkflows {
		out.RunningWorkflowIDs = append(out.RunningWorkflowIDs, w.WorkflowID)
	}
	for _, a := range desc.Info.RecentActions {
		if a.StartWorkflowResult != nil {
			out.RecentWorkflowIDs = append(out.RecentWorkflowIDs, a.StartWorkflowResult.WorkflowID)
		}
	}
	return out, nil
}

// DeleteSchedule deletes the schedule; Changed is false when there was none.
// Workflows it already started keep running.
func (s *Schedules) DeleteSchedule(ctx context.Context, in ScheduleRef) (StepResult, error) {
	if err := s.ready(); err != nil {
		return StepResult{}, err
	}
	if in.ScheduleID == "" {
		return StepResult{}, invalidArgument("delete schedule: scheduleId is required")
	}
	err := s.client.ScheduleClient().GetHandle(ctx, in.ScheduleID).Delete(ctx)
	if isNotFound(err) {
		return StepResult{Detail: "no schedule " + in.ScheduleID}, nil
	}
	if err != nil {
		return StepResult{}, classifyTemporalError(err, "delete schedule "+in.ScheduleID)
	}
	return StepResult{Changed: true, Detail: "deleted schedule " + in.ScheduleID}, nil
}

// EnsureSweepSchedule creates the recurring schedule if it is missing. An
// existing one is left as it is, so an operator's changes (another interval, a
// pause) survive worker restarts.
func (s *Schedules) EnsureSweepSchedule(ctx context.Context, in RecurringScheduleInput) (StepResult, error) {
	if err := s.ready(); err != nil {
		return StepResult{}, err
	}
	if in.ScheduleID == "" || in.Every < time.Second {
		return StepResult{}, invalidArgument("ensure schedule: scheduleId and an interval of at least 1s are required")
	}
	if err := in.Action.validate(); err != nil {
		return StepResult{}, err
	}
	_, err := s.client.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:      in.ScheduleID,
		Spec:    client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: in.Every}}},
		Action:  in.Action.scheduleAction(),
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		// After an outage one catch-up run is enough: each run sees everything due.
		CatchupWindow: in.Every,
		Note:          in.Note,
	})
	if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return StepResult{Detail: "schedule " + in.ScheduleID + " already exists"}, nil
	}
	if err != nil {
		return StepResult{}, classifyTemporalError(err, "create schedule "+in.ScheduleID)
	}
	return StepResult{Changed: true, Detail: fmt.Sprintf("created schedule %s, every %s", in.ScheduleID, in.Every)}, nil
}

func (s *Schedules) ready() error {
	if s == nil || s.client == nil {
		return temporal.NewNonRetryableApplicationError(
			"schedules: no Temporal client; build the activities with activities.NewSchedules", contract.ErrTypeFailedPrecondition, nil)
	}
	return nil
}

func (a WorkflowAction) validate() error {
	if a.WorkflowType == "" || a.WorkflowID == "" || a.TaskQueue == "" {
		return invalidArgument("schedule action: workflowType, workflowId and taskQueue are required")
	}
	return nil
}

func (a WorkflowAction) scheduleAction() *client.ScheduleWorkflowAction {
	action := &client.ScheduleWorkflowAction{ID: a.WorkflowID, Workflow: a.WorkflowType, TaskQueue: a.TaskQueue}
	if a.Input != nil {
		action.Args = []any{a.Input}
	}
	return action
}

// onceAt is a calendar spec matching the single instant at (UTC, whole second):
// the year is part of it, so it never matches again.
func onceAt(at time.Time) client.ScheduleSpec {
	at = at.UTC()
	one := func(v int) []client.ScheduleRange { return []client.ScheduleRange{{Start: v}} }
	return client.ScheduleSpec{
		Calendars: []client.ScheduleCalendarSpec{{
			Year:       one(at.Year()),
			Month:      one(int(at.Month())),
			DayOfMonth: one(at.Day()),
			Hour:       one(at.Hour()),
			Minute:     one(at.Minute()),
			Second:     one(at.Second()),
			Comment:    "once, at " + at.Format(time.RFC3339),
		}},
	}
}

// ceilSecond rounds t up to the whole second (in UTC), so a schedule never fires
// before t.
func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Second); r.Before(t) {
		return r.Add(time.Second)
	}
	return t
}

// isNotFound reports a Temporal NotFound answer.
func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

// classifyTemporalError turns an error of the Temporal service into an activity
// error: a bad request, missing rights or a missing namespace need an operator;
// anything else (unavailable, deadline, throttling) is retried.
func classifyTemporalError(err error, action string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var (
		invalid  *serviceerror.InvalidArgument
		denied   *serviceerror.PermissionDenied
		nsAbsent *serviceerror.NamespaceNotFound
		notFound *serviceerror.NotFound
	)
	switch {
	case errors.As(err, &invalid):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: Temporal refused the request: %v", action, err), contract.ErrTypeInvalidArgument, err)
	case errors.As(err, &denied):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: permission denied by Temporal: give the worker's identity access to the namespace: %v", action, err), contract.ErrTypePermissionDenied, err)
	case errors.As(err, &nsAbsent):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: %v (check TEMPORAL_NAMESPACE)", action, err), contract.ErrTypeNotFound, err)
	case errors.As(err, &notFound):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: %v", action, err), contract.ErrTypeNotFound, err)
	}
	return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: %v; will retry", action, err), contract.ErrTypeUnavailable, err)
}
