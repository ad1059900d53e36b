package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

// approval asks support and waits for an allowlisted decision, reminding every
// reminder interval until the approval timeout. Rejection, timeout and
// cancellation undo what this run created before they end the run; the state
// returned goes with the error.
func (o *onboarding) approval(ctx workflow.Context) (State, error) {
	t, g := o.t, o.gate
	rec := t.status.Approval
	g.drain(ctx)
	if g.decided() {
		o.supportInvolved = true
		t.skip(ctx, stepApprovalRequest, fmt.Sprintf("decided before the request: %s by %s", rec.Decision, rec.Approver))
	} else {
		if err := o.notify(ctx, stepApprovalRequest, contract.NotifyApprovalRequest, ""); err != nil {
			return o.endBeforeGrant(ctx, StateCanceled, err)
		}
		o.supportInvolved = true
	}

	t.begin(ctx, stepApproval)
	if err := o.awaitDecision(ctx); err != nil {
		if !temporal.IsCanceledError(err) {
			// The cluster work failed while support decided.
			t.failed(ctx, stepApproval, "no longer awaited: "+errorMessage(err))
			return o.endBeforeGrant(ctx, StateFailed, err)
		}
		return o.endBeforeGrant(ctx, StateCanceled, err)
	}
	if workflow.GetVersion(ctx, changeApprovalMemo, workflow.DefaultVersion, 1) == 1 {
		upsertApprovalMemo(ctx, rec)
	}
	switch rec.Decision {
	case DecisionRejected:
		t.failed(ctx, stepApproval, "rejected by "+rec.Approver)
		return o.endBeforeGrant(ctx, StateRejected, temporal.NewNonRetryableApplicationError(
			"onboarding rejected by "+rec.Approver+decisionNote(rec), ErrTypeRejected, nil))
	case DecisionTimedOut:
		t.failed(ctx, stepApproval, "no decision within "+string(o.req.Support.ApprovalTimeout))
		return o.endBeforeGrant(ctx, StateTimedOut, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("no decision from support.approvers within %s (%d reminder(s) sent)", o.req.Support.ApprovalTimeout, rec.RemindersSent),
			ErrTypeApprovalTimedOut, nil))
	}
	t.done(ctx, stepApproval, "approved by "+rec.Approver+decisionNote(rec), nil)
	t.setState(ctx, StateApproved)

	// A fixed expiry may have passed while support thought about it.
	if e := o.req.Expiry; e != nil && e.At != "" && !o.req.expiresAt(time.Time{}).After(workflow.Now(ctx)) {
		return o.endBeforeGrant(ctx, StateFailed, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("expiry.at %s passed before the grant; nothing was granted", o.req.Expiry.At), ErrTypeExpiredBeforeGrant, nil))
	}
	return "", nil
}

// awaitDecision blocks until a decision counts or the timeout passes. Signals,
// the update (through the gate's wake channel) and the timers share one
// Select; a nil error means rec.Decision is final.
func (o *onboarding) awaitDecision(ctx workflow.Context) error {
	t, g := o.t, o.gate
	rec := t.status.Approval
	if g.decided() {
		return nil
	}
	interval := o.req.Support.ReminderInterval.Or(0)
	timeout := o.req.Support.ApprovalTimeout.Or(0)
	if spaced := reminderSpacing(interval, timeout); spaced != interval &&
		workflow.GetVersion(ctx, changeBoundedReminders, workflow.DefaultVersion, 1) == 1 {
		t.warn(ctx, stepApproval, fmt.Sprintf("reminders every %s, not every %s (support.reminderInterval): at most %d reminders within support.approvalTimeout %s",
			spaced, interval, maxReminders, o.req.Support.ApprovalTimeout))
		interval = spaced
	}
	now := workflow.Now(ctx)
	rec.RequestedAt = now
	rec.Deadline = now.Add(timeout)

	timerCtx, cancelTimers := workflow.WithCancel(ctx)
	defer cancelTimers()
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(g.signals, func(c workflow.ReceiveChannel, _ bool) { g.takeSignal(ctx, c, true) })
	sel.AddReceive(g.wake, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil) })
	timedOut, remind := false, false
	deadline := workflow.NewTimerWithOptions(timerCtx, timeout, workflow.TimerOptions{Summary: "approval timeout"})
	sel.AddFuture(deadline, func(f workflow.Future) { timedOut = f.Get(ctx, nil) == nil })
	scheduleReminder := func() {
		next := rec.RequestedAt.Add(time.Duration(rec.RemindersSent+1) * interval)
		rec.NextReminderAt = time.Time{}
		if !next.Before(rec.Deadline) {
			return
		}
		rec.NextReminderAt = next
		// A slow reminder delivery can push the next one into the past: send it now.
		delay := max(next.Sub(workflow.Now(ctx)), 0)
		timer := workflow.NewTimerWithOptions(timerCtx, delay, workflow.TimerOptions{Summary: "approval reminder"})
		sel.AddFuture(timer, func(f workflow.Future) { remind = f.Get(ctx, nil) == nil })
	}
	scheduleReminder()
	// Work running beside the wait (changeCriticalPath) ends it when it fails.
	sideFailed := false
	if c := o.clusterFailed; c != nil {
		sel.AddReceive(c, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil); sideFailed = true })
	}

	g.awaiting = true
	defer func() { g.awaiting = false }()
	t.setState(ctx, StateAwaitingApproval)
	for !g.decided() {
		sel.Select(ctx)
		if err := ctx.Err(); err != nil {
			return temporal.NewCanceledError()
		}
		switch {
		case g.decided():
		case g.levelUp:
			// A level approved: ask the next one.
			g.levelUp = false
			if err := o.notify(ctx, stepApproval, contract.NotifyApprovalRequest, ""); err != nil {
				return err
			}
		case sideFailed:
			rec.NextReminderAt = time.Time{}
			return o.clusterWork.Get(ctx, nil)
		case timedOut:
			rec.Decision = DecisionTimedOut
			rec.DecidedAt = workflow.Now(ctx)
			rec.NextReminderAt = time.Time{}
			return nil
		case remind:
			remind = false
			rec.RemindersSent++
			if err := o.notify(ctx, stepApproval, contract.NotifyReminder, ""); err != nil {
				return err
			}
			scheduleReminder()
		}
		t.publish(ctx)
	}
	rec.NextReminderAt = time.Time{}
	return nil
}

// maxReminders bounds the reminders of one approval wait: each adds an
// activity and a timer to the history, which Temporal caps at 50,000 events.
// 48 is one an hour for two days; the defaults (24h, 168h) send 6.
const maxReminders = 48

// reminderSpacing is the interval between reminders: interval, or, when that
// would send more than maxReminders before timeout, the whole minute that
// sends at most maxReminders.
func reminderSpacing(interval, timeout time.Duration) time.Duration {
	// Reminder k goes at k*interval, only before the timeout: at most
	// maxReminders go when interval >= timeout/(maxReminders+1), rounded up.
	least := timeout / (maxReminders + 1)
	if timeout%(maxReminders+1) != 0 {
		least++
	}
	if interval >= least {
		return interval
	}
	return (least + time.Minute - 1).Truncate(time.Minute)
}

// endBeforeGrant undoes what this run created when it ends before the grant:
// the GSA if this run created it, else the self token creator binding if this
// run added it. Shared cluster settings (workload pool, node pool metadata) stay:
// other workloads may rely on them.
func (o *onboarding) endBeforeGrant(ctx workflow.Context, s State, cause error) (State, error) {
	cleanupCtx := ctx
	if temporal.IsCanceledError(cause) {
		cleanupCtx, _ = workflow.NewDisconnectedContext(ctx)
	}
	t := o.t
	t.setState(cleanupCtx, StateCleaningUp)
	var gcp *activities.GCP
	var undone string
	switch {
	case o.sa.Email == "":
	case o.sa.Created:
		if _, err := t.runStep(cleanupCtx, stepDeleteServiceAccount, iamOptions(), gcp.DeleteServiceAccount, o.sa); err != nil {
			t.warn(cleanupCtx, stepDeleteServiceAccount, "could not delete "+o.sa.Email+"; delete it by hand: "+errorMessage(err))
		} else {
			undone = "deleted service account " + o.sa.Email + ", created by this run"
		}
	case o.tokenCreatorAdded:
		self := activities.ServiceAccountIAMInput{ServiceAccountEmail: o.sa.Email, Role: roleTokenCreator, Member: serviceAccountMember(o.sa.Email)}
		if _, err := t.runStep(cleanupCtx, stepRemoveTokenCreator, iamOptions(), gcp.RemoveServiceAccountIAMMember, self); err != nil {
			t.warn(cleanupCtx, stepRemoveTokenCreator, "could not remove the token creator binding: "+errorMessage(err))
		} else {
			undone = "removed the token creator binding added to " + o.sa.Email
		}
	default:
		undone = "kept service account " + o.sa.Email + ": this run did not create it"
	}
	var appErr *temporal.ApplicationError
	if undone != "" && errors.As(cause, &appErr) {
		cause = temporal.NewNonRetryableApplicationError(appErr.Message()+"; "+undone, appErr.Type(), nil)
	}
	return s, cause
}

// notify sends a support notification as part of step. Delivery problems are
// warnings, not failures: the decision can still arrive, and the status shows
// them. Only cancellation is returned.
func (o *onboarding) notify(ctx workflow.Context, step, kind, outcome string) error {
	var notifier *activities.Notifier
	info := workflow.GetInfo(ctx)
	r := o.req
	in := activities.Notification{
		Kind: kind, Targets: r.Support.notifyTargets(),
		WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
		Project: r.Project, Location: r.Location, Cluster: r.Cluster, Namespace: r.Namespace, KSA: r.KSA,
		GSAEmail: o.sa.Email, Outcome: outcome, ProofRequired: o.gate.requireProof,
	}
	switch {
	case o.rules != nil:
		// The grant policy says whom to tell, and who gets links.
		in.Targets, in.Approvers = o.policyTargets(kind == contract.NotifyOutcome)
		if len(in.Approvers) > 0 {
			in.Deadline = o.linkDeadline(ctx)
		}
		in.Grant = o.grantSummary()
	case o.gate.requireProof:
		in.Approvers = r.Support.Approvers
		in.Deadline = o.approvalDeadline(ctx)
	}
	t := o.t
	var res activities.NotifyResult
	if kind == contract.NotifyReminder {
		// Reminders are part of the approval step; they do not get steps of their own.
		actx := workflow.WithActivityOptions(ctx, notifyOptions().activityOptions("reminder"))
		err := t.wait(ctx, workflow.ExecuteActivity(actx, notifier.NotifySupport, in), &res)
		if temporal.IsCanceledError(err) {
			return err
		}
		if err != nil {
			t.warn(ctx, step, "reminder not sent: "+redactURLs(errorMessage(err)))
		}
	} else {
		err := t.run(ctx, step, notifyOptions(), notifier.NotifySupport, in, &res)
		if temporal.IsCanceledError(err) {
			return err
		}
		if err != nil {
			t.warn(ctx, step, "not sent: "+redactURLs(errorMessage(err)))
			return nil
		}
		t.done(ctx, step, "sent to "+strings.Join(redactTargets(res.Delivered), ", "), nil)
	}
	if len(res.Failed) > 0 {
		why := res.Errors // each names its target as scheme://host
		if len(why) != len(res.Failed) {
			why = redactTargets(res.Failed)
		}
		t.warn(ctx, step, kind+" not delivered to "+redactURLs(strings.Join(why, "; ")))
	}
	return nil
}

// approvalDeadline is when the wait for support gives up: the recorded one
// once the wait began, else as it will be when it begins now.
func (o *onboarding) approvalDeadline(ctx workflow.Context) time.Time {
	if d := o.t.status.Approval.Deadline; !d.IsZero() {
		return d
	}
	return workflow.Now(ctx).Add(o.req.Support.ApprovalTimeout.Or(0))
}

// notifyOutcome tells support how the run ended, if support was involved.
func (o *onboarding) notifyOutcome(ctx workflow.Context, outcome string) {
	if !o.supportInvolved {
		return
	}
	_ = o.notify(ctx, stepOutcome, contract.NotifyOutcome, outcome)
}

func decisionNote(rec *Approval) string {
	var parts []string
	if rec.Ticket != "" {
		parts = append(parts, "ticket "+rec.Ticket)
	}
	if rec.Comment != "" {
		parts = append(parts, rec.Comment)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ": ") + ")"
}
