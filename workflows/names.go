package workflows

import (
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// Names shared with the worker, the starter and operators' `temporal` commands.
const (
	// TaskQueue is the task queue of gkewi's workflows and activities.
	TaskQueue = "gkewi"
	// OnboardWorkflowName is the registered type name of Onboard.
	OnboardWorkflowName = "Onboard"
	// RevokeWorkflowName is the registered type name of Revoke.
	RevokeWorkflowName = "Revoke"
	// SweepWorkflowName is the registered type name of Sweep.
	SweepWorkflowName = "Sweep"
)

// Register registers the workflows under their stable names.
func Register(r worker.WorkflowRegistry) {
	r.RegisterWorkflowWithOptions(Onboard, workflow.RegisterOptions{Name: OnboardWorkflowName})
	r.RegisterWorkflowWithOptions(Revoke, workflow.RegisterOptions{Name: RevokeWorkflowName})
	r.RegisterWorkflowWithOptions(Sweep, workflow.RegisterOptions{Name: SweepWorkflowName})
}

// Change IDs of workflow.GetVersion: each names the step whose behaviour changed.
const (
	// changeScheduleRevocation: Onboard schedules the revocation of a time-bound
	// grant (and drops an earlier run's schedule for a grant without expiry).
	changeScheduleRevocation = "schedule-revocation"
	// changeCancelCleanup: Onboard canceled before the approval also undoes what
	// it created when the cancellation comes before the approval step.
	changeCancelCleanup = "cancel-cleanup"
	// changeRevokeProofs: Revoke cancels a running onboarding of the grant, proves
	// the refusal before the token wait and deletes the grant's revocation schedule.
	changeRevokeProofs = "revoke-proofs"
	// changeUnknownFields: Onboard and Revoke refuse input members that match no
	// field. Asked only when the input has some.
	changeUnknownFields = "unknown-fields"
	// changeApprovalMemo: Onboard records the approver in its memo, for listings.
	changeApprovalMemo = "approval-memo"
	// changeLostWorkerRetry: a step lost with its worker (heartbeat timeout) is
	// run again after lostWorkerRetryDelay instead of the step's backoff. Asked
	// only when that happens.
	changeLostWorkerRetry = "lost-worker-retry"
	// changeRenderedRelease: Onboard renders the release before any change and
	// takes the KSA from it (the chart's workloads, not the release name), checks
	// the worker's Kubernetes access, annotates only a KSA the chart does not
	// annotate, verifies what the deployed release runs as, and is identified by
	// the release: gkewi-onboard/P/L/C/NS/RELEASE instead of .../KSA.
	changeRenderedRelease = "rendered-release"
	// changeAutopilot: the workload pool step reads the cluster first and, on an
	// Autopilot cluster (Workload Identity always on, node pools managed by GKE),
	// changes nothing and skips the node pool steps.
	changeAutopilot = "autopilot"
	// changeApprovalProof: decisions count only with a proof of the approver's
	// identity (support.proof, default id-token), checked by an activity.
	changeApprovalProof = "approval-proof"
	// changeCriticalPath: Onboard asks support as soon as the GSA exists and runs
	// the cluster work (API, workload pool, node pools) while support decides;
	// after the approval, the annotation, BigQuery and Helm run side by side
	// while the binding propagates, and verification waits for it in the
	// activity (onboard_overlap.go).
	changeCriticalPath = "critical-path"
	// changeBoundedReminders: the approval wait sends at most maxReminders
	// reminders, spacing them further apart than support.reminderInterval when
	// it must. Asked only for requests that would send more.
	changeBoundedReminders = "bounded-reminders"
	// changeBoundedRetries: a step whose policy allows more than maxStepAttempts
	// executions (the cluster steps) runs at most that many, waiting longer
	// between them. Asked only by such steps.
	changeBoundedRetries = "bounded-retries"
	// changeGrantPolicy: who approves, with what proof, and for how long come
	// from the worker's grant policy (the ResolveGrantPolicy activity, before
	// any change), not from the request; approval may take two levels, the
	// requester never approves their own grant, and a request without expiry
	// gets the rule's maxDuration.
	changeGrantPolicy = "grant-policy"
)
