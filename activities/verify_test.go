package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// The verifier is tested against the shared local cluster (whose service account
// issuer is the GKE issuer of acme-prod/europe-west1/carto) and an emulator that
// trusts it, so every link of the chain is the real one: TokenRequest, JWT
// signature checked against the cluster's JWKS, IAM policy on the GSA, BigQuery
// permission check.

const (
	verifyBillingProject = "acme-billing"
	verifyWorker         = "gkewi-worker@acme-prod.iam.gserviceaccount.com"
)

type verifyFixture struct {
	emu      *gcpemu.Emulator
	eps      GCPEndpoints
	gcp      *GCP
	verifier *Verifier
	ns       string
	cluster  ClusterRef
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	c := kubeTestCluster(t)
	emu, err := gcpemu.New(gcpemu.Config{
		Projects: []gcpemu.ProjectConfig{
			{ID: kubeTestProject, Number: 424242424242,
				EnabledServices: []string{"iam.googleapis.com", "iamcredentials.googleapis.com", "container.googleapis.com",
					"cloudresourcemanager.googleapis.com", "sts.googleapis.com", "serviceusage.googleapis.com"},
				Clusters: []gcpemu.ClusterConfig{
					{Location: "europe-west1", Name: "carto", NodePools: []string{"default-pool"},
						WorkloadPool: kubeTestProject + ".svc.id.goog", Kube: c.RESTConfig()},
					{Location: "europe-west1", Name: "no-wi", NodePools: []string{"default-pool"}},
				}},
			{ID: verifyBillingProject, Number: 434343434343},
		},
		Operator: verifyWorker,
		OperatorRoles: []string{
			"roles/iam.serviceAccountAdmin", "roles/resourcemanager.projectIamAdmin", "roles/container.clusterViewer",
		},
	})
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		_ = emu.Close()
	})
	eps := GCPEndpointsFromMap(gcpemu.Endpoints(srv.URL))
	gcp, err := NewGCP(context.Background(), GCPConfig{
		Endpoints: eps,
		Options: []option.ClientOption{option.WithTokenSource(oauth2.StaticTokenSource(
			&oauth2.Token{AccessToken: emu.MintAccessToken("user:owner@example.com")}))},
		OperationPollInterval: 10 * time.Millisecond,
	})
	require.NoError(t, err)
	return &verifyFixture{
		emu: emu, eps: eps, gcp: gcp,
		verifier: NewVerifier(c.Client(), eps),
		ns:       kubeTestNamespace(t, c.Client(), "verify"),
		cluster:  ClusterRef{Project: kubeTestProject, Location: "europe-west1", Cluster: "carto"},
	}
}

// ksa creates a Kubernetes service account in the fixture's namespace.
func (f *verifyFixture) ksa(t *testing.T, name string) {
	t.Helper()
	_, err := kubeTestCluster(t).Client().CoreV1().ServiceAccounts(f.ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// grant runs a GCP activity, as the onboarding would, and fails the test on error.
func (f *verifyFixture) grant(t *testing.T, fn any, in any, out any) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(f.gcp)
	val, err := env.ExecuteActivity(fn, in)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, val.Get(out))
	}
}

// gsa creates a Google service account and returns its email.
func (f *verifyFixture) gsa(t *testing.T, accountID string) string {
	t.Helper()
	return f.createGSA(t, accountID).Email
}

func (f *verifyFixture) createGSA(t *testing.T, accountID string) ServiceAccount {
	t.Helper()
	var sa ServiceAccount
	f.grant(t, f.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: kubeTestProject, AccountID: accountID}, &sa)
	return sa
}

func (f *verifyFixture) bindWorkloadIdentity(t *testing.T, gsa, ksa string, add bool) {
	t.Helper()
	in := ServiceAccountIAMInput{ServiceAccountEmail: gsa, Role: "roles/iam.workloadIdentityUser",
		Member: "serviceAccount:" + kubeTestProject + ".svc.id.goog[" + f.ns + "/" + ksa + "]"}
	if add {
		f.grant(t, f.gcp.AddServiceAccountIAMMember, in, nil)
	} else {
		f.grant(t, f.gcp.RemoveServiceAccountIAMMember, in, nil)
	}
}

func (f *verifyFixture) grantJobUser(t *testing.T, gsa string) {
	t.Helper()
	f.grant(t, f.gcp.GrantBigQueryAccess, BigQueryAccessInput{
		Member: "serviceAccount:" + gsa, DataProject: verifyBillingProject, BillingProject: verifyBillingProject, TempDataset: "gkewi_tmp",
	}, nil)
}

func (f *verifyFixture) input(ksa, gsa string) VerifyInput {
	return VerifyInput{Cluster: f.cluster, Namespace: f.ns, KSA: ksa, GSAEmail: gsa, BigQueryProject: verifyBillingProject}
}

// verify runs VerifyAccess as an activity, as the worker does.
func (f *verifyFixture) verify(t *testing.T, in VerifyInput) (VerifyResult, error) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(f.verifier)
	val, err := env.ExecuteActivity(f.verifier.VerifyAccess, in)
	if err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	require.NoError(t, val.Get(&res))
	return res, nil
}

func stageNames(res VerifyResult) []string {
	var out []string
	for _, s := range res.Stages {
		out = append(out, s.Name)
	}
	return out
}

// requireNoTokens fails when the result carries anything that looks like a token.
func requireNoTokens(t *testing.T, res VerifyResult) {
	t.Helper()
	b, err := json.Marshal(res)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "ya29.", "an access token leaked into the result")
	assert.NotContains(t, string(b), "eyJ", "a JWT leaked into the result")
}

func TestVerifyAccessAllowedWithTheBindingAndDeniedWithout(t *testing.T) {
	f := newVerifyFixture(t)
	f.ksa(t, "carto-common-backend")
	gsa := f.gsa(t, "carto-wi")
	f.bindWorkloadIdentity(t, gsa, "carto-common-backend", true)
	f.grantJobUser(t, gsa)
	f.emu.ResetRequestLog()

	before := time.Now()
	res, err := f.verify(t, f.input("carto-common-backend", gsa))
	require.NoError(t, err)
	assert.True(t, res.Allowed, "stages: %+v", res.Stages)
	// The expiry of the GSA token the walk was handed, never the token.
	assert.WithinRange(t, res.TokenExpiresAt, before.Add(verifyGSATokenLifetime-2*time.Second), time.Now().Add(verifyGSATokenLifetime+time.Second))
	assert.Equal(t, []string{StageKSAToken, StageSTSExchange, StageGenerateAccessToken, StageBigQueryCall}, stageNames(res))
	for _, s := range res.Stages {
		assert.True(t, s.OK, "stage %s: %s", s.Name, s.Detail)
	}
	assert.Contains(t, res.Stages[1].Detail, "serviceAccount:acme-prod.svc.id.goog["+f.ns+"/carto-common-backend]")
	assert.Contains(t, res.Stages[3].Detail, verifyBillingProject)
	requireNoTokens(t, res)

	// Each Google link was really called once, by the principal of the link before.
	counts := f.emu.RequestCounts()
	assert.Equal(t, 1, counts["sts.token"])
	assert.Equal(t, 1, counts["iamcredentials.projects.serviceAccounts.generateAccessToken"])
	assert.Equal(t, 1, counts["bigquery.jobs.query"])
	for _, r := range f.emu.RecentRequests() {
		switch r.Method {
		case "iamcredentials.projects.serviceAccounts.generateAccessToken":
			assert.Equal(t, "serviceAccount:acme-prod.svc.id.goog["+f.ns+"/carto-common-backend]", r.Principal)
		case "bigquery.jobs.query":
			assert.Equal(t, "serviceAccount:"+gsa, r.Principal)
		}
	}

	// Another KSA of the same namespace, without a binding, is refused by IAM.
	f.ksa(t, "other")
	res, err = f.verify(t, f.input("other", gsa))
	require.NoError(t, err, "a denial is a result, not an error")
	assert.False(t, res.Allowed)
	require.Equal(t, []string{StageKSAToken, StageSTSExchange, StageGenerateAccessToken}, stageNames(res))
	assert.True(t, res.Stages[0].OK)
	assert.True(t, res.Stages[1].OK)
	assert.False(t, res.Stages[2].OK)
	assert.Contains(t, res.Stages[2].Detail, "iam.serviceAccounts.getAccessToken")
	assert.True(t, res.TokenExpiresAt.IsZero(), "no token was handed out")
	requireNoTokens(t, res)

	// Removing the binding takes the access away (no propagation delay here).
	f.bindWorkloadIdentity(t, gsa, "carto-common-backend", false)
	res, err = f.verify(t, f.input("carto-common-backend", gsa))
	require.NoError(t, err)
	assert.False(t, res.Allowed)
	assert.Equal(t, StageGenerateAccessToken, res.Stages[len(res.Stages)-1].Name)
}

func TestVerifyAccessDeniedAtEachStage(t *testing.T) {
	f := newVerifyFixture(t)
	f.ksa(t, "backend")
	gsa := f.gsa(t, "backend-wi")
	f.bindWorkloadIdentity(t, gsa, "backend", true)

	t.Run("KSA missing", func(t *testing.T) {
		res, err := f.verify(t, f.input("nobody", gsa))
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		require.Len(t, res.Stages, 1)
		assert.Equal(t, StageKSAToken, res.Stages[0].Name)
		assert.Contains(t, res.Stages[0].Detail, "does not exist")
	})

	t.Run("cluster without a workload pool", func(t *testing.T) {
		in := f.input("backend", gsa)
		in.Cluster.Cluster = "no-wi"
		res, err := f.verify(t, in)
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		require.Equal(t, []string{StageKSAToken, StageSTSExchange}, stageNames(res))
		assert.False(t, res.Stages[1].OK)
		assert.Contains(t, res.Stages[1].Detail, "invalid_target")
	})

	t.Run("GSA deleted", func(t *testing.T) {
		gone := f.createGSA(t, "gone-wi")
		f.grant(t, f.gcp.DeleteServiceAccount, gone, nil)
		res, err := f.verify(t, f.input("backend", gone.Email))
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		assert.Equal(t, StageGenerateAccessToken, res.Stages[len(res.Stages)-1].Name)
	})

	t.Run("BigQuery role missing", func(t *testing.T) {
		res, err := f.verify(t, f.input("backend", gsa))
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		require.Equal(t, []string{StageKSAToken, StageSTSExchange, StageGenerateAccessToken, StageBigQueryCall}, stageNames(res))
		assert.True(t, res.Stages[2].OK)
		assert.False(t, res.TokenExpiresAt.IsZero(), "the GSA token was handed out before BigQuery refused")
		assert.False(t, res.Stages[3].OK)
		assert.Contains(t, res.Stages[3].Detail, "bigquery.jobs.create")
	})

	t.Run("no BigQuery project skips the call", func(t *testing.T) {
		in := f.input("backend", gsa)
		in.BigQueryProject = ""
		res, err := f.verify(t, in)
		require.NoError(t, err)
		assert.True(t, res.Allowed)
		assert.Contains(t, res.Stages[3].Detail, "skipped")
	})
}

func TestVerifyAccessErrorsAreClassified(t *testing.T) {
	f := newVerifyFixture(t)
	f.ksa(t, "backend")
	gsa := f.gsa(t, "backend-wi")
	f.bindWorkloadIdentity(t, gsa, "backend", true)
	f.grantJobUser(t, gsa)

	appError := func(t *testing.T, err error) *temporal.ApplicationError {
		t.Helper()
		require.Error(t, err)
		var appErr *temporal.ApplicationError
		require.True(t, errors.As(err, &appErr), "want an ApplicationError, got %T: %v", err, err)
		return appErr
	}

	t.Run("unavailable STS is retryable", func(t *testing.T) {
		f.emu.SetFaults([]gcpemu.FaultRule{{Method: "sts.token", Sequence: []int{503}}})
		defer f.emu.SetFaults(nil)
		_, err := f.verify(t, f.input("backend", gsa))
		appErr := appError(t, err)
		assert.False(t, appErr.NonRetryable(), "error: %v", err)
		assert.Equal(t, contract.ErrTypeUnavailable, appErr.Type())
	})

	t.Run("unavailable IAM credentials is retryable", func(t *testing.T) {
		f.emu.SetFaults([]gcpemu.FaultRule{{Method: "iamcredentials.*", Sequence: []int{500}}})
		defer f.emu.SetFaults(nil)
		_, err := f.verify(t, f.input("backend", gsa))
		appErr := appError(t, err)
		assert.False(t, appErr.NonRetryable(), "error: %v", err)
	})

	t.Run("rate-limited BigQuery is retryable, not a denial", func(t *testing.T) {
		f.emu.SetFaults([]gcpemu.FaultRule{{Method: "bigquery.jobs.query", Sequence: []int{429}}})
		defer f.emu.SetFaults(nil)
		_, err := f.verify(t, f.input("backend", gsa))
		appErr := appError(t, err)
		assert.False(t, appErr.NonRetryable(), "error: %v", err)
	})

	t.Run("missing fields are refused", func(t *testing.T) {
		_, err := f.verify(t, VerifyInput{Cluster: f.cluster, KSA: "backend"})
		appErr := appError(t, err)
		assert.True(t, appErr.NonRetryable())
		assert.Equal(t, contract.ErrTypeInvalidArgument, appErr.Type())
		assert.Contains(t, err.Error(), "gsaEmail")
		assert.Contains(t, err.Error(), "namespace")
	})

	t.Run("after the faults the chain works", func(t *testing.T) {
		res, err := f.verify(t, f.input("backend", gsa))
		require.NoError(t, err)
		assert.True(t, res.Allowed, "stages: %+v", res.Stages)
		assert.False(t, strings.Contains(res.Stages[0].Detail, "eyJ"))
	})
}

func TestVerifyAccessWaitsForTheBindingToCount(t *testing.T) {
	f := newVerifyFixture(t)
	f.ksa(t, "waiter")
	gsa := f.gsa(t, "carto-wait")
	f.grantJobUser(t, gsa)
	v := VerifierPollingEvery(f.verifier, 20*time.Millisecond)
	in := f.input("waiter", gsa)

	// Without WaitAllowed a denial is answered at once.
	res, err := v.VerifyAccess(context.Background(), in)
	require.NoError(t, err)
	assert.False(t, res.Allowed)

	// With it, the walk is done again until the binding (made 300ms later) counts.
	in.WaitAllowed = true
	f.emu.ResetRequestLog()
	bound := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.bindWorkloadIdentity(t, gsa, "waiter", true)
		close(bound)
	}()
	begin := time.Now()
	res, err = v.VerifyAccess(context.Background(), in)
	<-bound
	require.NoError(t, err)
	assert.True(t, res.Allowed, "stages: %+v", res.Stages)
	assert.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond)
	assert.Greater(t, f.emu.RequestCounts()["iamcredentials.projects.serviceAccounts.generateAccessToken"], 2, "denied walks were repeated")
	requireNoTokens(t, res)
}

func TestVerifyAccessWaitEndsWithTheDenialBeforeTheDeadline(t *testing.T) {
	f := newVerifyFixture(t)
	f.ksa(t, "never")
	gsa := f.gsa(t, "carto-never")
	v := VerifierPollingEvery(f.verifier, 50*time.Millisecond)
	in := f.input("never", gsa)
	in.WaitAllowed = true

	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	res, err := v.VerifyAccess(ctx, in)
	require.NoError(t, err, "a denial is a result, even when the wait ran out")
	assert.NoError(t, ctx.Err(), "answered before the attempt's deadline")
	assert.False(t, res.Allowed)
	assert.Equal(t, StageGenerateAccessToken, res.Stages[len(res.Stages)-1].Name)
}
