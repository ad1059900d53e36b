package workflows

import (
	"encoding/json"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/policy"
)

// Defaults applied by WithDefaults.
const (
	DefaultReminderInterval contract.Duration = "24h"
	DefaultApprovalTimeout  contract.Duration = "168h"
	DefaultTokenExpiryWait  contract.Duration = "30m"
	// legacyKSASuffix made the KSA "<helm.release>-common-backend" in runs
	// started before changeRenderedRelease; newer runs read it from the chart.
	legacyKSASuffix = "-common-backend"
)

// OnboardRequest is the input of the Onboard workflow. Its JSON field names are a
// stable contract: operators write them by hand in `temporal workflow start --input`.
// A member that matches no field (a typo) is refused by Validate, not dropped.
type OnboardRequest struct {
	// Project is the Google Cloud project that holds the cluster and the GSA.
	Project string `json:"project"`
	// Location is the cluster's region or zone, for example "europe-west1".
	Location string `json:"location"`
	// Cluster is the GKE cluster name.
	Cluster string `json:"cluster"`
	// NodePools lists the node pools to switch to GKE_METADATA; empty means all.
	NodePools []string `json:"nodePools,omitempty"`
	// GSA is the Google service account the workload acts as.
	GSA GSASpec `json:"gsa"`
	// Namespace is the Kubernetes namespace of the release.
	Namespace string `json:"namespace"`
	// KSA is the Kubernetes service account to grant. Empty takes the one the
	// chart's workloads run as (read from the rendered release); when set, it
	// must be one of the KSAs the rendered workloads run as.
	KSA string `json:"ksa,omitempty"`
	// Helm describes the release to install or upgrade.
	Helm HelmSpec `json:"helm"`
	// BigQuery describes the BigQuery connection; nil skips that step.
	BigQuery *BigQuerySpec `json:"bigquery,omitempty"`
	// Support describes who approves and how they are told.
	Support SupportSpec `json:"support"`
	// Expiry makes the grant time-bound; nil means it lasts until revoked, or,
	// under a grant policy rule with a maxDuration, that long.
	Expiry *ExpirySpec `json:"expiry,omitempty"`
	// Requester is the worker's attestation of the requester's ID token, made
	// by its endpoint (gkewi onboard --endpoint); never written by hand: one
	// that does not check out refuses the run.
	Requester *activities.RequesterProof `json:"requester,omitempty"`

	// unknownFields are the members of the decoded JSON that match no field;
	// Validate refuses them.
	unknownFields []unknownField
}

// GSASpec names the Google service account: either a new or existing account id in
// the project, or the email of an existing account to reuse.
type GSASpec struct {
	// AccountID is the part of the email before '@' (6-30 characters).
	AccountID string `json:"accountId,omitempty"`
	// DisplayName is shown in the Cloud console for an account gkewi creates.
	DisplayName string `json:"displayName,omitempty"`
	// Email reuses an existing account instead of creating one.
	Email string `json:"email,omitempty"`
}

// HelmSpec names a chart and its values.
type HelmSpec struct {
	// Release is the Helm release name.
	Release string `json:"release"`
	// Chart is a local path, a chart name in RepoURL, or an oci:// reference.
	Chart string `json:"chart"`
	// RepoURL is an HTTP(S) chart repository holding Chart.
	RepoURL string `json:"repoURL,omitempty"`
	// Version pins the chart version; empty takes the latest.
	Version string `json:"version,omitempty"`
	// Values are the operator's values, layered over the chart's defaults and
	// under gkewi's Workload Identity values.
	Values map[string]any `json:"values,omitempty"`
}

// BigQuerySpec describes the BigQuery connection the workload uses.
type BigQuerySpec struct {
	// DataProject holds the data; the GSA gets roles/bigquery.dataEditor there.
	DataProject string `json:"dataProject"`
	// BillingProject runs the jobs; the GSA gets roles/bigquery.jobUser there.
	BillingProject string `json:"billingProject"`
	// TempDataset is the dataset (in BillingProject) for temporary tables; created if missing.
	TempDataset string `json:"tempDataset"`
	// ConnectionOwnerID is the workspace user who owns the connection.
	ConnectionOwnerID string `json:"connectionOwnerId"`
	// Datasets narrows dataEditor to these datasets of DataProject instead of the project.
	Datasets []string `json:"datasets,omitempty"`
}

// SupportSpec describes the approval gate. Under the worker's grant policy
// (runs started since changeGrantPolicy) the policy decides who approves and
// with what proof: Approvers then only chooses whom of the policy's approvers
// to notify first, and Proof may only ask for more than the policy.
type SupportSpec struct {
	// Approvers are the emails whose decisions count (before the grant
	// policy), or whom of the policy's approvers to notify first.
	Approvers []string `json:"approvers,omitempty"`
	// Notify lists where to send the request: email addresses and/or http(s) webhook
	// URLs; empty sends it to the approvers. The request, these URLs included, is
	// stored in the workflow history, readable by anyone who can read the
	// namespace: use a relay URL that embeds no secret (not a Slack incoming
	// webhook, whose path is its credential) or an email address. The status shows
	// webhooks as scheme://host only.
	Notify []string `json:"notify,omitempty"`
	// ReminderInterval re-notifies while waiting; default 24h, at least 1m.
	// At most 48 reminders go per wait: when more would fit in ApprovalTimeout,
	// they are spaced timeout/49 apart (rounded up to the minute) and the
	// approval step warns so.
	ReminderInterval contract.Duration `json:"reminderInterval,omitempty"`
	// ApprovalTimeout ends the wait with a failure; default 7 days (168h).
	ApprovalTimeout contract.Duration `json:"approvalTimeout,omitempty"`
	// Proof is what a decision must carry to count: "id-token" (the default)
	// takes only decisions whose approver proved who they are with an ID token
	// the worker's approval endpoint verified (`gkewi approve`); "none" also
	// takes decisions that merely name an approver, and says so in the status
	// and the support request.
	Proof string `json:"proof,omitempty"`
}

// Values of support.proof.
const (
	ProofIDToken = activities.ProofIDToken
	ProofLink    = activities.ProofLink
	ProofNone    = policy.ProofNone
)

// ExpirySpec makes a grant time-bound: one of At or TTL.
type ExpirySpec struct {
	// At is the absolute time the grant ends, RFC 3339 ("2026-12-31T18:00:00Z").
	At string `json:"at,omitempty"`
	// TTL is how long the grant lasts after the onboarding completes.
	TTL contract.Duration `json:"ttl,omitempty"`
}

// ApprovalDecision is the payload of the support-approval signal and update.
type ApprovalDecision struct {
	Approved bool   `json:"approved"`
	Approver string `json:"approver"`
	Ticket   string `json:"ticket,omitempty"`
	Comment  string `json:"comment,omitempty"`
	// Proof is the worker's attestation of the approver's ID token, added by
	// its approval endpoint; never the token itself.
	Proof *activities.DecisionProof `json:"proof,omitempty"`
}

// WithDefaults returns r with the defaults filled in: reminder interval 24h,
// approval timeout 168h. The KSA is not defaulted here: Onboard reads it from the
// rendered release.
func (r OnboardRequest) WithDefaults() OnboardRequest {
	if r.Support.ReminderInterval == "" {
		r.Support.ReminderInterval = DefaultReminderInterval
	}
	if r.Support.ApprovalTimeout == "" {
		r.Support.ApprovalTimeout = DefaultApprovalTimeout
	}
	if r.Support.Proof == "" {
		r.Support.Proof = ProofIDToken
	}
	return r
}

// withLegacyKSA fills in the KSA as runs started before changeRenderedRelease
// did: "<helm.release>-common-backend".
func (r OnboardRequest) withLegacyKSA() OnboardRequest {
	if r.KSA == "" && r.Helm.Release != "" {
		r.KSA = r.Helm.Release + legacyKSASuffix
	}
	return r
}

// SignedJSON is the request as its requester's proof covers it: the request
// as sent, the proof left out.
func (r OnboardRequest) SignedJSON() ([]byte, error) {
	unsigned := r
	unsigned.Requester = nil
	return json.Marshal(unsigned)
}

// GSAEmail is the email of the request's GSA, known before it exists.
func (r OnboardRequest) GSAEmail() string {
	if r.GSA.Email != "" {
		return r.GSA.Email
	}
	return r.GSA.AccountID + "@" + r.Project + ".iam.gserviceaccount.com"
}

// notifyTargets is where support notifications go.
func (s SupportSpec) notifyTargets() []string {
	if len(s.Notify) > 0 {
		return s.Notify
	}
	return s.Approvers
}
