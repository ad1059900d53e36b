package workflows

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

const (
	wantScheduleID = "gkewi-expiry/my-project/europe-west1/prod-cluster/carto/carto"
	wantRevokeID   = "gkewi-revoke/my-project/europe-west1/prod-cluster/carto/carto"
)

func TestOnboardWithTTLSchedulesItsRevocation(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Expiry = &ExpirySpec{TTL: "6h"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))
	expires := testStart.Add(time.Hour + 6*time.Hour)
	assert.Equal(t, expires, res.ExpiresAt)
	assert.Equal(t, wantScheduleID, res.RevocationSchedule)
	assert.Empty(t, res.Warnings)

	in := fake.inputs("SetRevocationTime")
	require.Len(t, in, 1)
	sched := in[0].(activities.RevocationScheduleInput)
	assert.Equal(t, wantScheduleID, sched.ScheduleID)
	assert.Equal(t, expires, sched.At)
	assert.Equal(t, "Revoke", sched.Action.WorkflowType)
	assert.Equal(t, wantRevokeID, sched.Action.WorkflowID)
	assert.Equal(t, "gkewi", sched.Action.TaskQueue)
	// The schedule starts Revoke with the result's revoke request, saying why.
	want := res.Revoke
	want.Reason = "grant expired at 2026-06-01T15:00:00Z"
	assert.Equal(t, want, decodeAs[RevokeRequest](t, sched.Action.Input))
	assert.Equal(t, "gkewi: revokes carto/carto-common-backend on my-project/europe-west1/prod-cluster (GSA "+wantGSA+") when the grant expires", sched.Note)

	s := queryStatus(t, env)
	assert.Equal(t, wantScheduleID, s.RevocationSchedule)
	st := mustStep(t, s, "schedule-revocation")
	assert.Equal(t, StepDone, st.State)
	assert.True(t, st.Changed)
	assert.Equal(t, "Revoke starts at 2026-06-01T15:00:00Z (schedule "+wantScheduleID+")", st.Detail)
	// Scheduled after verification, before support hears the outcome.
	names := fake.names()
	assert.Equal(t, []string{"VerifyAccess", "SetRevocationTime", "NotifySupport"}, names[len(names)-3:])
}

func TestOnboardWithExpiryAtSchedulesThatTime(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Expiry = &ExpirySpec{At: "2026-09-30T17:00:00+02:00"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	in := fake.inputs("SetRevocationTime")
	require.Len(t, in, 1)
	assert.True(t, time.Date(2026, 9, 30, 15, 0, 0, 0, time.UTC).Equal(in[0].(activities.RevocationScheduleInput).At))
}

func TestOnboardWhoseScheduleFailsCompletesWithAWarning(t *testing.T) {
	// The grant works; the sweep revokes it after the expiry even unscheduled.
	fake := newFakeCloud().failNext("SetRevocationTime",
		temporal.NewNonRetryableApplicationError("set schedule: permission denied by Temporal", contract.ErrTypePermissionDenied, nil))
	req := validRequest()
	req.Expiry = &ExpirySpec{TTL: "6h"}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, StateCompleted, res.State)
	assert.Empty(t, res.RevocationSchedule)
	assert.Equal(t, []string{"schedule-revocation: the revocation at 2026-06-01T15:00:00Z is not scheduled (set schedule: permission denied by Temporal): " +
		"the hourly sweep (schedule gkewi-sweep) revokes the grant after it expires; to schedule it, run " +
		"`gkewi extend --workflow-id " + OnboardWorkflowID(req) + " --at 2026-06-01T15:00:00Z`"}, res.Warnings)
	assert.Equal(t, StepFailed, mustStep(t, queryStatus(t, env), "schedule-revocation").State)
}

func TestOnboardWithoutExpiryDropsAnEarlierRunsSchedule(t *testing.T) {
	// An earlier run made the grant time-bound; this one makes it permanent.
	fake := newFakeCloud()
	fake.schedules[wantScheduleID] = activities.ScheduleStatus{ScheduleID: wantScheduleID, Exists: true, NextActionAt: testStart.Add(24 * time.Hour)}
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Empty(t, fake.schedules)
	st := mustStep(t, queryStatus(t, env), "schedule-revocation")
	assert.Equal(t, StepDone, st.State)
	assert.Equal(t, "deleted "+wantScheduleID+", left by an earlier run: this grant has no expiry", st.Detail)
}

func TestRevocationScheduleOfARevokeRequest(t *testing.T) {
	req := revokeRequest()
	req.TokenExpiryWait = ""
	req.Reason = ""
	at := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	in := NewRevocationSchedule(req, at)
	assert.Equal(t, wantScheduleID, in.ScheduleID)
	assert.Equal(t, at, in.At)
	got := decodeAs[RevokeRequest](t, in.Action.Input)
	assert.Equal(t, contract.Duration("30m"), got.TokenExpiryWait)
	assert.Equal(t, "grant expired at 2026-07-01T10:00:00Z", got.Reason)
	assert.NoError(t, got.Validate())

	sweep := NewSweepSchedule(0)
	assert.Equal(t, activities.RecurringScheduleInput{
		ScheduleID: "gkewi-sweep", Every: time.Hour,
		Action: activities.WorkflowAction{WorkflowType: "Sweep", WorkflowID: "gkewi-sweep", TaskQueue: "gkewi", Input: SweepRequest{}},
		Note:   "gkewi: revokes time-bound grants whose expiry passed and that nothing revoked",
	}, sweep)
	assert.Equal(t, 15*time.Minute, NewSweepSchedule(15*time.Minute).Every)
}

func TestGrantKeyOfWorkflowIDs(t *testing.T) {
	for _, tc := range []struct {
		prefix, id, want string
		ok               bool
	}{
		{"gkewi-revoke", "gkewi-revoke/p/l/c/ns/ksa", "p/l/c/ns/ksa", true},
		{"gkewi-revoke", "gkewi-revoke/p/l/c/ns/ksa-2026-07-01T10:00:00Z", "p/l/c/ns/ksa", true},
		{"gkewi-revoke", "gkewi-revoke/p/l/c/ns/app-2026-backend", "p/l/c/ns/app-2026-backend", true},
		{"gkewi-onboard", "gkewi-onboard/p/l/c/ns/ksa", "p/l/c/ns/ksa", true},
		{"gkewi-revoke", "gkewi-onboard/p/l/c/ns/ksa", "", false},
		{"gkewi-revoke", "gkewi-revoke/p/l/c/ns", "", false},
		{"gkewi-revoke", "my-own-revoke", "", false},
	} {
		got, ok := grantKeyOf(tc.prefix, tc.id)
		assert.Equalf(t, tc.ok, ok, "%s", tc.id)
		assert.Equalf(t, tc.want, got, "%s", tc.id)
	}
}

func TestCancelBeforeTheApprovalStepStillCleansUp(t *testing.T) {
	// Canceled while the token creator step waits to retry, after the GSA was
	// created: the run deletes it, as it does when canceled awaiting approval.
	fake := newFakeCloud().failNext("AddServiceAccountIAMMember",
		temporal.NewApplicationError("set IAM policy: concurrent change (HTTP 409)", contract.ErrTypeConcurrentChange))
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	env.RegisterDelayedCallback(env.CancelWorkflow, time.Second)

	env.ExecuteWorkflow(Onboard, req)

	require.True(t, env.IsWorkflowCompleted())
	require.True(t, temporal.IsCanceledError(env.GetWorkflowError()), "got %v", env.GetWorkflowError())
	assert.Equal(t, []any{activities.ServiceAccount{Email: wantGSA, UniqueID: "1234567890", Created: true}}, fake.inputs("DeleteServiceAccount"))
	s := queryStatus(t, env)
	assert.Equal(t, StateCanceled, s.State)
	assert.Equal(t, StepDone, mustStep(t, s, "delete-service-account").State)
	assert.Empty(t, fake.notifications(), "support was never asked")
}

// decodeAs reads a value sent as `any` the way it travels: through JSON.
func decodeAs[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	require.NoError(t, roundTrip(v, &out))
	return out
}

func roundTrip(in, out any) error {
	if in == nil {
		return errors.New("nothing to decode")
	}
	p, err := defaultConverter().ToPayload(in)
	if err != nil {
		return err
	}
	return defaultConverter().FromPayload(p, out)
}

func defaultConverter() converter.DataConverter { return converter.GetDefaultDataConverter() }
