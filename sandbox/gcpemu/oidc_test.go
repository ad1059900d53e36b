package gcpemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/idtoken"
)

const idAudience = "gkewi-approvals"

// googleClaims are the claims of Google's ID tokens.
type googleClaims struct {
	Iss           string `json:"iss"`
	Azp           string `json:"azp"`
	Aud           string `json:"aud"`
	Sub           string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified *bool  `json:"email_verified"`
	Iat           int64  `json:"iat"`
	Exp           int64  `json:"exp"`
	Google        *struct {
		ComputeEngine map[string]any `json:"compute_engine"`
	} `json:"google"`
}

// verifier is what a relying party builds: discovery at the emulator's base
// URL, the emulator's clock.
func (e *env) verifier(audience string) *oidc.IDTokenVerifier {
	e.t.Helper()
	p, err := oidc.NewProvider(e.ctx, e.srv.URL)
	require.NoError(e.t, err)
	return p.Verifier(&oidc.Config{ClientID: audience, Now: e.clock.Now})
}

func (e *env) verify(audience, raw string) (googleClaims, error) {
	var c googleClaims
	tok, err := e.verifier(audience).Verify(e.ctx, raw)
	if err != nil {
		return c, err
	}
	require.NoError(e.t, tok.Claims(&c))
	return c, nil
}

func TestIDTokenVerifiesWithGoOIDC(t *testing.T) {
	e := newEnv(t)
	raw, err := e.emu.MintIDToken(e.srv.URL, IDTokenClaims{Email: "alice@example.com", Audience: idAudience, EmailVerified: true})
	require.NoError(t, err)

	c, err := e.verify(idAudience, raw)
	require.NoError(t, err)
	assert.Equal(t, e.srv.URL, c.Iss)
	assert.Equal(t, idAudience, c.Aud)
	assert.Equal(t, "alice@example.com", c.Email)
	require.NotNil(t, c.EmailVerified)
	assert.True(t, *c.EmailVerified)
	assert.Regexp(t, `^1[0-9]{20}$`, c.Sub)
	assert.Equal(t, e.clock.Now().Unix(), c.Iat)
	assert.Equal(t, e.clock.Now().Add(time.Hour).Unix(), c.Exp)

	again, err := e.emu.MintIDToken(e.srv.URL, IDTokenClaims{Email: "alice@example.com", Audience: "other"})
	require.NoError(t, err)
	c2, err := e.verify("other", again)
	require.NoError(t, err)
	assert.Equal(t, c.Sub, c2.Sub, "sub is stable for an email")
	assert.False(t, *c2.EmailVerified)
	bob, err := e.emu.MintIDToken(e.srv.URL, IDTokenClaims{Email: "bob@example.com", Audience: idAudience})
	require.NoError(t, err)
	c3, err := e.verify(idAudience, bob)
	require.NoError(t, err)
	assert.NotEqual(t, c.Sub, c3.Sub)

	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	require.NoError(t, err)
	var h map[string]string
	require.NoError(t, json.Unmarshal(b, &h))
	assert.Equal(t, "RS256", h["alg"])
	assert.Regexp(t, `^[0-9a-f]{40}$`, h["kid"])
}

func TestIDTokenRefused(t *testing.T) {
	e := newEnv(t)
	mint := func(c IDTokenClaims) string {
		raw, err := e.emu.MintIDToken(e.srv.URL, c)
		require.NoError(t, err)
		return raw
	}

	_, err := e.verify("someone-else", mint(IDTokenClaims{Email: "alice@example.com", Audience: idAudience}))
	require.ErrorContains(t, err, "expected audience")

	expired := mint(IDTokenClaims{Email: "alice@example.com", Audience: idAudience,
		IssuedAt: e.clock.Now().Add(-2 * time.Hour), Lifetime: time.Hour})
	_, err = e.verify(idAudience, expired)
	var te *oidc.TokenExpiredError
	require.ErrorAs(t, err, &te)

	short := mint(IDTokenClaims{Email: "alice@example.com", Audience: idAudience, Lifetime: time.Minute})
	_, err = e.verify(idAudience, short)
	require.NoError(t, err)
	e.clock.Advance(2 * time.Minute)
	_, err = e.verify(idAudience, short)
	require.ErrorAs(t, err, &te, "a token expires after its lifetime")

	// The same claims and kid signed by a key the emulator does not publish.
	good := mint(IDTokenClaims{Email: "alice@example.com", Audience: idAudience})
	parts := strings.Split(good, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(payload, &claims))
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	require.NoError(t, err)
	var h map[string]string
	require.NoError(t, json.Unmarshal(hdr, &h))
	_, other := keys(t)
	forged := signJWT(t, other, h["kid"], claims)
	_, err = e.verify(idAudience, forged)
	require.ErrorContains(t, err, "failed to verify signature")

	// Another emulator's tokens do not verify here either.
	e2 := newEnv(t)
	foreign, err := e2.emu.MintIDToken(e.srv.URL, IDTokenClaims{Email: "alice@example.com", Audience: idAudience})
	require.NoError(t, err)
	_, err = e.verify(idAudience, foreign)
	require.Error(t, err)
}

func TestOIDCDiscoveryAndIssuerConfig(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.IDTokenIssuer = "https://accounts.google.com" }))
	resp, err := http.Get(e.srv.URL + "/.well-known/openid-configuration")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	assert.Equal(t, "https://accounts.google.com", doc["issuer"])
	assert.Equal(t, e.srv.URL+"/oauth2/v3/certs", doc["jwks_uri"])
	assert.Equal(t, []any{"RS256"}, doc["id_token_signing_alg_values_supported"])
	assert.Equal(t, []any{"public"}, doc["subject_types_supported"])

	certs, err := http.Get(e.srv.URL + "/oauth2/v3/certs")
	require.NoError(t, err)
	defer certs.Body.Close()
	var jwks struct {
		Keys []map[string]string `json:"keys"`
	}
	require.NoError(t, json.NewDecoder(certs.Body).Decode(&jwks))
	require.Len(t, jwks.Keys, 1)
	assert.Equal(t, "RS256", jwks.Keys[0]["alg"])
	assert.Equal(t, "sig", jwks.Keys[0]["use"])
	assert.Equal(t, "AQAB", jwks.Keys[0]["e"])

	// A verifier that trusts the configured issuer while fetching keys from
	// the emulator, as a test does to stand in for accounts.google.com.
	ctx := oidc.InsecureIssuerURLContext(e.ctx, "https://accounts.google.com")
	p, err := oidc.NewProvider(ctx, e.srv.URL)
	require.NoError(t, err)

	// The admin API mints what `gcloud auth print-identity-token` would.
	body := `{"email":"alice@example.com","audience":"` + idAudience + `"}`
	r, err := http.Post(e.srv.URL+"/_emulator/id-tokens", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer r.Body.Close()
	require.Equal(t, http.StatusOK, r.StatusCode)
	var minted struct {
		IDToken string `json:"idToken"`
	}
	require.NoError(t, json.NewDecoder(r.Body).Decode(&minted))
	tok, err := p.Verifier(&oidc.Config{ClientID: idAudience, Now: e.clock.Now}).Verify(ctx, minted.IDToken)
	require.NoError(t, err)
	assert.Equal(t, "https://accounts.google.com", tok.Issuer)
	var c googleClaims
	require.NoError(t, tok.Claims(&c))
	assert.Equal(t, "alice@example.com", c.Email)
	require.NotNil(t, c.EmailVerified)
	assert.True(t, *c.EmailVerified, "emailVerified defaults to true")

	old := `{"email":"bob@example.com","audience":"a","emailVerified":false,"lifetime":"10m","issuedAt":"` +
		e.clock.Now().Add(-time.Hour).Format(time.RFC3339) + `"}`
	r2, err := http.Post(e.srv.URL+"/_emulator/id-tokens", "application/json", strings.NewReader(old))
	require.NoError(t, err)
	defer r2.Body.Close()
	require.NoError(t, json.NewDecoder(r2.Body).Decode(&minted))
	_, err = p.Verifier(&oidc.Config{ClientID: "a", Now: e.clock.Now}).Verify(ctx, minted.IDToken)
	var te *oidc.TokenExpiredError
	require.ErrorAs(t, err, &te)

	r3, err := http.Post(e.srv.URL+"/_emulator/id-tokens", "application/json", strings.NewReader(`{"email":"x@example.com"}`))
	require.NoError(t, err)
	r3.Body.Close()
	assert.Equal(t, http.StatusBadRequest, r3.StatusCode, "an audience is required")
}

func TestMetadataIdentityToken(t *testing.T) {
	e := newEnv(t)
	get := func(query string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/computeMetadata/v1/instance/service-accounts/default/identity"+query, nil)
		require.NoError(t, err)
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("")
	assert.Equal(t, http.StatusBadRequest, code, "the audience is required")

	code, full := get("?audience=" + idAudience + "&format=full")
	require.Equal(t, http.StatusOK, code)
	c, err := e.verify(idAudience, full)
	require.NoError(t, err)
	assert.Equal(t, testOperator, c.Email)
	require.NotNil(t, c.EmailVerified)
	assert.True(t, *c.EmailVerified)
	assert.Equal(t, c.Sub, c.Azp, "a service account's token is authorized for the account")
	require.NotNil(t, c.Google)
	assert.Equal(t, testProject, c.Google.ComputeEngine["project_id"])

	code, std := get("?audience=" + idAudience)
	require.Equal(t, http.StatusOK, code)
	cs, err := e.verify(idAudience, std)
	require.NoError(t, err)
	assert.Empty(t, cs.Email, "the standard format has no email")
	assert.Nil(t, cs.EmailVerified)
	assert.Equal(t, c.Sub, cs.Sub)
	assert.Equal(t, 3, e.emu.RequestCounts()["metadata.identity"])

	// Google's client library finds the endpoint through GCE_METADATA_HOST.
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(e.srv.URL, "http://"))
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	ts, err := idtoken.NewTokenSource(e.ctx, idAudience)
	require.NoError(t, err)
	lib, err := ts.Token()
	require.NoError(t, err)
	cl, err := e.verify(idAudience, lib.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, testOperator, cl.Email)
}

func TestGenerateIDTokenNeedsPermission(t *testing.T) {
	e := newEnv(t)
	enableIAMCredentials(t, e)
	gsa := e.createSA("gkewi-approver")
	caller := "user:ops@example.com"
	tok := e.emu.MintAccessToken(caller)
	gen := func(req *iamcredentials.GenerateIdTokenRequest) (*iamcredentials.GenerateIdTokenResponse, error) {
		return e.creds(tok).Projects.ServiceAccounts.GenerateIdToken("projects/-/serviceAccounts/"+gsa.Email, req).Do()
	}
	_, err := gen(&iamcredentials.GenerateIdTokenRequest{Audience: idAudience, IncludeEmail: true})
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "iam.serviceAccounts.getOpenIdToken")

	e.setSAPolicyMember(t, gsa.Email, "roles/iam.serviceAccountOpenIdTokenCreator", caller, true)
	_, err = gen(&iamcredentials.GenerateIdTokenRequest{})
	requireAPIError(t, err, http.StatusBadRequest)

	resp, err := gen(&iamcredentials.GenerateIdTokenRequest{Audience: idAudience, IncludeEmail: true})
	require.NoError(t, err)
	c, err := e.verify(idAudience, resp.Token)
	require.NoError(t, err)
	assert.Equal(t, gsa.Email, c.Email)
	assert.Equal(t, gsa.UniqueId, c.Sub, "sub is the account's unique id")

	noEmail, err := gen(&iamcredentials.GenerateIdTokenRequest{Audience: idAudience})
	require.NoError(t, err)
	c2, err := e.verify(idAudience, noEmail.Token)
	require.NoError(t, err)
	assert.Empty(t, c2.Email)

	// The Token Creator role carries the permission too.
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.serviceAccountOpenIdTokenCreator", caller, false)
	_, err = gen(&iamcredentials.GenerateIdTokenRequest{Audience: idAudience})
	requireAPIError(t, err, http.StatusForbidden)
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.serviceAccountTokenCreator", caller, true)
	_, err = gen(&iamcredentials.GenerateIdTokenRequest{Audience: idAudience})
	require.NoError(t, err)
}

// The discovery and key paths are the emulator's, not an API's.
func TestOIDCPathsDoNotCollide(t *testing.T) {
	for _, p := range []string{oidcDiscoveryPath, oidcCertsPath} {
		svc, rt := routeRequest(http.MethodGet, "127.0.0.1:8085", p)
		assert.Empty(t, svc, p)
		assert.Nil(t, rt.handler, p)
	}
	e := newEnv(t)
	resp, err := http.Post(e.srv.URL+oidcCertsPath, "application/json", bytes.NewReader(nil))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}
