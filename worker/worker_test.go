package worker

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/worker"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/gkewi/gkewi/worker/config"
	"github.com/gkewi/gkewi/worker/workertest"
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
		logs syncBuffer
	)
	app := fx.New(Module(nowhereConfig(t), &logs), fx.Populate(&acts, &w), fx.StartTimeout(3*time.Second))
	require.NoError(t, app.Err(), "every constructor must succeed without a network")
	assert.NotNil(t, acts.GCP)
	assert.NotNil(t, acts.Kube)
	assert.NotNil(t, acts.Helm)
	assert.NotNil(t, acts.Notifier)
	assert.NotNil(t, acts.Verifier)
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

	var logs syncBuffer
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

	app.RequireStop()
	out := logs.String()
	for _, want := range []string{
		"connected to Temporal",
		"worker polling",
		"taskQueue=gkewi-worker-test",
		"worker stopping; waiting for in-flight activities",
		"stopTimeout=5s",
		"worker stopped",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "search attribute missing")
}

func TestWorkerWarnsAboutMissingSearchAttributes(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{WithoutSearchAttributes: true})
	isolateTemporalEnv(t, srv.FrontendHostPort())
	var logs syncBuffer
	app := fxtest.New(t, Module(nowhereConfig(t), &logs))
	app.RequireStart()
	app.RequireStop()
	out := logs.String()
	assert.Contains(t, out, `name=GkewiState create="temporal operator search-attribute create --namespace default --name GkewiState --type Keyword"`)
	assert.Contains(t, out, `name=GkewiExpiry create="temporal operator search-attribute create --namespace default --name GkewiExpiry --type Datetime"`)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
