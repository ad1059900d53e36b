package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

func busy() error {
	return temporal.NewApplicationError("set workload pool: the cluster is busy with another operation, will retry", contract.ErrTypeClusterBusy)
}

func unavailable() error {
	return temporal.NewApplicationError("create service account: Google API unavailable (HTTP 503), will retry", contract.ErrTypeUnavailable)
}

func TestApprovalSignalledBeforeTheWaitCounts(t *testing.T) {
	fake := newFakeCloud().failNext("EnsureServiceAccount", unavailable(), unavailable(), unavailable(), unavailable(), unavailable())
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	// IAM is unavailable for a few minutes; support approves meanwhile.
	signalAt(env, 10*time.Second, approve("bob@example.com"))
	var early Status
	env.RegisterDelayedCallback(func() { early = queryStatus(t, env) }, 20*time.Second)

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, StateRunning, early.State)
	assert.Equal(t, StepRunning, mustStep(t, early, "service-account").State)
	assert.Equal(t, DecisionApproved, early.Approval.Decision, "the decision shows while the step is retried")

	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	assert.Equal(t, "bob@example.com", s.Approval.Approver)
	assert.Equal(t, testStart.Add(10*time.Second), s.Approval.DecidedAt)
	req1 := mustStep(t, s, "approval-request")
	assert.Equal(t, StepSkipped, req1.State)
	assert.Equal(t, "decided before the request: approved by bob@example.com", req1.Detail)
	assert.Equal(t, []string{"outcome"}, fake.notifications(), "no request is sent for a decision already made")
	assert.Equal(t, 2, fake.count("AddServiceAccountIAMMember"))
}

func TestUnlistedApproverIgnoredThenListedAccepted(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(mallory))
	signalAt(env, 2*time.Hour, ApprovalDecision{Approved: true, Approver: "  "})
	signalAt(env, 3*time.Hour, "yes please")
	signalAt(env, 4*time.Hour, ApprovalDecision{Approved: true, Approver: "BOB@example.COM", Comment: "checked with the owner"})

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	assert.Equal(t, DecisionApproved, s.Approval.Decision)
	assert.Equal(t, "BOB@example.COM", s.Approval.Approver)
	assert.Equal(t, testStart.Add(4*time.Hour), s.Approval.DecidedAt)
	require.Len(t, s.Approval.Ignored, 3)
	assert.Equal(t, IgnoredDecision{
		Approver: mallory, Approved: true, Ticket: "SUP-42", Via: "signal",
		ReceivedAt: testStart.Add(time.Hour), Reason: `mallory@example.com is not an approver of grant policy rule "tests"`,
	}, s.Approval.Ignored[0])
	assert.Equal(t, "approver is empty", s.Approval.Ignored[1].Reason)
	assert.Contains(t, s.Approval.Ignored[2].Reason, "malformed payload: ")
	assert.Equal(t, testStart.Add(3*time.Hour), s.Approval.Ignored[2].ReceivedAt)
	assert.Equal(t, 2, fake.count("AddServiceAccountIAMMember"), "the grant waited for the listed approver")
}

func TestRejectionDeletesTheServiceAccountThisRunCreated(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	signalAt(env, 2*time.Hour, ApprovalDecision{Approved: false, Approver: alice, Ticket: "SUP-42", Comment: "no BigQuery for this team"})

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, "Rejected", appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, "onboarding rejected by alice@example.com (ticket SUP-42: no BigQuery for this team); deleted service account "+wantGSA+", created by this run", appErr.Message())

	assert.Equal(t, []any{activities.ServiceAccount{Email: wantGSA, UniqueID: "1234567890", Created: true}}, fake.inputs("DeleteServiceAccount"))
	assert.Equal(t, 1, fake.count("AddServiceAccountIAMMember"), "only the token creator binding, never the grant")
	assert.Zero(t, fake.count("RemoveServiceAccountIAMMember"))
	for _, n := range []string{"AnnotateServiceAccount", "GrantBigQueryAccess", "HelmUpgradeInstall", "VerifyAccess"} {
		assert.Zerof(t, fake.count(n), "%s after a rejection", n)
	}
	assert.Equal(t, []string{"approval-request", "outcome"}, fake.notifications())
	outcome := fake.inputs("NotifySupport")[1].(activities.Notification)
	assert.Equal(t, "onboarding rejected: "+appErr.Message(), outcome.Outcome)

	s := queryStatus(t, env)
	assert.Equal(t, StateRejected, s.State)
	assert.Equal(t, DecisionRejected, s.Approval.Decision)
	assert.Equal(t, StepFailed, mustStep(t, s, "approval").State)
	assert.Equal(t, StepDone, mustStep(t, s, "delete-service-account").State)
	assert.Equal(t, StepPending, mustStep(t, s, "workload-identity-user").State)
	assert.Equal(t, appErr.Message(), s.Error)
}

func TestRejectionKeepsAReusedServiceAccount(t *testing.T) {
	for _, tc := range []struct {
		name              string
		tokenCreatorAdded bool
		wantRemoved       int
		wantNote          string
	}{
		{"binding added by this run is removed", true, 1, "removed the token creator binding added to " + wantGSA},
		{"binding already there stays", false, 0, "kept service account " + wantGSA + ": this run did not create it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeCloud()
			fake.changed = tc.tokenCreatorAdded
			req := validRequest()
			req.GSA = GSASpec{Email: wantGSA}
			env := newOnboardEnv(t, fake, req)
			signalAt(env, time.Hour, ApprovalDecision{Approved: false, Approver: alice})

			env.ExecuteWorkflow(Onboard, req)

			appErr := workflowAppError(t, env)
			assert.Equal(t, "Rejected", appErr.Type())
			assert.Equal(t, "onboarding rejected by alice@example.com; "+tc.wantNote, appErr.Message())
			assert.Zero(t, fake.count("DeleteServiceAccount"), "a reused GSA is never deleted")
			assert.Equal(t, tc.wantRemoved, fake.count("RemoveServiceAccountIAMMember"))
			if tc.wantRemoved > 0 {
				assert.Equal(t, activities.ServiceAccountIAMInput{
					ServiceAccountEmail: wantGSA, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + wantGSA,
				}, fake.inputs("RemoveServiceAccountIAMMember")[0])
			}
			assert.Equal(t, []any{activities.EnsureServiceAccountInput{Project: "my-project", Email: wantGSA}}, fake.inputs("EnsureServiceAccount"))
		})
	}
}

func TestApprovalTimeoutSendsDailyRemindersThenCleansUp(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var day3 Status
	env.RegisterDelayedCallback(func() { day3 = queryStatus(t, env) }, 72*time.Hour+time.Minute)

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, "ApprovalTimedOut", appErr.Type())
	assert.Equal(t, "no decision from support.approvers within 168h (6 reminder(s) sent); deleted service account "+wantGSA+", created by this run", appErr.Message())
	assert.Equal(t, testStart.Add(168*time.Hour), env.Now().UTC(), "time skipped to the deadline")
	assert.Equal(t, []string{"approval-request", "reminder", "reminder", "reminder", "reminder", "reminder", "reminder", "outcome"}, fake.notifications())
	assert.Equal(t, 1, fake.count("DeleteServiceAccount"))

	assert.Equal(t, 3, day3.Approval.RemindersSent)
	assert.Equal(t, testStart.Add(96*time.Hour), day3.Approval.NextReminderAt)

	s := queryStatus(t, env)
	assert.Equal(t, StateTimedOut, s.State)
	assert.Equal(t, DecisionTimedOut, s.Approval.Decision)
	assert.Equal(t, 6, s.Approval.RemindersSent)
	assert.Equal(t, "no decision within 168h", mustStep(t, s, "approval").LastError)
}

func TestApprovalTimeoutHonoursCustomIntervals(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Support.ReminderInterval = "90m"
	req.Support.ApprovalTimeout = "8h"
	env := newOnboardEnv(t, fake, req)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, "ApprovalTimedOut", workflowAppError(t, env).Type())
	// Reminders at 1.5h, 3h, 4.5h, 6h and 7.5h.
	assert.Equal(t, 5, countOf(fake.notifications(), "reminder"))
	assert.Equal(t, testStart.Add(8*time.Hour), env.Now().UTC())
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// updateResult collects the outcome of one update.
type updateResult struct {
	rejected error
	accepted bool
	state    State
	err      error
}

func sendUpdate(env *testsuite.TestWorkflowEnvironment, id string, d ApprovalDecision, out *updateResult) {
	env.UpdateWorkflow(contract.UpdateSupportDecision, id, &testsuite.TestUpdateCallback{
		OnReject: func(err error) { out.rejected = err },
		OnAccept: func() { out.accepted = true },
		OnComplete: func(v any, err error) {
			out.err = err
			if s, ok := v.(State); ok {
				out.state = s
			}
		},
	}, d)
}

func TestSupportDecisionUpdate(t *testing.T) {
	fake := newFakeCloud().failNext("EnsureServiceAccount", unavailable(), unavailable(), unavailable())
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var early, unlisted, empty, accepted, again updateResult
	env.RegisterDelayedCallback(func() { sendUpdate(env, "early", approve(alice), &early) }, 10*time.Second)
	env.RegisterDelayedCallback(func() { sendUpdate(env, "unlisted", approve(mallory), &unlisted) }, time.Hour)
	env.RegisterDelayedCallback(func() { sendUpdate(env, "empty", ApprovalDecision{Approved: true}, &empty) }, time.Hour+time.Minute)
	env.RegisterDelayedCallback(func() {
		sendUpdate(env, "accepted", ApprovalDecision{Approved: true, Approver: "Alice@Example.com", Ticket: "SUP-7"}, &accepted)
		sendUpdate(env, "again", ApprovalDecision{Approved: false, Approver: alice}, &again)
	}, 2*time.Hour)

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	require.Error(t, early.rejected)
	assert.Contains(t, early.rejected.Error(), "not awaiting approval yet")
	require.Error(t, unlisted.rejected)
	assert.Contains(t, unlisted.rejected.Error(), `mallory@example.com is not an approver of grant policy rule "tests"`)
	require.Error(t, empty.rejected)
	assert.Contains(t, empty.rejected.Error(), "approver is empty")
	assert.False(t, unlisted.accepted)

	assert.NoError(t, accepted.rejected)
	assert.True(t, accepted.accepted)
	assert.NoError(t, accepted.err)
	assert.Equal(t, StateApproved, accepted.state)
	require.Error(t, again.rejected)
	assert.Contains(t, again.rejected.Error(), "already approved by Alice@Example.com")

	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	assert.Equal(t, viaUpdate, s.Approval.Via)
	assert.Equal(t, "SUP-7", s.Approval.Ticket)
	assert.Empty(t, s.Approval.Ignored, "refused updates leave no trace in the workflow")
}

func TestUpdateRejectionEndsTheWait(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	var res updateResult
	env.RegisterDelayedCallback(func() {
		sendUpdate(env, "reject", ApprovalDecision{Approved: false, Approver: alice, Comment: "duplicate request"}, &res)
	}, 5*time.Hour)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, StateRejected, res.state)
	appErr := workflowAppError(t, env)
	assert.Equal(t, "Rejected", appErr.Type())
	assert.Equal(t, testStart.Add(5*time.Hour), env.Now().UTC())
	assert.Equal(t, 1, fake.count("DeleteServiceAccount"))
}

func TestCancelWhileAwaitingApprovalCleansUp(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	env.RegisterDelayedCallback(env.CancelWorkflow, 3*time.Hour)

	env.ExecuteWorkflow(Onboard, req)

	require.True(t, env.IsWorkflowCompleted())
	require.True(t, temporal.IsCanceledError(env.GetWorkflowError()), "got %v", env.GetWorkflowError())
	assert.Equal(t, 1, fake.count("DeleteServiceAccount"))
	assert.Equal(t, []string{"approval-request", "outcome"}, fake.notifications())
	s := queryStatus(t, env)
	assert.Equal(t, StateCanceled, s.State)
}

// proven is a decision by approver with a proof the fake worker accepts.
func proven(approver string, approved bool) ApprovalDecision {
	return ApprovalDecision{Approved: approved, Approver: approver, Ticket: "SUP-9", Proof: &activities.DecisionProof{
		Method: activities.ProofIDToken, Issuer: "https://accounts.google.com", Subject: "1234", Email: approver,
		TokenSHA256: "ab12", IssuedAt: testStart, ExpiresAt: testStart.Add(time.Hour), VerifiedAt: testStart, MAC: validMAC,
		RunID: "default-test-run-id", Audience: OnboardWorkflowID(validRequest()),
	}}
}

// By default (a policy rule that names no proof) a decision counts only with a
// proof the worker checks: a bare approver name, a proof by signal, a forged
// proof or someone else's token are recorded and ignored; a proven decision
// counts and its evidence is kept.
func TestDecisionsNeedProofByDefault(t *testing.T) {
	fake := newFakeCloud().withPolicy(t, `
rules:
  - name: default-proof
    scope: {projects: ["*"]}
    approval: {levels: [{approvers: [alice@example.com, Bob@Example.com]}]}
    bigquery: {dataProjects: ["*"], billingProjects: ["*"], projectWide: true}
`)
	req := validRequest()
	req.Support.Proof = ""
	env := newOnboardEnv(t, fake, req)
	forged := proven(alice, true)
	forged.Proof.MAC = "made-up"
	borrowed := proven(mallory, true)
	borrowed.Approver = alice
	earlier := proven(alice, true)
	earlier.Proof.RunID = "an-earlier-run"
	var bare, refused, stolen, otherRun, accepted updateResult
	env.RegisterDelayedCallback(func() { sendUpdate(env, "other run", earlier, &otherRun) }, 2*time.Hour+time.Minute)
	signalAt(env, time.Hour, approve(alice))
	signalAt(env, time.Hour+time.Minute, proven(alice, true))
	env.RegisterDelayedCallback(func() { sendUpdate(env, "bare", approve(alice), &bare) }, 2*time.Hour)
	env.RegisterDelayedCallback(func() { sendUpdate(env, "forged", forged, &refused) }, 3*time.Hour)
	env.RegisterDelayedCallback(func() { sendUpdate(env, "stolen", borrowed, &stolen) }, 4*time.Hour)
	env.RegisterDelayedCallback(func() { sendUpdate(env, "proven", proven(alice, true), &accepted) }, 5*time.Hour)

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	require.Error(t, bare.rejected, "the validator refuses an unproven update")
	assert.Contains(t, bare.rejected.Error(), "no proof of the approver's identity")
	require.Error(t, otherRun.rejected, "a proof for another run never reaches the history")
	assert.Contains(t, otherRun.rejected.Error(), "the proof is for run an-earlier-run")
	require.Error(t, refused.err)
	assert.Contains(t, refused.err.Error(), "proof refused: the attestation does not match")
	require.Error(t, stolen.err)
	assert.Contains(t, stolen.err.Error(), "proof refused: the approver is not the ID token's email")
	require.NoError(t, accepted.err)
	assert.Equal(t, StateApproved, accepted.state)

	s := queryStatus(t, env)
	assert.Equal(t, StateCompleted, s.State)
	rec := s.Approval
	assert.Equal(t, ProofIDToken, rec.Proof)
	assert.Equal(t, alice, rec.Approver)
	assert.Equal(t, viaUpdate, rec.Via)
	require.NotNil(t, rec.Evidence)
	assert.Equal(t, ApprovalEvidence{Method: ProofIDToken, Issuer: "https://accounts.google.com", Subject: "1234", Email: alice,
		TokenSHA256: "ab12", IssuedAt: testStart, ExpiresAt: testStart.Add(time.Hour), VerifiedAt: testStart}, *rec.Evidence)
	var reasons []string
	for _, ig := range rec.Ignored {
		reasons = append(reasons, ig.Via+": "+ig.Reason)
	}
	require.Len(t, reasons, 4, "%v", reasons)
	assert.Contains(t, reasons[0], "signal: no proof of the approver's identity")
	assert.Contains(t, reasons[1], "signal: a proof is checked only on the support-decision update")
	assert.Contains(t, reasons[2], "update: proof refused: the attestation does not match")
	assert.Contains(t, reasons[3], "update: proof refused: the approver is not the ID token's email")
	checked := fake.inputs("CheckDecisionProof")
	require.Len(t, checked, 3)
	in := checked[2].(activities.CheckProofInput)
	assert.Equal(t, OnboardWorkflowID(req), in.WorkflowID)
	assert.Equal(t, "default-test-run-id", in.RunID)
}

// support.proof none takes a decision that only names its approver, and the
// status says so.
func TestProofNoneTakesNamedApprovers(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	require.Equal(t, ProofNone, req.Support.Proof)
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))
	env.ExecuteWorkflow(Onboard, req)
	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	assert.Equal(t, ProofNone, s.Approval.Proof)
	assert.Nil(t, s.Approval.Evidence)
	assert.Zero(t, fake.count("CheckDecisionProof"))
}
