package contract

// Messages of the Onboard and Revoke workflows. The notifier writes the signal
// and update names into the commands it sends to support.
const (
	// SignalSupportApproval carries an ApprovalDecision (fire and forget).
	SignalSupportApproval = "support-approval"
	// UpdateSupportDecision carries an ApprovalDecision and answers with the
	// resulting State, or refuses the decision at once.
	UpdateSupportDecision = "support-decision"
	// QueryStatus returns the Status of either workflow.
	QueryStatus = "status"
)

// Kinds of support notification (NotifyInput.Kind).
const (
	NotifyApprovalRequest = "approval-request"
	NotifyReminder        = "reminder"
	NotifyOutcome         = "outcome"
)
