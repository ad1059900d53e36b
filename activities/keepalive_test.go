package activities

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const keepAliveQueue = "keepalive-test"

// quietActivity records one progress detail, then works for 3s without
// heartbeating, longer than its 1s heartbeat timeout.
func quietActivity(ctx context.Context) (string, error) {
	heartbeat(ctx, "operations/op-7")
	select {
	case <-time.After(3 * time.Second):
		return "finished", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func keepAliveWorkflow(ctx workflow.Context) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var out string
	err := workflow.ExecuteActivity(ctx, quietActivity).Get(ctx, &out)
	return out, err
}

func runKeepAliveWorkflow(t *testing.T, c client.Client, id string, interceptors []interceptor.WorkerInterceptor) client.WorkflowRun {
	t.Helper()
	w := worker.New(c, keepAliveQueue+id, worker.Options{Interceptors: interceptors})
	w.RegisterWorkflow(keepAliveWorkflow)
	w.RegisterActivity(quietActivity)
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	run, err := c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: keepAliveQueue + id}, keepAliveWorkflow)
	require.NoError(t, err)
	return run
}

// On a real server: without the keep-alive the quiet activity times out on its
// heartbeat; with it, it completes, and the server holds the activity's own
// progress detail while it runs (the ticks do not blank it).
func TestKeepAliveHeartbeatsQuietActivitiesOnDevServer(t *testing.T) {
	c := temporalTestClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	bare := runKeepAliveWorkflow(t, c, "without", nil)
	err := bare.Get(ctx, nil)
	var timeout *temporal.TimeoutError
	require.ErrorAs(t, err, &timeout, "a quiet activity without the keep-alive")
	assert.Equal(t, enumspb.TIMEOUT_TYPE_HEARTBEAT, timeout.TimeoutType())

	kept := runKeepAliveWorkflow(t, c, "with", []interceptor.WorkerInterceptor{NewKeepAliveInterceptor()})
	var details string
	require.Eventually(t, func() bool {
		desc, err := c.DescribeWorkflowExecution(ctx, kept.GetID(), "")
		if err != nil || len(desc.GetPendingActivities()) == 0 {
			return false
		}
		pa := desc.GetPendingActivities()[0]
		if pa.GetLastHeartbeatTime() == nil || pa.GetLastHeartbeatTime().AsTime().Sub(pa.GetLastStartedTime().AsTime()) < 1500*time.Millisecond {
			return false
		}
		dc := converter.GetDefaultDataConverter()
		return dc.FromPayloads(pa.GetHeartbeatDetails(), &details) == nil
	}, 10*time.Second, 100*time.Millisecond, "a heartbeat well after the activity's start")
	assert.Equal(t, "operations/op-7", details, "the activity's progress detail survives the keep-alive's ticks")
	var out string
	require.NoError(t, kept.Get(ctx, &out), "the same activity with the keep-alive")
	assert.Equal(t, "finished", out)
}

// Outside Temporal (unit tests of helpers), heartbeat does nothing.
func TestHeartbeatOutsideAnActivity(t *testing.T) {
	assert.NotPanics(t, func() { heartbeat(context.Background(), fmt.Sprint(1)) })
}
