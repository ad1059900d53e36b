package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// Revoke's steps, in order.
const (
	stepRemoveWorkloadIdentityUser = "remove-workload-identity-user"
	stepRevokeBigQuery             = "revoke-bigquery"
	stepRemoveAnnotation           = "remove-annotation"
	stepTokenExpiryWait            = "token-expiry-wait"
	stepVerifyRevoked              = "verify-revoked"
)

// Revoke takes a grant away: it removes only this grant's workloadIdentityUser
// member from the GSA (other members and the GSA stay), optionally the BigQuery
// roles and the KSA annotation, waits for tokens already handed out to expire,
// and then proves the token chain is refused.
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
	fail := func(err error) (RevokeResult, error) {
		s := StateFailed
		if temporal.IsCanceledError(err) {
			s = StateCanceled
			ctx, _ = workflow.NewDisconnectedContext(ctx)
		}
		t.end(ctx, s, err)
		return RevokeResult{}, err
	}
	if err := req.Validate(); err != nil {
		return fail(invalidRequest(err))
	}

	s := &t.status
	s.Project, s.Location, s.Cluster, s.Namespace, s.KSA, s.GSAEmail = req.Project, req.Location, req.Cluster, req.Namespace, req.KSA, req.GSAEmail
	upsertGrantAttributes(ctx, req.Project, req.Cluster, req.Namespace, req.KSA)
	upsertGSAAttribute(ctx, req.GSAEmail)
	t.plan(stepRemoveWorkloadIdentityUser, stepRevokeBigQuery, stepRemoveAnnotation, stepTokenExpiryWait, stepVerifyRevoked)
	t.setState(ctx, StateRunning)
	if req.Reason != "" {
		workflow.GetLogger(ctx).Info("revoking", "reason", req.Reason)
	}

	var gcp *activities.GCP
	var kube *activities.Kube
	wi := activities.ServiceAccountIAMInput{
		ServiceAccountEmail: req.GSAEmail,
		Role:                roleWorkloadIdentityUser,
		Member:              workloadIdentityMember(req.Project, req.Namespace, req.KSA),
	}
	if _, err := t.runStep(ctx, stepRemoveWorkloadIdentityUser, iamOptions(), gcp.RemoveServiceAccountIAMMember, wi); err != nil {
		return fail(err)
	}
	if req.BigQuery != nil {
		if _, err := t.runStep(ctx, stepRevokeBigQuery, iamOptions(), gcp.RevokeBigQueryAccess, bigQueryAccess(req.GSAEmail, req.BigQuery)); err != nil {
			return fail(err)
		}
	} else {
		t.skip(ctx, stepRevokeBigQuery, "no bigquery in the request")
	}
	if req.RemoveAnnotation {
		in := activities.AnnotateInput{Namespace: req.Namespace, KSA: req.KSA, GSAEmail: req.GSAEmail}
		if _, err := t.runStep(ctx, stepRemoveAnnotation, kubeOptions(), kube.RemoveServiceAccountAnnotation, in); err != nil {
			return fail(err)
		}
	} else {
		t.skip(ctx, stepRemoveAnnotation, "removeAnnotation not set")
	}

	if err := waitForTokenExpiry(ctx, t, req.TokenExpiryWait.Or(0)); err != nil {
		return fail(err)
	}

	cluster := activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}
	res, err := verifyAccess(ctx, t, stepVerifyRevoked, verifyInput(cluster, req.Namespace, req.KSA, req.GSAEmail, req.BigQuery), false)
	if err != nil {
		return fail(err)
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

// waitForTokenExpiry lets access tokens handed out before the revocation run
// out; the status shows when the wait ends.
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
