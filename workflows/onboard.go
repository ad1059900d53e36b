package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/internal/text"
)

// Error types of Onboard's own failures (step failures keep the activity's type,
// see ErrTypeStepFailed).
const (
	ErrTypeInvalidRequest     = "InvalidRequest"
	ErrTypeWrongWorkflowID    = "WrongWorkflowID"
	ErrTypeRejected           = "Rejected"
	ErrTypeApprovalTimedOut   = "ApprovalTimedOut"
	ErrTypeExpiredBeforeGrant = "ExpiredBeforeGrant"
	ErrTypeAccessNotGranted   = "AccessNotGranted"
	ErrTypeAccessStillAllowed = "AccessStillAllowed"
)

// IAM roles the onboarding binds on the GSA.
const (
	roleTokenCreator         = "roles/iam.serviceAccountTokenCreator"
	roleWorkloadIdentityUser = "roles/iam.workloadIdentityUser"
	iamCredentialsService    = "iamcredentials.googleapis.com"
)

// Onboard's steps, in order; the status lists them under these names. Node pool
// steps are "node-pool/NAME", added once the pools are known.
const (
	stepPolicy               = "grant-policy"
	stepRender               = "render-release"
	stepPreflight            = "preflight"
	stepAccess               = "kubernetes-access"
	stepIdentitySameness     = "identity-sameness"
	stepEnableService        = "enable-iamcredentials"
	stepWorkloadPool         = "workload-pool"
	stepListNodePools        = "list-node-pools"
	stepNodePoolPrefix       = "node-pool/"
	stepServiceAccount       = "service-account"
	stepTokenCreator         = "token-creator"
	stepApprovalRequest      = "approval-request"
	stepApproval             = "approval"
	stepWorkloadIdentityUser = "workload-identity-user"
	stepAnnotate             = "annotate-ksa"
	stepBigQuery             = "bigquery"
	stepHelm                 = "helm"
	stepVerifyRelease        = "verify-release"
	stepVerify               = "verify"
	stepScheduleRevocation   = "schedule-revocation"
	// Only after a rejection, a timeout or a cancellation before the grant:
	stepDeleteServiceAccount = "delete-service-account"
	stepRemoveTokenCreator   = "remove-token-creator"
	stepOutcome              = "outcome-notification"
)

// onboarding is one run of Onboard.
type onboarding struct {
	req     OnboardRequest
	t       *tracker
	gate    *approvalGate
	cluster activities.ClusterRef
	sa      activities.ServiceAccount
	// tokenCreatorAdded: this run added the GSA's self token creator binding.
	tokenCreatorAdded bool
	// supportInvolved: support was asked (or answered), so it hears the outcome.
	supportInvolved bool
	helm            activities.HelmResult
	// rendered: this run reads the KSA and the access it needs from the rendered
	// release (changeRenderedRelease); release is what the rendering said.
	rendered bool
	release  activities.RenderResult
	// revocationSchedule is the schedule that revokes a time-bound grant.
	revocationSchedule string
	// autopilot: the cluster is an Autopilot cluster (changeAutopilot), whose
	// node pools GKE manages.
	autopilot bool
	// serviceEnabledAt is when this run enabled the IAM Credentials API; zero
	// when it was already on.
	serviceEnabledAt time.Time
	// overlap: support is asked early and independent steps run side by side
	// (changeCriticalPath); clusterWork is the cluster work running meanwhile,
	// and clusterFailed gets a value when it fails.
	overlap       bool
	clusterWork   workflow.Future
	clusterFailed workflow.Channel
	// governed: the worker's grant policy decides who approves, with what
	// proof and for how long (changeGrantPolicy); rules is the rule resolved.
	governed bool
	rules    *activities.GrantPolicy
}

// Onboard grants the KSA of a Helm release on a GKE cluster the identity of a
// Google service account through Workload Identity, once support approves. See
// the step constants for the order. Each step is idempotent, so running Onboard
// again for a completed grant re-checks everything (after a new approval: the
// grant may have been revoked since) and re-verifies access.
//
// The workflow ID must be OnboardWorkflowID(req), so one grant never has two
// runs at once. A failure after the approval leaves what was done in place: fix
// the cause and run Onboard again.
//
// Behaviour changes to this workflow must be guarded with workflow.GetVersion at
// the step they change (change IDs named after the step), so running histories
// keep replaying; the step functions below are the places to put them.
func Onboard(ctx workflow.Context, req OnboardRequest) (OnboardResult, error) {
	rendered := workflow.GetVersion(ctx, changeRenderedRelease, workflow.DefaultVersion, 1) == 1
	o := &onboarding{req: req.WithDefaults(), t: newTracker(ctx, OnboardWorkflowName), rendered: rendered}
	o.overlap = workflow.GetVersion(ctx, changeCriticalPath, workflow.DefaultVersion, 1) == 1
	if !rendered {
		o.req = o.req.withLegacyKSA()
	}
	proofs := workflow.GetVersion(ctx, changeApprovalProof, workflow.DefaultVersion, 1) == 1
	o.governed = workflow.GetVersion(ctx, changeGrantPolicy, workflow.DefaultVersion, 1) == 1
	o.t.status.Approval = &Approval{Decision: DecisionPending}
	o.gate = newApprovalGate(ctx, o.req.Support.Approvers, o.t.status.Approval)
	if proofs && !o.governed {
		o.gate.checkProofs = true
		o.gate.requireProof = o.req.Support.Proof != ProofNone
		o.t.status.Approval.Proof = o.req.Support.Proof
	}
	listen := func(sel workflow.Selector) {
		sel.AddReceive(o.gate.signals, func(c workflow.ReceiveChannel, _ bool) {
			o.gate.takeSignal(ctx, c, true)
			if o.overlap {
				// Taken by a step running beside the approval wait: wake it.
				o.gate.wake.SendAsync(true)
			}
			o.t.publish(ctx)
		})
	}
	if !o.governed {
		o.t.listen = listen
	}
	if err := o.t.registerQuery(ctx); err != nil {
		return OnboardResult{}, err
	}
	if err := o.gate.registerUpdate(ctx); err != nil {
		return OnboardResult{}, err
	}
	o.t.publish(ctx)

	if err := o.checkRequest(ctx, req); err != nil {
		return OnboardResult{}, o.fail(ctx, StateFailed, err)
	}
	o.start(ctx)
	if o.governed {
		// Decisions are taken in once the rule that judges them is known.
		if err := o.resolvePolicy(ctx, req); err != nil {
			return OnboardResult{}, o.fail(ctx, StateFailed, err)
		}
		o.t.listen = listen
	}
	if o.overlap {
		if state, err := o.askEarly(ctx); err != nil {
			return OnboardResult{}, o.fail(ctx, state, err)
		}
	} else if err := o.prepare(ctx); err != nil {
		// A revocation cancels an onboarding that has not been approved; what
		// this run created before the approval step goes too.
		if temporal.IsCanceledError(err) && workflow.GetVersion(ctx, changeCancelCleanup, workflow.DefaultVersion, 1) == 1 {
			state, err := o.endBeforeGrant(ctx, StateCanceled, err)
			return OnboardResult{}, o.fail(ctx, state, err)
		}
		return OnboardResult{}, o.fail(ctx, StateFailed, err)
	} else if state, err := o.approval(ctx); err != nil {
		return OnboardResult{}, o.fail(ctx, state, err)
	}
	if err := o.grant(ctx); err != nil {
		return OnboardResult{}, o.fail(ctx, StateFailed, err)
	}
	return o.complete(ctx), nil
}

// checkRequest validates the request as sent (so a defaulted field is never
// blamed) and the workflow ID, before any step.
func (o *onboarding) checkRequest(ctx workflow.Context, req OnboardRequest) error {
	if !refusesUnknownFields(ctx, len(req.unknownFields)) {
		req.unknownFields = nil
	}
	if err := req.ValidateAt(workflow.Now(ctx)); err != nil {
		return invalidRequest(err)
	}
	want, got := OnboardWorkflowID(req), workflow.GetInfo(ctx).WorkflowExecution.ID
	if !o.rendered {
		want = legacyOnboardWorkflowID(req)
	}
	if got != want {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("workflow ID %q does not match the request: start Onboard for this grant with workflow ID %q", got, want),
			ErrTypeWrongWorkflowID, nil)
	}
	return nil
}

func invalidRequest(err error) error {
	var details []any
	if ve, ok := err.(*ValidationError); ok {
		details = append(details, ve.Problems)
	}
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalidRequest, nil, details...)
}

// start fills in the status and lists the steps.
func (o *onboarding) start(ctx workflow.Context) {
	r := o.req
	o.cluster = activities.ClusterRef{Project: r.Project, Location: r.Location, Cluster: r.Cluster}
	s := &o.t.status
	s.Project, s.Location, s.Cluster, s.Namespace, s.KSA = r.Project, r.Location, r.Cluster, r.Namespace, r.KSA
	if o.governed {
		o.t.plan(stepPolicy)
	}
	if o.rendered {
		s.Release = r.Helm.Release
		o.t.plan(stepRender, stepPreflight, stepAccess)
	} else {
		upsertGrantAttributes(ctx, r.Project, r.Cluster, r.Namespace, r.KSA)
		o.t.plan(stepPreflight)
	}
	o.t.plan(stepIdentitySameness)
	if o.overlap {
		o.t.plan(stepServiceAccount, stepTokenCreator, stepApprovalRequest)
	}
	o.t.plan(stepEnableService, stepWorkloadPool, stepListNodePools)
	for _, p := range r.NodePools {
		o.t.plan(stepNodePoolPrefix + p)
	}
	o.t.plan(stepServiceAccount, stepTokenCreator, stepApprovalRequest, stepApproval,
		stepWorkloadIdentityUser, stepAnnotate, stepBigQuery, stepHelm)
	if o.rendered {
		o.t.plan(stepVerifyRelease)
	}
	o.t.plan(stepVerify)
	if r.Expiry != nil {
		o.t.plan(stepScheduleRevocation)
	}
	o.t.setState(ctx, StateRunning)
}

// checks are the read-only steps before any change: the preflight, the
// worker's Kubernetes access the release needs, and identity sameness.
func (o *onboarding) checks(ctx workflow.Context) error {
	var gcp *activities.GCP
	var kube *activities.Kube
	r, t := o.req, o.t
	pre := activities.PreflightInput{Cluster: o.cluster, Namespace: r.Namespace, KSA: r.KSA, Release: r.Helm.Release}
	if _, err := t.runStep(ctx, stepPreflight, preflightOptions(), kube.Preflight, pre); err != nil {
		return err
	}
	if o.rendered {
		access := activities.AccessInput{Cluster: o.cluster, Namespace: r.Namespace, Release: r.Helm.Release, Access: o.release.Access}
		if _, err := t.runStep(ctx, stepAccess, preflightOptions(), kube.CheckAccess, access); err != nil {
			return err
		}
	}
	_, err := t.runStep(ctx, stepIdentitySameness, preflightOptions(), gcp.CheckIdentitySameness, pre)
	return err
}

// enableService turns the IAM Credentials API on: the token chain needs it.
func (o *onboarding) enableService(ctx workflow.Context) error {
	var gcp *activities.GCP
	t := o.t
	enable := activities.EnableServiceInput{Project: o.req.Project, Service: iamCredentialsService}
	enabled, err := t.runStep(ctx, stepEnableService, enableServiceOptions(), gcp.EnableService, enable)
	if err != nil {
		return err
	}
	if enabled.Changed {
		o.serviceEnabledAt = t.step(stepEnableService).EndedAt
	}
	return nil
}

// render renders the release as the Helm step will install it and takes the
// grant's KSA from it: the one the chart's workloads run as.
func (o *onboarding) render(ctx workflow.Context) error {
	var helm *activities.Helm
	t := o.t
	in := activities.RenderInput{Helm: o.req.HelmInput(o.req.GSAEmail()), KSA: o.req.KSA}
	if err := t.run(ctx, stepRender, renderOptions(), helm.RenderRelease, in, &o.release); err != nil {
		return err
	}
	o.req.KSA = o.release.KSA
	t.status.KSA = o.release.KSA
	upsertGrantAttributes(ctx, o.req.Project, o.req.Cluster, o.req.Namespace, o.req.KSA)
	t.done(ctx, stepRender, o.release.Detail, nil)
	return nil
}

// HelmInput is the Helm install of r's grant for the GSA gsa: the values as
// gkewi installs them, the connection's included.
func (r OnboardRequest) HelmInput(gsa string) activities.HelmInput {
	in := activities.HelmInput{
		Cluster:   activities.ClusterRef{Project: r.Project, Location: r.Location, Cluster: r.Cluster},
		Namespace: r.Namespace, Release: r.Helm.Release, Chart: r.Helm.Chart, RepoURL: r.Helm.RepoURL,
		Version: r.Helm.Version, Values: r.Helm.Values, GSAEmail: gsa,
	}
	if bq := r.BigQuery; bq != nil {
		in.Connection = &activities.ConnectionValues{
			TempDataset:       bq.TempDataset,
			BillingProject:    bq.BillingProject,
			ServiceAccount:    gsa,
			ConnectionOwnerID: bq.ConnectionOwnerID,
		}
	}
	return in
}

// workloadPool turns Workload Identity on in the cluster; on an Autopilot
// cluster it is always on, and the node pool steps are skipped.
func (o *onboarding) workloadPool(ctx workflow.Context) error {
	var gcp *activities.GCP
	t := o.t
	if workflow.GetVersion(ctx, changeAutopilot, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		_, err := t.runStep(ctx, stepWorkloadPool, clusterOptions(), gcp.SetWorkloadPool, o.cluster)
		return err
	}
	var res activities.WorkloadPoolResult
	if err := t.run(ctx, stepWorkloadPool, clusterOptions(), gcp.EnsureWorkloadPool, o.cluster, &res); err != nil {
		return err
	}
	t.step(stepWorkloadPool).Changed = res.Changed
	t.done(ctx, stepWorkloadPool, res.Detail, res.Warnings)
	o.autopilot = res.Autopilot
	return nil
}

// nodePools switches every node pool to the GKE metadata server, one at a time:
// GKE runs one operation per cluster.
func (o *onboarding) nodePools(ctx workflow.Context) error {
	var gcp *activities.GCP
	t := o.t
	pools := o.req.NodePools
	if o.autopilot {
		const why = "Autopilot cluster: GKE manages the node pools, all on the GKE metadata server"
		t.skip(ctx, stepListNodePools, why)
		for _, p := range pools {
			t.skip(ctx, stepNodePoolPrefix+p, why)
		}
		return nil
	}
	if len(pools) == 0 {
		if err := t.run(ctx, stepListNodePools, readOptions(), gcp.ListNodePools, o.cluster, &pools); err != nil {
			return err
		}
		t.insertAfter(stepListNodePools, prefixed(stepNodePoolPrefix, pools)...)
		t.done(ctx, stepListNodePools, fmt.Sprintf("%d node pool(s)", len(pools)), nil)
	} else {
		t.skip(ctx, stepListNodePools, "node pools named in the request")
	}
	for _, p := range pools {
		in := activities.NodePoolInput{Cluster: o.cluster, NodePool: p}
		if _, err := t.runStep(ctx, stepNodePoolPrefix+p, clusterOptions(), gcp.SetNodePoolMetadata, in); err != nil {
			return err
		}
	}
	return nil
}

// serviceAccount ensures the GSA and lets it mint tokens for itself.
func (o *onboarding) serviceAccount(ctx workflow.Context) error {
	var gcp *activities.GCP
	r, t := o.req, o.t
	in := activities.EnsureServiceAccountInput{Project: r.Project, AccountID: r.GSA.AccountID, DisplayName: r.GSA.DisplayName, Email: r.GSA.Email}
	if in.AccountID != "" && in.DisplayName == "" {
		in.DisplayName = text.Truncate(fmt.Sprintf("gkewi: %s/%s on %s", r.Namespace, r.KSA, r.Cluster), 100)
	}
	if err := t.run(ctx, stepServiceAccount, iamOptions(), gcp.EnsureServiceAccount, in, &o.sa); err != nil {
		return err
	}
	t.status.GSAEmail, t.status.GSACreated = o.sa.Email, o.sa.Created
	upsertGSAAttribute(ctx, o.sa.Email)
	t.step(stepServiceAccount).Changed = o.sa.Created
	detail := "reusing " + o.sa.Email
	if o.sa.Created {
		detail = "created " + o.sa.Email
	}
	t.done(ctx, stepServiceAccount, detail, nil)

	self := activities.ServiceAccountIAMInput{ServiceAccountEmail: o.sa.Email, Role: roleTokenCreator, Member: serviceAccountMember(o.sa.Email)}
	res, err := t.runStep(ctx, stepTokenCreator, iamOptions(), gcp.AddServiceAccountIAMMember, self)
	o.tokenCreatorAdded = res.Changed
	return err
}

// grant makes the identity usable by the workload, after the approval.
//
// Helm runs once, after the BigQuery grant, with the connection values included:
// the grant needs only the GSA email, and one release revision with complete
// values spares the workload a second rollout (and a window where it runs
// without its connection settings). With overlap, the annotation, the BigQuery
// grant and Helm run side by side once the binding is made: none needs another,
// nor the binding to have propagated; verification waits for all of them.
func (o *onboarding) grant(ctx workflow.Context) error {
	var gcp *activities.GCP
	var helm *activities.Helm
	r, t := o.req, o.t
	wi := activities.ServiceAccountIAMInput{
		ServiceAccountEmail: o.sa.Email,
		Role:                roleWorkloadIdentityUser,
		Member:              workloadIdentityMember(r.Project, r.Namespace, r.KSA),
	}
	if _, err := t.runStep(ctx, stepWorkloadIdentityUser, iamOptions(), gcp.AddServiceAccountIAMMember, wi); err != nil {
		return err
	}
	annotate, afterHelm := o.annotation(ctx)
	deploy := func(ctx workflow.Context) error {
		if o.clusterWork != nil {
			// The node pools may still be switching to the GKE metadata server.
			if err := t.wait(ctx, o.clusterWork, nil); err != nil {
				return err
			}
		}
		if err := o.helmInstall(ctx); err != nil {
			return err
		}
		return afterHelm(ctx)
	}
	if o.overlap {
		if err := together(ctx, false, annotate, o.bigQuery, deploy); err != nil {
			return err
		}
	} else {
		for _, step := range []func(workflow.Context) error{annotate, o.bigQuery, deploy} {
			if err := step(ctx); err != nil {
				return err
			}
		}
	}
	if o.rendered {
		in := activities.VerifyReleaseInput{Cluster: o.cluster, Namespace: r.Namespace, Release: r.Helm.Release, KSA: r.KSA, GSAEmail: o.sa.Email}
		if _, err := t.runStep(ctx, stepVerifyRelease, verifyReleaseOptions(), helm.VerifyRelease, in); err != nil {
			return err
		}
	}
	_, err := verifyAccess(ctx, t, stepVerify, o.verifyInput(), true)
	return err
}

// annotation says when the KSA is annotated: before Helm (an existing KSA
// the chart uses), after it (a KSA the chart creates without the annotation),
// or never (the chart annotates it). It returns the two steps; the one that
// does not apply does nothing.
func (o *onboarding) annotation(ctx workflow.Context) (before, after func(workflow.Context) error) {
	var kube *activities.Kube
	r, t := o.req, o.t
	in := activities.AnnotateInput{Cluster: o.cluster, Namespace: r.Namespace, KSA: r.KSA, GSAEmail: o.sa.Email, Release: r.Helm.Release}
	run := func(ctx workflow.Context) error {
		_, err := t.runStep(ctx, stepAnnotate, kubeOptions(), kube.AnnotateServiceAccount, in)
		return err
	}
	nothing := func(workflow.Context) error { return nil }
	if !o.rendered {
		return run, nothing
	}
	// Never a KSA of gkewi's own: the chart's, or the existing one it uses.
	in.Release, in.MustExist = "", true
	switch o.release.KSASource {
	case activities.KSAFromChart:
		t.skip(ctx, stepAnnotate, fmt.Sprintf("the chart creates %s/%s with the annotation (commonBackendServiceAccount.annotations); verify-release checks it", r.Namespace, r.KSA))
		return nothing, nothing
	case activities.KSAFromChartUnannotated:
		return nothing, run
	default:
		return run, nothing
	}
}

// bigQuery grants the GSA the connection's BigQuery access, if asked.
func (o *onboarding) bigQuery(ctx workflow.Context) error {
	var gcp *activities.GCP
	bq := o.req.BigQuery
	if bq == nil {
		o.t.skip(ctx, stepBigQuery, "no bigquery in the request")
		return nil
	}
	_, err := o.t.runStep(ctx, stepBigQuery, iamOptions(), gcp.GrantBigQueryAccess, bigQueryAccess(o.sa.Email, bq))
	return err
}

// helmInstall installs or upgrades the release with the grant's values.
func (o *onboarding) helmInstall(ctx workflow.Context) error {
	var helm *activities.Helm
	t := o.t
	if err := t.run(ctx, stepHelm, helmOptions(), helm.HelmUpgradeInstall, o.req.HelmInput(o.sa.Email), &o.helm); err != nil {
		return err
	}
	t.status.HelmRevision = o.helm.Revision
	t.step(stepHelm).Changed = o.helm.Changed
	detail := fmt.Sprintf("revision %d (%s)", o.helm.Revision, o.helm.Status)
	if !o.helm.Changed {
		detail += ", values unchanged"
	}
	t.done(ctx, stepHelm, detail, nil)
	return nil
}

func (o *onboarding) verifyInput() activities.VerifyInput {
	in := verifyInput(o.cluster, o.req.Namespace, o.req.KSA, o.sa.Email, o.req.BigQuery)
	in.ServiceEnabledAt = o.serviceEnabledAt
	in.WaitAllowed = o.overlap
	return in
}

// verifyInput ends the chain with a BigQuery call only for a grant with a BigQuery
// connection: without one the GSA holds no BigQuery role anywhere, and a refused
// query would be read as access denied.
func verifyInput(cluster activities.ClusterRef, namespace, ksa, gsa string, bq *BigQuerySpec) activities.VerifyInput {
	in := activities.VerifyInput{Cluster: cluster, Namespace: namespace, KSA: ksa, GSAEmail: gsa}
	if bq != nil {
		in.BigQueryProject = bq.BillingProject
	}
	return in
}

func bigQueryAccess(gsa string, bq *BigQuerySpec) activities.BigQueryAccessInput {
	return activities.BigQueryAccessInput{
		Member:         serviceAccountMember(gsa),
		DataProject:    bq.DataProject,
		BillingProject: bq.BillingProject,
		TempDataset:    bq.TempDataset,
		Datasets:       bq.Datasets,
	}
}

// complete records the outcome of a successful run.
func (o *onboarding) complete(ctx workflow.Context) OnboardResult {
	t := o.t
	now := workflow.Now(ctx)
	expiresAt := o.req.expiresAt(now)
	schedules := workflow.GetVersion(ctx, changeScheduleRevocation, workflow.DefaultVersion, 1) == 1
	switch {
	case !expiresAt.IsZero():
		t.status.ExpiresAt = expiresAt
		upsertExpiryAttribute(ctx, expiresAt)
		if schedules {
			o.scheduleRevocation(ctx, expiresAt)
		} else {
			o.arrangeRevocation(ctx, expiresAt)
		}
	case schedules:
		o.dropRevocationSchedule(ctx)
	}
	o.gate.drain(ctx)
	t.end(ctx, StateCompleted, nil)
	o.notifyOutcome(ctx, fmt.Sprintf("onboarding completed: %s/%s on %s can act as %s", o.req.Namespace, o.req.KSA, o.req.Cluster, o.sa.Email))
	return OnboardResult{
		State:              StateCompleted,
		GSAEmail:           o.sa.Email,
		GSACreated:         o.sa.Created,
		HelmRevision:       o.helm.Revision,
		Approval:           *t.status.Approval,
		CompletedAt:        now,
		ExpiresAt:          expiresAt,
		Changed:            t.status.changedSteps(),
		Warnings:           t.status.Warnings,
		Revoke:             o.revokeRequest(),
		RevocationSchedule: o.revocationSchedule,
	}
}

// revokeRequest is the request that undoes this grant.
func (o *onboarding) revokeRequest() RevokeRequest {
	r := o.req
	rev := RevokeRequest{
		Project: r.Project, Location: r.Location, Cluster: r.Cluster,
		Namespace: r.Namespace, KSA: r.KSA, GSAEmail: o.sa.Email,
		BigQuery: r.BigQuery,
	}
	if o.rendered {
		rev.Release = r.Helm.Release
	}
	return rev.WithDefaults()
}

// fail ends the run with err in state s. A cancellation ends it as canceled.
func (o *onboarding) fail(ctx workflow.Context, s State, err error) error {
	if temporal.IsCanceledError(err) {
		s = StateCanceled
		ctx, _ = workflow.NewDisconnectedContext(ctx)
	}
	o.gate.drain(ctx)
	o.t.end(ctx, s, err)
	o.notifyOutcome(ctx, fmt.Sprintf("onboarding %s: %s", s, o.t.status.Error))
	return err
}

func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}
