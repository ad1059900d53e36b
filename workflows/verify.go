package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// IAM changes take about 2 minutes to propagate, sometimes 7 or more: access is
// checked again, with backoff, for up to propagationBound before the verdict.
const (
	propagationBound      = 15 * time.Minute
	propagationFirstDelay = 15 * time.Second
	propagationMaxDelay   = 2 * time.Minute
)

// verifyAccess walks the token chain until its outcome is the one wanted
// (allowed after Onboard, denied after Revoke) or propagationBound passes.
// Errors while asking are retried by the step's policy; a wrong outcome is
// retried here.
func verifyAccess(ctx workflow.Context, t *tracker, step string, in activities.VerifyInput, wantAllowed bool) (activities.VerifyResult, error) {
	res, ok, err := walkUntil(ctx, t, step, in, func(r activities.VerifyResult) bool { return r.Allowed == wantAllowed }, nil)
	if err != nil || ok {
		return res, err
	}
	attempts := t.step(step).Attempts
	if wantAllowed {
		denied := deniedStage(res)
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("access still denied at stage %s after %s (%d attempts): %s", denied.Name, propagationBound, attempts, denied.Detail),
			ErrTypeAccessNotGranted, nil)
	}
	return res, stillAllowedError(in, attempts)
}

func stillAllowedError(in activities.VerifyInput, attempts int) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("access still allowed after %s (%d attempts): %s can still get tokens for %s; check for other workloadIdentityUser or token creator grants on it",
			propagationBound, attempts, in.Namespace+"/"+in.KSA, in.GSAEmail),
		ErrTypeAccessStillAllowed, nil)
}

// walkUntil walks the token chain as step until accept takes the outcome, with
// backoff, for up to propagationBound; observe (if set) sees every outcome. It
// reports false, with the step failed, when the bound passed first.
func walkUntil(ctx workflow.Context, t *tracker, step string, in activities.VerifyInput,
	accept func(activities.VerifyResult) bool, observe func(activities.VerifyResult),
) (activities.VerifyResult, bool, error) {
	var verifier *activities.Verifier
	giveUp := workflow.Now(ctx).Add(propagationBound)
	delay := propagationFirstDelay
	for {
		var res activities.VerifyResult
		if err := t.run(ctx, step, verifyOptions(), verifier.VerifyAccess, in, &res); err != nil {
			return res, false, err
		}
		if observe != nil {
			observe(res)
		}
		if accept(res) {
			t.done(ctx, step, describeChain(res), nil)
			return res, true, nil
		}
		st := t.step(step)
		st.LastError = describeChain(res)
		if workflow.Now(ctx).Add(delay).After(giveUp) {
			t.failed(ctx, step, st.LastError)
			return res, false, nil
		}
		t.publish(ctx)
		if err := t.sleep(ctx, delay, "verify again"); err != nil {
			t.failed(ctx, step, "canceled")
			return res, false, err
		}
		delay = min(2*delay, propagationMaxDelay)
	}
}

// deniedStage is the first link of the chain that failed.
func deniedStage(res activities.VerifyResult) activities.VerifyStage {
	for _, s := range res.Stages {
		if !s.OK {
			return s
		}
	}
	return activities.VerifyStage{Name: "unknown", Detail: "no stage reported a failure"}
}

// describeChain is "allowed: ksa-token, sts-exchange, ..." or
// "denied at generate-access-token: ...".
func describeChain(res activities.VerifyResult) string {
	if !res.Allowed {
		d := deniedStage(res)
		return "denied at " + d.Name + ": " + d.Detail
	}
	names := make([]string, len(res.Stages))
	for i, s := range res.Stages {
		names[i] = s.Name
	}
	return "allowed: " + strings.Join(names, ", ")
}
