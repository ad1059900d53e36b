package gcpemu

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/api/serviceusage/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

func TestFaultSequenceThenSuccess(t *testing.T) {
	e := newEnv(t)
	const method = "iam.projects.serviceAccounts.list"
	e.emu.SetFaults([]FaultRule{{Method: method, Sequence: []int{503, 503, 429}}})
	svc := e.iam(e.opTok)
	var codes []int
	for range 4 {
		_, err := svc.Projects.ServiceAccounts.List("projects/" + testProject).Do()
		code := http.StatusOK
		var ge *googleapi.Error
		if errors.As(err, &ge) {
			code = ge.Code
		} else {
			require.NoError(t, err)
		}
		codes = append(codes, code)
	}
	assert.Equal(t, []int{503, 503, 429, 200}, codes)
	assert.Equal(t, 4, e.emu.RequestCounts()[method])

	// Other methods are untouched.
	_, err := svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + testOperator).Do()
	require.NoError(t, err)
}

func TestFaultRateIsSeededAndLatencyApplies(t *testing.T) {
	pattern := func(seed uint64) []bool {
		e := newEnv(t, withConfig(func(c *Config) {
			c.Seed = seed
			c.Faults = []FaultRule{{Method: "container.*", ErrorRate: 0.5, Code: 500}}
		}))
		var out []bool
		for range 20 {
			_, err := e.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
			out = append(out, err != nil)
		}
		return out
	}
	a, b := pattern(42), pattern(42)
	assert.Equal(t, a, b, "the same seed gives the same failures")
	assert.Contains(t, a, true)
	assert.Contains(t, a, false)

	e := newEnv(t, withConfig(func(c *Config) {
		c.Faults = []FaultRule{{Method: "*", LatencyMin: Duration(80 * time.Millisecond), LatencyMax: Duration(80 * time.Millisecond)}}
	}))
	start := time.Now()
	_, err := e.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 80*time.Millisecond)
}

func TestAdminEndpoints(t *testing.T) {
	e := newEnv(t)
	post := func(path, body string) *http.Response {
		resp, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := post("/_emulator/faults", `{"faults":[{"method":"iam.projects.serviceAccounts.get","sequence":[503]}]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err := e.iam(e.opTok).Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + testOperator).Do()
	requireAPIError(t, err, http.StatusServiceUnavailable)

	r, err := http.Get(e.srv.URL + "/_emulator/requests")
	require.NoError(t, err)
	defer r.Body.Close()
	var log struct {
		Counts map[string]int `json:"counts"`
		Recent []RequestEntry `json:"recent"`
	}
	require.NoError(t, json.NewDecoder(r.Body).Decode(&log))
	assert.Equal(t, 1, log.Counts["iam.projects.serviceAccounts.get"])
	require.NotEmpty(t, log.Recent)
	last := log.Recent[len(log.Recent)-1]
	assert.Equal(t, "iam.projects.serviceAccounts.get", last.Method)
	assert.Equal(t, 503, last.Status)

	resp = post("/_emulator/tokens", `{"principal":"user:support@example.com","lifetime":"5m"}`)
	var minted struct {
		AccessToken string `json:"accessToken"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&minted))
	_, err = e.iam(minted.AccessToken).Projects.ServiceAccounts.List("projects/" + testProject).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "iam.serviceAccounts.list")
	assert.Equal(t, "user:support@example.com", e.emu.RecentRequests()[len(e.emu.RecentRequests())-1].Principal)

	post("/_emulator/reset-log", "")
	assert.Empty(t, e.emu.RequestCounts())

	s, err := http.Get(e.srv.URL + "/_emulator/state")
	require.NoError(t, err)
	defer s.Body.Close()
	var st map[string]any
	require.NoError(t, json.NewDecoder(s.Body).Decode(&st))
	assert.Contains(t, st["projects"], testProject)
	assert.NotContains(t, func() string { b, _ := json.Marshal(st); return string(b) }(), minted.AccessToken, "the dump never shows tokens")
}

func TestMetadataServerGivesADC(t *testing.T) {
	e := newEnv(t)
	host := strings.TrimPrefix(e.srv.URL, "http://")
	t.Setenv("GCE_METADATA_HOST", host)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())

	// Without the header the metadata server refuses.
	resp, err := http.Get(e.srv.URL + "/computeMetadata/v1/instance/service-accounts/default/token")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	ts, err := google.DefaultTokenSource(e.ctx, "https://www.googleapis.com/auth/cloud-platform")
	require.NoError(t, err)
	tok, err := ts.Token()
	require.NoError(t, err)
	require.NotEmpty(t, tok.AccessToken)
	list, err := e.iam(tok.AccessToken).Projects.ServiceAccounts.List("projects/" + testProject).Do()
	require.NoError(t, err, "the metadata token is the operator's")
	assert.NotEmpty(t, list.Accounts)

	// A client built with no credentials at all finds them the same way.
	su, err := serviceusage.NewService(e.ctx, option.WithEndpoint(Endpoints(e.srv.URL)[ServiceUsage]))
	require.NoError(t, err)
	svc, err := su.Services.Get("projects/" + testProject + "/services/container.googleapis.com").Do()
	require.NoError(t, err)
	assert.Equal(t, "ENABLED", svc.State)
	assert.Equal(t, "serviceAccount:"+testOperator, e.emu.RecentRequests()[len(e.emu.RecentRequests())-1].Principal)

	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/computeMetadata/v1/project/project-id", nil)
	req.Header.Set("Metadata-Flavor", "Google")
	r2, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer r2.Body.Close()
	assert.Equal(t, "Google", r2.Header.Get("Metadata-Flavor"))
	b := make([]byte, 64)
	n, _ := r2.Body.Read(b)
	assert.Equal(t, testProject, string(b[:n]))
}

func TestStateFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	e := newEnv(t, withConfig(func(c *Config) { c.StateFile = path }))
	gsa := e.createSA("gkewi-carto")
	e.enableWorkloadPool()
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.workloadIdentityUser", testWIMember, true)
	userTok := e.emu.MintAccessToken("user:ops@example.com")
	require.NoError(t, e.emu.Close())

	cfg := e.config
	cfg.Projects = append(append([]ProjectConfig(nil), cfg.Projects...), ProjectConfig{ID: "proj-b", Number: 271828182845})
	emu2, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(emu2)
	defer srv.Close()
	defer func() { require.NoError(t, emu2.Close()) }()
	e2 := &env{t: t, emu: emu2, srv: srv, clock: e.clock, ctx: e.ctx, opTok: e.opTok, config: cfg}

	got, err := e2.iam(e.opTok).Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + gsa.Email).Do()
	require.NoError(t, err, "tokens and accounts survive a restart")
	assert.Equal(t, gsa.UniqueId, got.UniqueId)
	pol, err := e2.iam(e.opTok).Projects.ServiceAccounts.GetIamPolicy("projects/-/serviceAccounts/" + gsa.Email).Do()
	require.NoError(t, err)
	require.Len(t, pol.Bindings, 1)
	assert.Equal(t, []string{testWIMember}, pol.Bindings[0].Members)
	cl, err := e2.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, testPool, cl.WorkloadIdentityConfig.WorkloadPool)
	_, err = e2.iam(userTok).Projects.ServiceAccounts.List("projects/" + testProject).Do()
	requireAPIError(t, err, http.StatusForbidden) // authenticated (known token), not authorized

	added, err := e2.crm(e.opTok).Projects.Get("projects/proj-b").Do()
	require.NoError(t, err, "a project new to the config joins the saved state")
	assert.Equal(t, "projects/271828182845", added.Name)
}

func TestKubeNodeLabeler(t *testing.T) {
	node := func(name, pool string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nodePoolLabel: pool}}}
	}
	client := fake.NewClientset(node("n1", "default-pool"), node("n2", "default-pool"), node("n3", "pool-b"))
	l := &kubeNodeLabeler{client: client}
	v := "true"
	require.NoError(t, l.LabelNodePool(context.Background(), "default-pool", map[string]*string{metadataServerLabel: &v}))
	for name, want := range map[string]string{"n1": "true", "n2": "true", "n3": ""} {
		n, err := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, want, n.Labels[metadataServerLabel], name)
	}
	require.NoError(t, l.LabelNodePool(context.Background(), "default-pool", map[string]*string{metadataServerLabel: nil}))
	n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	require.NoError(t, err)
	_, has := n.Labels[metadataServerLabel]
	assert.False(t, has, "a nil value removes the label")
}

// TestJWKSFromAPIServer checks the keys and issuer are read from the cluster's
// API server, and re-read when a token names an unknown key (rotation).
func TestJWKSFromAPIServer(t *testing.T) {
	first, second := keys(t)
	var current atomic.Pointer[[]byte]
	set := jwksFor(&first.PublicKey, "k1")
	current.Store(&set)
	var fetches atomic.Int32
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_, _ = w.Write([]byte(`{"issuer":"` + testIssuer + `","jwks_uri":"https://10.0.0.1/openid/v1/jwks"}`))
		case "/openid/v1/jwks":
			fetches.Add(1)
			_, _ = w.Write(*current.Load())
		default:
			http.NotFound(w, r)
		}
	}))
	defer apiserver.Close()

	e := newEnv(t, withConfig(func(c *Config) {
		c.Projects[0].Clusters[0].JWKS = nil
		c.Projects[0].Clusters[0].Kube = &rest.Config{Host: apiserver.URL}
	}))
	e.enableWorkloadPool()
	ex := func(key any, kid string) error {
		k := first
		if key != nil {
			k = second
		}
		_, err := e.sts().V1.Token(stsRequestFor(signJWT(t, k, kid, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA)), testAudience)).Do()
		return err
	}
	require.NoError(t, ex(nil, "k1"))
	require.NoError(t, ex(nil, "k1"))
	assert.EqualValues(t, 1, fetches.Load(), "keys are cached")

	rotated := jwksFor(&second.PublicKey, "k2")
	current.Store(&rotated)
	time.Sleep(1100 * time.Millisecond) // refetches are rate limited to one a second
	require.NoError(t, ex(second, "k2"))
	assert.EqualValues(t, 2, fetches.Load())

	cl, err := e.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, strings.TrimPrefix(apiserver.URL, "http://"), cl.Endpoint)
}

func TestEvalCondition(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for expr, want := range map[string]bool{
		`request.time < timestamp("2026-12-01T00:00:00Z")`:                                                        true,
		`request.time < timestamp("2026-11-30T00:00:00Z")`:                                                        false,
		`(request.time < timestamp("2026-12-01T00:00:00Z"))`:                                                      true,
		`request.time >= timestamp('2026-11-01T00:00:00Z') && (request.time < timestamp("2026-12-01T00:00:00Z"))`: true,
		`((request.time > timestamp("2026-11-01T00:00:00Z")))`:                                                    true,
		`request.time < timestamp("2026-12-01T00:00:00Z") && resource.name.startsWith("x")`:                       false,
		`(request.time < timestamp("2026-12-01T00:00:00Z")`:                                                       false,
	} {
		assert.Equal(t, want, evalCondition(expr, now), expr)
	}
}

// Etags are bytes: gcloud sends back in the URL-safe alphabet the etag it was
// given in the standard one, and IAM takes it.
func TestSameEtag(t *testing.T) {
	assert.True(t, sameEtag("BwX+q/Q=", "BwX-q_Q="))
	assert.True(t, sameEtag("BwX+q/Q=", "BwX+q/Q"))
	assert.False(t, sameEtag("BwX+q/Q=", "AwX+q/Q="))
	assert.False(t, sameEtag("BwX+q/Q=", ""))
}
