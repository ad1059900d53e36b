package workflows

import (
	"errors"
	"math"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/contract"
)

// stepOptions are the timeouts and the retry policy of one kind of step.
//
// The workflow, not the Temporal server, retries failed activities: every
// execution runs with MaximumAttempts 1 and the workflow sleeps (a durable timer)
// before the next one. That way the status query shows each attempt and its
// error while a step is still being retried, which is what an operator needs
// during a long busy-cluster wait. The retry policy below keeps the semantics of
// a temporal.RetryPolicy, plus an overall bound.
type stepOptions struct {
	startToClose time.Duration
	retry        retryPolicy
	// redactURLs cuts URLs in the step's errors to scheme://host before the
	// status shows them (notifications: a webhook URL may hold a secret).
	redactURLs bool
}

// lostWorkerTimeout is every step's heartbeat timeout. The worker heartbeats
// each running activity for it (activities.NewKeepAliveInterceptor), so the
// timeout fires only when the worker is gone: a step lost with a killed worker
// is run again after seconds, not after its start-to-close timeout.
const lostWorkerTimeout = 20 * time.Second

// lostWorkerRetryDelay is the wait before re-running a step lost with its worker:
// nothing is wrong with the step, so no backoff.
const lostWorkerRetryDelay = time.Second

// retryPolicy decides whether and when to retry a failed activity execution.
type retryPolicy struct {
	initialInterval    time.Duration
	backoffCoefficient float64
	maximumInterval    time.Duration
	// maximumAttempts bounds the executions, first included.
	maximumAttempts int
	// giveUpAfter bounds the time since the first execution; 0 means no bound
	// beyond maximumAttempts.
	giveUpAfter time.Duration
	// nonRetryableErrorTypes end the step at once, in addition to errors the
	// activity marks non-retryable itself.
	nonRetryableErrorTypes []string
}

// fixNeeded lists activity error types an operator must act on; retrying cannot help.
func fixNeeded() []string {
	return []string{
		contract.ErrTypeInvalidArgument,
		contract.ErrTypeFailedPrecondition,
		contract.ErrTypePermissionDenied,
		contract.ErrTypeNotFound,
		contract.ErrTypeUnauthenticated,
		contract.ErrTypeServiceDisabled,
		contract.ErrTypeAlreadyExists,
	}
}

// Step options by kind. Cluster operations wait long and patiently: GKE runs one
// operation per cluster at a time, so another onboarding (or an upgrade) on the
// same cluster makes ours fail with a retryable ClusterBusy error until it ends.
// Nothing else coordinates onboardings that share a cluster; the activities are
// idempotent, so whichever runs second finds the setting already made.
func preflightOptions() stepOptions {
	return stepOptions{startToClose: 2 * time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 5, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// renderOptions: the rendering downloads the chart; a failure to render is the
// request's or the chart's, so few attempts.
func renderOptions() stepOptions {
	return stepOptions{startToClose: 5 * time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 4, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// verifyReleaseOptions: pods still being scheduled, or on nodes a node pool
// update is still replacing, are looked at again for up to 15 minutes.
func verifyReleaseOptions() stepOptions {
	return stepOptions{startToClose: 2 * time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 1.5, maximumInterval: time.Minute,
		maximumAttempts: 30, giveUpAfter: 15 * time.Minute, nonRetryableErrorTypes: fixNeeded(),
	}}
}

func enableServiceOptions() stepOptions {
	return stepOptions{startToClose: 15 * time.Minute, retry: retryPolicy{
		initialInterval: 10 * time.Second, backoffCoefficient: 2, maximumInterval: 2 * time.Minute,
		maximumAttempts: 10, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// clusterOptions: node pool updates recreate nodes, which takes long on big pools.
func clusterOptions() stepOptions {
	return stepOptions{startToClose: 3 * time.Hour, retry: retryPolicy{
		initialInterval: 30 * time.Second, backoffCoefficient: 1.5, maximumInterval: 5 * time.Minute,
		maximumAttempts: 200, giveUpAfter: 12 * time.Hour, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// readOptions: quick reads (list node pools).
func readOptions() stepOptions {
	return stepOptions{startToClose: time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 8, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// iamOptions: IAM and BigQuery policy read-modify-writes lose races (409 ABORTED)
// under concurrent changes; those retry quickly. A workload pool that IAM does not
// know yet (just enabled) shows up as WorkloadPoolNotReady and also retries.
func iamOptions() stepOptions {
	return stepOptions{startToClose: 2 * time.Minute, retry: retryPolicy{
		initialInterval: 2 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 20, giveUpAfter: 30 * time.Minute,
		nonRetryableErrorTypes: fixNeeded(),
	}}
}

func kubeOptions() stepOptions {
	return stepOptions{startToClose: 2 * time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 10, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// helmOptions: an install waits for the release's pods; a failed one rarely heals
// by itself, so few attempts.
func helmOptions() stepOptions {
	return stepOptions{startToClose: 30 * time.Minute, retry: retryPolicy{
		initialInterval: 30 * time.Second, backoffCoefficient: 2, maximumInterval: 5 * time.Minute,
		maximumAttempts: 3, nonRetryableErrorTypes: fixNeeded(),
	}}
}

func notifyOptions() stepOptions {
	return stepOptions{startToClose: time.Minute, redactURLs: true, retry: retryPolicy{
		initialInterval: 10 * time.Second, backoffCoefficient: 2, maximumInterval: 2 * time.Minute,
		maximumAttempts: 5, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// verifyOptions are for errors while asking (not for denials, see verify.go).
func verifyOptions() stepOptions {
	return stepOptions{startToClose: 2 * time.Minute, retry: retryPolicy{
		initialInterval: 10 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 5, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// scheduleOptions: calls to the Temporal service (schedules, visibility).
func scheduleOptions() stepOptions {
	return stepOptions{startToClose: time.Minute, retry: retryPolicy{
		initialInterval: 2 * time.Second, backoffCoefficient: 2, maximumInterval: 30 * time.Second,
		maximumAttempts: 8, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// onboardingCheckOptions: Revoke's look at the grant's onboarding. Few attempts:
// when it cannot be told, the revocation goes on (removing access is the safe side).
func onboardingCheckOptions() stepOptions {
	return stepOptions{startToClose: time.Minute, retry: retryPolicy{
		initialInterval: 5 * time.Second, backoffCoefficient: 2, maximumInterval: 30 * time.Second,
		maximumAttempts: 3, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// cancelOnboardingOptions: the activity waits (heartbeating) until the canceled
// onboarding has cleaned up, which includes deleting its GSA with retries.
func cancelOnboardingOptions() stepOptions {
	return stepOptions{startToClose: time.Hour, retry: retryPolicy{
		initialInterval: 10 * time.Second, backoffCoefficient: 2, maximumInterval: time.Minute,
		maximumAttempts: 3, nonRetryableErrorTypes: fixNeeded(),
	}}
}

// activityOptions are the options of one execution.
func (o stepOptions) activityOptions(summary string) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: o.startToClose,
		HeartbeatTimeout:    lostWorkerTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		Summary:             summary,
	}
}

// maxStepAttempts bounds the executions of one run of a step. Every failed
// execution adds about eleven events to the history (the activity, the retry
// timer and two workflow tasks), which Temporal caps at 50,000 events; long
// waits (a busy cluster, a node pool update) happen inside the activity.
const maxStepAttempts = 40

// bounded is p with at most maxStepAttempts executions. Its maximum interval
// grows to giveUpAfter/maxStepAttempts, so the fewer executions still span most
// of giveUpAfter: the cluster policy (200 executions, 5m apart at most, for
// 12h) becomes 40 executions, 18m apart at most, over about 9h40m.
func (p retryPolicy) bounded() retryPolicy {
	if p.maximumAttempts <= maxStepAttempts {
		return p
	}
	p.maximumAttempts = maxStepAttempts
	p.maximumInterval = max(p.maximumInterval, p.giveUpAfter/maxStepAttempts)
	return p
}

// retryable reports whether err, from execution number attempt, may be retried.
func (p retryPolicy) retryable(err error, attempt int) bool {
	if attempt >= p.maximumAttempts || temporal.IsCanceledError(err) {
		return false
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return !appErr.NonRetryable() && !slices.Contains(p.nonRetryableErrorTypes, appErr.Type())
	}
	return true
}

// delay is the wait before the execution after number attempt; an activity may
// ask for a specific delay with ApplicationError's NextRetryDelay.
func (p retryPolicy) delay(err error, attempt int) time.Duration {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.NextRetryDelay() > 0 {
		return appErr.NextRetryDelay()
	}
	d := float64(p.initialInterval) * math.Pow(p.backoffCoefficient, float64(attempt-1))
	if d > float64(p.maximumInterval) {
		return p.maximumInterval
	}
	return time.Duration(d)
}

// proofCheckOptions: checking a decision's proof is a computation on the
// worker, run while the approver waits for the update's answer; the server
// retries it over a worker restart.
func proofCheckOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
		Summary:             "check the decision's proof",
	}
}
