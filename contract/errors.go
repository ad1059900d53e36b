package contract

// Types of the ApplicationErrors the activities return. Workflows and
// operators match on them.
const (
	ErrTypeInvalidArgument      = "InvalidArgument"
	ErrTypeFailedPrecondition   = "FailedPrecondition"
	ErrTypePermissionDenied     = "PermissionDenied"
	ErrTypeNotFound             = "NotFound"
	ErrTypeAlreadyExists        = "AlreadyExists"
	ErrTypeUnauthenticated      = "Unauthenticated"
	ErrTypeServiceDisabled      = "ServiceDisabled"
	ErrTypeConcurrentChange     = "ConcurrentChange"
	ErrTypeClusterBusy          = "ClusterBusy"
	ErrTypeUnavailable          = "Unavailable"
	ErrTypeOperationFailed      = "OperationFailed"
	ErrTypeOperationPending     = "OperationPending"
	ErrTypePropagating          = "Propagating"
	ErrTypeWorkloadPoolMissing  = "WorkloadPoolMissing"
	ErrTypeWorkloadPoolNotReady = "WorkloadPoolNotReady"
	// ErrTypeQuotaExceeded is a quota or limit reached: retrying will not help
	// before someone raises the quota or frees some of it.
	ErrTypeQuotaExceeded = "QuotaExceeded"
)

// Kubernetes and Helm error types, besides the shared ones above.
const (
	// ErrTypePreflightRefused: the workload cannot use Workload Identity as it is.
	ErrTypePreflightRefused = "PreflightRefused"
	// ErrTypeAccessMissing: the worker's Kubernetes identity lacks permissions the
	// release needs; the error names each and carries a Role that grants them.
	ErrTypeAccessMissing = "AccessMissing"
	// ErrTypeNotReady: pods of the release are not scheduled yet; a retry looks again.
	ErrTypeNotReady = "NotReady"
	// ErrTypeReleaseIdentity: the rendered or deployed release does not run the
	// workload as a KSA the grant can serve (none, several, or another one).
	ErrTypeReleaseIdentity = "ReleaseIdentity"
	// ErrTypeHelmChart: the chart cannot be found or loaded.
	ErrTypeHelmChart = "HelmChart"
	// ErrTypeHelmOwnership: an object of the chart belongs to something else.
	ErrTypeHelmOwnership = "HelmOwnership"
	// ErrTypeHelmRelease: rendering, validation or rollout failed; a failed upgrade
	// was rolled back, a failed first install uninstalled.
	ErrTypeHelmRelease = "HelmRelease"
	// ErrTypeHelmNotReady: the rollout was not ready within the Helm timeout and
	// was rolled back; retryable.
	ErrTypeHelmNotReady = "HelmNotReady"
	// ErrTypeHelmBusy: another Helm operation on the release is in progress.
	ErrTypeHelmBusy = "HelmBusy"
)

// Error types of the approval proof check.
const (
	// ErrTypeProofRefused is the error type of an ID token the approval endpoint
	// refuses (bad signature, issuer, audience, expiry, unverified email).
	ErrTypeProofRefused = "ProofRefused"
	// ErrTypeNoApprovalSecret: a worker without the approval secret was asked to
	// check a proof (retryable: another worker may have it).
	ErrTypeNoApprovalSecret = "NoApprovalSecret"
	// ErrTypePolicyRefused: the grant policy does not allow the request (no
	// rule covers it, or it asks more than its rule allows), or its requester
	// proof does not check out; refused before any change.
	ErrTypePolicyRefused = "PolicyRefused"
)
