package gcpemu

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	bigquery "google.golang.org/api/bigquery/v2"
	crm "google.golang.org/api/cloudresourcemanager/v3"
	container "google.golang.org/api/container/v1"
	"google.golang.org/api/googleapi"
	iam "google.golang.org/api/iam/v1"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/serviceusage/v1"
	"google.golang.org/api/sts/v1"
)

// TestRouting pins which service and method answers each path: Google's own
// paths at the root (including the places where two services' paths look
// alike), the per-service prefixes the Go clients use, and a Host header
// naming a Google API.
func TestRouting(t *testing.T) {
	const sa = "projects/-/serviceAccounts/app@proj-a.iam.gserviceaccount.com"
	cases := []struct {
		method, host, path string
		want               string // method id; "" is a 404
	}{
		// STS and IAM Credentials.
		{"POST", "", "/v1/token", "sts.token"},
		{"POST", "", "/v1/" + sa + ":generateAccessToken", "iamcredentials.projects.serviceAccounts.generateAccessToken"},
		// IAM: the same collection, any other verb.
		{"POST", "", "/v1/" + sa + ":getIamPolicy", "iam.projects.serviceAccounts.getIamPolicy"},
		{"POST", "", "/v1/" + sa + ":setIamPolicy", "iam.projects.serviceAccounts.setIamPolicy"},
		{"GET", "", "/v1/" + sa, "iam.projects.serviceAccounts.get"},
		{"DELETE", "", "/v1/" + sa, "iam.projects.serviceAccounts.delete"},
		{"GET", "", "/v1/projects/proj-a/serviceAccounts", "iam.projects.serviceAccounts.list"},
		{"POST", "", "/v1/projects/proj-a/serviceAccounts", "iam.projects.serviceAccounts.create"},
		{"GET", "", "/v1/roles/iam.workloadIdentityUser", "iam.roles.get"},
		// IAM's workload identity pools share projects/P/locations/L with GKE.
		{"GET", "", "/v1/projects/proj-a/locations/global/workloadIdentityPools", ""},
		// Service Usage, and its operations at /v1/operations.
		{"GET", "", "/v1/projects/proj-a/services", "serviceusage.services.list"},
		{"POST", "", "/v1/projects/proj-a/services:batchEnable", "serviceusage.services.batchEnable"},
		{"GET", "", "/v1/projects/proj-a/services/iam.googleapis.com", "serviceusage.services.get"},
		{"POST", "", "/v1/projects/proj-a/services/iam.googleapis.com:enable", "serviceusage.services.enable"},
		{"POST", "", "/v1/projects/proj-a/services/iam.googleapis.com:disable", "serviceusage.services.disable"},
		{"GET", "", "/v1/operations/acf.p2-1-2", "serviceusage.operations.get"},
		{"GET", "", "/v1beta1/operations/acf.p2-1-2", "serviceusage.operations.get"},
		{"GET", "", "/v1beta1/projects/proj-a/services", ""},
		// Resource Manager v1 has operations at the same path: its Host tells.
		{"GET", "cloudresourcemanager.googleapis.com", "/v1/operations/acf.p2-1-2", ""},
		{"GET", "serviceusage.googleapis.com", "/v1/operations/acf.p2-1-2", "serviceusage.operations.get"},
		// GKE, regional and zonal, location "-" included.
		{"GET", "", "/v1/projects/proj-a/locations/-/clusters", "container.projects.locations.clusters.list"},
		{"GET", "", "/v1/projects/proj-a/locations/-/operations", "container.projects.locations.operations.list"},
		{"GET", "", "/v1/projects/proj-a/locations/us-central1/operations/operation-1", "container.projects.locations.operations.get"},
		{"PUT", "", "/v1/projects/proj-a/locations/us-central1/clusters/c1", "container.projects.locations.clusters.update"},
		{"PUT", "", "/v1/projects/proj-a/locations/us-central1/clusters/c1/nodePools/p", "container.projects.locations.clusters.nodePools.update"},
		{"GET", "", "/v1/projects/proj-a/zones/us-central1-a/clusters/c1", "container.projects.zones.clusters.get"},
		{"PUT", "", "/v1/projects/proj-a/zones/us-central1-a/clusters/c1", "container.projects.zones.clusters.update"},
		{"POST", "", "/v1/projects/proj-a/zones/us-central1-a/clusters/c1/nodePools/p/update", "container.projects.zones.clusters.nodePools.update"},
		{"PUT", "", "/v1/projects/proj-a/zones/us-central1-a/clusters/c1/nodePools/p", ""},
		{"GET", "", "/v1/projects/proj-a/zones/-/operations/operation-1", "container.projects.zones.operations.get"},
		// Resource Manager: v1 projects and their policies, v3.
		{"GET", "", "/v1/projects/proj-a", "cloudresourcemanager.projects.get"},
		{"POST", "", "/v1/projects/proj-a:getIamPolicy", "cloudresourcemanager.projects.getIamPolicy"},
		{"GET", "", "/v3/projects/proj-a", "cloudresourcemanager.projects.get"},
		{"POST", "", "/v3/projects/proj-a:setIamPolicy", "cloudresourcemanager.projects.setIamPolicy"},
		// BigQuery, at the root and under its prefix, and its discovery document.
		{"GET", "", "/bigquery/v2/projects/proj-a/datasets", "bigquery.datasets.list"},
		{"GET", "", "/bigquery/bigquery/v2/projects/proj-a/datasets", "bigquery.datasets.list"},
		{"POST", "", "/bigquery/v2/projects/proj-a/jobs", "bigquery.jobs.insert"},
		{"GET", "", "/bigquery/v2/projects/proj-a/queries/job1", "bigquery.jobs.getQueryResults"},
		{"POST", "", "/bigquery/v2/projects/proj-a/queries", "bigquery.jobs.query"},
		{"GET", "", "/$discovery/rest", "bigquery.discovery"},
		{"GET", "", "/discovery/v1/apis/bigquery/v2/rest", "bigquery.discovery"},
		{"GET", "", "/bigquery/$discovery/rest", "bigquery.discovery"},
		// The per-service prefixes.
		{"POST", "", "/sts/v1/token", "sts.token"},
		{"POST", "", "/iamcredentials/v1/" + sa + ":generateAccessToken", "iamcredentials.projects.serviceAccounts.generateAccessToken"},
		{"POST", "", "/iam/v1/" + sa + ":getIamPolicy", "iam.projects.serviceAccounts.getIamPolicy"},
		{"GET", "", "/serviceusage/v1/operations/x", "serviceusage.operations.get"},
		{"GET", "", "/container/v1/projects/proj-a/locations/-/clusters", "container.projects.locations.clusters.list"},
		{"POST", "", "/cloudresourcemanager/v3/projects/proj-a:getIamPolicy", "cloudresourcemanager.projects.getIamPolicy"},
		// A Host header naming an API wins over the path's shape.
		{"POST", "iam.googleapis.com:443", "/v1/" + sa + ":generateAccessToken", ""},
		{"POST", "iamcredentials.googleapis.com", "/v1/" + sa + ":generateAccessToken", "iamcredentials.projects.serviceAccounts.generateAccessToken"},
		{"POST", "sts.googleapis.com", "/v1/token", "sts.token"},
		{"GET", "bigquery.googleapis.com", "/bigquery/v2/projects/proj-a/datasets", "bigquery.datasets.list"},
		{"GET", "container.googleapis.com", "/v1/projects/proj-a/locations/-/clusters", "container.projects.locations.clusters.list"},
		{"GET", "bigquery.googleapis.com", "/$discovery/rest", "bigquery.discovery"},
		// Nobody's paths.
		{"GET", "", "/v2/projects/proj-a", ""},
		{"GET", "", "/v1/projects/proj-a/buckets", ""},
		{"GET", "", "/storage/v1/b", ""},
		{"GET", "www.example.com", "/v1/tokens", ""},
	}
	for _, tc := range cases {
		host := tc.host
		if host == "" {
			host = "127.0.0.1:8085"
		}
		_, rt := routeRequest(tc.method, host, tc.path)
		got := ""
		if rt.handler != nil {
			got = rt.id
		}
		assert.Equal(t, tc.want, got, "%s %s (Host %s)", tc.method, tc.path, host)
	}
}

// rootOpts are client options reaching the emulator through its root.
func (e *env) rootOpts(svc, tok string) []option.ClientOption {
	o := []option.ClientOption{option.WithEndpoint(RootEndpoints(e.srv.URL)[svc])}
	if tok == "" {
		return append(o, option.WithoutAuthentication())
	}
	return append(o, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
}

// TestGoClientsThroughTheRoot walks gkewi's whole sequence with the official Go
// clients pointed at the emulator's root instead of the per-service prefixes.
func TestGoClientsThroughTheRoot(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx
	su, err := serviceusage.NewService(ctx, e.rootOpts(ServiceUsage, e.opTok)...)
	require.NoError(t, err)
	gke, err := container.NewService(ctx, e.rootOpts(Container, e.opTok)...)
	require.NoError(t, err)
	iamSvc, err := iam.NewService(ctx, e.rootOpts(IAM, e.opTok)...)
	require.NoError(t, err)
	crmSvc, err := crm.NewService(ctx, e.rootOpts(CloudResourceManager, e.opTok)...)
	require.NoError(t, err)
	stsSvc, err := sts.NewService(ctx, e.rootOpts(STS, "")...)
	require.NoError(t, err)

	op, err := su.Services.Enable("projects/"+testProject+"/services/iamcredentials.googleapis.com", &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	op, err = su.Operations.Get(op.Name).Do()
	require.NoError(t, err)
	assert.True(t, op.Done)

	gop, err := gke.Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(t, err)
	gop, err = gke.Projects.Locations.Operations.Get("projects/" + testProject + "/locations/-/operations/" + gop.Name).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", gop.Status)

	gsa, err := iamSvc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "root-app"}).Do()
	require.NoError(t, err)
	_, err = iamSvc.Projects.ServiceAccounts.SetIamPolicy("projects/-/serviceAccounts/"+gsa.Email, &iam.SetIamPolicyRequest{Policy: &iam.Policy{
		Bindings: []*iam.Binding{{Role: "roles/iam.workloadIdentityUser", Members: []string{testWIMember}}},
	}}).Do()
	require.NoError(t, err)
	pol, err := crmSvc.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	pol.Bindings = append(pol.Bindings, &crm.Binding{Role: "roles/bigquery.jobUser", Members: []string{"serviceAccount:" + gsa.Email}})
	_, err = crmSvc.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: pol}).Do()
	require.NoError(t, err)

	// The token chain through the root: STS, generateAccessToken, a BigQuery query.
	key, _ := keys(t)
	fed, err := stsSvc.V1.Token(stsRequestFor(signJWT(t, key, testKID, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA)), testAudience)).Do()
	require.NoError(t, err)
	creds, err := iamcredentials.NewService(ctx, e.rootOpts(IAMCredentials, fed.AccessToken)...)
	require.NoError(t, err)
	at, err := creds.Projects.ServiceAccounts.GenerateAccessToken("projects/-/serviceAccounts/"+gsa.Email,
		&iamcredentials.GenerateAccessTokenRequest{Scope: []string{"https://www.googleapis.com/auth/cloud-platform"}}).Do()
	require.NoError(t, err)
	bq, err := bigquery.NewService(ctx, e.rootOpts(BigQuery, at.AccessToken)...)
	require.NoError(t, err)
	qr, err := bq.Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT 1", UseLegacySql: googleapi.Bool(false)}).Do()
	require.NoError(t, err)
	require.Len(t, qr.Rows, 1)

	counts := e.emu.RequestCounts()
	for _, id := range []string{
		"serviceusage.services.enable", "serviceusage.operations.get", "container.projects.locations.clusters.update",
		"container.projects.locations.operations.get", "iam.projects.serviceAccounts.create", "iam.projects.serviceAccounts.setIamPolicy",
		"cloudresourcemanager.projects.getIamPolicy", "cloudresourcemanager.projects.setIamPolicy", "sts.token",
		"iamcredentials.projects.serviceAccounts.generateAccessToken", "bigquery.jobs.query",
	} {
		assert.Equal(t, 1, counts[id], id)
	}
}

// rawCall sends one request shaped by hand, as a client library other than
// the Go one sends it, and returns the status and body.
func (e *env) rawCall(t *testing.T, method, path, tok, contentType, body string, header map[string]string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	require.NoError(t, err)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestNodeClientShapedRequests sends the requests Google's Node.js libraries
// send with only a root URL (googleapis' rootUrl; google-auth-library's
// external account client with token_url and service_account_impersonation_url
// at the root), as recorded by a logging proxy in front of the emulator from
// googleapis 178 and google-auth-library 10 on Node 20: absolute paths from
// the root, the email unescaped in {+resource}, getIamPolicy as a POST with no
// body, a form-encoded STS exchange, the impersonation body with its lifetime.
func TestNodeClientShapedRequests(t *testing.T) {
	e := newEnv(t)
	e.enableWorkloadPool()
	enableIAMCredentials(t, e)
	gsa := e.createSA("node-app")
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.workloadIdentityUser", testWIMember, true)
	e.grantProjectRole(t, "roles/bigquery.jobUser", "serviceAccount:"+gsa.Email)
	node := map[string]string{
		"x-goog-api-client": "gdcl/8.0.3 gl-node/20.20.2",
		"User-Agent":        "google-api-nodejs-client/8.0.3 (gzip)",
		"Accept-Encoding":   "gzip",
	}

	// google-auth-library: the STS exchange, form encoded, at ROOT/v1/token.
	key, _ := keys(t)
	form := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {testAudience},
		"scope":                {"https://www.googleapis.com/auth/cloud-platform"},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token":        {signJWT(t, key, testKID, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA))},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
	}
	code, body := e.rawCall(t, "POST", "/v1/token", "", "application/x-www-form-urlencoded;charset=UTF-8", form.Encode(), map[string]string{
		"x-goog-api-client": "gl-node/20.20.2 auth/10.9.1 google-byoid-sdk source/file sa-impersonation/true config-lifetime/false",
		"User-Agent":        "node-fetch",
	})
	require.Equal(t, 200, code, body)
	fed := jsonField(t, body, "access_token")

	// Then the impersonation, JSON, at ROOT/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken.
	code, body = e.rawCall(t, "POST", "/v1/projects/-/serviceAccounts/"+gsa.Email+":generateAccessToken", fed, "application/json",
		`{"scope":["https://www.googleapis.com/auth/cloud-platform"],"lifetime":"3600s"}`, node)
	require.Equal(t, 200, code, body)
	gsaTok := jsonField(t, body, "accessToken")

	// googleapis REST clients, rootUrl only.
	code, body = e.rawCall(t, "GET", "/bigquery/v2/projects/"+testProject+"/datasets", e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"datasetId": "analytics"`)
	code, body = e.rawCall(t, "POST", "/bigquery/v2/projects/"+testProject+"/queries", gsaTok, "application/json",
		`{"query":"SELECT 1","useLegacySql":false}`, node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"v": "1"`)
	code, body = e.rawCall(t, "POST", "/v1/projects/-/serviceAccounts/"+gsa.Email+":getIamPolicy", e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, testWIMember)
	code, body = e.rawCall(t, "GET", "/v1/projects/"+testProject+"/serviceAccounts", e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, gsa.Email)
	code, body = e.rawCall(t, "GET", "/v1/projects/"+testProject+"/services?filter=state%3AENABLED&pageSize=3", e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"nextPageToken"`)
	code, body = e.rawCall(t, "GET", "/v1/projects/"+testProject+"/locations/-/clusters", e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"workloadPool": "`+testPool+`"`)
	code, body = e.rawCall(t, "POST", "/v3/projects/"+testProject+":getIamPolicy", e.opTok, "application/json", "{}", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"roles/owner"`)
	// An escaped email ('@' as %40) names the same account.
	code, body = e.rawCall(t, "GET", "/v1/projects/-/serviceAccounts/"+url.PathEscape(gsa.Email), e.opTok, "", "", node)
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, `"uniqueId"`)

	// Errors at the root keep each service's own shape.
	code, body = e.rawCall(t, "POST", "/v1/token", "", "application/x-www-form-urlencoded", "grant_type=password", node)
	assert.Equal(t, 400, code)
	assert.Contains(t, body, `"error": "unsupported_grant_type"`)
	code, body = e.rawCall(t, "GET", "/bigquery/v2/projects/"+testProject+"/datasets/nope", e.opTok, "", "", node)
	assert.Equal(t, 404, code)
	assert.Contains(t, body, `"reason": "notFound"`)
	code, body = e.rawCall(t, "GET", "/v1/projects/"+testProject+"/serviceAccounts", "", "", "", node)
	assert.Equal(t, 401, code)
	assert.Contains(t, body, `"status": "UNAUTHENTICATED"`)
}

func jsonField(t *testing.T, body, field string) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m), body)
	v, _ := m[field].(string)
	require.NotEmpty(t, v, "%s in %s", field, body)
	return v
}
