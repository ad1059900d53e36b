package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
)

// defaultMaxRevocations bounds the revocations one sweep starts; the next sweep
// takes the rest.
const defaultMaxRevocations = 100

// SweepRequest is the input of Sweep; the sweep schedule starts it with {}.
type SweepRequest struct {
	// DryRun lists what would be revoked without starting anything.
	DryRun bool `json:"dryRun,omitempty"`
	// MaxRevocations bounds the expired grants this sweep revokes (or finds
	// extended); default 100. The next sweep takes the rest.
	MaxRevocations int `json:"maxRevocations,omitempty"`
}

// SweepResult is what a sweep found and did.
type SweepResult struct {
	CheckedAt time.Time `json:"checkedAt"`
	DryRun    bool      `json:"dryRun,omitempty"`
	// Expired counts the completed onboardings past their expiry that
	// visibility listed, revoked ones included.
	Expired int `json:"expired"`
	// Revoked lists the grants whose Revoke this sweep started (in a dry run:
	// would start).
	Revoked []SweptGrant `json:"revoked,omitempty"`
	// AlreadyRevoking lists the grants whose Revoke was already running under
	// the same workflow ID: another sweep or an operator got there first.
	AlreadyRevoking []SweptGrant `json:"alreadyRevoking,omitempty"`
	// Settled counts the expired grants already revoked, being revoked, or
	// superseded by a later onboarding of the same grant.
	Settled int `json:"settled"`
	// Skipped lists the other expired grants left alone, each with the reason
	// (extended, or their revoke request unreadable).
	Skipped []SweptGrant `json:"skipped,omitempty"`
	// Deferred counts the grants left to the next sweep over MaxRevocations,
	// plus one when visibility listed more expired runs than one listing takes.
	Deferred int `json:"deferred,omitempty"`
}

// SweptGrant is one expired grant the sweep looked at.
type SweptGrant struct {
	// Grant is "PROJECT/LOCATION/CLUSTER/NAMESPACE/KSA".
	Grant             string    `json:"grant"`
	OnboardWorkflowID string    `json:"onboardWorkflowId"`
	OnboardRunID      string    `json:"onboardRunId"`
	ExpiresAt         time.Time `json:"expiresAt"`
	RevokeWorkflowID  string    `json:"revokeWorkflowId,omitempty"`
	Reason            string    `json:"reason,omitempty"`
}

// Sweep revokes every time-bound grant whose expiry has passed and that nothing
// revoked: the safety net under the per-grant revocation schedules. The sweep
// schedule (SweepScheduleID) runs it every hour.
//
// Which grants are still active cannot be read from the Onboard runs alone: a
// completed run's search attributes never change, so its GkewiState stays
// "completed" after a revocation. The sweep therefore reads three visibility
// listings and subtracts:
//
//  1. expired: Onboard runs that completed with GkewiExpiry before now;
//  2. later onboardings: completed Onboard runs started since the oldest of
//     them. A newer completed run of the same workflow ID supersedes an older
//     one: its own expiry (or none) governs the grant now;
//  3. revocations: Revoke runs started since then that are running or ended
//     revoked. A grant whose Revoke (manual, scheduled or from a sweep; matched
//     by the grant in its workflow ID) started after its onboarding is done or
//     underway.
//
// What is left is then checked against its revocation schedule: one that will
// still fire (the grant was extended) wins over the recorded expiry.
//
// Each remaining grant is revoked by a child Revoke under RevokeWorkflowID, the
// ID an operator's `gkewi revoke` uses too, without a timestamp: of two sweeps
// (or a sweep and an operator) revoking the same grant at once, the second
// start fails with AlreadyStarted, which counts as success. The children are
// abandoned when the sweep ends: revocations wait out tokens, sweeps do not.
// Visibility is eventually consistent; a revocation that does not show yet can
// at worst be started twice, which is harmless (every step is idempotent).
//
// Visibility keeps closed runs only for the namespace's retention period, so the
// sweep sees a grant only while its Onboard run is retained. The revocation
// schedule has no such limit; the sweep covers the schedule going missing within
// that period. Keep the retention above the longest expiry to widen it.
func Sweep(ctx workflow.Context, req SweepRequest) (SweepResult, error) {
	now := workflow.Now(ctx)
	res := SweepResult{CheckedAt: now, DryRun: req.DryRun}
	limit := req.MaxRevocations
	if limit <= 0 {
		limit = defaultMaxRevocations
	}
	todo, err := expiredGrants(ctx, now, limit, &res)
	if err != nil {
		return res, err
	}
	starts := startRevocations(ctx, req.DryRun, now, todo, lookUpGrants(ctx, todo), &res)
	awaitRevocations(ctx, starts, &res)
	workflow.SetCurrentDetails(ctx, sweepDetails(res))
	return res, nil
}

// expiredGrants lists the grants past their expiry, leaves out those a later
// onboarding or a revocation settled, and keeps at most limit; res counts them.
func expiredGrants(ctx workflow.Context, now time.Time, limit int, res *SweepResult) ([]SweptGrant, error) {
	expired, truncated, err := listRuns(ctx, expiredGrantsQuery(now))
	if err != nil {
		return nil, err
	}
	res.Expired = len(expired)
	if truncated {
		res.Deferred++
	}
	if len(expired) == 0 {
		return nil, nil
	}
	since := expired[0].StartTime
	for _, r := range expired {
		if r.StartTime.Before(since) {
			since = r.StartTime
		}
	}
	later, _, err := listRuns(ctx, laterOnboardingsQuery(since))
	if err != nil {
		return nil, err
	}
	revocations, _, err := listRuns(ctx, revocationsQuery(since))
	if err != nil {
		return nil, err
	}
	todo, settled := pickExpired(expired, later, revocations)
	res.Settled = len(settled)
	logger := workflow.GetLogger(ctx)
	for _, g := range settled {
		logger.Debug("expired grant settled", "grant", g.Grant, "onboardRunId", g.OnboardRunID, "reason", g.Reason)
	}
	if len(todo) > limit {
		res.Deferred += len(todo) - limit
		todo = todo[:limit]
	}
	return todo, nil
}

// grantLookup is a grant's revocation schedule and its Onboard run's result,
// being read.
type grantLookup struct{ schedule, result workflow.Future }

// lookUpGrants reads each grant's schedule and revoke request, all at once.
func lookUpGrants(ctx workflow.Context, todo []SweptGrant) []grantLookup {
	var schedules *activities.Schedules
	var grants *activities.Grants
	actx := workflow.WithActivityOptions(ctx, quietOptions("sweep"))
	lookups := make([]grantLookup, len(todo))
	for i, g := range todo {
		lookups[i] = grantLookup{
			schedule: workflow.ExecuteActivity(actx, schedules.DescribeRevocationSchedule, activities.ScheduleRef{ScheduleID: revocationScheduleIDOfKey(g.Grant)}),
			result:   workflow.ExecuteActivity(actx, grants.WorkflowRunResult, activities.WorkflowRunRef{WorkflowID: g.OnboardWorkflowID, RunID: g.OnboardRunID}),
		}
	}
	return lookups
}

// revocationStart is a Revoke child being started for a grant.
type revocationStart struct {
	grant SweptGrant
	child workflow.ChildWorkflowFuture
}

// startRevocations starts Revoke for each grant whose schedule did not, or is
// not about to, and whose revoke request reads; the others go to res.Skipped.
// A dry run only lists them in res.Revoked.
func startRevocations(ctx workflow.Context, dryRun bool, now time.Time, todo []SweptGrant, lookups []grantLookup, res *SweepResult) []revocationStart {
	var starts []revocationStart
	for i, g := range todo {
		revoke, skip := sweptRevokeRequest(ctx, lookups[i], now)
		if skip != "" {
			g.Reason = skip
			res.Skipped = append(res.Skipped, g)
			continue
		}
		revoke.Reason = fmt.Sprintf("grant expired at %s; revoked by the sweep", stamp(g.ExpiresAt))
		g.RevokeWorkflowID = RevokeWorkflowID(revoke)
		if dryRun {
			res.Revoked = append(res.Revoked, g)
			continue
		}
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:            g.RevokeWorkflowID,
			TaskQueue:             TaskQueue,
			ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
			StaticSummary:         "expired grant " + g.Grant + ", revoked by the sweep",
		})
		starts = append(starts, revocationStart{grant: g, child: workflow.ExecuteChildWorkflow(cctx, RevokeWorkflowName, revoke)})
	}
	return starts
}

// sweptRevokeRequest is the grant's revoke request, or why the sweep leaves
// the grant alone.
func sweptRevokeRequest(ctx workflow.Context, l grantLookup, now time.Time) (RevokeRequest, string) {
	var sched activities.ScheduleStatus
	if err := l.schedule.Get(ctx, &sched); err != nil {
		return RevokeRequest{}, "cannot read its revocation schedule: " + errorMessage(err)
	}
	if reason := pendingSchedule(sched, now); reason != "" {
		return RevokeRequest{}, reason
	}
	revoke, err := revokeRequestOf(ctx, l.result)
	if err != nil {
		return RevokeRequest{}, err.Error()
	}
	return revoke, ""
}

// awaitRevocations waits for each Revoke child to start and sorts the grant
// into res: revoked, already revoking, or skipped.
func awaitRevocations(ctx workflow.Context, starts []revocationStart, res *SweepResult) {
	logger := workflow.GetLogger(ctx)
	for _, s := range starts {
		err := s.child.GetChildWorkflowExecution().Get(ctx, nil)
		switch {
		case err == nil:
			res.Revoked = append(res.Revoked, s.grant)
			logger.Info("revoking an expired grant", "grant", s.grant.Grant, "revokeWorkflowId", s.grant.RevokeWorkflowID)
		case temporal.IsWorkflowExecutionAlreadyStartedError(err):
			res.AlreadyRevoking = append(res.AlreadyRevoking, s.grant)
		default:
			s.grant.Reason = "could not start Revoke: " + errorMessage(err)
			res.Skipped = append(res.Skipped, s.grant)
			logger.Warn("cannot revoke an expired grant", "grant", s.grant.Grant, "error", err)
		}
	}
}

// listRuns runs a visibility query through the Grants activity.
func listRuns(ctx workflow.Context, query string) ([]activities.WorkflowRun, bool, error) {
	var grants *activities.Grants
	actx := workflow.WithActivityOptions(ctx, listOptions())
	in := activities.ListWorkflowRunsInput{Query: query, KeywordAttributes: []string{SearchAttrState}, TimeAttributes: []string{SearchAttrExpiry}}
	var out activities.ListWorkflowRunsResult
	if err := workflow.ExecuteActivity(actx, grants.ListWorkflowRuns, in).Get(ctx, &out); err != nil {
		return nil, false, err
	}
	return out.Runs, out.Truncated, nil
}

func listOptions() workflow.ActivityOptions {
	o := quietOptions("list workflow runs")
	o.StartToCloseTimeout = 5 * time.Minute
	o.HeartbeatTimeout = time.Minute
	return o
}

// Visibility queries of the sweep. Times are RFC 3339 in UTC, as visibility compares them.
func expiredGrantsQuery(now time.Time) string {
	return fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Completed' AND %s = '%s' AND %s < '%s'",
		OnboardWorkflowName, SearchAttrState, StateCompleted, SearchAttrExpiry, queryTime(now))
}

func laterOnboardingsQuery(since time.Time) string {
	return fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Completed' AND StartTime >= '%s'", OnboardWorkflowName, queryTime(since))
}

func revocationsQuery(since time.Time) string {
	return fmt.Sprintf("WorkflowType = '%s' AND StartTime >= '%s' AND (ExecutionStatus = 'Running' OR %s = '%s')",
		RevokeWorkflowName, queryTime(since), SearchAttrState, StateRevoked)
}

func queryTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// pickExpired subtracts from the expired onboardings those superseded by a later
// completed run of the same workflow ID and those revoked (or being revoked)
// since they started (settled, with the reason). The rest, sorted by workflow ID,
// still need a revocation.
func pickExpired(expired, onboardings, revocations []activities.WorkflowRun) (todo, settled []SweptGrant) {
	latest := map[string]activities.WorkflowRun{}
	for _, r := range slices.Concat(expired, onboardings) {
		if r.Status != activities.WorkflowStatusCompleted {
			continue
		}
		if cur, ok := latest[r.WorkflowID]; !ok || r.StartTime.After(cur.StartTime) {
			latest[r.WorkflowID] = r
		}
	}
	revokes := map[string][]activities.WorkflowRun{}
	for _, r := range revocations {
		if key, ok := grantKeyOf(revokePrefix, r.WorkflowID); ok {
			revokes[key] = append(revokes[key], r)
		}
	}
	seen := map[string]bool{}
	sorted := slices.Clone(expired)
	slices.SortFunc(sorted, func(a, b activities.WorkflowRun) int {
		return strings.Compare(a.WorkflowID+"\x00"+a.RunID, b.WorkflowID+"\x00"+b.RunID)
	})
	for _, r := range sorted {
		if seen[r.RunID] {
			continue
		}
		seen[r.RunID] = true
		g := SweptGrant{OnboardWorkflowID: r.WorkflowID, OnboardRunID: r.RunID, ExpiresAt: r.Times[SearchAttrExpiry]}
		key, ok := grantKeyOf(onboardPrefix, r.WorkflowID)
		if !ok {
			g.Reason = "not an onboarding workflow ID of gkewi"
			settled = append(settled, g)
			continue
		}
		g.Grant = key
		if cur := latest[r.WorkflowID]; cur.RunID != r.RunID {
			g.Reason = fmt.Sprintf("superseded by run %s, completed later; its expiry governs the grant", cur.RunID)
			settled = append(settled, g)
			continue
		}
		if by, running, ok := revokedSince(revokes[key], r.StartTime); ok {
			g.RevokeWorkflowID = by
			g.Reason = "revoked by " + by
			if running {
				g.Reason = "being revoked by " + by
			}
			settled = append(settled, g)
			continue
		}
		todo = append(todo, g)
	}
	return todo, settled
}

// revokedSince returns the workflow ID of a Revoke started after since, preferring
// a running one, and whether it is running.
func revokedSince(runs []activities.WorkflowRun, since time.Time) (string, bool, bool) {
	id, found := "", false
	for _, r := range runs {
		if !r.StartTime.After(since) {
			continue
		}
		if r.Status == activities.WorkflowStatusRunning {
			return r.WorkflowID, true, true
		}
		if !found {
			id, found = r.WorkflowID, true
		}
	}
	return id, false, found
}

// pendingSchedule says why the grant's revocation schedule makes the sweep leave
// it alone, or "" when it does not: a schedule that will still fire (the grant
// was extended) or whose revocation is running.
func pendingSchedule(s activities.ScheduleStatus, now time.Time) string {
	switch {
	case !s.Exists:
		return ""
	case len(s.RunningWorkflowIDs) > 0:
		return "being revoked by " + strings.Join(s.RunningWorkflowIDs, ", ") + ", started by its schedule"
	case !s.Paused && s.NextActionAt.After(now):
		return "extended: its schedule " + s.ScheduleID + " revokes it at " + stamp(s.NextActionAt)
	}
	return ""
}

// revokeRequestOf reads the revoke request from an onboarding's result (the
// activity's JSON answer decodes straight into OnboardResult).
func revokeRequestOf(ctx workflow.Context, result workflow.Future) (RevokeRequest, error) {
	var res OnboardResult
	if err := result.Get(ctx, &res); err != nil {
		return RevokeRequest{}, fmt.Errorf("cannot read the onboarding's result: %s", errorMessage(err))
	}
	req := res.Revoke.WithDefaults()
	if err := req.Validate(); err != nil {
		return RevokeRequest{}, fmt.Errorf("the onboarding's revoke request is unusable (%w): revoke it by hand", err)
	}
	return req, nil
}

// revocationScheduleIDOfKey is RevocationScheduleID for a grant key.
func revocationScheduleIDOfKey(key string) string { return revocationSchedulePrefix + "/" + key }

func sweepDetails(r SweepResult) string {
	verb := "started"
	if r.DryRun {
		verb = "would start (dry run)"
	}
	return fmt.Sprintf("**Sweep** at %s: %d expired grant(s), %d settled before; %s %d revocation(s); %d already being revoked; %d skipped; %d deferred",
		stamp(r.CheckedAt), r.Expired, r.Settled, verb, len(r.Revoked), len(r.AlreadyRevoking), len(r.Skipped), r.Deferred)
}
