package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/googleapis/gax-go/v2/apierror"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/api/googleapi"

	"github.com/gkewi/gkewi/contract"
)

// GoogleAPIError is the useful part of an error returned by a Google REST API.
type GoogleAPIError struct {
	// HTTPCode is the HTTP status code.
	HTTPCode int
	// Status is the canonical status name, e.g. "FAILED_PRECONDITION", when the
	// body carries one.
	Status string
	// Reason is the ErrorInfo reason (e.g. "IAM_PERMISSION_DENIED",
	// "SERVICE_DISABLED") or the legacy errors[].reason (e.g. "rateLimitExceeded").
	Reason string
	// Message is the server's human-readable message.
	Message string
	// Metadata is the ErrorInfo metadata (e.g. "permission", "service", "consumer").
	Metadata map[string]string
	// RetryDelay is the google.rpc.RetryInfo delay, when the body carries one.
	RetryDelay time.Duration
}

// errorEnvelope is what Google's JSON error body holds beyond googleapi.Error:
// the canonical status name, which apierror maps from the HTTP code instead of
// reading it, and the details, kept raw for apierror.
type errorEnvelope struct {
	Error struct {
		Message string          `json:"message"`
		Status  string          `json:"status"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
}

// ParseGoogleAPIError extracts a Google API error from err's chain.
func ParseGoogleAPIError(err error) (GoogleAPIError, bool) {
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return GoogleAPIError{}, false
	}
	out := GoogleAPIError{HTTPCode: gerr.Code, Message: gerr.Message}
	var env errorEnvelope
	if gerr.Body != "" && json.Unmarshal([]byte(gerr.Body), &env) == nil {
		out.Status = env.Error.Status
		if out.Message == "" {
			out.Message = env.Error.Message
		}
		if details := errorDetails(gerr, env); details != nil {
			out.Reason, out.Metadata = details.Reason(), details.Metadata()
			// A Duration in JSON: "86401s", "0.5s".
			out.RetryDelay = details.Details().RetryInfo.GetRetryDelay().AsDuration()
		}
	}
	var oauth struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if out.Status == "" && gerr.Body != "" && json.Unmarshal([]byte(gerr.Body), &oauth) == nil && oauth.Error != "" {
		// OAuth-style body of the token endpoints (STS): {"error": "invalid_grant", ...}.
		out.Reason = oauth.Error
		if out.Message == "" {
			out.Message = oauth.Description
		}
	}
	if out.Reason == "" && len(gerr.Errors) > 0 {
		// The legacy errors[].reason (e.g. "rateLimitExceeded"), which the
		// client reads from the body.
		out.Reason = gerr.Errors[0].Reason
	}
	if out.Message == "" {
		out.Message = strings.TrimSpace(gerr.Body)
	}
	if out.Message == "" {
		out.Message = http.StatusText(gerr.Code)
	}
	return out, true
}

// errorDetails decodes the google.rpc details of gerr's body with apierror, or
// returns nil when the body has none. apierror checks the whole body against
// the google.rpc.Status schema and drops every detail when it does not fit, as
// with the legacy "errors" list many APIs still send next to "details"; so it
// is given the details alone.
func errorDetails(gerr *googleapi.Error, env errorEnvelope) *apierror.APIError {
	if len(env.Error.Details) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]map[string]json.RawMessage{"error": {"details": env.Error.Details}})
	if err != nil {
		return nil
	}
	details, ok := apierror.FromError(&googleapi.Error{Code: gerr.Code, Message: gerr.Message, Body: string(body)})
	if !ok {
		return nil
	}
	return details
}

func apiCode(err error) int {
	e, ok := ParseGoogleAPIError(err)
	if !ok {
		return 0
	}
	return e.HTTPCode
}

// IsNotFound reports a 404 from a Google API.
func IsNotFound(err error) bool { return apiCode(err) == http.StatusNotFound }

// IsAlreadyExists reports a 409 ALREADY_EXISTS (a create of something that exists).
func IsAlreadyExists(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	if !ok || e.HTTPCode != http.StatusConflict {
		return false
	}
	return e.Status == "ALREADY_EXISTS" || e.Reason == "duplicate" ||
		strings.Contains(strings.ToLower(e.Message), "already exists")
}

// IsConcurrentChange reports a lost read-modify-write race: 409 ABORTED from
// setIamPolicy with a stale etag, or 412 from an If-Match precondition.
func IsConcurrentChange(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	if !ok {
		return false
	}
	if e.HTTPCode == http.StatusPreconditionFailed {
		return true
	}
	return e.HTTPCode == http.StatusConflict && !IsAlreadyExists(err)
}

var busyOperationRE = regexp.MustCompile(`(?i)operation[ :]+(operation-[A-Za-z0-9-]+)`)

// IsClusterBusy reports GKE's refusal to start an operation while another runs on
// the cluster or node pool.
func IsClusterBusy(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	if !ok || (e.HTTPCode != http.StatusBadRequest && e.HTTPCode != http.StatusConflict) {
		return false
	}
	if e.Reason == "CLUSTER_ALREADY_HAS_OPERATION" || e.Reason == "NODE_POOL_ALREADY_HAS_OPERATION" {
		return true
	}
	msg := strings.ToLower(e.Message)
	return strings.Contains(msg, "incompatible operation") ||
		(strings.Contains(msg, "is currently") && strings.Contains(msg, "operation")) ||
		strings.Contains(msg, "please wait and try again once it is done")
}

// busyOperationName returns the short name of the running operation named in a
// busy-cluster error, if the message names one.
func busyOperationName(err error) string {
	e, ok := ParseGoogleAPIError(err)
	if !ok {
		return ""
	}
	if op := e.Metadata["operation"]; op != "" {
		return op
	}
	if m := busyOperationRE.FindStringSubmatch(e.Message); m != nil {
		return m[1]
	}
	return ""
}

// IsWorkloadPoolMissing reports IAM's refusal of a Workload Identity member whose
// pool does not exist yet ("Identity Pool does not exist (P.svc.id.goog)").
func IsWorkloadPoolMissing(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	return ok && e.HTTPCode == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(e.Message), "identity pool does not exist")
}

var memberMissingRE = regexp.MustCompile(`(?i)service account \S+ does not exist`)

// IsMemberMissing reports IAM's refusal of a policy naming a service account it
// does not know ("Service account x@p.iam.gserviceaccount.com does not exist."),
// which happens for a while after the account is created.
func IsMemberMissing(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	return ok && e.HTTPCode == http.StatusBadRequest && memberMissingRE.MatchString(e.Message)
}

// permissionRoles maps a permission to a predefined role that grants it, for
// messages that tell the operator what to grant.
var permissionRoles = map[string]string{
	"iam.serviceAccounts.create":             "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.delete":             "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.get":                "roles/iam.serviceAccountViewer",
	"iam.serviceAccounts.list":               "roles/iam.serviceAccountViewer",
	"iam.serviceAccounts.update":             "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.getIamPolicy":       "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.setIamPolicy":       "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.actAs":              "roles/iam.serviceAccountUser",
	"iam.serviceAccounts.getAccessToken":     "roles/iam.workloadIdentityUser (for a Workload Identity principal) or roles/iam.serviceAccountTokenCreator",
	"container.clusters.get":                 "roles/container.clusterViewer",
	"container.clusters.list":                "roles/container.clusterViewer",
	"container.clusters.update":              "roles/container.clusterAdmin (or roles/container.admin)",
	"container.operations.get":               "roles/container.viewer",
	"container.operations.list":              "roles/container.viewer",
	"serviceusage.services.get":              "roles/serviceusage.serviceUsageViewer",
	"serviceusage.services.list":             "roles/serviceusage.serviceUsageViewer",
	"serviceusage.services.enable":           "roles/serviceusage.serviceUsageAdmin",
	"serviceusage.services.use":              "roles/serviceusage.serviceUsageConsumer",
	"resourcemanager.projects.getIamPolicy":  "roles/resourcemanager.projectIamAdmin",
	"resourcemanager.projects.setIamPolicy":  "roles/resourcemanager.projectIamAdmin",
	"bigquery.datasets.create":               "roles/bigquery.dataOwner (or roles/bigquery.admin)",
	"bigquery.datasets.get":                  "roles/bigquery.metadataViewer",
	"bigquery.datasets.update":               "roles/bigquery.dataOwner (or roles/bigquery.admin)",
	"bigquery.datasets.getIamPolicy":         "roles/bigquery.dataOwner (or roles/bigquery.admin)",
	"bigquery.datasets.setIamPolicy":         "roles/bigquery.dataOwner (or roles/bigquery.admin)",
	"bigquery.jobs.create":                   "roles/bigquery.jobUser",
	"bigquery.tables.list":                   "roles/bigquery.metadataViewer",
	"iam.workloadIdentityPools.get":          "roles/iam.workloadIdentityPoolViewer",
	"iam.serviceAccounts.getOpenIdToken":     "roles/iam.serviceAccountOpenIdTokenCreator",
	"resourcemanager.projects.get":           "roles/browser",
	"serviceusage.services.disable":          "roles/serviceusage.serviceUsageAdmin",
	"iam.serviceAccounts.signJwt":            "roles/iam.serviceAccountTokenCreator",
	"iam.serviceAccounts.implicitDelegation": "roles/iam.serviceAccountTokenCreator",
	"container.clusters.getCredentials":      "roles/container.clusterViewer",
	"container.serviceAccounts.createToken":  "roles/container.developer",
	"resourcemanager.projects.list":          "roles/browser",
	"iam.serviceAccounts.enable":             "roles/iam.serviceAccountAdmin",
	"iam.serviceAccounts.undelete":           "roles/iam.serviceAccountAdmin",
	"iam.serviceAccountKeys.create":          "roles/iam.serviceAccountKeyAdmin",
	"iam.workloadIdentityPoolProviders.get":  "roles/iam.workloadIdentityPoolViewer",
}

// RoleForPermission names a predefined role that grants permission, or "".
func RoleForPermission(permission string) string { return permissionRoles[permission] }

var permissionPatterns = []*regexp.Regexp{
	// IAM, Resource Manager: "Permission 'iam.serviceAccounts.create' denied on resource ..."
	regexp.MustCompile(`Permission '([a-zA-Z0-9]+(?:\.[a-zA-Z0-9]+){2})'`),
	// GKE: `Required "container.clusters.update" permission(s) for ...`
	regexp.MustCompile(`Required "([a-zA-Z0-9]+(?:\.[a-zA-Z0-9]+){2})" permission`),
	// BigQuery: "Permission bigquery.datasets.update denied on dataset ..."
	regexp.MustCompile(`Permission ([a-zA-Z0-9]+(?:\.[a-zA-Z0-9]+){2}) (?:denied|is required)`),
	// BigQuery: "User does not have bigquery.datasets.create permission in project p."
	regexp.MustCompile(`([a-zA-Z0-9]+(?:\.[a-zA-Z0-9]+){2}) permission`),
}

// MissingPermission returns the permission a 403 names, from its ErrorInfo
// metadata or its message; "" when it names none.
func MissingPermission(e GoogleAPIError) string {
	if p := e.Metadata["permission"]; p != "" {
		return p
	}
	for _, re := range permissionPatterns {
		if m := re.FindStringSubmatch(e.Message); m != nil {
			return m[1]
		}
	}
	return ""
}

func isServiceDisabled(e GoogleAPIError) bool {
	return e.Reason == "SERVICE_DISABLED" || e.Reason == "accessNotConfigured" ||
		strings.Contains(e.Message, "has not been used in project") ||
		strings.Contains(e.Message, "it is disabled")
}

// quotaRetryThreshold separates a quota from a rate limit: a rate limit asks for
// a retry within seconds or minutes; a quota of resources asks for about a day
// (IAM's service account quota sends 86401s).
const quotaRetryThreshold = time.Hour

// quotaTexts are messages of quotas that no retry frees.
var quotaTexts = []string{
	"maximum number of service accounts",
	"maximum number of keys on account",
}

// isQuotaExhausted reports a 429 that is a quota reached, not a passing rate limit.
func isQuotaExhausted(e GoogleAPIError) bool {
	if e.HTTPCode != http.StatusTooManyRequests {
		return false
	}
	if e.RetryDelay >= quotaRetryThreshold {
		return true
	}
	msg := strings.ToLower(e.Message)
	for _, q := range quotaTexts {
		if strings.Contains(msg, q) {
			return true
		}
	}
	return false
}

func quotaMessage(action string, e GoogleAPIError) string {
	what := "a quota"
	if strings.Contains(strings.ToLower(e.Message), "service accounts") {
		what = "the project's service account quota (100 by default)"
	}
	wait := ""
	if e.RetryDelay > 0 {
		wait = fmt.Sprintf(" (Google's retry delay: %s)", e.RetryDelay)
	}
	return fmt.Sprintf("%s: %s is reached%s; retrying will not help: delete unused resources, "+
		"or request an increase on the IAM quotas page (https://console.cloud.google.com/iam-admin/quotas, "+
		"see https://cloud.google.com/iam/quotas), then retry: %s", action, what, wait, e.Message)
}

var policyTooLargeRE = regexp.MustCompile(`(?i)number of members in the policy \([\d,]+\) is larger than the maximum`)

// IsPolicyTooLarge reports IAM's refusal of a policy with more than 1,500 principals.
func IsPolicyTooLarge(err error) bool {
	e, ok := ParseGoogleAPIError(err)
	return ok && e.HTTPCode == http.StatusBadRequest && policyTooLargeRE.MatchString(e.Message)
}

func isRateLimited(e GoogleAPIError) bool {
	switch e.Reason {
	case "rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED", "quotaExceeded":
		return true
	}
	return false
}

// ClassifyGoogleError turns the error of a Google API call into what Temporal should
// do with it. action says what was attempted ("create service account x in project
// p"); permission is the permission the call needs, named when the error does not
// name one. Errors an operator must fix become non-retryable ApplicationErrors
// saying what to fix; transient ones stay retryable.
func ClassifyGoogleError(err error, action, permission string) error {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", action, err)
	}
	e, ok := ParseGoogleAPIError(err)
	if !ok {
		// Network and transport failures: let Temporal retry.
		return fmt.Errorf("%s: %w", action, err)
	}
	retryable := func(errType, msg string) error {
		return temporal.NewApplicationErrorWithCause(msg, errType, err)
	}
	fatal := func(errType, msg string) error {
		return temporal.NewNonRetryableApplicationError(msg, errType, err)
	}
	switch {
	case isQuotaExhausted(e):
		return fatal(contract.ErrTypeQuotaExceeded, quotaMessage(action, e))
	case IsPolicyTooLarge(err):
		return fatal(contract.ErrTypeQuotaExceeded, fmt.Sprintf("%s: the IAM policy would hold more principals than IAM allows (1,500, a limit that cannot be raised); "+
			"remove principals that are no longer needed (deleted: members first) or grant a Google group instead: %s", action, e.Message))
	case e.HTTPCode == http.StatusTooManyRequests || e.HTTPCode >= 500:
		return retryable(contract.ErrTypeUnavailable, fmt.Sprintf("%s: Google API unavailable (HTTP %d), will retry: %s", action, e.HTTPCode, e.Message))
	case IsConcurrentChange(err):
		return retryable(contract.ErrTypeConcurrentChange, fmt.Sprintf("%s: concurrent change, will retry: %s", action, e.Message))
	case IsClusterBusy(err):
		return retryable(contract.ErrTypeClusterBusy, fmt.Sprintf("%s: the cluster is busy with another operation, will retry: %s", action, e.Message))
	case IsWorkloadPoolMissing(err):
		// Callers check that a cluster has the pool first; IAM learns of a new pool
		// some minutes after it is enabled.
		return retryable(contract.ErrTypeWorkloadPoolNotReady, fmt.Sprintf("%s: IAM does not know the workload pool yet, will retry: %s", action, e.Message))
	case e.HTTPCode == http.StatusConflict:
		return fatal(contract.ErrTypeAlreadyExists, fmt.Sprintf("%s: already exists: %s", action, e.Message))
	case e.HTTPCode == http.StatusUnauthorized:
		return fatal(contract.ErrTypeUnauthenticated, fmt.Sprintf("%s: the worker's Google credentials were rejected; check its Application Default Credentials: %s", action, e.Message))
	case e.HTTPCode == http.StatusForbidden && isRateLimited(e):
		return retryable(contract.ErrTypeUnavailable, fmt.Sprintf("%s: rate limited, will retry: %s", action, e.Message))
	case e.HTTPCode == http.StatusForbidden && isServiceDisabled(e):
		svc, consumer := e.Metadata["service"], e.Metadata["consumer"]
		fix := "enable the API named in the message"
		if svc != "" {
			fix = "enable " + svc
			if consumer != "" {
				fix += " in " + consumer
			}
		}
		return fatal(contract.ErrTypeServiceDisabled, fmt.Sprintf("%s: API disabled: %s (then retry): %s", action, fix, e.Message))
	case e.HTTPCode == http.StatusForbidden:
		return fatal(contract.ErrTypePermissionDenied, permissionDeniedMessage(action, permission, e))
	case e.HTTPCode == http.StatusNotFound:
		return fatal(contract.ErrTypeNotFound, fmt.Sprintf("%s: not found; check the project, location and names in the request: %s", action, e.Message))
	case e.HTTPCode == http.StatusBadRequest && (e.Status == "FAILED_PRECONDITION" || e.Reason == "failedPrecondition"):
		return fatal(contract.ErrTypeFailedPrecondition, fmt.Sprintf("%s: precondition failed; fix the state described and retry: %s", action, e.Message))
	case e.HTTPCode == http.StatusBadRequest:
		return fatal(contract.ErrTypeInvalidArgument, fmt.Sprintf("%s: invalid request; fix the request: %s", action, e.Message))
	default:
		return fatal(contract.ErrTypeInvalidArgument, fmt.Sprintf("%s: HTTP %d: %s", action, e.HTTPCode, e.Message))
	}
}

func permissionDeniedMessage(action, permission string, e GoogleAPIError) string {
	if p := MissingPermission(e); p != "" {
		permission = p
	}
	if permission == "" {
		return fmt.Sprintf("%s: permission denied; grant the worker's Google identity the permission this call needs: %s", action, e.Message)
	}
	grant := "a role with it"
	if role := RoleForPermission(permission); role != "" {
		grant = role
	}
	return fmt.Sprintf("%s: permission denied: the worker's Google identity lacks %s; grant it %s on the resource (or a custom role with %s): %s",
		action, permission, grant, permission, e.Message)
}

// invalidArgument is a non-retryable error about the activity's own input.
func invalidArgument(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), contract.ErrTypeInvalidArgument, nil)
}
