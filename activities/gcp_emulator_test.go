package activities

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/oauth2"
	"google.golang.org/api/bigquery/v2"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/iam/v1"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/sts/v1"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

const (
	emuOperator = "gkewi-worker@ops-proj.iam.gserviceaccount.com"
	emuProject  = "app-proj"
	emuLocation = "europe-west1"
	emuCluster  = "main"
)

// operatorRoles are what the worker's identity needs for every GCP activity.
var operatorRoles = []string{
	"roles/serviceusage.serviceUsageAdmin",
	"roles/container.clusterAdmin",
	"roles/iam.serviceAccountAdmin",
	"roles/resourcemanager.projectIamAdmin",
	"roles/bigquery.admin",
}

// gcpEmu is an emulator served over HTTP with GCP activities pointed at it.
type gcpEmu struct {
	t    *testing.T
	emu  *gcpemu.Emulator
	eps  GCPEndpoints
	opts []option.ClientOption
	gcp  *GCP
}

func defaultEmuConfig() gcpemu.Config {
	return gcpemu.Config{
		Projects: []gcpemu.ProjectConfig{
			{ID: emuProject, Number: 111111111111, Clusters: []gcpemu.ClusterConfig{
				{Location: emuLocation, Name: emuCluster, NodePools: []string{"default-pool", "pool-2"}},
			}},
			{ID: "data-proj", Number: 222222222222, Datasets: []gcpemu.DatasetConfig{{ID: "sales", Location: "EU"}, {ID: "hr", Location: "EU"}}},
			{ID: "bill-proj", Number: 333333333333},
		},
		Operator:          emuOperator,
		OperatorRoles:     operatorRoles,
		OperationDuration: 150 * time.Millisecond,
		// IAM's eventual consistency, on as in Google Cloud: a new account
		// may look missing by email for this long.
		IAMConsistency: gcpemu.IAMConsistency{NewAccountWindow: gcpemu.Duration(200 * time.Millisecond)},
		Seed:           11,
	}
}

func newGCPEmu(t *testing.T, cfg gcpemu.Config) *gcpEmu {
	t.Helper()
	emu, err := gcpemu.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		_ = emu.Close()
	})
	e := &gcpEmu{
		t:   t,
		emu: emu,
		eps: GCPEndpointsFromMap(gcpemu.Endpoints(srv.URL)),
		opts: []option.ClientOption{option.WithTokenSource(oauth2.StaticTokenSource(
			&oauth2.Token{AccessToken: emu.MintAccessToken(cfg.Operator)}))},
	}
	e.gcp = e.newGCP()
	return e
}

// newGCP builds another GCP, as a second worker process would have.
func (e *gcpEmu) newGCP() *GCP {
	g, err := NewGCP(context.Background(), GCPConfig{
		Endpoints:             e.eps,
		Options:               e.opts,
		OperationPollInterval: 10 * time.Millisecond,
		ConflictRetry:         ConflictRetry{Attempts: 30, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		PropagationTimeout:    time.Second,
	})
	require.NoError(e.t, err)
	return g
}

// activityEnv is a Temporal activity test environment with g registered.
func activityEnv(g *GCP) *testsuite.TestActivityEnvironment {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(g)
	return env
}

func (e *gcpEmu) run(fn any, args ...any) (converter.EncodedValue, error) {
	return activityEnv(e.gcp).ExecuteActivity(fn, args...)
}

func (e *gcpEmu) runStep(fn any, args ...any) StepResult {
	e.t.Helper()
	val, err := e.run(fn, args...)
	require.NoError(e.t, err)
	var res StepResult
	require.NoError(e.t, val.Get(&res))
	return res
}

// mutatingCalls are the calls that change state, by method id.
func (e *gcpEmu) mutatingCalls() map[string]int {
	out := map[string]int{}
	for method, n := range e.emu.RequestCounts() {
		last := method[strings.LastIndex(method, ".")+1:]
		switch last {
		case "create", "update", "delete", "setIamPolicy", "enable", "disable", "insert", "patch":
			out[method] = n
		}
	}
	return out
}

func (e *gcpEmu) count(method string) int { return e.emu.RequestCounts()[method] }

func (e *gcpEmu) containerClient() *container.Service {
	s, err := container.NewService(context.Background(), e.eps.ClientOptions(APIContainer, e.opts...)...)
	require.NoError(e.t, err)
	return s
}

func (e *gcpEmu) iamClient() *iam.Service {
	s, err := iam.NewService(context.Background(), e.eps.ClientOptions(APIIAM, e.opts...)...)
	require.NoError(e.t, err)
	return s
}

func (e *gcpEmu) crmClient() *cloudresourcemanager.Service {
	s, err := cloudresourcemanager.NewService(context.Background(), e.eps.ClientOptions(APIResourceManager, e.opts...)...)
	require.NoError(e.t, err)
	return s
}

func (e *gcpEmu) bigQueryClient() *bigquery.Service {
	s, err := NewBigQueryService(context.Background(), e.eps, e.opts...)
	require.NoError(e.t, err)
	return s
}

func (e *gcpEmu) saPolicy(email string) *Policy {
	e.t.Helper()
	p, err := e.iamClient().Projects.ServiceAccounts.GetIamPolicy(serviceAccountResource(email)).OptionsRequestedPolicyVersion(3).Do()
	require.NoError(e.t, err)
	out, err := convertPolicy[Policy](p)
	require.NoError(e.t, err)
	return out
}

func (e *gcpEmu) projectPolicy(project string) *Policy {
	e.t.Helper()
	p, err := e.crmClient().Projects.GetIamPolicy("projects/"+project, &cloudresourcemanager.GetIamPolicyRequest{
		Options: &cloudresourcemanager.GetPolicyOptions{RequestedPolicyVersion: 3},
	}).Do()
	require.NoError(e.t, err)
	out, err := convertPolicy[Policy](p)
	require.NoError(e.t, err)
	return out
}

func (e *gcpEmu) datasetAccess(project, dataset string) []*bigquery.DatasetAccess {
	e.t.Helper()
	ds, err := e.bigQueryClient().Datasets.Get(project, dataset).Do()
	require.NoError(e.t, err)
	return ds.Access
}

var emuClusterRef = ClusterRef{Project: emuProject, Location: emuLocation, Cluster: emuCluster}

func requireActivityAppError(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr, "got %v", err)
	return appErr
}

func TestGCPEnableServiceIdempotent(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	in := EnableServiceInput{Project: emuProject, Service: "iamcredentials.googleapis.com"}

	res := e.runStep(e.gcp.EnableService, in)
	assert.True(t, res.Changed)
	assert.Equal(t, 1, e.count("serviceusage.services.enable"))

	e.emu.ResetRequestLog()
	res = e.runStep(e.gcp.EnableService, in)
	assert.False(t, res.Changed)
	assert.Empty(t, e.mutatingCalls())
}

func TestGCPSetWorkloadPoolAndNodePools(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	env := activityEnv(e.gcp)
	var beats []operationProgress
	var mu sync.Mutex
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
		var p operationProgress
		if details.Get(&p) == nil {
			mu.Lock()
			beats = append(beats, p)
			mu.Unlock()
		}
	})

	val, err := env.ExecuteActivity(e.gcp.SetWorkloadPool, emuClusterRef)
	require.NoError(t, err)
	var res StepResult
	require.NoError(t, val.Get(&res))
	assert.True(t, res.Changed)
	mu.Lock()
	require.NotEmpty(t, beats, "the wait heartbeats")
	assert.True(t, strings.HasPrefix(beats[0].Operation, "projects/"+emuProject+"/locations/"+emuLocation+"/operations/"), beats[0].Operation)
	assert.True(t, beats[0].Ours)
	mu.Unlock()

	c, err := e.containerClient().Projects.Locations.Clusters.Get(emuClusterRef.resourceName()).Do()
	require.NoError(t, err)
	require.NotNil(t, c.WorkloadIdentityConfig)
	assert.Equal(t, emuProject+".svc.id.goog", c.WorkloadIdentityConfig.WorkloadPool)

	val, err = e.run(e.gcp.ListNodePools, emuClusterRef)
	require.NoError(t, err)
	var pools []string
	require.NoError(t, val.Get(&pools))
	assert.ElementsMatch(t, []string{"default-pool", "pool-2"}, pools)

	for _, np := range pools {
		res := e.runStep(e.gcp.SetNodePoolMetadata, NodePoolInput{Cluster: emuClusterRef, NodePool: np})
		assert.True(t, res.Changed, np)
		got, err := e.containerClient().Projects.Locations.Clusters.NodePools.Get(emuClusterRef.resourceName() + "/nodePools/" + np).Do()
		require.NoError(t, err)
		assert.Equal(t, "GKE_METADATA", got.Config.WorkloadMetadataConfig.Mode)
	}

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.SetWorkloadPool, emuClusterRef).Changed)
	for _, np := range pools {
		assert.False(t, e.runStep(e.gcp.SetNodePoolMetadata, NodePoolInput{Cluster: emuClusterRef, NodePool: np}).Changed)
	}
	assert.Empty(t, e.mutatingCalls(), "re-runs change nothing")
}

// startForeignNodePoolUpdate starts a node pool update outside the activities and
// returns its operation's full name.
func (e *gcpEmu) startForeignNodePoolUpdate(pool, mode string) string {
	e.t.Helper()
	name := emuClusterRef.resourceName() + "/nodePools/" + pool
	op, err := e.containerClient().Projects.Locations.Clusters.NodePools.Update(name, &container.UpdateNodePoolRequest{
		Name:                   name,
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: mode},
	}).Do()
	require.NoError(e.t, err)
	require.NotEqual(e.t, "DONE", op.Status, "the foreign operation must still be running")
	return containerOperationName(emuClusterRef, op)
}

func TestGCPSetWorkloadPoolWaitsOutBusyCluster(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperationDuration = time.Second
	e := newGCPEmu(t, cfg)

	// Another writer keeps the cluster busy with a node pool operation.
	foreign := e.startForeignNodePoolUpdate("pool-2", "GCE_METADATA")
	e.emu.ResetRequestLog()

	start := time.Now()
	res := e.runStep(e.gcp.SetWorkloadPool, emuClusterRef)
	assert.True(t, res.Changed)
	assert.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond, "it waited for the running operation")
	assert.Equal(t, 2, e.count("container.projects.locations.clusters.update"), "one refused while busy, one after")
	assert.GreaterOrEqual(t, e.count("container.projects.locations.operations.list"), 1, "it looked for the running operation")

	fop, err := e.containerClient().Projects.Locations.Operations.Get(foreign).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", fop.Status)
}

func TestGCPSetNodePoolMetadataWaitsOutBusyCluster(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperationDuration = time.Second
	e := newGCPEmu(t, cfg)
	e.runStep(e.gcp.SetWorkloadPool, emuClusterRef)

	// Another writer is already switching the same pool: once it finishes there is
	// nothing left to do.
	e.startForeignNodePoolUpdate("default-pool", "GKE_METADATA")
	e.emu.ResetRequestLog()
	start := time.Now()
	res := e.runStep(e.gcp.SetNodePoolMetadata, NodePoolInput{Cluster: emuClusterRef, NodePool: "default-pool"})
	assert.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond, "it waited for the running operation")
	assert.False(t, res.Changed, "the other writer's operation did it")
	assert.Equal(t, 1, e.count("container.projects.locations.clusters.nodePools.update"), "refused once while busy; no second operation")
	assert.GreaterOrEqual(t, e.count("container.projects.locations.operations.list"), 1)
}

func TestGCPSetWorkloadPoolResumesOperationFromHeartbeat(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperationDuration = time.Second
	e := newGCPEmu(t, cfg)

	// A previous attempt started the update, heartbeated the operation and died.
	op, err := e.containerClient().Projects.Locations.Clusters.Update(emuClusterRef.resourceName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: emuClusterRef.WorkloadPool()}},
	}).Do()
	require.NoError(t, err)
	require.NotEqual(t, "DONE", op.Status)
	e.emu.ResetRequestLog()

	env := activityEnv(e.gcp)
	env.SetHeartbeatDetails(operationProgress{Operation: containerOperationName(emuClusterRef, op), Ours: true})
	val, err := env.ExecuteActivity(e.gcp.SetWorkloadPool, emuClusterRef)
	require.NoError(t, err)
	var res StepResult
	require.NoError(t, val.Get(&res))
	assert.True(t, res.Changed, "the resumed operation was this activity's")
	assert.Zero(t, e.count("container.projects.locations.clusters.update"), "no second operation")
	assert.GreaterOrEqual(t, e.count("container.projects.locations.operations.get"), 1, "it waited on the heartbeated operation")
}

func TestGCPCheckIdentitySameness(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.Projects[0].Clusters = append(cfg.Projects[0].Clusters,
		gcpemu.ClusterConfig{Location: "us-central1", Name: "other-wi", NodePools: []string{"p"}, WorkloadPool: emuProject + ".svc.id.goog"},
		gcpemu.ClusterConfig{Location: "us-east1", Name: "no-wi", NodePools: []string{"p"}},
	)
	cfg.Projects[0].Clusters[0].WorkloadPool = emuProject + ".svc.id.goog"
	e := newGCPEmu(t, cfg)

	res := e.runStep(e.gcp.CheckIdentitySameness, PreflightInput{Cluster: emuClusterRef, Namespace: "carto", KSA: "carto-common-backend"})
	assert.False(t, res.Changed)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "us-central1/other-wi")
	assert.Contains(t, res.Warnings[0], "carto/carto-common-backend")
}

func TestGCPEnsureServiceAccount(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	in := EnsureServiceAccountInput{Project: emuProject, AccountID: "carto-backend", DisplayName: "CARTO backend"}

	val, err := e.run(e.gcp.EnsureServiceAccount, in)
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))
	assert.Equal(t, "carto-backend@"+emuProject+".iam.gserviceaccount.com", sa.Email)
	assert.NotEmpty(t, sa.UniqueID)
	assert.True(t, sa.Created)

	// A retry of the same workflow recognizes its account and makes no change
	// (within IAM's window it may meet 409 instead: TestGCPEnsureServiceAccountNewAccountWindow).
	e.emu.SettleServiceAccounts()
	e.emu.ResetRequestLog()
	val, err = e.run(e.gcp.EnsureServiceAccount, in)
	require.NoError(t, err)
	var again ServiceAccount
	require.NoError(t, val.Get(&again))
	assert.Equal(t, sa, again)
	assert.Empty(t, e.mutatingCalls())

	// By email: reuse, never create.
	val, err = e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Email: sa.Email})
	require.NoError(t, err)
	var byEmail ServiceAccount
	require.NoError(t, val.Get(&byEmail))
	assert.Equal(t, ServiceAccount{Email: sa.Email, UniqueID: sa.UniqueID}, byEmail)

	_, err = e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Email: "nobody@" + emuProject + ".iam.gserviceaccount.com"})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeNotFound, appErr.Type())
	assert.Contains(t, appErr.Error(), "service account nobody@"+emuProject+".iam.gserviceaccount.com does not exist; create it or give gsa.accountId instead")

	_, err = e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "Bad_Id"})
	appErr = requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeInvalidArgument, appErr.Type())

	assert.Zero(t, e.count("iam.projects.serviceAccounts.keys.create"), "never keys")
}

func TestGCPEnsureServiceAccountAdoptsExistingAccount(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	created, err := e.iamClient().Projects.ServiceAccounts.Create("projects/"+emuProject, &iam.CreateServiceAccountRequest{
		AccountId: "preexisting", ServiceAccount: &iam.ServiceAccount{DisplayName: "made by hand"},
	}).Do()
	require.NoError(t, err)

	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "preexisting"})
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))
	assert.Equal(t, ServiceAccount{Email: created.Email, UniqueID: created.UniqueId, Created: false}, sa)
}

func TestGCPDeleteServiceAccountOnlyOurs(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "to-delete"})
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))

	// Deleted by hand and created again under the same email: the new account
	// is not ours.
	_, err = e.iamClient().Projects.ServiceAccounts.Delete(serviceAccountResource(sa.UniqueID)).Do()
	require.NoError(t, err)
	newer := e.createServiceAccount("to-delete")
	require.NotEqual(t, sa.UniqueID, newer.UniqueID)
	res := e.runStep(e.gcp.DeleteServiceAccount, sa)
	assert.False(t, res.Changed)
	assert.Contains(t, res.Detail, "already deleted")
	_, err = e.iamClient().Projects.ServiceAccounts.Get(serviceAccountResource(newer.UniqueID)).Do()
	require.NoError(t, err, "the newer account with the same email is not deleted")

	res = e.runStep(e.gcp.DeleteServiceAccount, newer)
	assert.True(t, res.Changed)
	_, err = e.iamClient().Projects.ServiceAccounts.Get(serviceAccountResource(newer.UniqueID)).Do()
	assert.True(t, IsNotFound(err), "deleted: %v", err)

	e.emu.ResetRequestLog()
	res = e.runStep(e.gcp.DeleteServiceAccount, newer)
	assert.False(t, res.Changed)
	assert.Equal(t, 404, e.emu.RecentRequests()[0].Status, "the delete by unique id says it is gone")
}

// createServiceAccount creates an account as a fixture: IAM has caught up with
// it (and every other new account) when it returns.
func (e *gcpEmu) createServiceAccount(id string) ServiceAccount {
	e.t.Helper()
	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: id})
	require.NoError(e.t, err)
	var sa ServiceAccount
	require.NoError(e.t, val.Get(&sa))
	e.emu.SettleServiceAccounts()
	return sa
}

func TestGCPServiceAccountIAMMemberLifecycle(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("carto-backend")
	wiMember := "serviceAccount:" + emuProject + ".svc.id.goog[carto/carto-common-backend]"
	add := ServiceAccountIAMInput{ServiceAccountEmail: sa.Email, Role: "roles/iam.workloadIdentityUser", Member: wiMember}

	// No cluster of the project has Workload Identity yet.
	_, err := e.run(e.gcp.AddServiceAccountIAMMember, add)
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeWorkloadPoolMissing, appErr.Type())
	assert.Contains(t, appErr.Error(), "workload pool "+emuProject+".svc.id.goog does not exist: enable Workload Identity on a cluster of project "+emuProject+" first")
	assert.Zero(t, e.count("iam.projects.serviceAccounts.setIamPolicy"))

	e.runStep(e.gcp.SetWorkloadPool, emuClusterRef)

	// Someone else's conditional grant of the same role must survive.
	cond := &iam.Expr{Title: "temporary", Expression: `request.time < timestamp("2030-01-01T00:00:00Z")`}
	_, err = e.iamClient().Projects.ServiceAccounts.SetIamPolicy(serviceAccountResource(sa.Email), &iam.SetIamPolicyRequest{Policy: &iam.Policy{
		Version: 3,
		Bindings: []*iam.Binding{
			{Role: "roles/iam.workloadIdentityUser", Members: []string{"user:alice@example.com"}, Condition: cond},
			{Role: "roles/iam.serviceAccountUser", Members: []string{"user:bob@example.com"}},
		},
	}}).Do()
	require.NoError(t, err)

	res := e.runStep(e.gcp.AddServiceAccountIAMMember, add)
	assert.True(t, res.Changed)
	p := e.saPolicy(sa.Email)
	assert.True(t, p.HasMember("roles/iam.workloadIdentityUser", wiMember))
	assert.True(t, p.HasMember("roles/iam.serviceAccountUser", "user:bob@example.com"))
	assert.EqualValues(t, 3, p.Version)
	var kept bool
	for _, b := range p.Bindings {
		if b.Condition != nil && b.Condition.Title == "temporary" && slices.Contains(b.Members, "user:alice@example.com") {
			kept = true
		}
	}
	assert.True(t, kept, "conditional binding preserved: %+v", p.Bindings)

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.AddServiceAccountIAMMember, add).Changed)
	assert.Empty(t, e.mutatingCalls())

	res = e.runStep(e.gcp.RemoveServiceAccountIAMMember, add)
	assert.True(t, res.Changed)
	p = e.saPolicy(sa.Email)
	assert.False(t, p.HasMember("roles/iam.workloadIdentityUser", wiMember))
	assert.True(t, p.HasMember("roles/iam.serviceAccountUser", "user:bob@example.com"))
	for _, b := range p.Bindings {
		if b.Role == "roles/iam.workloadIdentityUser" {
			assert.NotNil(t, b.Condition, "only the conditional binding is left for the role")
		}
	}

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.RemoveServiceAccountIAMMember, add).Changed)
	assert.Empty(t, e.mutatingCalls())
}

func TestGCPServiceAccountIAMConcurrentWriters(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("shared-gsa")

	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range 10 {
		g := e.newGCP() // ten worker processes: nothing serializes them but the etag
		wg.Go(func() {
			_, errs[i] = activityEnv(g).ExecuteActivity(g.AddServiceAccountIAMMember, ServiceAccountIAMInput{
				ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator",
				Member: fmt.Sprintf("user:u%d@example.com", i),
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "writer %d", i)
	}
	p := e.saPolicy(sa.Email)
	for i := range 10 {
		assert.True(t, p.HasMember("roles/iam.serviceAccountTokenCreator", fmt.Sprintf("user:u%d@example.com", i)), "member %d", i)
	}
	conflicts := 0
	for _, r := range e.emu.RecentRequests() {
		if r.Method == "iam.projects.serviceAccounts.setIamPolicy" && r.Status == 409 {
			conflicts++
		}
	}
	t.Logf("setIamPolicy calls: %d, of which 409: %d", e.count("iam.projects.serviceAccounts.setIamPolicy"), conflicts)
}

func TestGCPServiceAccountIAMSameProcessSerialized(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("shared-gsa")
	e.emu.ResetRequestLog()

	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			_, err := activityEnv(e.gcp).ExecuteActivity(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
				ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator",
				Member: fmt.Sprintf("user:u%d@example.com", i),
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	sets := e.count("iam.projects.serviceAccounts.setIamPolicy")
	assert.LessOrEqual(t, sets, 10, "concurrent changes share writes")
	for _, r := range e.emu.RecentRequests() {
		assert.False(t, r.Method == "iam.projects.serviceAccounts.setIamPolicy" && r.Status == 409, "no lost races within one process")
	}
	p := e.saPolicy(sa.Email)
	for i := range 10 {
		assert.True(t, p.HasMember("roles/iam.serviceAccountTokenCreator", fmt.Sprintf("user:u%d@example.com", i)))
	}
}

func TestGCPPermissionDeniedNamesPermissionAndRole(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperatorRoles = []string{"roles/iam.serviceAccountViewer", "roles/container.clusterViewer", "roles/serviceusage.serviceUsageViewer"}
	e := newGCPEmu(t, cfg)

	_, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "carto-backend"})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	assert.Contains(t, appErr.Error(), "iam.serviceAccounts.create")
	assert.Contains(t, appErr.Error(), "roles/iam.serviceAccountAdmin")

	_, err = e.run(e.gcp.SetWorkloadPool, emuClusterRef)
	appErr = requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	assert.Contains(t, appErr.Error(), "container.clusters.update")
	assert.Contains(t, appErr.Error(), "roles/container.clusterAdmin")

	_, err = e.run(e.gcp.EnableService, EnableServiceInput{Project: emuProject, Service: "iamcredentials.googleapis.com"})
	appErr = requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, appErr.Error(), "serviceusage.services.enable")
	assert.Contains(t, appErr.Error(), "roles/serviceusage.serviceUsageAdmin")
}

func TestGCPTransientFaultsAreRetryable(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("carto-backend")
	e.emu.SetFaults([]gcpemu.FaultRule{{Method: "iam.projects.serviceAccounts.getIamPolicy", Sequence: []int{503, 503, 503}}})

	in := ServiceAccountIAMInput{ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + sa.Email}
	var res StepResult
	attempts := 0
	for ; attempts < 5; attempts++ {
		val, err := e.run(e.gcp.AddServiceAccountIAMMember, in)
		if err == nil {
			require.NoError(t, val.Get(&res))
			break
		}
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			require.False(t, appErr.NonRetryable(), "a 503 must stay retryable: %v", err)
		}
	}
	assert.Equal(t, 3, attempts, "three failed attempts, the fourth succeeds")
	assert.True(t, res.Changed)
	assert.True(t, e.saPolicy(sa.Email).HasMember(in.Role, in.Member))
}

func TestGCPBigQueryAccessProjectLevel(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("carto-backend")
	member := "serviceAccount:" + sa.Email
	in := BigQueryAccessInput{Member: member, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp"}

	res := e.runStep(e.gcp.GrantBigQueryAccess, in)
	assert.True(t, res.Changed)
	assert.True(t, e.projectPolicy("data-proj").HasMember("roles/bigquery.dataEditor", member))
	assert.True(t, e.projectPolicy("bill-proj").HasMember("roles/bigquery.jobUser", member))
	ds, err := e.bigQueryClient().Datasets.Get("bill-proj", "carto_temp").Do()
	require.NoError(t, err, "temp dataset created")
	assert.Equal(t, "US", ds.Location)
	assert.True(t, slices.ContainsFunc(ds.Access, func(a *bigquery.DatasetAccess) bool {
		return accessEntryMatches(a, "roles/bigquery.dataEditor", member)
	}), "dataEditor on the temp dataset: %+v", ds.Access)

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.GrantBigQueryAccess, in).Changed)
	assert.Empty(t, e.mutatingCalls())

	res = e.runStep(e.gcp.RevokeBigQueryAccess, in)
	assert.True(t, res.Changed)
	assert.False(t, e.projectPolicy("data-proj").HasMember("roles/bigquery.dataEditor", member))
	assert.False(t, e.projectPolicy("bill-proj").HasMember("roles/bigquery.jobUser", member))
	assert.False(t, slices.ContainsFunc(e.datasetAccess("bill-proj", "carto_temp"), func(a *bigquery.DatasetAccess) bool {
		return accessEntryMatches(a, "roles/bigquery.dataEditor", member)
	}))

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.RevokeBigQueryAccess, in).Changed)
	assert.Empty(t, e.mutatingCalls())
}

func TestGCPBigQueryAccessDatasets(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.Projects[2].Datasets = []gcpemu.DatasetConfig{{ID: "carto_temp", Location: "EU"}}
	e := newGCPEmu(t, cfg)
	sa := e.createServiceAccount("carto-backend")
	member := "serviceAccount:" + sa.Email
	in := BigQueryAccessInput{Member: member, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp", Datasets: []string{"sales"}}

	res := e.runStep(e.gcp.GrantBigQueryAccess, in)
	assert.True(t, res.Changed)
	hasEditor := func(a *bigquery.DatasetAccess) bool {
		return accessEntryMatches(a, "roles/bigquery.dataEditor", member)
	}
	assert.True(t, slices.ContainsFunc(e.datasetAccess("data-proj", "sales"), hasEditor))
	assert.False(t, slices.ContainsFunc(e.datasetAccess("data-proj", "hr"), hasEditor), "only the listed datasets")
	assert.False(t, e.projectPolicy("data-proj").HasMember("roles/bigquery.dataEditor", member), "no project-wide grant")
	assert.Zero(t, e.count("bigquery.datasets.insert"), "existing temp dataset reused")

	e.emu.ResetRequestLog()
	assert.False(t, e.runStep(e.gcp.GrantBigQueryAccess, in).Changed)
	assert.Empty(t, e.mutatingCalls())

	assert.True(t, e.runStep(e.gcp.RevokeBigQueryAccess, in).Changed)
	assert.False(t, slices.ContainsFunc(e.datasetAccess("data-proj", "sales"), hasEditor))
	_, err := e.bigQueryClient().Datasets.Get("bill-proj", "carto_temp").Do()
	assert.NoError(t, err, "revoke keeps the temp dataset")
}

func TestGCPBigQueryAccessConcurrentConnections(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.Projects[2].Datasets = []gcpemu.DatasetConfig{{ID: "carto_temp", Location: "EU"}}
	e := newGCPEmu(t, cfg)

	// Five workers grant five members at once: the dataset patches race on the
	// etag (412) and the project policies on theirs (409).
	const n = 5
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		g := e.newGCP()
		wg.Go(func() {
			_, errs[i] = activityEnv(g).ExecuteActivity(g.GrantBigQueryAccess, BigQueryAccessInput{
				Member: fmt.Sprintf("user:u%d@example.com", i), DataProject: "data-proj", BillingProject: "bill-proj",
				TempDataset: "carto_temp", Datasets: []string{"sales"},
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "worker %d", i)
	}
	sales, temp := e.datasetAccess("data-proj", "sales"), e.datasetAccess("bill-proj", "carto_temp")
	billing := e.projectPolicy("bill-proj")
	for i := range n {
		member := fmt.Sprintf("user:u%d@example.com", i)
		has := func(a *bigquery.DatasetAccess) bool {
			return accessEntryMatches(a, "roles/bigquery.dataEditor", member)
		}
		assert.True(t, slices.ContainsFunc(sales, has), member)
		assert.True(t, slices.ContainsFunc(temp, has), member)
		assert.True(t, billing.HasMember("roles/bigquery.jobUser", member), member)
	}
	statuses := map[int]int{}
	for _, r := range e.emu.RecentRequests() {
		if r.Method == "bigquery.datasets.patch" || r.Method == "cloudresourcemanager.projects.setIamPolicy" {
			statuses[r.Status]++
		}
	}
	t.Logf("write statuses: %v", statuses)
}

func TestGCPSetWorkloadPoolPollFailureResumesSameOperation(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperationDuration = 500 * time.Millisecond
	e := newGCPEmu(t, cfg)
	e.emu.SetFaults([]gcpemu.FaultRule{{Method: "container.projects.locations.operations.get", Sequence: []int{503}}})

	// First attempt: starts the update, heartbeats it, then a poll fails.
	env := activityEnv(e.gcp)
	var mu sync.Mutex
	var last operationProgress
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
		mu.Lock()
		defer mu.Unlock()
		_ = details.Get(&last)
	})
	_, err := env.ExecuteActivity(e.gcp.SetWorkloadPool, emuClusterRef)
	appErr := requireActivityAppError(t, err)
	assert.False(t, appErr.NonRetryable(), "a failed poll is retryable")
	mu.Lock()
	progress := last
	mu.Unlock()
	require.NotEmpty(t, progress.Operation)
	require.True(t, progress.Ours)

	// Retry, as Temporal does, with the last heartbeat: it waits on that operation.
	env = activityEnv(e.gcp)
	env.SetHeartbeatDetails(progress)
	val, err := env.ExecuteActivity(e.gcp.SetWorkloadPool, emuClusterRef)
	require.NoError(t, err)
	var res StepResult
	require.NoError(t, val.Get(&res))
	assert.True(t, res.Changed)
	assert.Equal(t, 1, e.count("container.projects.locations.clusters.update"), "one operation across both attempts")
}

func TestGCPSetWorkloadPoolStopsBeforeDeadlineRetryably(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.OperationDuration = time.Minute
	e := newGCPEmu(t, cfg)
	e.startForeignNodePoolUpdate("pool-2", "GCE_METADATA")

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := e.gcp.SetWorkloadPool(ctx, emuClusterRef)
	assert.NoError(t, ctx.Err(), "it returned before the deadline")
	appErr := requireActivityAppError(t, err)
	assert.False(t, appErr.NonRetryable(), "a busy cluster never fails the onboarding")
	assert.Equal(t, contract.ErrTypeOperationPending, appErr.Type())
}

// The Verifier builds its clients with these helpers; they must reach the same
// endpoints and classify the same way.
func TestGCPVerifierClientsWalkTheChain(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	ctx := context.Background()
	e.runStep(e.gcp.EnableService, EnableServiceInput{Project: emuProject, Service: "iamcredentials.googleapis.com"})
	sa := e.createServiceAccount("carto-backend")

	creds, err := NewIAMCredentialsService(ctx, e.eps, e.opts...)
	require.NoError(t, err)
	req := &iamcredentials.GenerateAccessTokenRequest{Scope: []string{"https://www.googleapis.com/auth/cloud-platform"}}
	_, err = creds.Projects.ServiceAccounts.GenerateAccessToken(serviceAccountResource(sa.Email), req).Do()
	appErr := requireActivityAppError(t, ClassifyGoogleError(err, "generate access token", ""))
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	assert.Contains(t, appErr.Error(), "iam.serviceAccounts.getAccessToken")

	e.runStep(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
		ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + emuOperator,
	})
	tok, err := creds.Projects.ServiceAccounts.GenerateAccessToken(serviceAccountResource(sa.Email), req).Do()
	require.NoError(t, err)
	require.NotEmpty(t, tok.AccessToken)

	asGSA, err := NewBigQueryService(ctx, e.eps, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok.AccessToken})))
	require.NoError(t, err)
	_, err = asGSA.Jobs.Query("bill-proj", &bigquery.QueryRequest{Query: "SELECT 1", UseLegacySql: new(false)}).Do()
	appErr = requireActivityAppError(t, ClassifyGoogleError(err, "run query", ""))
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type(), "no BigQuery roles yet")

	e.runStep(e.gcp.GrantBigQueryAccess, BigQueryAccessInput{
		Member: "serviceAccount:" + sa.Email, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp",
	})
	_, err = asGSA.Jobs.Query("bill-proj", &bigquery.QueryRequest{Query: "SELECT 1", UseLegacySql: new(false)}).Do()
	assert.NoError(t, err, "granted")

	stsSvc, err := NewSTSService(ctx, e.eps)
	require.NoError(t, err)
	_, err = stsSvc.V1.Token(&sts.GoogleIdentityStsV1ExchangeTokenRequest{
		GrantType:          "urn:ietf:params:oauth:grant-type:token-exchange",
		Audience:           "identitynamespace:" + emuProject + ".svc.id.goog:https://container.googleapis.com/v1/projects/" + emuProject + "/locations/" + emuLocation + "/clusters/" + emuCluster,
		Scope:              "https://www.googleapis.com/auth/cloud-platform",
		RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
		SubjectTokenType:   "urn:ietf:params:oauth:token-type:jwt",
		SubjectToken:       "not-a-jwt",
	}).Do()
	parsed, ok := ParseGoogleAPIError(err)
	require.True(t, ok, "STS answered with an API error: %v", err)
	assert.Equal(t, 400, parsed.HTTPCode)
	assert.NotEmpty(t, parsed.Reason, "OAuth error code parsed")
}

func TestGCPEnsureServiceAccountCreateRace(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	byHand, err := e.iamClient().Projects.ServiceAccounts.Create("projects/"+emuProject, &iam.CreateServiceAccountRequest{AccountId: "raced-by-hand"}).Do()
	require.NoError(t, err)
	mine := e.createServiceAccount("raced-by-us")
	e.emu.ResetRequestLog()

	// The look-up misses both accounts (as if they were created just after it), so
	// the create meets ALREADY_EXISTS and the account is read back.
	e.emu.SetFaults([]gcpemu.FaultRule{{Method: "iam.projects.serviceAccounts.get", Sequence: []int{404}}})
	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "raced-by-hand"})
	require.NoError(t, err)
	var got ServiceAccount
	require.NoError(t, val.Get(&got))
	assert.Equal(t, ServiceAccount{Email: byHand.Email, UniqueID: byHand.UniqueId, Created: false}, got, "someone else's account")

	e.emu.SetFaults([]gcpemu.FaultRule{{Method: "iam.projects.serviceAccounts.get", Sequence: []int{404}}})
	val, err = e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "raced-by-us"})
	require.NoError(t, err)
	require.NoError(t, val.Get(&got))
	assert.Equal(t, mine, got, "an earlier attempt of this workflow created it")
	for _, r := range e.emu.RecentRequests() {
		if r.Method == "iam.projects.serviceAccounts.create" {
			assert.Equal(t, 409, r.Status, "no account was created twice")
		}
	}
	assert.Equal(t, 2, e.count("iam.projects.serviceAccounts.create"))
}

func TestGCPSTSServiceIgnoresCredentialOptions(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	// The worker's options carry its credentials; STS must still build and send none.
	stsSvc, err := NewSTSService(context.Background(), e.eps, e.opts...)
	require.NoError(t, err)
	_, err = stsSvc.V1.Token(&sts.GoogleIdentityStsV1ExchangeTokenRequest{GrantType: "urn:ietf:params:oauth:grant-type:token-exchange"}).Do()
	parsed, ok := ParseGoogleAPIError(err)
	require.True(t, ok, "%v", err)
	assert.Equal(t, 400, parsed.HTTPCode)
	for _, r := range e.emu.RecentRequests() {
		if r.Method == "sts.token" {
			assert.Empty(t, r.Principal, "no credentials sent to STS")
		}
	}
}
