package starter

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/worker/workertest"
	"github.com/gkewi/gkewi/workflows"
)

// pendingStandIn sets the search attributes Onboard sets: a request with an
// expiry time is a completed grant ending then, any other waits for support
// until signalled.
func pendingStandIn(ctx workflow.Context, req workflows.OnboardRequest) error {
	kw := func(name, v string) temporal.SearchAttributeUpdate {
		return temporal.NewSearchAttributeKeyKeyword(name).ValueSet(v)
	}
	ups := []temporal.SearchAttributeUpdate{kw(workflows.SearchAttrNamespace, req.Namespace), kw(workflows.SearchAttrKSA, "carto-common-backend")}
	if req.Expiry != nil && req.Expiry.At != "" {
		at, err := time.Parse(time.RFC3339, req.Expiry.At)
		if err != nil {
			return err
		}
		ups = append(ups, kw(workflows.SearchAttrState, string(workflows.StateCompleted)),
			temporal.NewSearchAttributeKeyTime(workflows.SearchAttrExpiry).ValueSet(at))
		return workflow.UpsertTypedSearchAttributes(ctx, ups...)
	}
	ups = append(ups, kw(workflows.SearchAttrState, string(workflows.StateAwaitingApproval)))
	if err := workflow.UpsertTypedSearchAttributes(ctx, ups...); err != nil {
		return err
	}
	workflow.GetSignalChannel(ctx, "stop").Receive(ctx, nil)
	return nil
}

func TestListPendingFromVisibility(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{})
	w := worker.New(srv.Client(), workflows.TaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(pendingStandIn, workflow.RegisterOptions{Name: workflows.OnboardWorkflowName})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	env := mapEnv{
		"TEMPORAL_ADDRESS":     srv.FrontendHostPort(),
		"TEMPORAL_NAMESPACE":   "default",
		"TEMPORAL_CONFIG_FILE": filepath.Join(t.TempDir(), "absent.toml"),
	}

	// Awaiting approval, started by gkewi onboard (its memo keeps the timeout).
	r := run(t, env, "", "onboard", "-f", "testdata/onboard.yaml")
	require.Equal(t, ExitOK, r.code, r.stderr)
	// Grants ending in 5h (soon) and in 10 days (not soon).
	ctx := context.Background()
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) // the tests' App.Now
	for id, in := range map[string]time.Duration{"soon": 5 * time.Hour, "later": 240 * time.Hour} {
		req := workflows.OnboardRequest{Namespace: "ns-" + id,
			Expiry: &workflows.ExpirySpec{At: now.Add(in).Format(time.RFC3339)}}
		run, err := srv.Client().ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "grant-" + id, TaskQueue: workflows.TaskQueue},
			workflows.OnboardWorkflowName, req)
		require.NoError(t, err)
		require.NoError(t, run.Get(ctx, nil))
	}

	var view pendingView
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = run(t, env, "", "list", "--pending", "--expiring-within", "72h", "-o", "json")
		view = pendingView{}
		if r.code == ExitOK && json.Unmarshal([]byte(r.stdout), &view) == nil &&
			len(view.AwaitingApproval) == 1 && len(view.ExpiringSoon) == 1 {
			break
		}
		if !time.Now().Before(deadline) {
			dbg := run(t, env, "", "list", "-o", "json")
			t.Fatalf("list --pending never showed the runs: %s%s\nall: %s", r.stdout, r.stderr, dbg.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}

	a := view.AwaitingApproval[0]
	assert.Equal(t, onboardID, a.WorkflowID)
	assert.Equal(t, "168h", a.ApprovalTimeout, "the default approval timeout, from the start memo")
	assert.Equal(t, a.StartedAt.Add(168*time.Hour), a.Deadline)
	e := view.ExpiringSoon[0]
	assert.Equal(t, "grant-soon", e.WorkflowID)
	assert.Equal(t, "ns-soon", e.Namespace)
	assert.Equal(t, now.Add(5*time.Hour), e.ExpiresAt.UTC())

	r = run(t, env, "", "list", "--pending")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Awaiting approval (1):")
	assert.Regexp(t, `(?m)^  `+onboardID+`\s+carto/carto-common-backend\s+-\s+\S+\s+\S+ \S+ \(in \S+\)$`, r.stdout)
	assert.Contains(t, r.stdout, "Expiring within 72h0m0s (1):")
	assert.Regexp(t, `(?m)^  grant-soon\s+ns-soon/carto-common-backend\s+-\s+\S+ \S+\s+5h$`, r.stdout)
	assert.NotContains(t, r.stdout, "grant-later")

	r = run(t, env, "", "list", "--pending", "--query", "x")
	assert.Equal(t, ExitUsage, r.code)
}
