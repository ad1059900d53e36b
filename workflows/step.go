package workflows

import (
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// ErrTypeStepFailed is the ApplicationError type of a failed step whose activity
// error carried no type of its own; typed activity errors (PermissionDenied, ...)
// keep their type.
const ErrTypeStepFailed = "StepFailed"

// run executes activity with input in as step name, retrying as opts says, and
// decodes its result into out. When the step fails for good it is marked failed
// and the error returned is a non-retryable ApplicationError naming the step, the
// attempts and the activity's message. Cancellation is returned as is.
func (t *tracker) run(ctx workflow.Context, name string, opts stepOptions, activity, in, out any) error {
	t.begin(ctx, name)
	if opts.retry.maximumAttempts > maxStepAttempts &&
		workflow.GetVersion(ctx, changeBoundedRetries, workflow.DefaultVersion, 1) == 1 {
		opts.retry = opts.retry.bounded()
	}
	actx := workflow.WithActivityOptions(ctx, opts.activityOptions(name))
	first := workflow.Now(ctx)
	// tries counts this call's executions, which the policy bounds; the step's
	// Attempts also counts earlier calls (verification runs the step repeatedly).
	for tries := 1; ; tries++ {
		t.step(name).Attempts++
		t.publish(ctx)
		err := t.wait(ctx, workflow.ExecuteActivity(actx, activity, in), out)
		if err == nil {
			return nil
		}
		if temporal.IsCanceledError(err) {
			t.failed(ctx, name, "canceled")
			return err
		}
		st := t.step(name)
		st.LastError = errorMessage(err)
		if opts.redactURLs {
			st.LastError = redactURLs(st.LastError)
		}
		delay := opts.retry.delay(err, tries)
		if lostWithWorker(err) && workflow.GetVersion(ctx, changeLostWorkerRetry, workflow.DefaultVersion, 1) == 1 {
			delay = lostWorkerRetryDelay
		}
		retry := opts.retry.retryable(err, tries)
		if retry && opts.retry.giveUpAfter > 0 && workflow.Now(ctx).Add(delay).Sub(first) > opts.retry.giveUpAfter {
			retry = false
		}
		if !retry {
			t.failed(ctx, name, st.LastError)
			return stepError(name, st.Attempts, err)
		}
		t.publish(ctx)
		workflow.GetLogger(ctx).Warn("step failed; retrying", "step", name, "attempt", st.Attempts, "delay", delay, "error", err)
		if err := t.sleep(ctx, delay, "retry "+name); err != nil {
			t.failed(ctx, name, "canceled")
			return err
		}
	}
}

// lostWithWorker tells an execution that stopped heartbeating: its worker died
// or lost the server. The keep-alive heartbeats every running activity, so a
// slow step is not one.
func lostWithWorker(err error) bool {
	var te *temporal.TimeoutError
	return errors.As(err, &te) && te.TimeoutType() == enumspb.TIMEOUT_TYPE_HEARTBEAT
}

// runStep runs an activity returning a StepResult and marks the step done with
// its detail and warnings.
func (t *tracker) runStep(ctx workflow.Context, name string, opts stepOptions, activity, in any) (activities.StepResult, error) {
	var res activities.StepResult
	if err := t.run(ctx, name, opts, activity, in, &res); err != nil {
		return res, err
	}
	detail := res.Detail
	if detail == "" {
		detail = unchangedOr(res.Changed, "changed")
	}
	t.step(name).Changed = res.Changed
	t.done(ctx, name, detail, res.Warnings)
	return res, nil
}

func unchangedOr(changed bool, what string) string {
	if changed {
		return what
	}
	return "already as wanted"
}

// stepError is the workflow-level error of a failed step.
func stepError(name string, attempts int, err error) error {
	errType := ErrTypeStepFailed
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() != "" {
		errType = appErr.Type()
	}
	msg := fmt.Sprintf("step %s failed after %d attempt(s): %s", name, attempts, errorMessage(err))
	return temporal.NewNonRetryableApplicationError(msg, errType, err)
}

// errorMessage is the activity's own message, without Temporal's wrapping.
func errorMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	var timeoutErr *temporal.TimeoutError
	if errors.As(err, &timeoutErr) {
		return fmt.Sprintf("activity timed out (%s)", timeoutErr.TimeoutType())
	}
	var panicErr *temporal.PanicError
	if errors.As(err, &panicErr) {
		return "activity panicked: " + panicErr.Error()
	}
	return err.Error()
}
