package activities

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/iamcredentials/v1"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

func TestGCPEnsureWorkloadPool(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.Projects[0].Clusters = append(cfg.Projects[0].Clusters,
		gcpemu.ClusterConfig{Location: emuLocation, Name: "autopilot", NodePools: []string{"pool-1"}, Autopilot: true})
	e := newGCPEmu(t, cfg)
	get := func(c ClusterRef) WorkloadPoolResult {
		val, err := e.run(e.gcp.EnsureWorkloadPool, c)
		require.NoError(t, err)
		var res WorkloadPoolResult
		require.NoError(t, val.Get(&res))
		return res
	}

	standard := get(ClusterRef{Project: emuProject, Location: emuLocation, Cluster: emuCluster})
	assert.False(t, standard.Autopilot)
	assert.True(t, standard.Changed)
	assert.Equal(t, "workload pool set to "+emuProject+".svc.id.goog", standard.Detail)

	auto := ClusterRef{Project: emuProject, Location: emuLocation, Cluster: "autopilot"}
	before := e.mutatingCalls()
	res := get(auto)
	assert.True(t, res.Autopilot)
	assert.False(t, res.Changed)
	assert.Contains(t, res.Detail, "Autopilot cluster: Workload Identity is always on (workload pool "+emuProject+".svc.id.goog)")
	assert.Equal(t, before, e.mutatingCalls(), "nothing is changed on an Autopilot cluster")

	// Should a node pool step run anyway, GKE's refusal is final and says why.
	_, err := e.run(e.gcp.SetNodePoolMetadata, NodePoolInput{Cluster: auto, NodePool: "pool-1"})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, appErr.Error(), "Autopilot node pools cannot be accessed or modified.")
}

// A node pool update whose operations keep failing the same way (quota,
// stockout) is retried a few times, then ends with the operation's own error.
func TestGCPRepeatedOperationFailureIsFinal(t *testing.T) {
	const quota = `Insufficient regional quota to satisfy request: resource "CPUS": request requires '12.0' and is short '4.0'.`
	cfg := defaultEmuConfig()
	cfg.Faults = []gcpemu.FaultRule{{
		Method: "container.projects.locations.clusters.nodePools.update", Status: "RESOURCE_EXHAUSTED", OperationError: quota,
	}}
	e := newGCPEmu(t, cfg)
	in := NodePoolInput{Cluster: ClusterRef{Project: emuProject, Location: emuLocation, Cluster: emuCluster}, NodePool: "pool-2"}
	e.runStep(e.gcp.SetWorkloadPool, in.Cluster)
	for attempt := 1; attempt <= maxIdenticalOperationFailures; attempt++ {
		_, err := e.run(e.gcp.SetNodePoolMetadata, in)
		appErr := requireActivityAppError(t, err)
		assert.Equal(t, contract.ErrTypeOperationFailed, appErr.Type())
		assert.Contains(t, appErr.Error(), quota)
		if attempt < maxIdenticalOperationFailures {
			assert.False(t, appErr.NonRetryable(), "attempt %d: a failed operation may be a passing shortage", attempt)
			continue
		}
		assert.True(t, appErr.NonRetryable(), "the same failure %d times in a row is final", attempt)
		assert.Contains(t, appErr.Error(), "the last 3 operations failed the same way")
	}
	assert.Equal(t, maxIdenticalOperationFailures, e.count("container.projects.locations.clusters.nodePools.update"))

	// Once the shortage is gone, the next run goes through.
	e.emu.SetFaults(nil)
	res := e.runStep(e.gcp.SetNodePoolMetadata, in)
	assert.True(t, res.Changed)
}

// Right after enabling an API Google answers SERVICE_DISABLED for a while;
// verification takes that for "not yet" only when the onboarding enabled the
// API itself, and only for a bounded time.
func TestVerifyJustEnabledAPI(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.ServiceEnableLag = time.Hour
	e := newGCPEmu(t, cfg)
	enabled := e.runStep(e.gcp.EnableService, EnableServiceInput{Project: emuProject, Service: "iamcredentials.googleapis.com"})
	require.True(t, enabled.Changed)
	sa := e.createServiceAccount("carto-backend")
	e.runStep(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
		ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + emuOperator,
	})
	creds, err := NewIAMCredentialsService(context.Background(), e.eps, e.opts...)
	require.NoError(t, err)
	_, err = creds.Projects.ServiceAccounts.GenerateAccessToken(serviceAccountResource(sa.Email),
		&iamcredentials.GenerateAccessTokenRequest{Scope: []string{cloudPlatformScope}}).Do()
	require.Error(t, err, "the API is not active yet")

	now := time.Now()
	assert.True(t, VerifyInput{ServiceEnabledAt: now.Add(-time.Minute)}.justEnabled(err, now))
	assert.False(t, VerifyInput{}.justEnabled(err, now), "an API that was on before is really off")
	assert.False(t, VerifyInput{ServiceEnabledAt: now.Add(-serviceEnableSettle - time.Second)}.justEnabled(err, now), "bounded")
	denied := requireActivityAppError(t, ClassifyGoogleError(err, "generate access token", ""))
	assert.Equal(t, contract.ErrTypeServiceDisabled, denied.Type())
}
