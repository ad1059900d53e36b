package gcpemu

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/serviceusage/v1"
)

func TestOperationLatencyByKind(t *testing.T) {
	e := newEnv(t, withOperationDuration(time.Second))
	e.enableWorkloadPool()
	e.clock.Advance(time.Second)
	e.emu.SetLatency(OperationLatency{ClusterUpdate: 5 * time.Minute, NodePoolUpdate: 15 * time.Minute, ServiceEnable: time.Minute}, 2*time.Minute)
	gke, su := e.gke(e.opTok), e.su(e.opTok)

	// Enabling an API takes the service latency, not the cluster's.
	svc := fmt.Sprintf("projects/%s/services/iamcredentials.googleapis.com", testProject)
	enable, err := su.Services.Enable(svc, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	e.clock.Advance(59 * time.Second)
	got, err := su.Operations.Get(enable.Name).Do()
	require.NoError(t, err)
	assert.False(t, got.Done, "enabling takes a minute")
	e.clock.Advance(time.Second)
	got, err = su.Operations.Get(enable.Name).Do()
	require.NoError(t, err)
	assert.True(t, got.Done)

	op, err := gke.Projects.Locations.Clusters.Update(clusterName(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(t, err)
	opName := "projects/" + testProject + "/locations/" + testLocation + "/operations/" + op.Name
	e.clock.Advance(5*time.Minute - time.Second)
	cop, err := gke.Projects.Locations.Operations.Get(opName).Do()
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", cop.Status, "the cluster update takes 5 minutes")
	e.clock.Advance(time.Second)
	cop, err = gke.Projects.Locations.Operations.Get(opName).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", cop.Status)

	np, err := gke.Projects.Locations.Clusters.NodePools.Update(clusterName()+"/nodePools/default-pool", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	require.NoError(t, err)
	npName := "projects/" + testProject + "/locations/" + testLocation + "/operations/" + np.Name
	e.clock.Advance(14 * time.Minute)
	cop, err = gke.Projects.Locations.Operations.Get(npName).Do()
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", cop.Status, "recreating the pool's nodes takes 15 minutes")
	e.clock.Advance(time.Minute)
	cop, err = gke.Projects.Locations.Operations.Get(npName).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", cop.Status)

	// Policy changes made from now on count after the new propagation delay.
	gsa := e.createSA("latency-probe")
	resp, err := e.exchange(t, ksaClaimsFor(e.clock.Now(), testNamespace, testKSA))
	require.NoError(t, err)
	generate := func() error {
		_, err := e.creds(resp.AccessToken).Projects.ServiceAccounts.GenerateAccessToken("projects/-/serviceAccounts/"+gsa.Email,
			&iamcredentials.GenerateAccessTokenRequest{Scope: []string{"https://www.googleapis.com/auth/cloud-platform"}}).Do()
		return err
	}
	e.setSAPolicyMember(t, gsa.Email, "roles/iam.workloadIdentityUser", testWIMember, true)
	e.clock.Advance(2*time.Minute - time.Second)
	requireAPIError(t, generate(), http.StatusForbidden)
	e.clock.Advance(time.Second)
	require.NoError(t, generate())
}
