package workflows

import "time"

// State is the overall state of an Onboard or Revoke run, as shown by the status
// query and the GkewiState search attribute.
type State string

// The states of a run.
const (
	StateValidating       State = "validating"
	StateRunning          State = "running"
	StateAwaitingApproval State = "awaiting-approval"
	StateApproved         State = "approved"
	// StateCleaningUp means rejected, timed out or canceled before the grant;
	// undoing what this run created.
	StateCleaningUp State = "cleaning-up"
	StateCompleted  State = "completed"
	StateFailed     State = "failed"
	StateRejected   State = "rejected"
	StateTimedOut   State = "timed-out"
	StateCanceled   State = "canceled"
	// StateWaitingTokenExpiry means Revoke removed the grant and waits for
	// tokens already handed out to expire.
	StateWaitingTokenExpiry State = "waiting-token-expiry"
	StateRevoked            State = "revoked"
	// StateOnboardingCanceled means Revoke found the grant still awaiting
	// approval and canceled its onboarding, which undid what it had created.
	StateOnboardingCanceled State = "onboarding-canceled"
)

// StepState is the state of one step.
type StepState string

// The states of a step.
const (
	StepPending StepState = "pending"
	StepRunning StepState = "running"
	StepDone    StepState = "done"
	StepSkipped StepState = "skipped"
	StepFailed  StepState = "failed"
)

// Step is one step of a run. Attempts counts the activity executions; LastError
// is the error of the latest failed one (kept after a later success); Changed is
// false when everything was already as wanted.
type Step struct {
	Name      string    `json:"name"`
	State     StepState `json:"state"`
	Changed   bool      `json:"changed,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	Attempts  int       `json:"attempts,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	Warnings  []string  `json:"warnings,omitempty"`
}

// Decision is the outcome of the approval gate.
type Decision string

// The outcomes of the approval gate.
const (
	DecisionPending  Decision = "pending"
	DecisionApproved Decision = "approved"
	DecisionRejected Decision = "rejected"
	DecisionTimedOut Decision = "timed-out"
)

// Approval records the approval gate: the decision that counted and every
// decision that did not, with the reason.
type Approval struct {
	Decision  Decision  `json:"decision"`
	Approver  string    `json:"approver,omitempty"`
	Ticket    string    `json:"ticket,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	DecidedAt time.Time `json:"decidedAt,omitzero"`
	// Via is "signal" or "update".
	Via string `json:"via,omitempty"`
	// Proof is what a decision must carry to count: "id-token", or "none" when
	// decisions that merely name an approver count too.
	Proof string `json:"proof,omitempty"`
	// Evidence is the verified identity of the approver whose decision counted.
	Evidence *ApprovalEvidence `json:"evidence,omitempty"`
	// RequestedAt is when support was notified; Deadline when the wait gives up.
	RequestedAt    time.Time `json:"requestedAt,omitzero"`
	Deadline       time.Time `json:"deadline,omitzero"`
	RemindersSent  int       `json:"remindersSent,omitempty"`
	NextReminderAt time.Time `json:"nextReminderAt,omitzero"`
	// Ignored are decisions that did not count: unlisted or empty approver,
	// malformed payload, or sent after the decision.
	Ignored []IgnoredDecision `json:"ignored,omitempty"`

	// Under the grant policy (changeGrantPolicy): the rule and the policy
	// text's digest the run goes by, its proven requester, and each level of
	// approval with the approvals it counted. Approver above is then the last
	// approver whose decision completed (or rejected) the grant.
	Rule         string          `json:"rule,omitempty"`
	PolicyDigest string          `json:"policyDigest,omitempty"`
	Requester    string          `json:"requester,omitempty"`
	Levels       []ApprovalLevel `json:"levels,omitempty"`
	// Level is the index of the level deciding now.
	Level int `json:"level,omitempty"`
}

// ApprovalLevel is one level of a rule's approval and who approved at it.
type ApprovalLevel struct {
	Approvers []string          `json:"approvers,omitempty"`
	Domains   []string          `json:"domains,omitempty"`
	Needed    int               `json:"needed"`
	Approvals []CountedDecision `json:"approvals,omitempty"`
}

// CountedDecision is an approval that counted at a level.
type CountedDecision struct {
	Approver  string            `json:"approver"`
	Ticket    string            `json:"ticket,omitempty"`
	Comment   string            `json:"comment,omitempty"`
	DecidedAt time.Time         `json:"decidedAt"`
	Via       string            `json:"via"`
	Evidence  *ApprovalEvidence `json:"evidence,omitempty"`
}

// ApprovalEvidence is what proved an approver's identity: the verified claims
// of their ID token and its hash, never the token.
type ApprovalEvidence struct {
	Method      string    `json:"method"`
	Issuer      string    `json:"issuer"`
	Subject     string    `json:"subject"`
	Email       string    `json:"email"`
	TokenSHA256 string    `json:"tokenSha256"`
	IssuedAt    time.Time `json:"issuedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	VerifiedAt  time.Time `json:"verifiedAt"`
}

// IgnoredDecision is a decision that was received but did not count.
type IgnoredDecision struct {
	Approver   string    `json:"approver,omitempty"`
	Approved   bool      `json:"approved"`
	Ticket     string    `json:"ticket,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	Via        string    `json:"via"`
	ReceivedAt time.Time `json:"receivedAt"`
	Reason     string    `json:"reason"`
}

// Status is what the status query returns for both workflows.
type Status struct {
	// Workflow is OnboardWorkflowName or RevokeWorkflowName.
	Workflow  string `json:"workflow"`
	State     State  `json:"state"`
	Project   string `json:"project,omitempty"`
	Location  string `json:"location,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Release is the Helm release of the grant.
	Release string `json:"release,omitempty"`
	// KSA is the grant's Kubernetes service account: the request's, or the one
	// the rendered release runs as (empty until the release is rendered).
	KSA      string `json:"ksa,omitempty"`
	GSAEmail string `json:"gsaEmail,omitempty"`
	// GSACreated is true when this run created the GSA (and so may delete it).
	GSACreated bool `json:"gsaCreated,omitempty"`
	// Requester is the proven requester's verified email (grant policy).
	Requester    string    `json:"requester,omitempty"`
	HelmRevision int       `json:"helmRevision,omitempty"`
	Steps        []Step    `json:"steps"`
	Approval     *Approval `json:"approval,omitempty"`
	// Warnings gathers the steps' warnings, each prefixed with its step.
	Warnings []string `json:"warnings,omitempty"`
	// Error is the failure that ended the run.
	Error string `json:"error,omitempty"`
	// ExpiresAt is when a time-bound grant ends.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// RevocationSchedule is the schedule that revokes a time-bound grant.
	RevocationSchedule string `json:"revocationSchedule,omitempty"`
	// WaitUntil is when Revoke's token expiry wait ends.
	WaitUntil time.Time `json:"waitUntil,omitzero"`
	// RefusedAt is when Revoke first saw the token chain refuse a fresh token.
	RefusedAt time.Time `json:"refusedAt,omitzero"`
	// TokensValidUntil is the latest time a token handed out before RefusedAt
	// could still be used.
	TokensValidUntil time.Time `json:"tokensValidUntil,omitzero"`
	// AccessEndedAt is when Revoke proved the access gone: fresh tokens refused
	// and every token handed out before expired.
	AccessEndedAt time.Time `json:"accessEndedAt,omitzero"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// Step returns the named step and whether it exists.
func (s Status) Step(name string) (Step, bool) {
	for _, st := range s.Steps {
		if st.Name == name {
			return st, true
		}
	}
	return Step{}, false
}

// Terminal reports whether a run in state s has ended: its state will not
// change again.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateRejected, StateTimedOut, StateCanceled, StateRevoked, StateOnboardingCanceled:
		return true
	}
	return false
}
