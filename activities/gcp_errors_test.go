package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/api/googleapi"

	"github.com/gkewi/gkewi/contract"
)

// googleErr builds the error the generated clients return for a JSON error body.
func googleErr(code int, status, message string, details ...map[string]any) error {
	body := map[string]any{"error": map[string]any{
		"code": code, "message": message, "status": status, "details": details,
	}}
	raw, _ := json.Marshal(body)
	return &googleapi.Error{Code: code, Message: message, Body: string(raw)}
}

func errorInfo(reason string, metadata map[string]string) map[string]any {
	return map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "metadata": metadata}
}

func requireAppError(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	return appErr
}

func TestClassifyPermissionDeniedNamesPermissionAndRole(t *testing.T) {
	cases := []struct {
		name, message, hint, wantPerm, wantRole string
		details                                 []map[string]any
	}{
		{
			name:     "iam message",
			message:  "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).",
			wantPerm: "iam.serviceAccounts.create", wantRole: "roles/iam.serviceAccountAdmin",
		},
		{
			name:     "gke message",
			message:  `Required "container.clusters.update" permission(s) for "projects/p/locations/l/clusters/c".`,
			wantPerm: "container.clusters.update", wantRole: "roles/container.clusterAdmin",
		},
		{
			name:     "bigquery message",
			message:  "Access Denied: Dataset p:d: Permission bigquery.datasets.update denied on dataset p:d (or it may not exist).",
			wantPerm: "bigquery.datasets.update", wantRole: "roles/bigquery.dataOwner",
		},
		{
			name:     "bigquery user message",
			message:  "Access Denied: Project p: User does not have bigquery.datasets.create permission in project p.",
			wantPerm: "bigquery.datasets.create", wantRole: "roles/bigquery.dataOwner",
		},
		{
			name:     "error info metadata",
			message:  "Permission denied to enable service [iamcredentials.googleapis.com]",
			details:  []map[string]any{errorInfo("AUTH_PERMISSION_DENIED", map[string]string{"permission": "serviceusage.services.enable"})},
			wantPerm: "serviceusage.services.enable", wantRole: "roles/serviceusage.serviceUsageAdmin",
		},
		{
			name:     "caller hint when the message names none",
			message:  "The caller does not have permission",
			hint:     "resourcemanager.projects.setIamPolicy",
			wantPerm: "resourcemanager.projects.setIamPolicy", wantRole: "roles/resourcemanager.projectIamAdmin",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ClassifyGoogleError(googleErr(403, "PERMISSION_DENIED", tc.message, tc.details...), "do the thing", tc.hint)
			appErr := requireAppError(t, err)
			assert.True(t, appErr.NonRetryable())
			assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
			assert.Contains(t, appErr.Error(), tc.wantPerm)
			assert.Contains(t, appErr.Error(), tc.wantRole)
			assert.Contains(t, appErr.Error(), "do the thing")
			var gerr *googleapi.Error
			assert.ErrorAs(t, err, &gerr, "the Google error stays the cause")
		})
	}
}

func TestClassifyGoogleErrorRetryability(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		retryable bool
		errType   string
	}{
		{"invalid argument", googleErr(400, "INVALID_ARGUMENT", "bad account id"), false, contract.ErrTypeInvalidArgument},
		{"failed precondition", googleErr(400, "FAILED_PRECONDITION", "Workload Identity is not enabled"), false, contract.ErrTypeFailedPrecondition},
		{"not found", googleErr(404, "NOT_FOUND", "cluster c not found"), false, contract.ErrTypeNotFound},
		{"unauthenticated", googleErr(401, "UNAUTHENTICATED", "invalid credentials"), false, contract.ErrTypeUnauthenticated},
		{"already exists", googleErr(409, "ALREADY_EXISTS", "account already exists"), false, contract.ErrTypeAlreadyExists},
		{"aborted", googleErr(409, "ABORTED", "There were concurrent policy changes."), true, contract.ErrTypeConcurrentChange},
		{"etag precondition", googleErr(412, "FAILED_PRECONDITION", "Precondition check failed."), true, contract.ErrTypeConcurrentChange},
		{"rate limited", googleErr(429, "RESOURCE_EXHAUSTED", "quota"), true, contract.ErrTypeUnavailable},
		{"bigquery rate limit is a 403", &googleapi.Error{Code: 403, Message: "Exceeded rate limits", Errors: []googleapi.ErrorItem{{Reason: "rateLimitExceeded"}}}, true, contract.ErrTypeUnavailable},
		{"unavailable", googleErr(503, "UNAVAILABLE", "try again"), true, contract.ErrTypeUnavailable},
		{"internal", googleErr(500, "INTERNAL", "oops"), true, contract.ErrTypeUnavailable},
		{"busy cluster", googleErr(400, "FAILED_PRECONDITION", "Operation operation-1700000000000-abc is currently upgrading cluster c. Please wait and try again once it is done."), true, contract.ErrTypeClusterBusy},
		{"busy cluster reason", googleErr(400, "FAILED_PRECONDITION", "Cluster is running incompatible operation operation-17-x.", errorInfo("CLUSTER_ALREADY_HAS_OPERATION", nil)), true, contract.ErrTypeClusterBusy},
		{"pool not yet known to IAM", googleErr(400, "INVALID_ARGUMENT", "Identity Pool does not exist (p.svc.id.goog). Please check that you specified a valid resource name as returned in the `name` attribute in the configuration API."), true, contract.ErrTypeWorkloadPoolNotReady},
		{"service disabled", googleErr(403, "PERMISSION_DENIED", "IAM Service Account Credentials API has not been used in project 123 before or it is disabled.",
			errorInfo("SERVICE_DISABLED", map[string]string{"service": "iamcredentials.googleapis.com", "consumer": "projects/123"})), false, contract.ErrTypeServiceDisabled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			appErr := requireAppError(t, ClassifyGoogleError(tc.err, "act", ""))
			assert.Equal(t, !tc.retryable, appErr.NonRetryable())
			assert.Equal(t, tc.errType, appErr.Type())
		})
	}
}

func TestClassifyServiceDisabledSaysWhatToEnable(t *testing.T) {
	err := ClassifyGoogleError(googleErr(403, "PERMISSION_DENIED", "API has not been used in project 123 before or it is disabled.",
		errorInfo("SERVICE_DISABLED", map[string]string{"service": "iamcredentials.googleapis.com", "consumer": "projects/123"})), "act", "")
	assert.Contains(t, err.Error(), "enable iamcredentials.googleapis.com in projects/123")
}

// Many APIs send the legacy "errors" list next to the details; the details
// still count.
func TestClassifyDetailsNextToLegacyErrors(t *testing.T) {
	body := func(code int, status, message, reason, detail string) string {
		return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"errors":[{"message":%q,"domain":"usageLimits","reason":%q}],"status":%q,"details":[%s]}}`,
			code, message, message, reason, status, detail)
	}
	msg := "Cloud Resource Manager API has not been used in project 123 before or it is disabled."
	disabled := &googleapi.Error{Code: 403, Message: msg, Errors: []googleapi.ErrorItem{{Reason: "accessNotConfigured"}},
		Body: body(403, "PERMISSION_DENIED", msg, "accessNotConfigured",
			`{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com","metadata":{"service":"cloudresourcemanager.googleapis.com","consumer":"projects/123"}}`)}
	e, ok := ParseGoogleAPIError(disabled)
	require.True(t, ok)
	assert.Equal(t, "SERVICE_DISABLED", e.Reason)
	assert.Equal(t, "PERMISSION_DENIED", e.Status)
	appErr := requireAppError(t, ClassifyGoogleError(disabled, "act", ""))
	assert.Equal(t, contract.ErrTypeServiceDisabled, appErr.Type())
	assert.Contains(t, appErr.Error(), "enable cloudresourcemanager.googleapis.com in projects/123")

	msg = "Maximum number of service accounts on project reached."
	quota := &googleapi.Error{Code: 429, Message: msg, Body: body(429, "RESOURCE_EXHAUSTED", msg, "rateLimitExceeded",
		`{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"86401s"}`)}
	e, ok = ParseGoogleAPIError(quota)
	require.True(t, ok)
	assert.Equal(t, 86401*time.Second, e.RetryDelay)
	assert.Equal(t, contract.ErrTypeQuotaExceeded, requireAppError(t, ClassifyGoogleError(quota, "act", "")).Type())
}

func TestClassifyNonGoogleErrors(t *testing.T) {
	assert.NoError(t, ClassifyGoogleError(nil, "act", ""))

	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	err := ClassifyGoogleError(netErr, "act", "")
	var appErr *temporal.ApplicationError
	assert.False(t, errors.As(err, &appErr), "network errors stay plain, hence retryable")
	assert.ErrorIs(t, err, netErr)

	assert.ErrorIs(t, ClassifyGoogleError(context.Canceled, "act", ""), context.Canceled)

	already := fmt.Errorf("wrapped: %w", temporal.NewNonRetryableApplicationError("x", "Mine", nil))
	assert.Equal(t, already, ClassifyGoogleError(already, "act", ""), "classified errors pass through")
}

func TestClassifyHelpersSeeThroughApplicationErrors(t *testing.T) {
	wrapped := ClassifyGoogleError(googleErr(404, "NOT_FOUND", "gone"), "act", "")
	assert.True(t, IsNotFound(wrapped))
	conflict := ClassifyGoogleError(googleErr(409, "ABORTED", "concurrent"), "act", "")
	assert.True(t, IsConcurrentChange(conflict))
	assert.False(t, IsConcurrentChange(googleErr(409, "ALREADY_EXISTS", "exists")))
	assert.True(t, IsAlreadyExists(googleErr(409, "ALREADY_EXISTS", "exists")))
	assert.False(t, IsAlreadyExists(googleErr(409, "ABORTED", "concurrent")))
}

func TestClassifyBusyOperationName(t *testing.T) {
	err := googleErr(400, "FAILED_PRECONDITION", "Operation operation-1700000000000-abc-123 is currently upgrading cluster c. Please wait and try again once it is done.")
	assert.True(t, IsClusterBusy(err))
	assert.Equal(t, "operation-1700000000000-abc-123", busyOperationName(err))
	assert.False(t, IsClusterBusy(googleErr(400, "FAILED_PRECONDITION", "Workload Identity must be enabled on the cluster")))
}

func TestClassifyOAuthStyleBody(t *testing.T) {
	err := &googleapi.Error{Code: 400, Body: `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`}
	e, ok := ParseGoogleAPIError(err)
	require.True(t, ok)
	assert.Equal(t, "invalid_grant", e.Reason)
	assert.Equal(t, "Invalid JWT Signature.", e.Message)
	appErr := requireAppError(t, ClassifyGoogleError(err, "exchange token", ""))
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, appErr.Error(), "Invalid JWT Signature.")
}

func TestClassifyMemberMissing(t *testing.T) {
	assert.True(t, IsMemberMissing(googleErr(400, "INVALID_ARGUMENT", "Service account gsa@p.iam.gserviceaccount.com does not exist.")))
	assert.False(t, IsMemberMissing(googleErr(404, "NOT_FOUND", "Service account gsa@p.iam.gserviceaccount.com does not exist.")))
	assert.False(t, IsMemberMissing(googleErr(400, "INVALID_ARGUMENT", "Invalid role")))
}
