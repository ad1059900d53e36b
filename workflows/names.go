// Package workflows holds gkewi's Temporal workflows: Onboard grants a GKE workload
// a Google service account through Workload Identity, behind a support approval;
// Revoke takes the grant away again and proves it is gone.
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
	// SignalSupportApproval carries an ApprovalDecision (fire and forget).
	SignalSupportApproval = "support-approval"
	// UpdateSupportDecision carries an ApprovalDecision and answers with the
	// resulting State, or refuses the decision at once.
	UpdateSupportDecision = "support-decision"
	// QueryStatus returns the Status of either workflow.
	QueryStatus = "status"
)

// Register registers both workflows under their stable names.
func Register(r worker.WorkflowRegistry) {
	r.RegisterWorkflowWithOptions(Onboard, workflow.RegisterOptions{Name: OnboardWorkflowName})
	r.RegisterWorkflowWithOptions(Revoke, workflow.RegisterOptions{Name: RevokeWorkflowName})
}
