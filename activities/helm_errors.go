package activities

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"go.temporal.io/sdk/temporal"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/gkewi/gkewi/contract"
)

// classifyHelmChartError classifies a failure to find or load the chart:
// network failures are retried, the rest (no such chart or version, malformed
// chart) is final.
func classifyHelmChartError(in HelmInput, err error) error {
	where := in.Chart
	if in.RepoURL != "" {
		where = in.Chart + " in " + in.RepoURL
	}
	if in.Version != "" {
		where += " version " + in.Version
	}
	if isHelmNetworkError(err) {
		return temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("helm: fetching chart %s: %v (will retry)", where, err), contract.ErrTypeUnavailable, err)
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("helm: chart %s: %v; check the chart reference, repository URL and version", where, err), contract.ErrTypeHelmChart, err)
}

// classifyHelmError classifies a failed Helm operation.
func classifyHelmError(action string, err error) error {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err
	}
	msg := err.Error()
	var apiStatus apierrors.APIStatus
	isAPIStatus := errors.As(err, &apiStatus)
	switch {
	case strings.Contains(msg, "another operation (install/upgrade/rollback) is in progress"):
		return temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("%s: %v (will retry; if no Helm operation is really running, roll the release back by hand)", action, err),
			contract.ErrTypeHelmBusy, err)
	case strings.Contains(msg, "invalid ownership metadata") || strings.Contains(msg, "cannot be imported into the current release"):
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: %v; an object of the chart exists outside the release: delete it, or give it Helm's ownership metadata for this release", action, err),
			contract.ErrTypeHelmOwnership, err)
	case strings.Contains(msg, "Apply failed with") && strings.Contains(msg, "conflict"):
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: %v; another field manager owns these fields with other values", action, err), contract.ErrTypeHelmOwnership, err)
	case (isAPIStatus && apierrors.IsForbidden(err)) || strings.Contains(msg, " is forbidden: "):
		// Helm flattens some API errors (uninstall, rollback) into text.
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: permission denied: %v; %s", action, err, kubeRBACHint), contract.ErrTypePermissionDenied, err)
	case strings.Contains(msg, "an error occurred while uninstalling the release") ||
		strings.Contains(msg, "an error occurred while rolling back the release"):
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s: %v; the release was left failed: inspect it with helm history and helm status before retrying", action, err),
			contract.ErrTypeHelmRelease, err)
	case strings.Contains(msg, "context deadline exceeded") &&
		(strings.Contains(msg, "not ready") || strings.Contains(msg, "rollback-on-failure")):
		// The rollout did not become ready in time and was rolled back cleanly. On a
		// loaded cluster that passes; a broken release fails the few attempts the
		// workflow allows the same way.
		return temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("%s: %v (rolled back; will retry)", action, err), contract.ErrTypeHelmNotReady, err)
	case strings.Contains(msg, "rollback-on-failure"):
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: %v", action, err), contract.ErrTypeHelmRelease, err)
	case isAPIStatus:
		return classifyKubeError(action, err)
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &urlErr) || (errors.As(err, &netErr) && !errors.Is(err, context.DeadlineExceeded)) {
		return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: %v (will retry)", action, err), contract.ErrTypeUnavailable, err)
	}
	// Rendering, validation and readiness failures: retrying would fail the same
	// way and add failed revisions.
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: %v", action, err), contract.ErrTypeHelmRelease, err)
}

func isHelmNetworkError(err error) bool {
	var notFound repo.ChartNotFoundError
	if errors.As(err, &notFound) {
		return false
	}
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.Is(err, context.DeadlineExceeded)
}
