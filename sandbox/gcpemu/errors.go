package gcpemu

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"time"
)

// errorFlavor is the shape of an error body: Google's JSON errors come in the
// standard form, BigQuery's older form with an "errors" list, and STS's OAuth form.
type errorFlavor int

const (
	flavorGoogle errorFlavor = iota
	flavorBigQuery
	flavorOAuth
)

// apiError is an error the emulator returns to a client as Google would.
type apiError struct {
	HTTP    int
	Status  string // canonical code name, e.g. "PERMISSION_DENIED"
	Message string
	// Reason and Domain fill google.rpc.ErrorInfo (or BigQuery's errors[].reason).
	Reason   string
	Domain   string
	Metadata map[string]string
	// OAuthError is the "error" field of an STS error (e.g. "invalid_grant").
	OAuthError string
	// Header is extra response headers (e.g. Retry-After).
	Header map[string]string
	// RetryDelay, when set, adds a google.rpc.RetryInfo detail (quota errors).
	RetryDelay time.Duration
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.HTTP, e.Status, e.Message) }

func newAPIError(code int, status, format string, args ...any) *apiError {
	return &apiError{HTTP: code, Status: status, Message: fmt.Sprintf(format, args...)}
}

func errInvalid(format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, "INVALID_ARGUMENT", format, args...)
}

func errFailedPrecondition(format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, "FAILED_PRECONDITION", format, args...)
}

func errNotFound(format string, args ...any) *apiError {
	return newAPIError(http.StatusNotFound, "NOT_FOUND", format, args...)
}

func errAlreadyExists(format string, args ...any) *apiError {
	return newAPIError(http.StatusConflict, "ALREADY_EXISTS", format, args...)
}

func errAborted(format string, args ...any) *apiError {
	return newAPIError(http.StatusConflict, "ABORTED", format, args...)
}

func errDenied(format string, args ...any) *apiError {
	return newAPIError(http.StatusForbidden, "PERMISSION_DENIED", format, args...)
}

func errInternal(err error) *apiError {
	return newAPIError(http.StatusInternalServerError, "INTERNAL", "Internal error encountered: %v", err)
}

// withInfo attaches a google.rpc.ErrorInfo.
func (e *apiError) withInfo(reason, domain string, metadata map[string]string) *apiError {
	e.Reason, e.Domain, e.Metadata = reason, domain, metadata
	return e
}

// statusForHTTP is the canonical code Google uses for an HTTP status.
func statusForHTTP(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	default:
		return "INTERNAL"
	}
}

// bigQueryReason is BigQuery's errors[].reason for a status.
func bigQueryReason(e *apiError) string {
	if e.Reason != "" && e.Domain == "" {
		return e.Reason
	}
	switch e.HTTP {
	case 400:
		return "invalid"
	case 401:
		return "unauthorized"
	case 403:
		return "accessDenied"
	case 404:
		return "notFound"
	case 409:
		return "duplicate"
	case 429:
		return "rateLimitExceeded"
	case 503:
		return "backendError"
	default:
		return "internalError"
	}
}

type errorInfo struct {
	Type     string            `json:"@type"`
	Reason   string            `json:"reason"`
	Domain   string            `json:"domain"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type legacyError struct {
	Message string `json:"message"`
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
}

type errorBody struct {
	Code    int           `json:"code"`
	Message string        `json:"message"`
	Errors  []legacyError `json:"errors,omitempty"`
	Status  string        `json:"status"`
	Details []any         `json:"details,omitempty"`
}

func writeError(w http.ResponseWriter, flavor errorFlavor, e *apiError) {
	for k, v := range e.Header {
		w.Header().Set(k, v)
	}
	if e.Status == "" {
		e.Status = statusForHTTP(e.HTTP)
	}
	switch flavor {
	case flavorOAuth:
		code := e.OAuthError
		if code == "" {
			code = oauthCodeFor(e.HTTP)
		}
		writeJSON(w, e.HTTP, map[string]string{"error": code, "error_description": e.Message})
	case flavorBigQuery:
		body := errorBody{Code: e.HTTP, Message: e.Message, Status: e.Status,
			Errors: []legacyError{{Message: e.Message, Domain: "global", Reason: bigQueryReason(e)}}}
		writeJSON(w, e.HTTP, map[string]any{"error": body})
	default:
		body := errorBody{Code: e.HTTP, Message: e.Message, Status: e.Status}
		if e.Reason != "" && e.Domain != "" {
			body.Details = []any{errorInfo{Type: "type.googleapis.com/google.rpc.ErrorInfo",
				Reason: e.Reason, Domain: e.Domain, Metadata: e.Metadata}}
		}
		if e.RetryDelay > 0 {
			body.Details = append(body.Details, map[string]string{"@type": "type.googleapis.com/google.rpc.RetryInfo",
				"retryDelay": strconv.FormatFloat(e.RetryDelay.Seconds(), 'f', -1, 64) + "s"})
		}
		writeJSON(w, e.HTTP, map[string]any{"error": body})
	}
}

func oauthCodeFor(code int) string {
	switch code {
	case 401:
		return "unauthorized_client"
	case 503:
		return "temporarily_unavailable"
	case 500:
		return "server_error"
	default:
		return "invalid_request"
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	if v == nil {
		v = struct{}{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeNotFoundPage answers an unknown URL the way Google's front end does.
func writeNotFoundPage(w http.ResponseWriter, path string) {
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintf(w, "<!DOCTYPE html>\n<html lang=en><title>Error 404 (Not Found)!!1</title>"+
		"<p><b>404.</b> <ins>That’s an error.</ins><p>The requested URL <code>%s</code> was not found on this server."+
		"  <ins>That’s all we know.</ins>\n", html.EscapeString(path))
}

const maxBody = 4 << 20

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, maxBody))
}

// decodeBody unmarshals a JSON request body; an empty body leaves v untouched.
func decodeBody(c *call, v any) error {
	if len(c.body) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return errInvalid("Invalid JSON payload received. %v", err)
	}
	return nil
}
