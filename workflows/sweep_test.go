package workflows

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// sweepFixture is a set of onboarding and revocation runs as visibility lists
// them, with the results and schedules the sweep reads.
type sweepFixture struct {
	expired, later, revocations []activities.WorkflowRun
}

func grantRun(ns, runID string, start time.Time, expiry time.Time) activities.WorkflowRun {
	return activities.WorkflowRun{
		WorkflowID: "gkewi-onboard/my-project/europe-west1/prod-cluster/" + ns + "/carto", RunID: runID,
		WorkflowType: OnboardWorkflowName, Status: activities.WorkflowStatusCompleted,
		StartTime: start, CloseTime: start.Add(time.Hour),
		Keywords: map[string]string{SearchAttrState: "completed"},
		Times:    map[string]time.Time{SearchAttrExpiry: expiry},
	}
}

func revokeRun(id, status string, start time.Time) activities.WorkflowRun {
	return activities.WorkflowRun{WorkflowID: id, RunID: "r-" + id, WorkflowType: RevokeWorkflowName, Status: status, StartTime: start}
}

func grantRevokeID(ns string) string {
	return "gkewi-revoke/my-project/europe-west1/prod-cluster/" + ns + "/carto"
}

func grantScheduleID(ns string) string {
	return "gkewi-expiry/my-project/europe-west1/prod-cluster/" + ns + "/carto"
}

func resultFor(ns string) OnboardResult {
	r := revokeRequest()
	r.Namespace, r.Reason, r.TokenExpiryWait = ns, "", "30m"
	return OnboardResult{State: StateCompleted, GSAEmail: wantGSA, Revoke: r}
}

// newSweepFixture: nine expired grants, ns-a to ns-i, each a case of its own.
func newSweepFixture(fake *fakeCloud) sweepFixture {
	day := 24 * time.Hour
	started := testStart.Add(-10 * day)
	expiredAt := testStart.Add(-time.Hour)
	var fx sweepFixture
	for _, ns := range []string{"ns-a", "ns-b", "ns-c", "ns-d", "ns-e", "ns-f", "ns-g", "ns-h", "ns-i"} {
		fx.expired = append(fx.expired, grantRun(ns, ns+"-1", started, expiredAt))
	}
	// ns-b: onboarded again later, without expiry.
	renewed := grantRun("ns-b", "ns-b-2", started.Add(day), time.Time{})
	fx.later = append(fx.later, fx.expired[1], renewed, fx.expired[0])
	fx.revocations = []activities.WorkflowRun{
		// ns-c: revoked by an operator; ns-d: being revoked by its schedule.
		revokeRun(grantRevokeID("ns-c"), activities.WorkflowStatusCompleted, started.Add(2*day)),
		revokeRun(grantRevokeID("ns-d")+"-2026-05-31T07:00:00Z", activities.WorkflowStatusRunning, expiredAt),
		// ns-h: a revocation of an earlier grant, before this onboarding.
		revokeRun(grantRevokeID("ns-h"), activities.WorkflowStatusCompleted, started.Add(-day)),
		revokeRun("someone-elses-revoke", activities.WorkflowStatusRunning, started.Add(day)),
	}
	// ns-e: extended, its schedule fires later; ns-f: its schedule fired and is
	// spent (the revocation it started failed); ns-g: its schedule's revocation runs.
	fake.schedules[grantScheduleID("ns-e")] = activities.ScheduleStatus{ScheduleID: grantScheduleID("ns-e"), Exists: true, NextActionAt: testStart.Add(30 * day)}
	fake.schedules[grantScheduleID("ns-f")] = activities.ScheduleStatus{ScheduleID: grantScheduleID("ns-f"), Exists: true}
	fake.schedules[grantScheduleID("ns-g")] = activities.ScheduleStatus{ScheduleID: grantScheduleID("ns-g"), Exists: true, RunningWorkflowIDs: []string{grantRevokeID("ns-g") + "-2026-05-31T07:00:00Z"}}
	// ns-i's result cannot be read.
	fake.results = map[string]OnboardResult{}
	for _, ns := range []string{"ns-a", "ns-e", "ns-f", "ns-g", "ns-h"} {
		fake.results[ns+"-1"] = resultFor(ns)
	}
	fake.lists = func(q string) []activities.WorkflowRun {
		switch {
		case strings.Contains(q, "GkewiExpiry <"):
			return fx.expired
		case strings.HasPrefix(q, "WorkflowType = 'Onboard'"):
			return fx.later
		case strings.HasPrefix(q, "WorkflowType = 'Revoke'"):
			return fx.revocations
		}
		return nil
	}
	return fx
}

// startedRevokes records the child Revoke runs a sweep starts.
type startedRevokes struct {
	mu   sync.Mutex
	ids  []string
	reqs []RevokeRequest
}

func (s *startedRevokes) mock(env *testsuite.TestWorkflowEnvironment, after time.Duration) {
	env.RegisterWorkflowWithOptions(Revoke, workflow.RegisterOptions{Name: RevokeWorkflowName})
	env.OnWorkflow(RevokeWorkflowName, mock.Anything, mock.Anything).After(after).Return(
		func(ctx workflow.Context, req RevokeRequest) (RevokeResult, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.ids = append(s.ids, workflow.GetInfo(ctx).WorkflowExecution.ID)
			s.reqs = append(s.reqs, req)
			return RevokeResult{State: StateRevoked}, nil
		})
}

func grantsOf(list []SweptGrant) []string {
	var out []string
	for _, g := range list {
		out = append(out, g.Grant)
	}
	return out
}

func TestSweepRevokesOnlyExpiredActiveGrants(t *testing.T) {
	fake := newFakeCloud()
	newSweepFixture(fake)
	env := newEnv(t, fake, "gkewi-sweep-2026-06-01T08:00:00Z")
	var revokes startedRevokes
	revokes.mock(env, 0)

	env.ExecuteWorkflow(Sweep, SweepRequest{})

	require.NoError(t, env.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env.GetWorkflowResult(&res))

	queries := fake.inputs("ListWorkflowRuns")
	require.Len(t, queries, 3)
	assert.Equal(t, activities.ListWorkflowRunsInput{
		Query:             "WorkflowType = 'Onboard' AND ExecutionStatus = 'Completed' AND GkewiState = 'completed' AND GkewiExpiry < '2026-06-01T08:00:00Z'",
		KeywordAttributes: []string{"GkewiState"}, TimeAttributes: []string{"GkewiExpiry"},
	}, queries[0])
	assert.Equal(t, "WorkflowType = 'Onboard' AND ExecutionStatus = 'Completed' AND StartTime >= '2026-05-22T08:00:00Z'", queries[1].(activities.ListWorkflowRunsInput).Query)
	assert.Equal(t, "WorkflowType = 'Revoke' AND StartTime >= '2026-05-22T08:00:00Z' AND (ExecutionStatus = 'Running' OR GkewiState = 'revoked')", queries[2].(activities.ListWorkflowRunsInput).Query)

	prefix := "my-project/europe-west1/prod-cluster/"
	key := func(ns string) string { return prefix + ns + "/carto" }
	assert.Equal(t, 9, res.Expired)
	assert.Equal(t, 3, res.Settled, "ns-b superseded, ns-c revoked, ns-d being revoked")
	assert.Equal(t, []string{key("ns-a"), key("ns-f"), key("ns-h")}, grantsOf(res.Revoked))
	assert.Empty(t, res.AlreadyRevoking)
	assert.Equal(t, []string{key("ns-e"), key("ns-g"), key("ns-i")}, grantsOf(res.Skipped))
	assert.Equal(t, "extended: its schedule "+grantScheduleID("ns-e")+" revokes it at 2026-07-01T08:00:00Z", res.Skipped[0].Reason)
	assert.Equal(t, "being revoked by "+grantRevokeID("ns-g")+"-2026-05-31T07:00:00Z, started by its schedule", res.Skipped[1].Reason)
	assert.Contains(t, res.Skipped[2].Reason, "cannot read the onboarding's result: fake: no result of run ns-i-1")

	// One child Revoke per grant, under the grant's revoke ID, with the
	// onboarding's revoke request.
	assert.ElementsMatch(t, []string{grantRevokeID("ns-a"), grantRevokeID("ns-f"), grantRevokeID("ns-h")}, revokes.ids)
	for _, g := range res.Revoked {
		assert.Equal(t, "gkewi-onboard/"+g.Grant, g.OnboardWorkflowID)
		assert.Equal(t, testStart.Add(-time.Hour), g.ExpiresAt)
	}
	require.Len(t, revokes.reqs, 3)
	for _, r := range revokes.reqs {
		want := resultFor(r.Namespace).Revoke
		want.Reason = "grant expired at 2026-06-01T07:00:00Z; revoked by the sweep"
		assert.Equal(t, want, r)
	}
	assert.Equal(t, testStart, res.CheckedAt)
}

func TestSweepTreatsARevokeAlreadyRunningAsSuccess(t *testing.T) {
	// Another sweep (or an operator) started ns-a's Revoke under the same ID a
	// moment ago, too recently for visibility to list it.
	fake := newFakeCloud()
	newSweepFixture(fake)
	env := newEnv(t, fake, "gkewi-sweep-2026-06-01T08:00:00Z")
	var revokes startedRevokes
	revokes.mock(env, 0)
	env.RegisterWorkflow(sweepWhileRevoking)
	env.RegisterWorkflow(waitAnHour)

	env.ExecuteWorkflow(sweepWhileRevoking, grantRevokeID("ns-a"))

	require.NoError(t, env.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, []string{"my-project/europe-west1/prod-cluster/ns-a/carto"}, grantsOf(res.AlreadyRevoking))
	assert.Equal(t, grantRevokeID("ns-a"), res.AlreadyRevoking[0].RevokeWorkflowID)
	assert.Len(t, res.Revoked, 2, "ns-f and ns-h")
	assert.ElementsMatch(t, []string{grantRevokeID("ns-f"), grantRevokeID("ns-h")}, revokes.ids)
	assert.Equal(t, testStart, res.CheckedAt, "swept while the other revocation ran")
}

// sweepWhileRevoking starts a long run under id (the test environment tells
// runs apart by ID only), then sweeps.
func sweepWhileRevoking(ctx workflow.Context, id string) (SweepResult, error) {
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: id, TaskQueue: TaskQueue, ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
	})
	if err := workflow.ExecuteChildWorkflow(cctx, waitAnHour).GetChildWorkflowExecution().Get(ctx, nil); err != nil {
		return SweepResult{}, err
	}
	return Sweep(ctx, SweepRequest{})
}

func waitAnHour(ctx workflow.Context) error { return workflow.Sleep(ctx, time.Hour) }

func TestSweepDryRunStartsNothing(t *testing.T) {
	fake := newFakeCloud()
	newSweepFixture(fake)
	env := newEnv(t, fake, "sweep-dry-run")
	var revokes startedRevokes
	revokes.mock(env, 0)

	env.ExecuteWorkflow(Sweep, SweepRequest{DryRun: true, MaxRevocations: 2})

	require.NoError(t, env.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.True(t, res.DryRun)
	assert.Empty(t, revokes.ids)
	// Six grants needed a look, two were allowed: ns-a would be revoked, ns-e is extended.
	require.Len(t, res.Revoked, 1)
	assert.Equal(t, grantRevokeID("ns-a"), res.Revoked[0].RevokeWorkflowID)
	assert.Equal(t, []string{"my-project/europe-west1/prod-cluster/ns-e/carto"}, grantsOf(res.Skipped))
	assert.Equal(t, 4, res.Deferred)
}

func TestSweepWithNothingExpiredListsOnce(t *testing.T) {
	fake := newFakeCloud()
	env := newEnv(t, fake, "sweep-empty")

	env.ExecuteWorkflow(Sweep, SweepRequest{})

	require.NoError(t, env.GetWorkflowError())
	var res SweepResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, SweepResult{CheckedAt: testStart}, res)
	assert.Equal(t, []string{"ListWorkflowRuns"}, fake.names())
}
