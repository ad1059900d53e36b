package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

// Revoke's steps, in order.
const (
	stepOnboarding                 = "onboarding"
	stepRemoveWorkloadIdentityUser = "remove-workload-identity-user"
	stepRevokeBigQuery             = "revoke-bigquery"
	stepRemoveAnnotation           = "remove-annotation"
	stepVerifyRefused              = "verify-refused"
	stepTokenExpiryWait            = "token-expiry-wait"
	stepVerifyRevoked              = "verify-revoked"
	stepDeleteSchedule             = "delete-revocation-schedule"
)

// revocation is one run of Revoke.
type revocation struct {
	req RevokeRequest
	t   *tracker
	// canceledOnboarding is the run ID of the onboarding this run canceled.
	canceledOnboarding string
}

// Revoke takes a grant away:
//
//  1. onboarding: an onboarding of the grant that is still running is canceled
//     (and its clean-up awaited), so it cannot grant behind the revocation's
//     back. When it was still waiting for approval and created the GSA itself,
//     its clean-up deleted that GSA and there is nothing left to revoke: the run
//     ends as onboarding-canceled.
//  2. It removes only this grant's workloadIdentityUser member from the GSA
//     (other members and the GSA stay), optionally the BigQuery roles and the
//     KSA annotation.
//  3. It proves access is gone, in two ways (see prove): a fresh token exchange
//     is refused, and every token handed out before that has expired, waiting
//     out tokenExpiryWait for the tokens the workload may hold.
//  4. It deletes the grant's revocation schedule, if any, so an early revocation
//     leaves nothing to fire later.
//
// Unlike Onboard, Revoke accepts any workflow ID: schedules append a timestamp to
// the IDs of the runs they start. Concurrent revocations of one grant are
// harmless, as every step is idempotent.
func Revoke(ctx workflow.Context, req RevokeRequest) (RevokeResult, error) {
	req = req.WithDefaults()
	t := newTracker(ctx, RevokeWorkflowName)
	if err := t.registerQuery(ctx); err != nil {
		return RevokeResult{}, err
	}
	t.publish(ctx)
	if !refusesUnknownFields(ctx, len(req.unknownFields)) {
		req.unknownFields = nil
	}
	r := &revocation{req: req, t: t}
	if err := req.Validate(); err != nil {
		return r.fail(ctx, invalidRequest(err))
	}

	s := &t.status
	s.Project, s.Location, s.Cluster, s.Namespace, s.KSA, s.GSAEmail = req.Project, req.Location, req.Cluster, req.Namespace, req.KSA, req.GSAEmail
	upsertGrantAttributes(ctx, req.Project, req.Cluster, req.Namespace, req.KSA)
	upsertGSAAttribute(ctx, req.GSAEmail)
	if workflow.GetVersion(ctx, changeRevokeProofs, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return r.revokeFirstVersion(ctx)
	}
	t.plan(stepOnboarding, stepRemoveWorkloadIdentityUser, stepRevokeBigQuery, stepRemoveAnnotation,
		stepVerifyRefused, stepTokenExpiryWait, stepVerifyRevoked, stepDeleteSchedule)
	t.setState(ctx, StateRunning)
	if req.Reason != "" {
		workflow.GetLogger(ctx).Info("revoking", "reason", req.Reason)
	}

	nothingLeft, err := r.settleOnboarding(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	if nothingLeft {
		for _, step := range []string{stepRemoveWorkloadIdentityUser, stepRevokeBigQuery, stepRemoveAnnotation, stepVerifyRefused, stepTokenExpiryWait, stepVerifyRevoked} {
			t.skip(ctx, step, "nothing was granted: the onboarding was canceled before the approval")
		}
		r.deleteSchedule(ctx)
		t.end(ctx, StateOnboardingCanceled, nil)
		return RevokeResult{
			State:              StateOnboardingCanceled,
			CanceledOnboarding: r.canceledOnboarding,
			Changed:            s.changedSteps(),
			Warnings:           s.Warnings,
		}, nil
	}

	if err := r.remove(ctx, true); err != nil {
		return r.fail(ctx, err)
	}
	res, err := r.prove(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	r.deleteSchedule(ctx)
	t.end(ctx, StateRevoked, nil)
	return RevokeResult{
		State:              StateRevoked,
		AccessEndedAt:      s.AccessEndedAt,
		RefusedAt:          s.RefusedAt,
		TokensValidUntil:   s.TokensValidUntil,
		DeniedStage:        deniedStage(res).Name,
		CanceledOnboarding: r.canceledOnboarding,
		Changed:            s.changedSteps(),
		Warnings:           s.Warnings,
	}, nil
}

// fail ends the run with err; a cancellation ends it as canceled.
func (r *revocation) fail(ctx workflow.Context, err error) (RevokeResult, error) {
	s := StateFailed
	if temporal.IsCanceledError(err) {
		s = StateCanceled
		ctx, _ = workflow.NewDisconnectedContext(ctx)
	}
	r.t.end(ctx, s, err)
	return RevokeResult{}, err
}

// remove takes away what the grant gave: the Workload Identity member, then the
// BigQuery roles and the annotation when asked. With missingGSAIsGone, a GSA
// that no longer exists counts as removed: nothing can act as it.
func (r *revocation) remove(ctx workflow.Context, missingGSAIsGone bool) error {
	var gcp *activities.GCP
	var kube *activities.Kube
	req, t := r.req, r.t
	wi := activities.ServiceAccountIAMInput{
		ServiceAccountEmail: req.GSAEmail,
		Role:                roleWorkloadIdentityUser,
		Member:              workloadIdentityMember(req.Project, req.Namespace, req.KSA),
	}
	if _, err := t.runStep(ctx, stepRemoveWorkloadIdentityUser, iamOptions(), gcp.RemoveServiceAccountIAMMember, wi); err != nil {
		if !missingGSAIsGone || !isErrorType(err, contract.ErrTypeNotFound) {
			return err
		}
		t.done(ctx, stepRemoveWorkloadIdentityUser, "service account "+req.GSAEmail+" does not exist: no member left to remove", nil)
	}
	if req.BigQuery != nil {
		if _, err := t.runStep(ctx, stepRevokeBigQuery, iamOptions(), gcp.RevokeBigQueryAccess, bigQueryAccess(req.GSAEmail, req.BigQuery)); err != nil {
			return err
		}
	} else {
		t.skip(ctx, stepRevokeBigQuery, "no bigquery in the request")
	}
	if req.RemoveAnnotation {
		in := activities.AnnotateInput{Cluster: activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}, Namespace: req.Namespace, KSA: req.KSA, GSAEmail: req.GSAEmail}
		if _, err := t.runStep(ctx, stepRemoveAnnotation, kubeOptions(), kube.RemoveServiceAccountAnnotation, in); err != nil {
			return err
		}
	} else {
		t.skip(ctx, stepRemoveAnnotation, "removeAnnotation not set")
	}
	return nil
}

// deleteSchedule deletes the grant's revocation schedule. A failure is a
// warning: the revocation itself is done, and a schedule firing later only
// starts a Revoke that finds nothing to remove.
func (r *revocation) deleteSchedule(ctx workflow.Context) {
	var schedules *activities.Schedules
	ref := activities.ScheduleRef{ScheduleID: RevocationScheduleID(r.req)}
	if _, err := r.t.runStep(ctx, stepDeleteSchedule, scheduleOptions(), schedules.DeleteSchedule, ref); err != nil {
		r.t.warn(ctx, stepDeleteSchedule, "could not delete the revocation schedule: delete it with `temporal schedule delete --schedule-id "+
			ref.ScheduleID+"`: "+errorMessage(err))
	}
}

// revokeFirstVersion is Revoke as first released, kept for runs recorded before
// changeRevokeProofs: wait for tokens, then verify the chain is denied.
func (r *revocation) revokeFirstVersion(ctx workflow.Context) (RevokeResult, error) {
	req, t := r.req, r.t
	s := &t.status
	t.plan(stepRemoveWorkloadIdentityUser, stepRevokeBigQuery, stepRemoveAnnotation, stepTokenExpiryWait, stepVerifyRevoked)
	t.setState(ctx, StateRunning)
	if req.Reason != "" {
		workflow.GetLogger(ctx).Info("revoking", "reason", req.Reason)
	}
	if err := r.remove(ctx, false); err != nil {
		return r.fail(ctx, err)
	}
	if err := waitForTokenExpiry(ctx, t, req.TokenExpiryWait.Or(0)); err != nil {
		return r.fail(ctx, err)
	}
	cluster := activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}
	res, err := verifyAccess(ctx, t, stepVerifyRevoked, verifyInput(cluster, req.Namespace, req.KSA, req.GSAEmail, req.BigQuery), false)
	if err != nil {
		return r.fail(ctx, err)
	}
	now := workflow.Now(ctx)
	s.AccessEndedAt = now
	t.end(ctx, StateRevoked, nil)
	return RevokeResult{
		State:         StateRevoked,
		AccessEndedAt: now,
		DeniedStage:   deniedStage(res).Name,
		Changed:       s.changedSteps(),
		Warnings:      s.Warnings,
	}, nil
}

// waitForTokenExpiry is the first version's wait, counted from the removal.
func waitForTokenExpiry(ctx workflow.Context, t *tracker, wait time.Duration) error {
	if wait <= 0 {
		t.skip(ctx, stepTokenExpiryWait, "tokenExpiryWait is 0s")
		return nil
	}
	until := workflow.Now(ctx).Add(wait)
	t.status.WaitUntil = until
	t.step(stepTokenExpiryWait).Detail = "until " + until.UTC().Format(time.RFC3339)
	t.begin(ctx, stepTokenExpiryWait)
	t.setState(ctx, StateWaitingTokenExpiry)
	if err := workflow.Sleep(ctx, wait); err != nil {
		t.failed(ctx, stepTokenExpiryWait, "canceled")
		return err
	}
	t.done(ctx, stepTokenExpiryWait, "waited "+wait.String(), nil)
	t.setState(ctx, StateRunning)
	return nil
}

// refusesUnknownFields reports whether the run refuses the n members of its
// input that match no field. Runs recorded before changeUnknownFields accepted
// them; the version is asked only when there are some, so other runs record no
// marker.
func refusesUnknownFields(ctx workflow.Context, n int) bool {
	return n > 0 && workflow.GetVersion(ctx, changeUnknownFields, workflow.DefaultVersion, 1) == 1
}

// isErrorType reports whether err is an ApplicationError of type errType (a
// failed step keeps its activity's error type).
func isErrorType(err error, errType string) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == errType
}
