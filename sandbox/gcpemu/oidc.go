package gcpemu

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"
)

// The emulator as an OpenID Connect issuer of Google-style ID tokens, the
// tokens https://accounts.google.com signs and publishes keys for at
// https://www.googleapis.com/oauth2/v3/certs: RS256 JWTs with iss, azp, aud,
// sub (a numeric account id), email, email_verified, iat and exp. They come
// from the metadata server's identity endpoint, IAM Credentials'
// generateIdToken, the admin API (a human's `gcloud auth print-identity-token`)
// and MintIDToken. The discovery document and the key set are served at the
// emulator's root, so go-oidc's NewProvider(ctx, baseURL) finds them.

const (
	oidcDiscoveryPath = "/.well-known/openid-configuration"
	oidcCertsPath     = "/oauth2/v3/certs"
	// defaultIDTokenLifetime is the lifetime of Google's ID tokens.
	defaultIDTokenLifetime = time.Hour
)

// oidcKey signs ID tokens. It lives in memory only: tokens signed before a
// restart do not verify after it.
type oidcKey struct {
	key *rsa.PrivateKey
	kid string
}

func newOIDCKey() (*oidcKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("gcpemu: ID token signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("gcpemu: ID token signing key: %w", err)
	}
	// Google's key ids are 40 hex digits.
	sum := sha1.Sum(der)
	return &oidcKey{key: key, kid: hex.EncodeToString(sum[:])}, nil
}

// jwks is the key set document, as www.googleapis.com/oauth2/v3/certs has it.
func (k *oidcKey) jwks() map[string]any {
	pub := k.key.PublicKey
	return map[string]any{"keys": []map[string]string{{
		"kty": "RSA",
		"alg": "RS256",
		"use": "sig",
		"kid": k.kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
}

// sign makes an RS256 JWT of claims.
func (k *oidcKey) sign(claims any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": k.kid, "typ": "JWT"})
	if err != nil {
		return "", fmt.Errorf("gcpemu: ID token header: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("gcpemu: ID token claims: %w", err)
	}
	signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("gcpemu: signing ID token: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// IDTokenClaims describes an ID token MintIDToken signs.
type IDTokenClaims struct {
	// Email is the account the token is for; its sub is the account's numeric id.
	Email string
	// Audience is the aud claim.
	Audience string
	// EmailVerified is the email_verified claim.
	EmailVerified bool
	// Lifetime is exp - iat; default 1h, as Google's.
	Lifetime time.Duration
	// IssuedAt is the iat claim; default the emulator's clock (Config.Now).
	IssuedAt time.Time
}

// idTokenPayload is the JSON of an ID token, in the order Google writes it.
type idTokenPayload struct {
	Iss           string         `json:"iss"`
	Azp           string         `json:"azp"`
	Aud           string         `json:"aud"`
	Sub           string         `json:"sub"`
	Email         string         `json:"email,omitempty"`
	EmailVerified *bool          `json:"email_verified,omitempty"`
	Google        map[string]any `json:"google,omitempty"`
	Iat           int64          `json:"iat"`
	Exp           int64          `json:"exp"`
}

// MintIDToken signs an ID token for c.Email with the emulator's key, issued by
// issuer (the base URL the emulator is served at, or Config.IDTokenIssuer).
// It stands in for `gcloud auth print-identity-token` of a person.
func (e *Emulator) MintIDToken(issuer string, c IDTokenClaims) (string, error) {
	if issuer == "" || c.Email == "" || c.Audience == "" {
		return "", errors.New("gcpemu: an ID token needs an issuer, an email and an audience")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = e.now()
	}
	verified := c.EmailVerified
	return e.signIDTokenLocked(issuer, c, &verified, nil)
}

// signIDTokenLocked signs an ID token; emailVerified nil leaves out both email
// claims, as the standard format of service account tokens does.
func (e *Emulator) signIDTokenLocked(issuer string, c IDTokenClaims, emailVerified *bool, google map[string]any) (string, error) {
	if c.Lifetime <= 0 {
		c.Lifetime = defaultIDTokenLifetime
	}
	sub := e.accountIDLocked(c.Email)
	p := idTokenPayload{
		Iss: issuer, Aud: c.Audience, Sub: sub,
		Iat: c.IssuedAt.Unix(), Exp: c.IssuedAt.Add(c.Lifetime).Unix(),
		Google: google,
	}
	// A service account's tokens are authorized for the account itself; a
	// person's for the OAuth client that asked, here the audience.
	p.Azp = c.Audience
	if strings.HasSuffix(c.Email, ".gserviceaccount.com") {
		p.Azp = sub
	}
	if emailVerified != nil {
		p.Email, p.EmailVerified = c.Email, emailVerified
	}
	return e.oidc.sign(p)
}

// accountIDLocked is the numeric id Google gives the account of email: a
// service account's unique id, or for anyone else a stable 21-digit number
// derived from the email, shaped like a Google account id.
func (e *Emulator) accountIDLocked(email string) string {
	if _, _, ok := splitServiceAccountEmail(email); ok {
		if sa := e.findServiceAccountLocked(email); sa != nil {
			return sa.Resource.UniqueID
		}
	}
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	const tenDigits = 10_000_000_000
	return fmt.Sprintf("1%010d%010d", binary.BigEndian.Uint64(sum[:8])%tenDigits, binary.BigEndian.Uint64(sum[8:16])%tenDigits)
}

// idTokenIssuer is Config.IDTokenIssuer, or else the base URL r came in on.
func (e *Emulator) idTokenIssuer(r *http.Request) string {
	if e.cfg.IDTokenIssuer != "" {
		return e.cfg.IDTokenIssuer
	}
	return requestBaseURL(r)
}

func requestBaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// serveOIDC answers the discovery document and the key set.
func (e *Emulator) serveOIDC(w http.ResponseWriter, r *http.Request) {
	id := "oauth2.certs"
	if r.URL.Path == oidcDiscoveryPath {
		id = "oauth2.openidConfiguration"
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		writeError(w, flavorGoogle, newAPIError(http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "method %s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	if ferr, _ := e.injectFault(r, id); ferr != nil {
		writeError(w, flavorGoogle, ferr)
		return
	}
	e.mu.Lock()
	e.log.add(e.now(), id, "", http.StatusOK)
	e.mu.Unlock()
	if id == "oauth2.certs" {
		writeJSON(w, http.StatusOK, e.oidc.jwks())
		return
	}
	// The keys are always fetched from the emulator, whatever the issuer says.
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                e.idTokenIssuer(r),
		"jwks_uri":                              requestBaseURL(r) + oidcCertsPath,
		"response_types_supported":              []string{"code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token", "none"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"claims_supported":                      []string{"aud", "email", "email_verified", "exp", "iat", "iss", "sub"},
	})
}

// serveAdminIDToken answers POST /_emulator/id-tokens.
func (e *Emulator) serveAdminIDToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email         string     `json:"email"`
		Audience      string     `json:"audience"`
		EmailVerified *bool      `json:"emailVerified"`
		Lifetime      Duration   `json:"lifetime"`
		IssuedAt      *time.Time `json:"issuedAt"`
	}
	body, err := readBody(r)
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.Email == "" || req.Audience == "" {
		writeError(w, flavorGoogle, errInvalid("id-tokens: want {\"email\": \"ops@example.com\", \"audience\": \"gkewi\", \"emailVerified\": true, \"lifetime\": \"1h\", \"issuedAt\": RFC 3339}"))
		return
	}
	c := IDTokenClaims{Email: req.Email, Audience: req.Audience, EmailVerified: true, Lifetime: time.Duration(req.Lifetime)}
	if req.EmailVerified != nil {
		c.EmailVerified = *req.EmailVerified
	}
	if req.IssuedAt != nil {
		c.IssuedAt = *req.IssuedAt
	}
	tok, err := e.MintIDToken(e.idTokenIssuer(r), c)
	if err != nil {
		writeError(w, flavorGoogle, errInternal(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"idToken": tok})
}

// metadataIdentityLocked answers instance/service-accounts/default/identity:
// an ID token of the operator for the audience asked; format=full adds the
// email claims and the instance's, as on Compute Engine.
func (e *Emulator) metadataIdentityLocked(r *http.Request) (string, string, int) {
	q := r.URL.Query()
	audience := q.Get("audience")
	if audience == "" {
		return "non-empty audience parameter required", "text/plain; charset=utf-8", http.StatusBadRequest
	}
	c := IDTokenClaims{Email: e.cfg.Operator, Audience: audience, IssuedAt: e.now()}
	var verified *bool
	var google map[string]any
	switch q.Get("format") {
	case "", "standard":
	case "full":
		t := true
		verified = &t
		if p := e.operatorProjectLocked(); p != nil {
			google = map[string]any{"compute_engine": map[string]any{
				"instance_creation_timestamp": c.IssuedAt.Add(-24 * time.Hour).Unix(),
				"instance_id":                 "4520031799277581759",
				"instance_name":               "gke-emulated-node",
				"project_id":                  p.ID,
				"project_number":              p.Number,
				"zone":                        "us-central1-a",
			}}
		}
	default:
		return "invalid format parameter: must be 'standard' or 'full'", "text/plain; charset=utf-8", http.StatusBadRequest
	}
	tok, err := e.signIDTokenLocked(e.idTokenIssuer(r), c, verified, google)
	if err != nil {
		return err.Error(), "text/plain; charset=utf-8", http.StatusInternalServerError
	}
	return tok, "application/text", http.StatusOK
}

// credsGenerateIDToken is IAM Credentials' generateIdToken: an ID token of a
// service account for callers holding iam.serviceAccounts.getOpenIdToken on it.
func (e *Emulator) credsGenerateIDToken(c *call) (any, error) {
	const perm = "iam.serviceAccounts.getOpenIdToken"
	sa, err := e.credsAccount(c, perm)
	if err != nil {
		return nil, err
	}
	var req struct {
		Audience     string   `json:"audience"`
		IncludeEmail bool     `json:"includeEmail"`
		Delegates    []string `json:"delegates"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if req.Audience == "" {
		return nil, errInvalid("Audience required.")
	}
	if len(req.Delegates) > 0 {
		return nil, errInvalid("Delegation chains are not supported by this emulator.")
	}
	var verified *bool
	if req.IncludeEmail {
		t := true
		verified = &t
	}
	tok, err := e.signIDTokenLocked(e.idTokenIssuer(c.r),
		IDTokenClaims{Email: sa.Resource.Email, Audience: req.Audience, IssuedAt: c.now}, verified, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"token": tok}, nil
}
