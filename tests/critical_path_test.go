package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/workflows"
)

const callSetSAPolicy = "iam.projects.serviceAccounts.setIamPolicy"

// On a cluster without Workload Identity, support is asked as soon as the GSA
// exists and decides while the cluster is prepared (each GKE operation takes the
// sandbox's 2 s); the binding is made right after the approval, and the rollout
// starts once the node pools are done. The order is read from the emulator's
// request log and the Kubernetes API, not from the workflow's status.
func TestSupportDecidesWhileTheClusterIsPrepared(t *testing.T) {
	requireSandbox(t)
	resetWorkloadIdentity(t)
	req := onboardRequest(t, "cp-overlap").WithDefaults()
	since := time.Now()
	id := startOnboard(t, req)

	s := pollStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	approvedAt := time.Now()
	approveAndComplete(t, id)

	var bind, lastNodePool time.Time
	for _, r := range callsSince(since) {
		switch {
		case r.Method == callSetSAPolicy && r.Status == 200 && r.Time.After(approvedAt) && bind.IsZero():
			bind = r.Time
		case r.Method == callNodePoolUpdate && r.Status == 200:
			lastNodePool = r.Time
		}
	}
	require.False(t, bind.IsZero(), "no binding after the approval")
	require.False(t, lastNodePool.IsZero(), "no node pool update")
	assert.True(t, approvedAt.Before(lastNodePool), "support was asked, and answered, before the node pools were done")
	assert.True(t, bind.Before(lastNodePool), "the binding (%s) did not wait for the node pools (last update %s)",
		bind.Format(time.StampMilli), lastNodePool.Format(time.StampMilli))

	// The rollout began after the last node pool update was asked for (and
	// done: the workflow waits for its operation); the API stamps seconds.
	deps, err := sandbox.KubeClient().AppsV1().Deployments(req.Namespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, deps.Items)
	for _, d := range deps.Items {
		assert.False(t, d.CreationTimestamp.Time.Before(lastNodePool.Truncate(time.Second)),
			"deployment %s created at %s, before the last node pool update at %s", d.Name, d.CreationTimestamp, lastNodePool.Format(time.StampMilli))
	}
}
