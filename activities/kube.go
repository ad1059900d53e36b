package activities

import "context"

// Kube holds the Kubernetes steps on the workload's cluster.
type Kube struct{}

// Preflight refuses what Workload Identity cannot serve and warns about the rest,
// before anything is changed.
func (k *Kube) Preflight(ctx context.Context, in PreflightInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// AnnotateServiceAccount ensures the namespace and the KSA, annotated with the GSA.
func (k *Kube) AnnotateServiceAccount(ctx context.Context, in AnnotateInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}

// RemoveServiceAccountAnnotation removes the GSA annotation from the KSA.
func (k *Kube) RemoveServiceAccountAnnotation(ctx context.Context, in AnnotateInput) (StepResult, error) {
	return StepResult{}, errUnimplemented
}
