package metrics

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
)

// ActivityInterceptor times every activity attempt, counts failures by error
// type and records the outcome of each token-chain verification.
func (m *Metrics) ActivityInterceptor() interceptor.WorkerInterceptor {
	return &activityInterceptor{m: m}
}

type activityInterceptor struct {
	interceptor.WorkerInterceptorBase
	m *Metrics
}

func (a *activityInterceptor) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &activityInbound{m: a.m}
	i.Next = next
	return i
}

type activityInbound struct {
	interceptor.ActivityInboundInterceptorBase
	m *Metrics
}

func (i *activityInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	step := activity.GetInfo(ctx).ActivityType.Name
	begin := time.Now()
	res, err := i.Next.ExecuteActivity(ctx, in)
	outcome := "success"
	if err != nil {
		outcome = "failure"
		i.m.stepFailures.WithLabelValues(step, ErrorType(err)).Inc()
	}
	i.m.stepDuration.WithLabelValues(step, outcome).Observe(time.Since(begin).Seconds())
	i.observeVerification(res, err)
	return res, err
}

// observeVerification counts the walks of the token chain, whichever activity
// returned them.
func (i *activityInbound) observeVerification(res any, err error) {
	var r activities.VerifyResult
	switch v := res.(type) {
	case activities.VerifyResult:
		r = v
	case *activities.VerifyResult:
		if v == nil {
			return
		}
		r = *v
	default:
		return
	}
	switch {
	case err != nil:
		i.m.verifications.WithLabelValues("error", "none").Inc()
	case r.Allowed:
		i.m.verifications.WithLabelValues("allowed", "none").Inc()
	default:
		i.m.verifications.WithLabelValues("denied", deniedStage(r)).Inc()
	}
}

// deniedStage is the first link of the chain that did not pass.
func deniedStage(r activities.VerifyResult) string {
	for _, s := range r.Stages {
		if !s.OK {
			return s.Name
		}
	}
	return "unknown"
}

// ErrorType is the label of a step failure: the application error's type as
// activities classify it (PermissionDenied, ClusterBusy, ...), Canceled or
// Timeout for contexts that ended, Unclassified otherwise.
func ErrorType(err error) string {
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &appErr) && appErr.Type() != "":
		return appErr.Type()
	case errors.Is(err, context.Canceled):
		return "Canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) {
		return "Canceled"
	}
	return "Unclassified"
}
