package gcpemu

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bigquery "google.golang.org/api/bigquery/v2"
	crm "google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/serviceusage/v1"
	"google.golang.org/api/sts/v1"
)

const (
	testNamespace = "carto"
	testKSA       = "carto-common-backend"
	testWIMember  = "serviceAccount:proj-a.svc.id.goog[carto/carto-common-backend]"
)

func stsRequestFor(subjectToken, audience string) *sts.GoogleIdentityStsV1ExchangeTokenRequest {
	return &sts.GoogleIdentityStsV1ExchangeTokenRequest{
		GrantType:          "urn:ietf:params:oauth:grant-type:token-exchange",
		Audience:           audience,
		Scope:              "https://www.googleapis.com/auth/cloud-platform",
		RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
		SubjectToken:       subjectToken,
		SubjectTokenType:   "urn:ietf:params:oauth:token-type:jwt",
	}
}

const testAudience = "identitynamespace:" + testPool + ":" + testIssuer

// exchange runs the STS exchange for a KSA JWT with these claims.
func (e *env) exchange(t *testing.T, claims map[string]any) (*sts.GoogleIdentityStsV1ExchangeTokenResponse, error) {
	t.Helper()
	key, _ := keys(t)
	return e.sts().V1.Token(stsRequestFor(signJWT(t, key, testKID, claims), testAudience)).Do()
}

func enableIAMCredentials(t *testing.T, e *env) {
	t.Helper()
	_, err := e.su(e.opTok).Services.Enable("projects/"+testProject+"/services/iamcredentials.googleapis.com", &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
}

func TestSTSExchange(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()

	// Without the workload pool the identity namespace does not exist.
	_, err := e.exchange(t, ksaClaimsFor(now, testNamespace, testKSA))
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Body, `"invalid_target"`)

	e.enableWorkloadPool()
	resp, err := e.exchange(t, ksaClaimsFor(now, testNamespace, testKSA))
	require.NoError(t, err)
	assert.NotEmpty(t, resp.AccessToken)
	assert.Equal(t, "Bearer", resp.TokenType)
	assert.Equal(t, "urn:ietf:params:oauth:token-type:access_token", resp.IssuedTokenType)
	assert.EqualValues(t, 3600, resp.ExpiresIn)

	cases := map[string]struct {
		claims   func(map[string]any)
		key      bool // sign with the wrong key
		audience string
		want     string
	}{
		"wrong token audience": {claims: func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} }, want: "does not match the expected audience proj-a.svc.id.goog"},
		"wrong issuer":         {claims: func(c map[string]any) { c["iss"] = "https://kubernetes.default.svc" }, want: "The issuer in ID Token https://kubernetes.default.svc does not match the expected ones"},
		"expired":              {claims: func(c map[string]any) { c["exp"] = now.Add(-time.Second).Unix() }, want: "is stale to sign-in"},
		"bad signature":        {key: true, want: "Invalid JWT Signature."},
		"malformed audience":   {audience: "proj-a.svc.id.goog", want: `Invalid value for \"audience\"`},
		"unknown cluster":      {audience: "identitynamespace:proj-a.svc.id.goog:https://container.googleapis.com/v1/projects/proj-a/locations/us-central1/clusters/other", want: "invalid_target"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			claims := ksaClaimsFor(now, testNamespace, testKSA)
			if tc.claims != nil {
				tc.claims(claims)
			}
			good, bad := keys(t)
			key := good
			if tc.key {
				key = bad
			}
			aud := testAudience
			if tc.audience != "" {
				aud = tc.audience
			}
			_, err := e.sts().V1.Token(stsRequestFor(signJWT(t, key, testKID, claims), aud)).Do()
			ge := apiErr(t, err, http.StatusBadRequest)
			assert.Contains(t, ge.Body, tc.want)
			assert.Contains(t, ge.Body, `"error_description"`)
		})
	}
}

func TestSTSAcceptsFormEncoding(t *testing.T) {
	e := newEnv(t)
	e.enableWorkloadPool()
	key, _ := keys(t)
	jwt := signJWT(t, key, testKID, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA))
	form := "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange" +
		"&audience=" + strings.NewReplacer(":", "%3A", "/", "%2F").Replace(testAudience) +
		"&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform" +
		"&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token" +
		"&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token=" + jwt
	resp, err := http.Post(Endpoints(e.srv.URL)[STS]+"v1/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestWorkloadIdentityChain walks the pod's token chain: STS token, then the
// GSA's token from iamcredentials, then a BigQuery call, including the
// propagation delay of the grant and the life of tokens after revocation.
func TestWorkloadIdentityChain(t *testing.T) {
	const delay = 2 * time.Minute
	e := newEnv(t, withConfig(func(c *Config) { c.PropagationDelay = delay }))
	e.enableWorkloadPool()
	gsa := e.createSA("gkewi-carto")
	gsaName := "projects/-/serviceAccounts/" + gsa.Email
	e.grantProjectRole(t, "roles/bigquery.jobUser", "serviceAccount:"+gsa.Email)

	resp, err := e.exchange(t, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA))
	require.NoError(t, err)
	fed := resp.AccessToken
	generate := func() (*iamcredentials.GenerateAccessTokenResponse, error) {
		return e.creds(fed).Projects.ServiceAccounts.GenerateAccessToken(gsaName, &iamcredentials.GenerateAccessTokenRequest{
			Scope: []string{"https://www.googleapis.com/auth/cloud-platform"},
		}).Do()
	}

	// The API is not enabled yet.
	_, err = generate()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "IAM Service Account Credentials API has not been used in project 314159265358 before or it is disabled.")
	assert.Contains(t, ge.Body, "SERVICE_DISABLED")
	enableIAMCredentials(t, e)

	// No binding: denied.
	_, err = generate()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).", ge.Message)

	// Bound, but not propagated yet.
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.workloadIdentityUser", testWIMember, true)
	_, err = generate()
	requireAPIError(t, err, http.StatusForbidden)
	e.clock.Advance(delay - time.Second)
	_, err = generate()
	requireAPIError(t, err, http.StatusForbidden)
	e.clock.Advance(time.Second)
	gsaTok, err := generate()
	require.NoError(t, err)
	expire, err := time.Parse(time.RFC3339, gsaTok.ExpireTime)
	require.NoError(t, err)
	assert.Equal(t, e.clock.Now().Add(time.Hour), expire)

	// The GSA token is the GSA: project roles apply (jobUser propagated long ago).
	query := func(tok string) error {
		_, err := e.bq(tok).Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT 1", DryRun: true, UseLegacySql: new(bool)}).Do()
		return err
	}
	require.NoError(t, query(gsaTok.AccessToken))
	// The federated token itself holds no BigQuery role.
	ge = apiErr(t, query(fed), http.StatusForbidden)
	assert.Equal(t, "Access Denied: Project proj-a: User does not have bigquery.jobs.create permission in project proj-a.", ge.Message)

	// Revoke: new tokens stop once the removal propagates; the old token lives on until it expires.
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.workloadIdentityUser", testWIMember, false)
	_, err = generate()
	require.NoError(t, err, "the removal has not propagated yet")
	e.clock.Advance(delay)
	_, err = generate()
	requireAPIError(t, err, http.StatusForbidden)
	require.NoError(t, query(gsaTok.AccessToken), "a token issued before the revocation keeps working")
	e.clock.Advance(time.Hour - delay)
	ge = apiErr(t, query(gsaTok.AccessToken), http.StatusUnauthorized)
	assert.Equal(t, "UNAUTHENTICATED", status(t, ge))
}

func TestGenerateAccessTokenViaTokenCreatorAndLifetime(t *testing.T) {
	e := newEnv(t)
	enableIAMCredentials(t, e)
	gsa := e.createSA("gkewi-carto")
	caller := "user:ops@example.com"
	tok := e.emu.MintAccessToken(caller)
	gen := func(lifetime string) (*iamcredentials.GenerateAccessTokenResponse, error) {
		return e.creds(tok).Projects.ServiceAccounts.GenerateAccessToken("projects/-/serviceAccounts/"+gsa.Email,
			&iamcredentials.GenerateAccessTokenRequest{Scope: []string{"https://www.googleapis.com/auth/cloud-platform"}, Lifetime: lifetime}).Do()
	}
	_, err := gen("")
	requireAPIError(t, err, http.StatusForbidden)

	e.setSAPolicyMember(t, gsa.Email, "roles/iam.serviceAccountTokenCreator", caller, true)
	short, err := gen("600s")
	require.NoError(t, err)
	expire, err := time.Parse(time.RFC3339, short.ExpireTime)
	require.NoError(t, err)
	assert.Equal(t, e.clock.Now().Add(10*time.Minute), expire)

	_, err = gen("7200s")
	requireAPIError(t, err, http.StatusBadRequest)

	// Deleting the account invalidates its tokens at once.
	_, err = e.iam(e.opTok).Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + gsa.Email).Do()
	require.NoError(t, err)
	_, err = e.bq(short.AccessToken).Datasets.List(testProject).Do()
	requireAPIError(t, err, http.StatusUnauthorized)
}

// TestDirectPrincipalGrant covers the form without a GSA: roles granted to the
// Kubernetes service account's principal:// identifier apply to its STS token.
func TestDirectPrincipalGrant(t *testing.T) {
	e := newEnv(t)
	principal := "principal://iam.googleapis.com/projects/314159265358/locations/global/workloadIdentityPools/proj-a.svc.id.goog/subject/ns/carto/sa/carto-common-backend"
	c := e.crm(e.opTok)
	p, err := c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	p.Bindings = append(p.Bindings, &crm.Binding{Role: "roles/bigquery.jobUser", Members: []string{principal}})
	_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: p}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Message, "Identity Pool does not exist (proj-a.svc.id.goog)")

	e.enableWorkloadPool()
	e.grantProjectRole(t, "roles/bigquery.jobUser", principal)
	resp, err := e.exchange(t, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA))
	require.NoError(t, err)
	_, err = e.bq(resp.AccessToken).Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT 1", DryRun: true, UseLegacySql: new(bool)}).Do()
	require.NoError(t, err)

	// Another KSA of the namespace is a different principal.
	other, err := e.exchange(t, ksaClaimsFor(e.clock.Now(), testNamespace, "other"))
	require.NoError(t, err)
	_, err = e.bq(other.AccessToken).Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT 1", DryRun: true, UseLegacySql: new(bool)}).Do()
	requireAPIError(t, err, http.StatusForbidden)
}
