package gcpemu

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

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

const (
	testProject  = "proj-a"
	testNumber   = 314159265358
	testLocation = "us-central1"
	testCluster  = "c1"
	testOperator = "gkewi-worker@proj-a.iam.gserviceaccount.com"
	testIssuer   = "https://container.googleapis.com/v1/projects/proj-a/locations/us-central1/clusters/c1"
	testPool     = "proj-a.svc.id.goog"
	testKID      = "test-key-1"
)

var testOperatorRoles = []string{
	"roles/serviceusage.serviceUsageAdmin",
	"roles/container.admin",
	"roles/iam.serviceAccountAdmin",
	"roles/resourcemanager.projectIamAdmin",
	"roles/bigquery.admin",
}

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recordingLabeler records node pool relabelling instead of calling Kubernetes.
type recordingLabeler struct {
	mu    sync.Mutex
	calls []labelCall
}

type labelCall struct {
	Pool   string
	Labels map[string]*string
}

func (r *recordingLabeler) LabelNodePool(_ context.Context, pool string, labels map[string]*string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, labelCall{Pool: pool, Labels: labels})
	return nil
}

func (r *recordingLabeler) Calls() []labelCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]labelCall(nil), r.calls...)
}

// testKey is the cluster's service-account signing key.
var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
	otherKey    *rsa.PrivateKey
)

func keys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	testKeyOnce.Do(func() {
		var err error
		testKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			otherKey, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err != nil {
			panic(err)
		}
	})
	return testKey, otherKey
}

func jwksFor(key *rsa.PublicKey, kid string) []byte {
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}}})
	return b
}

// signJWT makes an RS256 JWT like a Kubernetes TokenRequest returns.
func signJWT(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"}) + "." + enc(claims)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	require.NoError(t, err)
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func ksaClaimsFor(now time.Time, namespace, ksa string) map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"sub": "system:serviceaccount:" + namespace + ":" + ksa,
		"aud": []string{testPool},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]string{"name": ksa, "uid": "d3b07384-d9a7-4f3b-8a1e-000000000001"},
		},
	}
}

// env is an emulator under test with its server and clock.
type env struct {
	t      *testing.T
	emu    *Emulator
	srv    *httptest.Server
	clock  *testClock
	nodes  *recordingLabeler
	ctx    context.Context
	opTok  string
	config Config
}

type envOption func(*Config)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	pub, _ := keys(t)
	clock := &testClock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	nodes := &recordingLabeler{}
	cfg := Config{
		Projects: []ProjectConfig{{
			ID: testProject, Number: testNumber,
			Clusters: []ClusterConfig{{
				Location: testLocation, Name: testCluster, NodePools: []string{"default-pool", "pool-b"},
				JWKS:  func() ([]byte, error) { return jwksFor(&pub.PublicKey, testKID), nil },
				Nodes: nodes,
			}},
			Datasets: []DatasetConfig{{ID: "analytics", Tables: []string{"events"}}},
		}},
		Operator:      testOperator,
		OperatorRoles: testOperatorRoles,
		Now:           clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	emu, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, emu.Close())
	})
	return &env{t: t, emu: emu, srv: srv, clock: clock, nodes: nodes, ctx: context.Background(),
		opTok: emu.MintAccessToken("serviceAccount:" + testOperator), config: cfg}
}

func (e *env) opts(svc, tok string) []option.ClientOption {
	o := []option.ClientOption{option.WithEndpoint(Endpoints(e.srv.URL)[svc])}
	if tok == "" {
		return append(o, option.WithoutAuthentication())
	}
	return append(o, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
}

func (e *env) iam(tok string) *iam.Service {
	s, err := iam.NewService(e.ctx, e.opts(IAM, tok)...)
	require.NoError(e.t, err)
	return s
}

func (e *env) crm(tok string) *crm.Service {
	s, err := crm.NewService(e.ctx, e.opts(CloudResourceManager, tok)...)
	require.NoError(e.t, err)
	return s
}

func (e *env) gke(tok string) *container.Service {
	s, err := container.NewService(e.ctx, e.opts(Container, tok)...)
	require.NoError(e.t, err)
	return s
}

func (e *env) su(tok string) *serviceusage.Service {
	s, err := serviceusage.NewService(e.ctx, e.opts(ServiceUsage, tok)...)
	require.NoError(e.t, err)
	return s
}

func (e *env) bq(tok string) *bigquery.Service {
	s, err := bigquery.NewService(e.ctx, e.opts(BigQuery, tok)...)
	require.NoError(e.t, err)
	return s
}

func (e *env) sts() *sts.Service {
	s, err := sts.NewService(e.ctx, e.opts(STS, "")...)
	require.NoError(e.t, err)
	return s
}

func (e *env) creds(tok string) *iamcredentials.Service {
	s, err := iamcredentials.NewService(e.ctx, e.opts(IAMCredentials, tok)...)
	require.NoError(e.t, err)
	return s
}

// apiErr asserts err is a googleapi.Error with this code and returns it.
func apiErr(t *testing.T, err error, code int) *googleapi.Error {
	t.Helper()
	require.Error(t, err)
	var ge *googleapi.Error
	require.True(t, errors.As(err, &ge), "not a googleapi.Error: %v", err)
	require.Equal(t, code, ge.Code, "error: %v", err)
	return ge
}

// requireAPIError is apiErr for callers that need only the code checked.
func requireAPIError(t *testing.T, err error, code int) {
	t.Helper()
	_ = apiErr(t, err, code)
}

// status is the canonical status name in a Google error body.
func status(t *testing.T, ge *googleapi.Error) string {
	t.Helper()
	var body struct {
		Error struct {
			Status  string           `json:"status"`
			Details []map[string]any `json:"details"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(ge.Body), &body), "body: %s", ge.Body)
	return body.Error.Status
}

// createSA creates a service account as the operator.
func (e *env) createSA(accountID string) *iam.ServiceAccount {
	e.t.Helper()
	sa, err := e.iam(e.opTok).Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{
		AccountId: accountID, ServiceAccount: &iam.ServiceAccount{DisplayName: accountID},
	}).Do()
	require.NoError(e.t, err)
	return sa
}

// enableWorkloadPool turns Workload Identity on for the test cluster.
func (e *env) enableWorkloadPool() {
	e.t.Helper()
	op, err := e.gke(e.opTok).Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(e.t, err)
	if op.Status != "DONE" {
		e.clock.Advance(e.config.OperationDuration)
	}
}

func clusterName() string {
	return "projects/" + testProject + "/locations/" + testLocation + "/clusters/" + testCluster
}

func withConfig(f func(*Config)) envOption { return f }

// grantProjectRole adds member to role in the project policy, as the operator.
func (e *env) grantProjectRole(t *testing.T, role, member string) {
	t.Helper()
	c := e.crm(e.opTok)
	p, err := c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	p.Bindings = append(p.Bindings, &crm.Binding{Role: role, Members: []string{member}})
	_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: p}).Do()
	require.NoError(t, err)
}

// setSAPolicyMember adds or removes member of role on a service account's policy.
func (e *env) setSAPolicyMember(t *testing.T, email, role, member string, add bool) {
	t.Helper()
	svc := e.iam(e.opTok)
	res := "projects/-/serviceAccounts/" + email
	p, err := svc.Projects.ServiceAccounts.GetIamPolicy(res).Do()
	require.NoError(t, err)
	var out []*iam.Binding
	done := false
	for _, b := range p.Bindings {
		if b.Role == role {
			var members []string
			for _, m := range b.Members {
				if m != member {
					members = append(members, m)
				}
			}
			if add {
				members = append(members, member)
				done = true
			}
			if len(members) == 0 {
				continue
			}
			b.Members = members
		}
		out = append(out, b)
	}
	if add && !done {
		out = append(out, &iam.Binding{Role: role, Members: []string{member}})
	}
	p.Bindings = out
	_, err = svc.Projects.ServiceAccounts.SetIamPolicy(res, &iam.SetIamPolicyRequest{Policy: p}).Do()
	require.NoError(t, err)
}
