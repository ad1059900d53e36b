package gcpemu

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	container "google.golang.org/api/container/v1"
)

func withOperationDuration(d time.Duration) envOption {
	return func(c *Config) { c.OperationDuration = d }
}

func TestClusterShape(t *testing.T) {
	e := newEnv(t)
	cl, err := e.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, "c1", cl.Name)
	assert.Equal(t, "RUNNING", cl.Status)
	assert.Equal(t, "1.33.5-gke.100", cl.CurrentMasterVersion)
	assert.Nil(t, cl.WorkloadIdentityConfig, "Workload Identity starts off")
	require.Len(t, cl.NodePools, 2)
	assert.Nil(t, cl.NodePools[0].Config.WorkloadMetadataConfig)

	list, err := e.gke(e.opTok).Projects.Locations.Clusters.List("projects/" + testProject + "/locations/-").Do()
	require.NoError(t, err)
	require.Len(t, list.Clusters, 1)

	pools, err := e.gke(e.opTok).Projects.Locations.Clusters.NodePools.List(clusterName()).Do()
	require.NoError(t, err)
	var names []string
	for _, p := range pools.NodePools {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"default-pool", "pool-b"}, names)

	_, err = e.gke(e.opTok).Projects.Locations.Clusters.Get("projects/proj-a/locations/us-central1/clusters/nope").Do()
	ge := apiErr(t, err, http.StatusNotFound)
	assert.Equal(t, "Not found: projects/proj-a/locations/us-central1/clusters/nope.", ge.Message)

	_, err = e.gke(e.opTok).Projects.Locations.Clusters.NodePools.Get(clusterName() + "/nodePools/nope").Do()
	requireAPIError(t, err, http.StatusNotFound)
}

func TestClusterOperationLifecycleAndBusyCluster(t *testing.T) {
	e := newEnv(t, withOperationDuration(3*time.Minute))
	gke := e.gke(e.opTok)

	op, err := gke.Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "PENDING", op.Status)
	assert.Equal(t, "UPDATE_CLUSTER", op.OperationType)
	assert.True(t, strings.HasPrefix(op.Name, "operation-"), op.Name)
	assert.Equal(t, "https://container.googleapis.com/v1/projects/314159265358/locations/us-central1/clusters/c1", op.TargetLink)
	opName := "projects/" + testProject + "/locations/" + testLocation + "/operations/" + op.Name

	e.clock.Advance(30 * time.Second)
	got, err := gke.Projects.Locations.Operations.Get(opName).Do()
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", got.Status)

	cl, err := gke.Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, "RECONCILING", cl.Status)
	assert.Nil(t, cl.WorkloadIdentityConfig, "the change lands only when the operation is done")

	// A second mutation while the first runs is refused.
	_, err = gke.Projects.Locations.Clusters.NodePools.Update(clusterName()+"/nodePools/default-pool", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "FAILED_PRECONDITION", status(t, ge))
	assert.Equal(t, "Cluster is running incompatible operation "+op.Name+".", ge.Message)
	assert.NotContains(t, ge.Body, "ErrorInfo", "GKE names the running operation only in the message")

	e.clock.Advance(3 * time.Minute)
	got, err = gke.Projects.Locations.Operations.Get(opName).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", got.Status)
	assert.NotEmpty(t, got.EndTime)
	cl, err = gke.Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", cl.Status)
	require.NotNil(t, cl.WorkloadIdentityConfig)
	assert.Equal(t, testPool, cl.WorkloadIdentityConfig.WorkloadPool)

	// Now the node pool update goes through, and its nodes are relabelled when done.
	npOp, err := gke.Projects.Locations.Clusters.NodePools.Update(clusterName()+"/nodePools/default-pool", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "UPGRADE_NODES", npOp.OperationType)
	assert.Empty(t, e.nodes.Calls())
	np, err := gke.Projects.Locations.Clusters.NodePools.Get(clusterName() + "/nodePools/default-pool").Do()
	require.NoError(t, err)
	assert.Equal(t, "RECONCILING", np.Status)
	assert.Nil(t, np.Config.WorkloadMetadataConfig)

	e.clock.Advance(3 * time.Minute)
	np, err = gke.Projects.Locations.Clusters.NodePools.Get(clusterName() + "/nodePools/default-pool").Do()
	require.NoError(t, err)
	require.NotNil(t, np.Config.WorkloadMetadataConfig)
	assert.Equal(t, "GKE_METADATA", np.Config.WorkloadMetadataConfig.Mode)
	calls := e.nodes.Calls()
	require.Len(t, calls, 1)
	assert.Equal(t, "default-pool", calls[0].Pool)
	require.NotNil(t, calls[0].Labels["iam.gke.io/gke-metadata-server-enabled"])
	assert.Equal(t, "true", *calls[0].Labels["iam.gke.io/gke-metadata-server-enabled"])

	ops, err := gke.Projects.Locations.Operations.List("projects/" + testProject + "/locations/" + testLocation).Do()
	require.NoError(t, err)
	require.Len(t, ops.Operations, 2)
	for _, o := range ops.Operations {
		assert.Equal(t, "DONE", o.Status)
	}
}

func TestNodePoolNeedsWorkloadPool(t *testing.T) {
	e := newEnv(t)
	_, err := e.gke(e.opTok).Projects.Locations.Clusters.NodePools.Update(clusterName()+"/nodePools/default-pool", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "FAILED_PRECONDITION", status(t, ge))

	_, err = e.gke(e.opTok).Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: "other.svc.id.goog"}},
	}).Do()
	ge = apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "INVALID_ARGUMENT", status(t, ge))
}

func TestImmediateOperationsWhenDurationZero(t *testing.T) {
	e := newEnv(t)
	op, err := e.gke(e.opTok).Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", op.Status)
	cl, err := e.gke(e.opTok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	assert.Equal(t, testPool, cl.WorkloadIdentityConfig.WorkloadPool)
}

func TestClusterUpdateNeedsPermission(t *testing.T) {
	e := newEnv(t)
	viewer := "user:viewer@example.com"
	e.grantProjectRole(t, "roles/container.viewer", viewer)
	tok := e.emu.MintAccessToken(viewer)
	_, err := e.gke(tok).Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	_, err = e.gke(tok).Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, `Required "container.clusters.update" permission(s) for "projects/proj-a/locations/us-central1/clusters/c1".`, ge.Message)
}

// Operations as GKE writes them (Config Connector's recorded traffic):
// operation-<ms>-<uuid> names, "zone" but no "location", and links in the
// older /zones/ form for a zonal cluster.
func TestOperationShape(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.Projects[0].Clusters = append(c.Projects[0].Clusters, ClusterConfig{Location: "us-central1-a", Name: "zonal", NodePools: []string{"p"}})
	}))
	gke := e.gke(e.opTok)
	for _, loc := range []string{testLocation, "us-central1-a"} {
		name := clusterName()
		where := "locations"
		if loc != testLocation {
			name, where = "projects/"+testProject+"/locations/us-central1-a/clusters/zonal", "zones"
		}
		op, err := gke.Projects.Locations.Clusters.Update(name, &container.UpdateClusterRequest{
			Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
		}).Do()
		require.NoError(t, err)
		assert.Regexp(t, `^operation-\d{13}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, op.Name)
		assert.Equal(t, loc, op.Zone)
		assert.Empty(t, op.Location)
		assert.Equal(t, fmt.Sprintf("https://container.googleapis.com/v1/projects/%d/%s/%s/operations/%s", testNumber, where, loc, op.Name), op.SelfLink)
		assert.True(t, strings.HasPrefix(op.TargetLink, fmt.Sprintf("https://container.googleapis.com/v1/projects/%d/%s/%s/clusters/", testNumber, where, loc)), op.TargetLink)
	}
}

func TestAutopilotCluster(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.Projects[0].Clusters = append(c.Projects[0].Clusters, ClusterConfig{Location: testLocation, Name: "auto", NodePools: []string{"pool-1"}, Autopilot: true})
	}))
	gke := e.gke(e.opTok)
	name := "projects/" + testProject + "/locations/" + testLocation + "/clusters/auto"
	cl, err := gke.Projects.Locations.Clusters.Get(name).Do()
	require.NoError(t, err)
	require.NotNil(t, cl.Autopilot)
	assert.True(t, cl.Autopilot.Enabled)
	require.NotNil(t, cl.WorkloadIdentityConfig, "Workload Identity is always on in Autopilot")
	assert.Equal(t, testPool, cl.WorkloadIdentityConfig.WorkloadPool)

	standard, err := gke.Projects.Locations.Clusters.Get(clusterName()).Do()
	require.NoError(t, err)
	require.NotNil(t, standard.Autopilot, "a Standard cluster shows an empty autopilot block")
	assert.False(t, standard.Autopilot.Enabled)

	const refusal = "Autopilot node pools cannot be accessed or modified."
	_, err = gke.Projects.Locations.Clusters.NodePools.List(name).Do()
	assert.Equal(t, refusal, apiErr(t, err, http.StatusBadRequest).Message)
	_, err = gke.Projects.Locations.Clusters.NodePools.Get(name + "/nodePools/pool-1").Do()
	assert.Equal(t, refusal, apiErr(t, err, http.StatusBadRequest).Message)
	_, err = gke.Projects.Locations.Clusters.NodePools.Update(name+"/nodePools/pool-1", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "INVALID_ARGUMENT", status(t, ge))
	assert.Equal(t, refusal, ge.Message)
}

// A fault rule can make the operations of a method fail: the call succeeds,
// the operation ends DONE with the error, and nothing changes.
func TestFailingOperation(t *testing.T) {
	e := newEnv(t, withOperationDuration(time.Minute), withConfig(func(c *Config) {
		c.Projects[0].Clusters[0].WorkloadPool = testPool
		c.Faults = []FaultRule{{
			Method: "container.projects.locations.clusters.nodePools.update", Sequence: []int{1, 0},
			Status: "RESOURCE_EXHAUSTED", OperationError: "Insufficient regional quota to satisfy request: resource \"CPUS\".",
		}}
	}))
	gke := e.gke(e.opTok)
	pool := clusterName() + "/nodePools/default-pool"
	update := func() *container.Operation {
		_, err := gke.Projects.Locations.Clusters.NodePools.Update(pool, &container.UpdateNodePoolRequest{
			WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GCE_METADATA"},
		}).Do()
		require.NoError(t, err)
		e.clock.Advance(time.Minute)
		ops, err := gke.Projects.Locations.Operations.List("projects/" + testProject + "/locations/" + testLocation).Do()
		require.NoError(t, err)
		return ops.Operations[len(ops.Operations)-1]
	}
	op := update()
	assert.Equal(t, "DONE", op.Status)
	require.NotNil(t, op.Error)
	assert.Equal(t, int64(8), op.Error.Code)
	assert.Equal(t, "Insufficient regional quota to satisfy request: resource \"CPUS\".", op.Error.Message)
	assert.Equal(t, op.Error.Message, op.StatusMessage)
	np, err := gke.Projects.Locations.Clusters.NodePools.Get(pool).Do()
	require.NoError(t, err)
	assert.Equal(t, "GKE_METADATA", np.Config.WorkloadMetadataConfig.Mode, "a failed operation changes nothing")

	op = update()
	assert.Nil(t, op.Error, "the rule's sequence lets the second call through")
	np, err = gke.Projects.Locations.Clusters.NodePools.Get(pool).Do()
	require.NoError(t, err)
	assert.Equal(t, "GCE_METADATA", np.Config.WorkloadMetadataConfig.Mode)
}
