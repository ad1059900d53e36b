package gcpemu

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Security Token Service v1: exchanging a Kubernetes service account's JWT for a
// federated access token, as the GKE metadata server does.

func routeSTS(method, rest string) route {
	rt := route{flavor: flavorOAuth, anonymous: true}
	if rest == "v1/token" && method == http.MethodPost {
		rt.id, rt.handler = "sts.token", (*Emulator).stsToken
	}
	return rt
}

const (
	grantTokenExchange  = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT        = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeIDToken    = "urn:ietf:params:oauth:token-type:id_token"
	tokenTypeAccess     = "urn:ietf:params:oauth:token-type:access_token"
	gkeIssuerPrefix     = "https://container.googleapis.com/v1/projects/"
	msgAudienceInvalid  = `Invalid value for "audience". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.`
	msgTargetInvalid    = `The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.`
	msgJWTSignatureFail = "Invalid JWT Signature."
)

func stsError(code int, oauthErr, format string, args ...any) *apiError {
	e := newAPIError(code, statusForHTTP(code), format, args...)
	e.OAuthError = oauthErr
	return e
}

// stsRequest accepts both the JSON body of the generated client and the form
// encoding the OAuth libraries use.
type stsRequest struct {
	GrantType          string `json:"grantType"`
	Audience           string `json:"audience"`
	Scope              string `json:"scope"`
	RequestedTokenType string `json:"requestedTokenType"`
	SubjectToken       string `json:"subjectToken"`
	SubjectTokenType   string `json:"subjectTokenType"`
}

func parseSTSRequest(c *call) (stsRequest, error) {
	var req stsRequest
	ct := c.r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(c.body))
		if err != nil {
			return req, stsError(400, "invalid_request", "Request body is not valid form data.")
		}
		req = stsRequest{
			GrantType: form.Get("grant_type"), Audience: form.Get("audience"), Scope: form.Get("scope"),
			RequestedTokenType: form.Get("requested_token_type"), SubjectToken: form.Get("subject_token"),
			SubjectTokenType: form.Get("subject_token_type"),
		}
		return req, nil
	}
	if len(c.body) > 0 {
		if err := json.Unmarshal(c.body, &req); err != nil {
			return req, stsError(400, "invalid_request", "Invalid JSON payload received. %v", err)
		}
	}
	return req, nil
}

var identityNamespaceAudience = regexp.MustCompile(`^identitynamespace:([^:]+\.svc\.id\.goog):(https://.+)$`)

func (e *Emulator) stsToken(c *call) (any, error) {
	req, err := parseSTSRequest(c)
	if err != nil {
		return nil, err
	}
	if req.GrantType != grantTokenExchange {
		return nil, stsError(400, "unsupported_grant_type", "The value of grant_type must be %s.", grantTokenExchange)
	}
	if req.SubjectTokenType != tokenTypeJWT && req.SubjectTokenType != tokenTypeIDToken {
		return nil, stsError(400, "invalid_request", "Invalid value for \"subject_token_type\". Expected %s or %s.", tokenTypeJWT, tokenTypeIDToken)
	}
	if req.RequestedTokenType != tokenTypeAccess {
		return nil, stsError(400, "invalid_request", "Invalid value for \"requested_token_type\". Expected %s.", tokenTypeAccess)
	}
	if req.SubjectToken == "" {
		return nil, stsError(400, "invalid_request", "The subject_token is required.")
	}
	m := identityNamespaceAudience.FindStringSubmatch(req.Audience)
	if m == nil {
		return nil, stsError(400, "invalid_request", "%s", msgAudienceInvalid)
	}
	pool, issuer := m[1], m[2]
	project := strings.TrimSuffix(pool, ".svc.id.goog")
	p := e.st.Projects[project]
	cl, rt := e.clusterForIssuer(p, issuer)
	if p == nil || cl == nil || cl.WorkloadPool != pool {
		return nil, stsError(400, "invalid_target", "%s", msgTargetInvalid)
	}

	if rt != nil && rt.cfg.TokenIssuer != "" {
		issuer = rt.cfg.TokenIssuer
	}
	claims, err := e.verifyKSAToken(c, rt, req.SubjectToken, issuer, pool)
	if err != nil {
		return nil, err
	}
	tok := e.federatedToken(project, claims.namespace, claims.name)
	value := e.issueLocked(tok, e.cfg.TokenLifetime)
	c.issued = tok
	return map[string]any{
		"access_token":      value,
		"issued_token_type": tokenTypeAccess,
		"token_type":        "Bearer",
		"expires_in":        int64(e.cfg.TokenLifetime / time.Second),
	}, nil
}

// clusterForIssuer finds the cluster whose GKE issuer URL this is.
func (e *Emulator) clusterForIssuer(p *projectState, issuer string) (*cluster, *clusterRuntime) {
	if p == nil {
		return nil, nil
	}
	for _, cl := range p.Clusters {
		if gkeIssuer(p.ID, cl.Location, cl.Name) == issuer {
			return cl, e.clusters[clusterKey(p.ID, cl.Location, cl.Name)]
		}
	}
	return nil, nil
}

func gkeIssuer(project, location, name string) string {
	return gkeIssuerPrefix + project + "/locations/" + location + "/clusters/" + name
}

type ksaClaims struct {
	namespace, name string
}

// verifyKSAToken checks a Kubernetes service account token the way STS checks
// an OIDC token from the cluster's issuer: RS256 signature by a key of the
// cluster's JWKS, issuer, audience (the workload pool), expiry.
func (e *Emulator) verifyKSAToken(c *call, rt *clusterRuntime, raw, issuer, pool string) (ksaClaims, error) {
	invalid := func(format string, args ...any) (ksaClaims, error) {
		return ksaClaims{}, stsError(400, "invalid_grant", format, args...)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return invalid("Unable to parse the ID Token.")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return invalid("Unable to parse the ID Token.")
	}
	var claims struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp int64           `json:"exp"`
		Iat int64           `json:"iat"`
		Nbf int64           `json:"nbf"`
		K8s *struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return invalid("Unable to parse the ID Token.")
	}
	if header.Alg != "RS256" {
		return invalid("The ID Token is signed with an unsupported algorithm %q; only RS256 is accepted.", header.Alg)
	}
	if rt == nil {
		return invalid("%s", msgJWTSignatureFail)
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), 10*time.Second)
	defer cancel()
	key, discovered, err := rt.key(ctx, header.Kid)
	if err != nil {
		e.logf("gcpemu: sts: %v", err)
		return ksaClaims{}, stsError(503, "temporarily_unavailable", "Unable to fetch the signing keys of issuer %s.", issuer)
	}
	if discovered != "" && discovered != issuer {
		return invalid("The issuer of the cluster's keys (%s) does not match the expected issuer %s.", discovered, issuer)
	}
	if key == nil {
		return invalid("%s", msgJWTSignatureFail)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return invalid("%s", msgJWTSignatureFail)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		return invalid("%s", msgJWTSignatureFail)
	}
	if claims.Iss != issuer {
		return invalid("The issuer in ID Token %s does not match the expected ones: %s.", claims.Iss, issuer)
	}
	var auds []string
	if len(claims.Aud) > 0 && json.Unmarshal(claims.Aud, &auds) != nil {
		var one string
		if json.Unmarshal(claims.Aud, &one) == nil {
			auds = []string{one}
		}
	}
	audOK := false
	for _, a := range auds {
		if a == pool {
			audOK = true
		}
	}
	if !audOK {
		return invalid("The audience in ID Token [%s] does not match the expected audience %s.", strings.Join(auds, ", "), pool)
	}
	now := c.now.Unix()
	if claims.Exp == 0 || now >= claims.Exp {
		return invalid("ID Token issued at %d is stale to sign-in.", claims.Iat)
	}
	if claims.Nbf != 0 && now < claims.Nbf {
		return invalid("ID Token is not valid yet (nbf %d).", claims.Nbf)
	}
	var ns, name string
	if claims.K8s != nil {
		ns, name = claims.K8s.Namespace, claims.K8s.ServiceAccount.Name
	}
	if ns == "" || name == "" {
		if rest, ok := strings.CutPrefix(claims.Sub, "system:serviceaccount:"); ok {
			ns, name, _ = strings.Cut(rest, ":")
		}
	}
	if ns == "" || name == "" {
		return invalid("The ID Token's subject %q is not a Kubernetes service account.", claims.Sub)
	}
	return ksaClaims{namespace: ns, name: name}, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return fmt.Errorf("base64: %w", err)
	}
	return json.Unmarshal(b, v)
}
