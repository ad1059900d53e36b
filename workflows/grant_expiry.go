package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// Time-bound grants end in two independent ways, so one failing does not leave
// a grant in place:
//
//   - A one-off Temporal schedule per grant (RevocationScheduleID) starts Revoke
//     at the expiry. Onboard creates it when it completes; extending the grant
//     moves it (SetRevocationTime, `gkewi extend` or `temporal schedule update`);
//     Revoke deletes it when it ends, so an early revocation leaves nothing
//     behind.
//   - The hourly Sweep revokes every completed grant whose expiry has passed and
//     that nothing revoked, in case the schedule was never created or was lost.
//
// The expiry Onboard recorded (the GkewiExpiry search attribute) cannot change
// once the run completed, so an extension lives only in the schedule: the sweep
// leaves a grant alone while its schedule still has a revocation to start.

// DefaultSweepInterval is how often the sweep schedule runs Sweep.
const DefaultSweepInterval = time.Hour

// expiresAt is when the grant ends if it completes at completedAt: expiry.at, or
// completedAt plus expiry.ttl; zero for a grant without expiry.
func (r OnboardRequest) expiresAt(completedAt time.Time) time.Time {
	switch {
	case r.Expiry == nil:
		return time.Time{}
	case r.Expiry.At != "":
		at, err := time.Parse(time.RFC3339, r.Expiry.At)
		if err != nil {
			return time.Time{} // refused by validation before any step
		}
		return at
	case r.Expiry.TTL != "":
		return completedAt.Add(r.Expiry.TTL.Or(0))
	}
	return time.Time{}
}

// NewRevocationSchedule is the schedule that revokes the grant of req at at: it
// starts Revoke with req (its reason saying why) under RevokeWorkflowID(req),
// suffixed with the time by the schedule. Onboard and `gkewi extend` use it.
func NewRevocationSchedule(req RevokeRequest, at time.Time) activities.RevocationScheduleInput {
	req = req.WithDefaults()
	if req.Reason == "" {
		req.Reason = "grant expired at " + stamp(at)
	}
	return activities.RevocationScheduleInput{
		ScheduleID: RevocationScheduleID(req),
		At:         at,
		Action: activities.WorkflowAction{
			WorkflowType: RevokeWorkflowName,
			WorkflowID:   RevokeWorkflowID(req),
			TaskQueue:    TaskQueue,
			Input:        req,
		},
		Note: fmt.Sprintf("gkewi: revokes %s/%s on %s/%s/%s (GSA %s) when the grant expires",
			req.Namespace, req.KSA, req.Project, req.Location, req.Cluster, req.GSAEmail),
	}
}

// NewSweepSchedule is the recurring schedule that runs Sweep every interval
// (DefaultSweepInterval when zero). The worker ensures it at start.
func NewSweepSchedule(every time.Duration) activities.RecurringScheduleInput {
	if every <= 0 {
		every = DefaultSweepInterval
	}
	return activities.RecurringScheduleInput{
		ScheduleID: SweepScheduleID,
		Every:      every,
		Action:     activities.WorkflowAction{WorkflowType: SweepWorkflowName, WorkflowID: SweepWorkflowID, TaskQueue: TaskQueue, Input: SweepRequest{}},
		Note:       "gkewi: revokes time-bound grants whose expiry passed and that nothing revoked",
	}
}

// arrangeRevocation is the first version's handling of an expiry: nothing is
// scheduled, the step says so and a warning tells the operator to revoke by then.
// Only runs recorded before changeScheduleRevocation take this path.
func (o *onboarding) arrangeRevocation(ctx workflow.Context, expiresAt time.Time) {
	when := expiresAt.UTC().Format(time.RFC3339)
	o.t.skip(ctx, stepScheduleRevocation, "revocation at "+when+" is not scheduled automatically")
	o.t.warn(ctx, stepScheduleRevocation, "the grant expires at "+when+" but nothing revokes it then: start Revoke with the result's revoke request by that time")
}

// scheduleRevocation creates (or moves) the grant's revocation schedule. A
// failure is a warning, not a failure of the onboarding: the grant is in place
// and works, and the hourly sweep revokes it after the expiry anyway.
func (o *onboarding) scheduleRevocation(ctx workflow.Context, expiresAt time.Time) {
	var schedules *activities.Schedules
	t := o.t
	in := NewRevocationSchedule(o.revokeRequest(), expiresAt)
	var res activities.ScheduleResult
	if err := t.run(ctx, stepScheduleRevocation, scheduleOptions(), schedules.SetRevocationTime, in, &res); err != nil {
		t.warn(ctx, stepScheduleRevocation, fmt.Sprintf(
			"the revocation at %s is not scheduled (%s): the hourly sweep (schedule %s) revokes the grant after it expires; to schedule it, run `gkewi extend --workflow-id %s --at %s`",
			stamp(expiresAt), t.step(stepScheduleRevocation).LastError, SweepScheduleID, workflow.GetInfo(ctx).WorkflowExecution.ID, stamp(expiresAt)))
		return
	}
	o.revocationSchedule = res.ScheduleID
	t.status.RevocationSchedule = res.ScheduleID
	t.step(stepScheduleRevocation).Changed = true
	detail := fmt.Sprintf("Revoke starts at %s (schedule %s)", stamp(res.At), res.ScheduleID)
	if res.Triggered {
		detail = fmt.Sprintf("the expiry %s had passed: Revoke started at once (schedule %s)", stamp(res.At), res.ScheduleID)
	}
	t.done(ctx, stepScheduleRevocation, detail, nil)
}

// dropRevocationSchedule deletes a revocation schedule an earlier run of a
// time-bound grant left, now that the grant has no expiry. It shows in the
// status only when there was one to delete.
func (o *onboarding) dropRevocationSchedule(ctx workflow.Context) {
	var schedules *activities.Schedules
	t := o.t
	ref := activities.ScheduleRef{ScheduleID: RevocationScheduleID(o.revokeRequest())}
	actx := workflow.WithActivityOptions(ctx, quietOptions("drop revocation schedule"))
	var res activities.StepResult
	if err := workflow.ExecuteActivity(actx, schedules.DeleteSchedule, ref).Get(ctx, &res); err != nil {
		t.warn(ctx, stepScheduleRevocation, fmt.Sprintf("could not check for a revocation schedule of an earlier run (%s): delete it with `temporal schedule delete --schedule-id %s` if it exists",
			errorMessage(err), ref.ScheduleID))
		return
	}
	if res.Changed {
		t.step(stepScheduleRevocation).Changed = true
		t.done(ctx, stepScheduleRevocation, "deleted "+ref.ScheduleID+", left by an earlier run: this grant has no expiry", nil)
	}
}

// quietOptions are for housekeeping activities that have no step of their own:
// the server retries them.
func quietOptions(summary string) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    lostWorkerTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 2 * time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
			MaximumAttempts: 5, NonRetryableErrorTypes: fixNeeded(),
		},
		Summary: summary,
	}
}
