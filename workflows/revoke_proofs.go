package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

// settleOnboarding makes sure no onboarding of the grant runs alongside the
// revocation: a running one is canceled, and the activity returns only once it
// has closed, its clean-up over. It reports whether that was all there was to
// do: the canceled run never reached the grant and had created the request's
// GSA, which its clean-up deleted, so no grant, of this run or an earlier one,
// can rest on that GSA.
//
// When the onboarding cannot be looked at, the revocation goes on with a
// warning: removing access is the safe side.
func (r *revocation) settleOnboarding(ctx workflow.Context) (bool, error) {
	var grants *activities.Grants
	t, req := r.t, r.req
	id := onboardWorkflowIDOf(req)
	var desc activities.WorkflowRunDescription
	in := activities.DescribeWorkflowRunInput{WorkflowID: id, KeywordAttributes: []string{SearchAttrState}}
	if err := t.run(ctx, stepOnboarding, onboardingCheckOptions(), grants.DescribeWorkflowRun, in, &desc); err != nil {
		return false, r.goOnWithout(ctx, err, "could not look at the onboarding "+id)
	}
	switch {
	case !desc.Found:
		t.done(ctx, stepOnboarding, "no onboarding "+id, nil)
		return false, nil
	case desc.Run.Status != activities.WorkflowStatusRunning:
		t.done(ctx, stepOnboarding, fmt.Sprintf("onboarding %s is %s: nothing to cancel", id, desc.Run.Status), nil)
		return false, nil
	}

	// Cancel it and look at how it ended (a closed run still answers the query).
	cancel := activities.CancelWorkflowRunInput{WorkflowID: id, RunID: desc.Run.RunID}
	var closed activities.WorkflowRun
	if err := t.run(ctx, stepOnboarding, cancelOnboardingOptions(), grants.CancelWorkflowRun, cancel, &closed); err != nil {
		return false, r.goOnWithout(ctx, err, "could not cancel the running onboarding "+id)
	}
	r.canceledOnboarding = closed.RunID
	t.step(stepOnboarding).Changed = closed.Status == activities.WorkflowStatusCanceled
	in = activities.DescribeWorkflowRunInput{WorkflowID: id, RunID: closed.RunID, Query: contract.QueryStatus}
	// The query's JSON answer decodes straight into the onboarding's Status.
	var described struct {
		QueryResult Status `json:"queryResult"`
	}
	if err := t.run(ctx, stepOnboarding, onboardingCheckOptions(), grants.DescribeWorkflowRun, in, &described); err != nil {
		return false, r.goOnWithout(ctx, err, fmt.Sprintf("onboarding %s ended %s, but its status cannot be read", id, closed.Status))
	}
	final := described.QueryResult
	granted := true
	if st, ok := final.Step(stepWorkloadIdentityUser); ok {
		granted = st.State != StepPending
	}
	deleted, _ := final.Step(stepDeleteServiceAccount)
	nothingLeft := !granted && final.GSACreated && final.GSAEmail == req.GSAEmail && deleted.State == StepDone
	detail := fmt.Sprintf("canceled onboarding run %s, which was %s", closed.RunID, orUnknown(desc.Run.Keywords[SearchAttrState]))
	switch {
	case closed.Status != activities.WorkflowStatusCanceled:
		detail = fmt.Sprintf("onboarding run %s ended %s (%s) before the cancellation", closed.RunID, closed.Status, final.State)
	case nothingLeft:
		detail += "; it had not reached the grant and deleted " + req.GSAEmail + ", which it had created"
	}
	t.done(ctx, stepOnboarding, detail, nil)
	return nothingLeft, nil
}

// goOnWithout records why the onboarding could not be settled and lets the
// revocation go on; only a cancellation of Revoke itself stops it.
func (r *revocation) goOnWithout(ctx workflow.Context, err error, what string) error {
	if temporal.IsCanceledError(err) {
		return err
	}
	why := r.t.step(stepOnboarding).LastError // the activity's own message
	if why == "" {
		why = errorMessage(err)
	}
	r.t.warn(ctx, stepOnboarding, what+" ("+why+"); revoking anyway")
	return nil
}

// prove shows that access is gone, in two ways, with no token ever entering a
// workflow payload:
//
//  1. Refused: a fresh walk of the token chain (KSA token, STS exchange,
//     generateAccessToken) is refused before IAM hands out a GSA token. The run
//     walks until the removal has propagated (verify-refused, at RefusedAt) and
//     once more at the end (verify-revoked), so a re-grant during the wait does
//     not go unnoticed.
//  2. Expired: every token handed out before RefusedAt has expired. Tokens the
//     workload got are not observable; none was handed out after RefusedAt (1),
//     and tokenExpiryWait bounds how long one handed out before stays in use, so
//     they expire by RefusedAt + tokenExpiryWait. Tokens the verifier itself was
//     handed while IAM still propagated the removal are known exactly: the
//     Verifier reports only their expiry (VerifyResult.TokenExpiresAt), never
//     the token. TokensValidUntil is the later of the two. The run waits until
//     workflow.Now() has passed it, and only then records the revocation, with
//     AccessEndedAt = TokensValidUntil. A tokenExpiryWait shorter than an
//     observed token's remaining lifetime therefore makes the run wait longer,
//     with a warning, instead of claiming an end that has not happened.
func (r *revocation) prove(ctx workflow.Context) (activities.VerifyResult, error) {
	t, req := r.t, r.req
	s := &t.status
	cluster := activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}
	in := verifyInput(cluster, req.Namespace, req.KSA, req.GSAEmail, req.BigQuery)
	var latest time.Time // the latest expiry of a token the verifier was handed
	observe := func(res activities.VerifyResult) {
		if res.TokenExpiresAt.After(latest) {
			latest = res.TokenExpiresAt
		}
	}

	if _, err := r.walkUntilRefused(ctx, stepVerifyRefused, in, observe); err != nil {
		return activities.VerifyResult{}, err
	}
	s.RefusedAt = workflow.Now(ctx)
	wait := req.TokenExpiryWait.Or(0)
	s.TokensValidUntil = s.RefusedAt.Add(wait)
	if latest.After(s.TokensValidUntil) {
		s.TokensValidUntil = latest
		t.warn(ctx, stepTokenExpiryWait, fmt.Sprintf("a token handed out before the refusal is valid until %s, past tokenExpiryWait %s: waiting for it to expire",
			stamp(latest), req.TokenExpiryWait))
	}
	if err := r.waitForTokens(ctx); err != nil {
		return activities.VerifyResult{}, err
	}

	for {
		res, err := r.walkUntilRefused(ctx, stepVerifyRevoked, in, observe)
		if err != nil {
			return res, err
		}
		now := workflow.Now(ctx)
		if !latest.After(now) {
			if latest.After(s.TokensValidUntil) {
				s.TokensValidUntil = latest
			}
			s.AccessEndedAt = s.TokensValidUntil
			t.done(ctx, stepVerifyRevoked, fmt.Sprintf("%s; no token handed out before %s is valid after %s",
				describeChain(res), stamp(s.RefusedAt), stamp(s.AccessEndedAt)), nil)
			return res, nil
		}
		// The chain handed out a token again during the wait (a re-grant, or IAM
		// going back and forth): wait for that one too, then check again.
		s.TokensValidUntil = latest
		t.warn(ctx, stepVerifyRevoked, fmt.Sprintf("the token chain handed out a token after the wait, valid until %s: waiting for it and checking again", stamp(latest)))
		t.begin(ctx, stepVerifyRevoked)
		if err := t.sleep(ctx, latest.Sub(now), "token expiry"); err != nil {
			t.failed(ctx, stepVerifyRevoked, "canceled")
			return res, err
		}
	}
}

// walkUntilRefused walks the chain until it is refused before a GSA token is
// handed out. A refusal later in the chain (BigQuery) does not count: the GSA
// token it got is exactly what the revocation must stop.
func (r *revocation) walkUntilRefused(ctx workflow.Context, step string, in activities.VerifyInput, observe func(activities.VerifyResult)) (activities.VerifyResult, error) {
	res, ok, err := walkUntil(ctx, r.t, step, in, func(res activities.VerifyResult) bool {
		return !res.Allowed && !tokenHandedOut(res)
	}, observe)
	if err != nil || ok {
		return res, err
	}
	return res, stillAllowedError(in, r.t.step(step).Attempts)
}

// tokenHandedOut reports whether the walk got a GSA access token.
func tokenHandedOut(res activities.VerifyResult) bool {
	if !res.TokenExpiresAt.IsZero() {
		return true
	}
	for _, st := range res.Stages {
		if st.Name == activities.StageGenerateAccessToken {
			return st.OK
		}
	}
	return false
}

// waitForTokens waits until TokensValidUntil; the status shows when it ends.
func (r *revocation) waitForTokens(ctx workflow.Context) error {
	t := r.t
	s := &t.status
	until := s.TokensValidUntil
	now := workflow.Now(ctx)
	if !until.After(now) {
		t.skip(ctx, stepTokenExpiryWait, "tokenExpiryWait is 0s and no token handed out before the refusal is still valid")
		return nil
	}
	s.WaitUntil = until
	t.step(stepTokenExpiryWait).Detail = "until " + stamp(until)
	t.begin(ctx, stepTokenExpiryWait)
	t.setState(ctx, StateWaitingTokenExpiry)
	if err := t.sleep(ctx, until.Sub(now), "token expiry"); err != nil {
		t.failed(ctx, stepTokenExpiryWait, "canceled")
		return err
	}
	t.done(ctx, stepTokenExpiryWait, fmt.Sprintf("tokens handed out before %s expired by %s (tokenExpiryWait %s)", stamp(s.RefusedAt), stamp(until), r.req.TokenExpiryWait), nil)
	t.setState(ctx, StateRunning)
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "in an unknown state"
	}
	return s
}
