package activities

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.temporal.io/sdk/temporal"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/gkewi/gkewi/contract"
)

// kubeRBACHint tells the operator where the worker's permissions are defined.
const kubeRBACHint = "grant it to the gkewi worker's Kubernetes identity (deploy/rbac, or the gkewi-worker chart's RBAC)"

// classifyKubeError turns a Kubernetes API error into a Temporal application error:
// permission, credential, validation and not-found errors are final and say what
// to fix; conflicts, timeouts, throttling and server errors are retried.
func classifyKubeError(action string, err error) error {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err
	}
	switch {
	case apierrors.IsForbidden(err):
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: permission denied: %v; %s", action, err, kubeRBACHint), contract.ErrTypePermissionDenied, err)
	case apierrors.IsUnauthorized(err):
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: the Kubernetes API server rejected the worker's credentials: %v; check the worker's kubeconfig or in-cluster service account", action, err),
			contract.ErrTypeUnauthenticated, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsRequestEntityTooLargeError(err):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: invalid request: %v", action, err), contract.ErrTypeInvalidArgument, err)
	case apierrors.IsNotFound(err):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: not found: %v", action, err), contract.ErrTypeNotFound, err)
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: concurrent change, will retry: %v", action, err), contract.ErrTypeConcurrentChange, err)
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: Kubernetes API unavailable, will retry: %v", action, err), contract.ErrTypeUnavailable, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) {
		return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: cannot reach the Kubernetes API server: %v (will retry)", action, err), contract.ErrTypeUnavailable, err)
	}
	// Unknown failures are retried: the retry policy bounds them.
	return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: %v", action, err), contract.ErrTypeUnavailable, err)
}

// kubeInvalidInput is a final error for a malformed activity input.
func kubeInvalidInput(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), contract.ErrTypeInvalidArgument, nil)
}
