package workflows

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

// TestTimeBoundGrantsOnDevServer runs time-bound grants end to end on a real
// Temporal service: the schedule an onboarding creates fires and revokes the
// grant, the key takes a new onboarding afterwards, a revocation cancels an
// onboarding awaiting approval, and the sweep revokes what nothing else did.
// Cloud activities are fakes; Schedules and Grants are the real ones. With
// GKEWI_RECORD_HISTORIES set it also records the new histories (see
// TestRecordHistories).
func TestTimeBoundGrantsOnDevServer(t *testing.T) {
	d := startDevWorker(t, 5*time.Minute)
	ctx, c, fake, rec := d.ctx, d.c, d.fake, d.rec
	schedules := activities.NewSchedules(c)
	grants := activities.NewGrants(c)
	allow := func(int) activities.VerifyResult { return allowed() }
	deny := func(int) activities.VerifyResult { return deniedAt("generate-access-token") }

	// onboard runs an onboarding of req through the approval to its result.
	onboard := func(t *testing.T, req OnboardRequest) (client.WorkflowRun, OnboardResult) {
		t.Helper()
		fake.setVerify(allow)
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(alice)))
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		// The approver is in the memo, which visibility lists with the run.
		desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
		require.NoError(t, err)
		var approver string
		require.NoError(t, converter.GetDefaultDataConverter().FromPayload(desc.GetWorkflowExecutionInfo().GetMemo().GetFields()[MemoApprover], &approver))
		require.Equal(t, alice, approver)
		return run, res
	}

	t.Run("the schedule revokes the grant when it expires", func(t *testing.T) {
		req := validRequest()
		req.Namespace = "carto-ttl"
		req.Expiry = &ExpirySpec{TTL: "5s"}
		run, res := onboard(t, req)
		fake.setVerify(deny)
		scheduleID := RevocationScheduleID(res.Revoke)
		require.Equal(t, scheduleID, res.RevocationSchedule)
		st, err := schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: scheduleID})
		require.NoError(t, err)
		require.True(t, st.Exists)
		assert.False(t, st.NextActionAt.Before(res.ExpiresAt), "not before the expiry: %v", st.NextActionAt)
		assert.Less(t, st.NextActionAt.Sub(res.ExpiresAt), time.Second, "at the expiry, rounded up to the second")

		// Extended by two seconds, with a short token wait for the test: the
		// schedule moves, it is not duplicated.
		revoke := res.Revoke
		revoke.TokenExpiryWait = "1s"
		extended := NewRevocationSchedule(revoke, st.NextActionAt.Add(2*time.Second))
		moved, err := schedules.SetRevocationTime(ctx, extended)
		require.NoError(t, err)
		require.False(t, moved.Created)

		var fired string
		require.Eventually(t, func() bool {
			st, err = schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: scheduleID})
			require.NoError(t, err)
			if len(st.RecentWorkflowIDs) > 0 {
				fired = st.RecentWorkflowIDs[0]
			}
			return fired != ""
		}, 30*time.Second, 200*time.Millisecond, "the revocation schedule never fired")
		assert.Equal(t, RevokeWorkflowID(res.Revoke)+"-"+moved.At.Format(time.RFC3339), fired)
		var revoked RevokeResult
		require.NoError(t, c.GetWorkflow(ctx, fired, "").Get(ctx, &revoked))
		assert.Equal(t, StateRevoked, revoked.State)
		assert.False(t, revoked.AccessEndedAt.Before(moved.At))

		// The revocation deleted its spent schedule.
		st, err = schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: scheduleID})
		require.NoError(t, err)
		assert.False(t, st.Exists)
		rec.keep(run.GetID(), run.GetRunID(), "onboard-expiry-scheduled")
		rec.keep(fired, "", "revoke-scheduled")

		// The same grant can be onboarded again: the workflow ID takes a new run.
		again := req
		again.Expiry = nil
		second, _ := onboard(t, again)
		assert.Equal(t, run.GetID(), second.GetID())
		assert.NotEqual(t, run.GetRunID(), second.GetRunID())
	})

	t.Run("a revocation cancels an onboarding awaiting approval", func(t *testing.T) {
		fake.setVerify(allow)
		req := validRequest()
		req.Namespace = "carto-pending"
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		pending := rec.waitFor(run, StateAwaitingApproval)
		revoke := RevokeRequest{
			Project: req.Project, Location: req.Location, Cluster: req.Cluster, Namespace: req.Namespace,
			Release: req.Helm.Release, KSA: "carto-common-backend", GSAEmail: pending.GSAEmail, Reason: "no longer needed",
		}
		revokeRun := rec.start(RevokeWorkflowName, RevokeWorkflowID(revoke), revoke)
		var res RevokeResult
		require.NoError(t, revokeRun.Get(ctx, &res))
		assert.Equal(t, StateOnboardingCanceled, res.State)
		assert.Equal(t, run.GetRunID(), res.CanceledOnboarding)

		desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
		require.NoError(t, err)
		assert.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED, desc.GetWorkflowExecutionInfo().GetStatus())
		assert.Contains(t, fake.inputs("DeleteServiceAccount"), any(activities.ServiceAccount{Email: pending.GSAEmail, UniqueID: "1234567890", Created: true}))
		rec.keep(revokeRun.GetID(), revokeRun.GetRunID(), "revoke-cancels-onboarding")
		rec.keep(run.GetID(), run.GetRunID(), "onboard-canceled-by-revoke")
	})

	t.Run("the sweep revokes expired grants nothing revoked", func(t *testing.T) {
		grant := func(ns, ttl string) OnboardRequest {
			req := validRequest()
			req.Namespace = ns
			req.Expiry = &ExpirySpec{TTL: contract.Duration(ttl)}
			return req
		}
		lost, racing, current := grant("carto-sweep-lost", "3s"), grant("carto-sweep-racing", "3s"), grant("carto-sweep-current", "1h")

		// racing: a revocation of the grant started before its onboarding, still
		// waiting out tokens when the sweep comes; visibility does not count it.
		fake.setVerify(deny)
		early := RevokeRequest{
			Project: racing.Project, Location: racing.Location, Cluster: racing.Cluster, Namespace: racing.Namespace,
			Release: racing.Helm.Release, KSA: "carto-common-backend", GSAEmail: wantGSA, TokenExpiryWait: "2m",
		}
		earlyRun := rec.start(RevokeWorkflowName, RevokeWorkflowID(early), early)
		rec.waitFor(earlyRun, StateWaitingTokenExpiry)

		var lostRes, racingRes OnboardResult
		for _, g := range []struct {
			req OnboardRequest
			res *OnboardResult
		}{{lost, &lostRes}, {racing, &racingRes}, {current, nil}} {
			_, res := onboard(t, g.req)
			if g.res != nil {
				*g.res = res
				// The schedule is lost: only the sweep is left to revoke the grant.
				_, err := schedules.DeleteSchedule(ctx, activities.ScheduleRef{ScheduleID: res.RevocationSchedule})
				require.NoError(t, err)
			}
		}
		fake.setVerify(deny)
		require.Eventually(t, func() bool {
			now := time.Now()
			if now.Before(racingRes.ExpiresAt) {
				return false
			}
			list, err := grants.ListWorkflowRuns(ctx, activities.ListWorkflowRunsInput{Query: expiredGrantsQuery(now)})
			require.NoError(t, err)
			var ids []string
			for _, r := range list.Runs {
				ids = append(ids, r.WorkflowID)
			}
			return slices.Contains(ids, OnboardWorkflowID(lost)) && slices.Contains(ids, OnboardWorkflowID(racing))
		}, 30*time.Second, 250*time.Millisecond, "visibility never listed the expired grants")

		sweepRun := rec.start(SweepWorkflowName, "gkewi-sweep-test", SweepRequest{})
		var res SweepResult
		require.NoError(t, sweepRun.Get(ctx, &res))
		key := func(r OnboardRequest) string {
			return r.Project + "/" + r.Location + "/" + r.Cluster + "/" + r.Namespace + "/" + r.Helm.Release
		}
		assert.Equal(t, []string{key(lost)}, grantsOf(res.Revoked))
		assert.Equal(t, []string{key(racing)}, grantsOf(res.AlreadyRevoking), "the start under the same ID failed as already started")
		assert.NotContains(t, grantsOf(res.Revoked), key(current))
		assert.Empty(t, res.Skipped)
		assert.GreaterOrEqual(t, res.Settled, 1, "the first test's grant, revoked by its schedule")

		// The sweep's revocation runs on after the sweep, with the grant's request.
		child := RevokeWorkflowID(lostRes.Revoke)
		st := rec.waitFor(c.GetWorkflow(ctx, child, ""), StateWaitingTokenExpiry)
		assert.Equal(t, lostRes.GSAEmail, st.GSAEmail)
		rec.keep(sweepRun.GetID(), sweepRun.GetRunID(), "sweep")

		// A second sweep finds it underway and starts nothing.
		again := rec.start(SweepWorkflowName, "gkewi-sweep-test-2", SweepRequest{})
		var res2 SweepResult
		require.NoError(t, again.Get(ctx, &res2))
		assert.Empty(t, res2.Revoked)
		assert.Contains(t, grantsOf(res2.AlreadyRevoking), key(racing))

		for _, id := range []string{child, earlyRun.GetID()} {
			_ = c.TerminateWorkflow(ctx, id, "", "test over")
		}
	})
}
