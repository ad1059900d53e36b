package gcpemu

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// token is an OAuth 2 access token the emulator issued.
type token struct {
	Principal string `json:"principal"`
	// Identities are the member strings the bearer matches in IAM bindings.
	Identities []string  `json:"identities"`
	IssuedAt   time.Time `json:"issuedAt"`
	Expiry     time.Time `json:"expiry"`
	// SAUniqueID is set on a service account's token: it stops working if the
	// account is deleted (or replaced by a new one with the same email).
	SAUniqueID string `json:"saUniqueId,omitempty"`
	// Federated marks an STS token for a Kubernetes service account.
	Federated bool `json:"federated,omitempty"`
	// MetadataIssued marks the operator's token handed out by the metadata server.
	MetadataIssued bool `json:"metadataIssued,omitempty"`
}

const (
	msgCredentialsMissing = "Request is missing required authentication credential. Expected OAuth 2 access token, " +
		"login cookie or other valid authentication credential. " +
		"See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgCredentialsInvalid = "Request had invalid authentication credentials. Expected OAuth 2 access token, " +
		"login cookie or other valid authentication credential. " +
		"See https://developers.google.com/identity/sign-in/web/devconsole-project."
)

func errUnauthenticated(msg, reason string) *apiError {
	e := newAPIError(http.StatusUnauthorized, "UNAUTHENTICATED", "%s", msg).withInfo(reason, "googleapis.com", nil)
	e.Header = map[string]string{"WWW-Authenticate": `Bearer realm="https://accounts.google.com/", error="invalid_token"`}
	return e
}

// authenticateLocked maps the request's bearer token to the token record.
func (e *Emulator) authenticateLocked(r *http.Request, now time.Time) (*token, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		err := errUnauthenticated(msgCredentialsMissing, "CREDENTIALS_MISSING")
		err.Header = map[string]string{"WWW-Authenticate": `Bearer realm="https://accounts.google.com/"`}
		return nil, err
	}
	scheme, value, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || value == "" {
		return nil, errUnauthenticated(msgCredentialsInvalid, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
	}
	tok := e.st.Tokens[strings.TrimSpace(value)]
	if tok == nil {
		return nil, errUnauthenticated(msgCredentialsInvalid, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
	}
	if !now.Before(tok.Expiry) {
		return nil, errUnauthenticated(msgCredentialsInvalid, "ACCESS_TOKEN_EXPIRED")
	}
	if tok.SAUniqueID != "" {
		email := strings.TrimPrefix(tok.Principal, "serviceAccount:")
		sa := e.findServiceAccountLocked(email)
		if sa == nil || sa.Resource.UniqueID != tok.SAUniqueID || sa.Resource.Disabled {
			return nil, errUnauthenticated(msgCredentialsInvalid, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
		}
	}
	return tok, nil
}

// MintAccessToken issues an access token for a principal, as if it had signed in:
// "serviceAccount:x@p.iam.gserviceaccount.com", "user:ops@example.com", a bare
// email, or a Workload Identity member "serviceAccount:P.svc.id.goog[NS/KSA]".
// It lives Config.TokenLifetime.
func (e *Emulator) MintAccessToken(principal string) string {
	return e.MintAccessTokenWithLifetime(principal, 0)
}

// MintAccessTokenWithLifetime is MintAccessToken with an explicit lifetime
// (0 means Config.TokenLifetime).
func (e *Emulator) MintAccessTokenWithLifetime(principal string, lifetime time.Duration) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if lifetime <= 0 {
		lifetime = e.cfg.TokenLifetime
	}
	t := &token{Principal: principal}
	if m := workloadSAPattern.FindStringSubmatch(strings.TrimPrefix(principal, "serviceAccount:")); m != nil {
		t = e.federatedToken(m[1], m[2], m[4])
	} else {
		t.Principal = memberForEmail(principal)
		t.Identities = []string{t.Principal}
	}
	return e.issueLocked(t, lifetime)
}

// issueLocked stores a token and returns its value.
func (e *Emulator) issueLocked(t *token, lifetime time.Duration) string {
	now := e.now()
	t.IssuedAt = now
	t.Expiry = now.Add(lifetime)
	value := "ya29.emu-" + randomString(36)
	e.st.Tokens[value] = t
	e.dirty = true
	return value
}

// federatedToken is the identity of a Kubernetes service account in a
// workload pool, in every member form a binding may name it by.
func (e *Emulator) federatedToken(project, namespace, ksa string) *token {
	pool := project + ".svc.id.goog"
	ids := []string{fmt.Sprintf("serviceAccount:%s[%s/%s]", pool, namespace, ksa)}
	if p := e.st.Projects[project]; p != nil {
		base := fmt.Sprintf("//iam.googleapis.com/projects/%d/locations/global/workloadIdentityPools/%s", p.Number, pool)
		ids = append(ids,
			fmt.Sprintf("principal:%s/subject/ns/%s/sa/%s", base, namespace, ksa),
			fmt.Sprintf("principalSet:%s/namespace/%s", base, namespace),
			fmt.Sprintf("principalSet:%s/*", base),
		)
	}
	return &token{Principal: ids[0], Identities: ids, Federated: true}
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("gcpemu: crypto/rand: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// pruneTokensLocked forgets tokens that expired long ago.
func (e *Emulator) pruneTokensLocked(now time.Time) {
	for v, t := range e.st.Tokens {
		if now.Sub(t.Expiry) > time.Hour {
			delete(e.st.Tokens, v)
			e.dirty = true
		}
	}
}

// identitiesIn is the caller's identities as seen from a project: BigQuery
// dataset access names basic project roles as special groups.
func (e *Emulator) identitiesIn(tok *token, p *projectState, now time.Time) []string {
	ids := append([]string(nil), tok.Identities...)
	if p == nil {
		return ids
	}
	pol := p.Policy.effective(now, e.cfg.PropagationDelay)
	for role, group := range map[string]string{"roles/owner": "projectOwner:", "roles/editor": "projectEditor:", "roles/viewer": "projectViewer:"} {
		for _, b := range pol.Bindings {
			if b.Role == role && b.Condition == nil && membersMatch(b.Members, tok.Identities) {
				ids = append(ids, group+p.ID)
			}
		}
	}
	return ids
}

// allowedLocked says whether the caller holds perm in the project, either from
// the project's policy or from the resource's own policy. Both are read as
// they were PropagationDelay ago.
func (e *Emulator) allowedLocked(c *call, p *projectState, resource *policyHistory, perm string) bool {
	if c.tok == nil {
		return false
	}
	if p != nil && p.Policy.effective(c.now, e.cfg.PropagationDelay).grants(c.tok.Identities, perm, c.now) {
		return true
	}
	if resource != nil {
		ids := e.identitiesIn(c.tok, p, c.now)
		if resource.effective(c.now, e.cfg.PropagationDelay).grants(ids, perm, c.now) {
			return true
		}
	}
	return false
}

// serviceTitles are the display names of services (SERVICE_DISABLED errors,
// services.list).
var serviceTitles = map[string]string{
	"container.googleapis.com":            "Kubernetes Engine API",
	"iam.googleapis.com":                  "Identity and Access Management (IAM) API",
	"iamcredentials.googleapis.com":       "IAM Service Account Credentials API",
	"cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
	"bigquery.googleapis.com":             "BigQuery API",
	"serviceusage.googleapis.com":         "Service Usage API",
	"sts.googleapis.com":                  "Security Token Service API",
	"compute.googleapis.com":              "Compute Engine API",
	"bigquerystorage.googleapis.com":      "BigQuery Storage API",
	"logging.googleapis.com":              "Cloud Logging API",
	"monitoring.googleapis.com":           "Cloud Monitoring API",
	"storage.googleapis.com":              "Cloud Storage API",
}

// requireServiceLocked fails like Google when the API is disabled in the project.
// A service enabled moments ago answers the same until Config.ServiceEnableLag
// has passed, although services.get already says ENABLED.
func (e *Emulator) requireServiceLocked(p *projectState, service string) error {
	if p == nil {
		return nil
	}
	if p.Services[service] == "ENABLED" {
		at, ok := p.ServiceEnabledAt[service]
		if !ok || !e.now().Before(at.Add(e.cfg.ServiceEnableLag)) {
			return nil
		}
	}
	title := serviceTitles[service]
	if title == "" {
		title = service
	}
	return errDenied("%s has not been used in project %d before or it is disabled. Enable it by visiting "+
		"https://console.developers.google.com/apis/api/%s/overview?project=%d then retry. If you enabled this API "+
		"recently, wait a few minutes for the action to propagate to our systems and retry.",
		title, p.Number, service, p.Number).withInfo("SERVICE_DISABLED", "googleapis.com", map[string]string{
		"service": service, "consumer": fmt.Sprintf("projects/%d", p.Number),
		"activationUrl": fmt.Sprintf("https://console.developers.google.com/apis/api/%s/overview?project=%d", service, p.Number),
	})
}

// projectLocked finds a project by id or number.
func (e *Emulator) projectLocked(idOrNumber string) *projectState {
	if p := e.st.Projects[idOrNumber]; p != nil {
		return p
	}
	for _, p := range e.st.Projects {
		if fmt.Sprint(p.Number) == idOrNumber {
			return p
		}
	}
	return nil
}
