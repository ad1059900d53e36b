package activities

import "time"

// Inputs and results of gkewi's activities. They travel in workflow histories, so
// they hold names and outcomes only: never a token, key or other secret.

// ClusterRef names a GKE cluster.
type ClusterRef struct {
	Project  string `json:"project"`
	Location string `json:"location"`
	Cluster  string `json:"cluster"`
}

// WorkloadPool is the cluster's Workload Identity pool, "PROJECT.svc.id.goog".
func (c ClusterRef) WorkloadPool() string { return c.Project + ".svc.id.goog" }

// StepResult says whether a step changed anything, for the status and the report.
type StepResult struct {
	// Changed is false when the state was already as wanted.
	Changed bool `json:"changed"`
	// Detail is a short human-readable account ("workload pool already p.svc.id.goog").
	Detail string `json:"detail,omitempty"`
	// Warnings are things an operator should read but that do not stop the onboarding.
	Warnings []string `json:"warnings,omitempty"`
}

// WorkloadPoolResult is the outcome of the workload pool step.
type WorkloadPoolResult struct {
	StepResult
	// Autopilot is true for an Autopilot cluster: GKE keeps Workload Identity
	// on and manages the node pools, which its API refuses to show or change, so
	// nothing was changed and the node pool steps do not apply.
	Autopilot bool `json:"autopilot,omitempty"`
}

// EnableServiceInput names a Google API to enable in a project.
type EnableServiceInput struct {
	Project string `json:"project"`
	Service string `json:"service"` // e.g. "iamcredentials.googleapis.com"
}

// NodePoolInput names one node pool of a cluster.
type NodePoolInput struct {
	Cluster  ClusterRef `json:"cluster"`
	NodePool string     `json:"nodePool"`
}

// EnsureServiceAccountInput creates or reuses a Google service account.
type EnsureServiceAccountInput struct {
	Project     string `json:"project"`
	AccountID   string `json:"accountId,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
	// Email reuses an existing account; the activity only checks it exists.
	Email string `json:"email,omitempty"`
}

// ServiceAccount identifies a Google service account.
type ServiceAccount struct {
	Email    string `json:"email"`
	UniqueID string `json:"uniqueId"`
	// Created is true only when this call created the account.
	Created bool `json:"created"`
}

// ServiceAccountIAMInput adds or removes one member of one role on a GSA's policy.
type ServiceAccountIAMInput struct {
	ServiceAccountEmail string `json:"serviceAccountEmail"`
	Role                string `json:"role"`
	Member              string `json:"member"`
}

// BigQueryAccessInput grants or revokes the BigQuery roles of a connection.
type BigQueryAccessInput struct {
	// Member is "serviceAccount:GSA_EMAIL".
	Member         string   `json:"member"`
	DataProject    string   `json:"dataProject"`
	BillingProject string   `json:"billingProject"`
	TempDataset    string   `json:"tempDataset"`
	Datasets       []string `json:"datasets,omitempty"`
	// Location of the temp dataset when it is created; default "US".
	DatasetLocation string `json:"datasetLocation,omitempty"`
}

// VerifyInput describes the token chain a pod of the release would walk.
type VerifyInput struct {
	Cluster   ClusterRef `json:"cluster"`
	Namespace string     `json:"namespace"`
	KSA       string     `json:"ksa"`
	GSAEmail  string     `json:"gsaEmail"`
	// BigQueryProject is where the final BigQuery call is made.
	BigQueryProject string `json:"bigQueryProject"`
	// ServiceEnabledAt is when the onboarding enabled the IAM Credentials API
	// itself (zero when it was on already). Google's APIs answer
	// SERVICE_DISABLED for a few minutes after enabling; within
	// serviceEnableSettle of this time that answer is "not yet", not a failure.
	ServiceEnabledAt time.Time `json:"serviceEnabledAt,omitzero"`
	// WaitAllowed: walk again while access is denied (IAM propagating), until
	// it is allowed or the attempt nears its deadline.
	WaitAllowed bool `json:"waitAllowed,omitempty"`
}

// VerifyResult records how far the token chain got. It never carries a token.
type VerifyResult struct {
	// Allowed is true when the whole chain succeeded, BigQuery call included.
	Allowed bool `json:"allowed"`
	// Stages lists each link in order: "ksa-token", "sts-exchange",
	// "generate-access-token", "bigquery-call".
	Stages []VerifyStage `json:"stages"`
	// TokenExpiresAt is when the GSA access token the chain handed out in this
	// walk expires (generateAccessToken's expireTime; the token itself never
	// leaves the activity); zero when no token was handed out. Revoke uses it to
	// prove that tokens handed out before the revocation have expired.
	TokenExpiresAt time.Time `json:"tokenExpiresAt,omitzero"`
}

// VerifyStage is the outcome of one link of the token chain.
type VerifyStage struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// AnnotateInput names the KSA and the GSA it maps to.
type AnnotateInput struct {
	// Cluster is the GKE cluster of the KSA (zero: the worker's only cluster).
	Cluster   ClusterRef `json:"cluster"`
	Namespace string     `json:"namespace"`
	KSA       string     `json:"ksa"`
	GSAEmail  string     `json:"gsaEmail"`
	// Release is the Helm release that will own the KSA, so the object is created
	// with Helm's ownership metadata and a later install adopts it.
	Release string `json:"release"`
	// MustExist annotates only an existing KSA (one the chart uses but does not
	// create, or created by the chart already): a missing one is an error, and
	// gkewi never creates it.
	MustExist bool `json:"mustExist,omitempty"`
}

// PreflightInput describes what the onboarding is about to change.
type PreflightInput struct {
	Cluster   ClusterRef `json:"cluster"`
	Namespace string     `json:"namespace"`
	KSA       string     `json:"ksa"`
	Release   string     `json:"release"`
}

// HelmInput is a Helm install-or-upgrade.
type HelmInput struct {
	// Cluster is the GKE cluster of the release (zero: the worker's only cluster).
	Cluster   ClusterRef `json:"cluster"`
	Namespace string     `json:"namespace"`
	Release   string     `json:"release"`
	// Chart is a local path, a chart name in RepoURL, or an oci:// reference.
	Chart   string `json:"chart"`
	RepoURL string `json:"repoURL,omitempty"`
	Version string `json:"version,omitempty"`
	// Values are the operator's values.
	Values map[string]any `json:"values,omitempty"`
	// GSAEmail turns on the Workload Identity values for this GSA.
	GSAEmail string `json:"gsaEmail"`
	// Connection adds the WORKSPACE_WORKLOAD_IDENTITY_* values when set.
	Connection *ConnectionValues `json:"connection,omitempty"`
}

// ConnectionValues are the BigQuery connection settings the application reads.
type ConnectionValues struct {
	TempDataset       string `json:"tempDataset"`
	BillingProject    string `json:"billingProject"`
	ServiceAccount    string `json:"serviceAccount"`
	ConnectionOwnerID string `json:"connectionOwnerId"`
}

// HelmResult describes the release after the step.
type HelmResult struct {
	Revision int    `json:"revision"`
	Status   string `json:"status"`
	// Changed is false when the values were unchanged and no revision was made.
	Changed bool `json:"changed"`
	// ValuesFile is where the rendered customizations.yaml was kept.
	ValuesFile string `json:"valuesFile,omitempty"`
}

// Notification tells the support team about an onboarding waiting for them.
type Notification struct {
	// Kind is "approval-request", "reminder" or "outcome".
	Kind       string   `json:"kind"`
	Targets    []string `json:"targets"`
	WorkflowID string   `json:"workflowId"`
	RunID      string   `json:"runId"`
	Project    string   `json:"project"`
	Location   string   `json:"location"`
	Cluster    string   `json:"cluster"`
	Namespace  string   `json:"namespace"`
	KSA        string   `json:"ksa"`
	GSAEmail   string   `json:"gsaEmail"`
	// Outcome is a one-line summary for Kind "outcome".
	Outcome string `json:"outcome,omitempty"`
	// ProofRequired: only decisions proven by the approver's ID token count,
	// so the message tells how to send one; false says that decisions merely
	// naming an approver count.
	ProofRequired bool `json:"proofRequired,omitempty"`
	// Approvers and Deadline: an approver's own email gets decision links in
	// their name, valid until the deadline.
	Approvers []string  `json:"approvers,omitempty"`
	Deadline  time.Time `json:"deadline,omitzero"`
	// Grant is everything the decision grants, a line each (GSA, KSA and its
	// workloads, roles, expiry, chart and values digest, the policy rule).
	Grant []string `json:"grant,omitempty"`
}

// NotifyResult says which targets were reached.
type NotifyResult struct {
	Delivered []string `json:"delivered"`
	Failed    []string `json:"failed,omitempty"`
	// Errors[i] says why Failed[i] was missed (webhook URLs cut to their host).
	Errors []string `json:"errors,omitempty"`
}
