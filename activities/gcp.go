package activities

import (
	"context"
	"errors"
)

// GCP holds the Google Cloud steps. Its clients are injected (see worker/).
type GCP struct{}

var errUnimplemented = errors.New("not implemented yet")

// EnableService enables a Google API in a project, waiting on its operation.
func (g *GCP) EnableService(ctx context.Context, in EnableServiceInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// SetWorkloadPool sets the cluster's workload pool to PROJECT.svc.id.goog.
func (g *GCP) SetWorkloadPool(ctx context.Context, in ClusterRef) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// ListNodePools returns the names of the cluster's node pools.
func (g *GCP) ListNodePools(ctx context.Context, in ClusterRef) ([]string, error) {
	return nil, errUnimplemented
}

// SetNodePoolMetadata sets one node pool's workload metadata mode to GKE_METADATA.
func (g *GCP) SetNodePoolMetadata(ctx context.Context, in NodePoolInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// CheckIdentitySameness warns about other Workload Identity clusters of the
// project, where the same namespace/KSA gets the same identity.
func (g *GCP) CheckIdentitySameness(ctx context.Context, in PreflightInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// EnsureServiceAccount creates the GSA or reuses the existing one.
func (g *GCP) EnsureServiceAccount(ctx context.Context, in EnsureServiceAccountInput) (ServiceAccount, error) {
	return ServiceAccount{}, errUnimplemented
}

// DeleteServiceAccount deletes a GSA, only if its unique id still matches.
func (g *GCP) DeleteServiceAccount(ctx context.Context, in ServiceAccount) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// AddServiceAccountIAMMember adds one member to one role on a GSA's IAM policy.
func (g *GCP) AddServiceAccountIAMMember(ctx context.Context, in ServiceAccountIAMInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// RemoveServiceAccountIAMMember removes one member from one role on a GSA's IAM policy.
func (g *GCP) RemoveServiceAccountIAMMember(ctx context.Context, in ServiceAccountIAMInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// GrantBigQueryAccess grants the connection's roles and ensures the temp dataset.
func (g *GCP) GrantBigQueryAccess(ctx context.Context, in BigQueryAccessInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// RevokeBigQueryAccess removes the connection's roles (the temp dataset stays).
func (g *GCP) RevokeBigQueryAccess(ctx context.Context, in BigQueryAccessInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}
