package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/internal/testlog"
	"github.com/gkewi/gkewi/worker/config"
	"github.com/gkewi/gkewi/worker/workertest"
	"github.com/gkewi/gkewi/workflows"
)

// nowhereConfig points every dependency at addresses where nothing listens.
func nowhereConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: nowhere
  context:
    cluster: nowhere
    user: nobody
current-context: nowhere
users:
- name: nobody
  user:
    token: not-a-real-token
`), 0o600))
	tokenFile := filepath.Join(dir, "gcp-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("emulator-token\n"), 0o600))

	var out bytes.Buffer
	cfg, err := config.Load([]string{
		"--kubeconfig", kubeconfig,
		"--gcp-endpoint", "serviceusage=http://127.0.0.1:1,container=http://127.0.0.1:1,iam=http://127.0.0.1:1",
		"--gcp-endpoint", "cloudresourcemanager=http://127.0.0.1:1,bigquery=http://127.0.0.1:1",
		"--gcp-endpoint", "sts=http://127.0.0.1:1,iamcredentials=http://127.0.0.1:1",
		"--gcp-access-token-file", tokenFile,
		"--helm-artifacts-dir", filepath.Join(dir, "artifacts"),
		"--smtp-addr", "127.0.0.1:1", "--smtp-from", "gkewi@example.com",
		"--temporal-ui-url", "http://127.0.0.1:1",
		"--stop-timeout", "5s",
		"--http-addr", "127.0.0.1:0",
	}, func(string) (string, bool) { return "", false }, &out)
	require.NoError(t, err, out.String())
	return cfg
}

// isolateTemporalEnv makes the Temporal connection come from addr only.
func isolateTemporalEnv(t *testing.T, addr string) {
	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "absent.toml"))
	t.Setenv("TEMPORAL_PROFILE", "")
	t.Setenv("TEMPORAL_ADDRESS", addr)
	t.Setenv("TEMPORAL_NAMESPACE", "default")
}

func TestGraphValidates(t *testing.T) {
	require.NoError(t, fx.ValidateApp(Module(nowhereConfig(t), io.Discard)))
}

func TestGraphBuildsWithoutReachingAnything(t *testing.T) {
	isolateTemporalEnv(t, "127.0.0.1:1")
	var (
		acts Activities
		w    worker.Worker
		logs testlog.Buffer
	)
	app := fx.New(Module(nowhereConfig(t), &logs), fx.Populate(&acts, &w), fx.StartTimeout(3*time.Second))
	require.NoError(t, app.Err(), "every constructor must succeed without a network")
	assert.NotNil(t, acts.GCP)
	assert.NotNil(t, acts.Kube)
	assert.NotNil(t, acts.Helm)
	assert.NotNil(t, acts.Notifier)
	assert.NotNil(t, acts.Verifier)
	assert.NotNil(t, acts.Schedules)
	assert.NotNil(t, acts.Grants)
	assert.NotNil(t, w)

	// Starting needs Temporal: the failure says where it looked.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := app.Start(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot reach Temporal at 127.0.0.1:1 (set TEMPORAL_ADDRESS)")
}

func TestMissingKubeconfigOutsideAClusterIsAClearError(t *testing.T) {
	isolateTemporalEnv(t, "127.0.0.1:1")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cfg := nowhereConfig(t)
	cfg.Kubeconfig = ""
	app := fx.New(Module(cfg, io.Discard))
	require.Error(t, app.Err())
	assert.Contains(t, app.Err().Error(), "no kubeconfig configured (--kubeconfig, GKEWI_KUBECONFIG) and not running in a cluster")
}

func TestWorkerPollsAndStopsAgainstDevServer(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{})
	isolateTemporalEnv(t, srv.FrontendHostPort())
	cfg := nowhereConfig(t)
	cfg.TaskQueue = "gkewi-worker-test"

	var logs testlog.Buffer
	app := fxtest.New(t, Module(cfg, &logs))
	app.RequireStart()

	// The worker's pollers show up on the task queue, under its identity.
	c := srv.Client()
	require.Eventually(t, func() bool {
		resp, err := c.WorkflowService().DescribeTaskQueue(context.Background(), &workflowservice.DescribeTaskQueueRequest{
			Namespace:     "default",
			TaskQueue:     &taskqueuepb.TaskQueue{Name: cfg.TaskQueue, Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
			TaskQueueType: enumspb.TASK_QUEUE_TYPE_ACTIVITY,
		})
		if err != nil {
			return false
		}
		for _, p := range resp.GetPollers() {
			if strings.HasPrefix(p.GetIdentity(), "gkewi-worker@") {
				return true
			}
		}
		return false
	}, 20*time.Second, 200*time.Millisecond, "no gkewi-worker poller on the activity task queue")

	// The sweep schedule exists, aimed at the worker's task queue.
	ctx := context.Background()
	desc, err := c.ScheduleClient().GetHandle(ctx, workflows.SweepScheduleID).Describe(ctx)
	require.NoError(t, err)
	require.Len(t, desc.Schedule.Spec.Intervals, 1)
	assert.Equal(t, time.Hour, desc.Schedule.Spec.Intervals[0].Every)
	action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	require.True(t, ok, "action %T", desc.Schedule.Action)
	assert.Equal(t, workflows.SweepWorkflowName, action.Workflow)
	assert.Equal(t, cfg.TaskQueue, action.TaskQueue)

	// The worker runs a sweep: its Grants activities reach Temporal's visibility.
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "sweep-on-the-worker", TaskQueue: cfg.TaskQueue},
		workflows.SweepWorkflowName, workflows.SweepRequest{DryRun: true})
	require.NoError(t, err)
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var sweep workflows.SweepResult
	require.NoError(t, run.Get(runCtx, &sweep))
	assert.Zero(t, sweep.Expired)

	app.RequireStop()
	out := logs.String()
	for _, want := range []string{
		"connected to Temporal",
		"worker polling",
		`msg="sweep schedule ensured" detail="created schedule gkewi-sweep, every 1h0m0s" created=true`,
		"taskQueue=gkewi-worker-test",
		"worker stopping; waiting for in-flight activities",
		"stopTimeout=5s",
		"worker stopped",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "search attribute missing")

	// A restart leaves the existing schedule alone.
	var again testlog.Buffer
	restarted := fxtest.New(t, Module(cfg, &again))
	restarted.RequireStart()
	restarted.RequireStop()
	assert.Contains(t, again.String(), `msg="sweep schedule ensured" detail="schedule gkewi-sweep already exists" created=false`)
}

func TestWorkerWarnsAboutMissingSearchAttributes(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{WithoutSearchAttributes: true})
	isolateTemporalEnv(t, srv.FrontendHostPort())
	var logs testlog.Buffer
	cfg := nowhereConfig(t)
	cfg.SweepInterval = 0
	app := fxtest.New(t, Module(cfg, &logs))
	app.RequireStart()
	app.RequireStop()
	out := logs.String()
	assert.Contains(t, out, `name=GkewiState create="temporal operator search-attribute create --namespace default --name GkewiState --type Keyword"`)
	assert.Contains(t, out, `name=GkewiExpiry create="temporal operator search-attribute create --namespace default --name GkewiExpiry --type Datetime"`)

	// With the sweep interval 0 no sweep schedule is created.
	assert.Contains(t, out, "sweep schedule not managed (sweepInterval 0)")
	ctx := context.Background()
	_, err := srv.Client().ScheduleClient().GetHandle(ctx, workflows.SweepScheduleID).Describe(ctx)
	var notFound *serviceerror.NotFound
	assert.ErrorAs(t, err, &notFound)
}

type failingScheduler struct{ err error }

func (f failingScheduler) EnsureSweepSchedule(context.Context, activities.RecurringScheduleInput) (activities.StepResult, error) {
	return activities.StepResult{}, f.err
}

func TestSweepScheduleFailureOnlyWarns(t *testing.T) {
	var logs bytes.Buffer
	cfg := config.Defaults()
	cfg.TaskQueue = "team-q"
	ensureSweepSchedule(context.Background(), failingScheduler{errors.New("permission denied")}, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	out := logs.String()
	assert.Contains(t, out, "level=WARN msg=\"cannot ensure the sweep schedule")
	assert.Contains(t, out, `error="permission denied"`)
	assert.Contains(t, out, `create="temporal schedule create --schedule-id gkewi-sweep --interval 1h0m0s --overlap-policy Skip --catchup-window 1h0m0s --workflow-id gkewi-sweep --type Sweep --task-queue team-q --input '{}'"`)
}
