package starter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/worker/workertest"
	"github.com/gkewi/gkewi/workflows"
)

// standInOnboard has the real Onboard's interface (name, input, status query,
// decision signal and update, search attributes, result) and none of its steps, so
// the CLI is tested against a real server without Google or Kubernetes.
func standInOnboard(ctx workflow.Context, req workflows.OnboardRequest) (workflows.OnboardResult, error) {
	gsa := req.GSA.AccountID + "@" + req.Project + ".iam.gserviceaccount.com"
	ksa := req.KSA
	if ksa == "" {
		ksa = "carto-common-backend" // what rendering the CARTO chart finds
	}
	st := workflows.Status{
		Workflow: workflows.OnboardWorkflowName, State: workflows.StateAwaitingApproval,
		Project: req.Project, Location: req.Location, Cluster: req.Cluster,
		Namespace: req.Namespace, Release: req.Helm.Release, KSA: ksa, GSAEmail: gsa,
		Steps:    []workflows.Step{{Name: "approval", State: workflows.StepRunning, StartedAt: workflow.Now(ctx)}},
		Approval: &workflows.Approval{Decision: workflows.DecisionPending},
	}
	if err := workflow.SetQueryHandler(ctx, contract.QueryStatus, func() (workflows.Status, error) { return st, nil }); err != nil {
		return workflows.OnboardResult{}, err
	}
	upsert := func(state workflows.State) {
		_ = workflow.UpsertTypedSearchAttributes(ctx,
			temporal.NewSearchAttributeKeyKeyword(workflows.SearchAttrProject).ValueSet(req.Project),
			temporal.NewSearchAttributeKeyKeyword(workflows.SearchAttrGSA).ValueSet(gsa),
			temporal.NewSearchAttributeKeyKeyword(workflows.SearchAttrState).ValueSet(string(state)))
	}
	upsert(workflows.StateAwaitingApproval)

	var decision *workflows.ApprovalDecision
	counts := func(d workflows.ApprovalDecision) error {
		if !slices.Contains(req.Support.Approvers, d.Approver) {
			return errors.New(d.Approver + " is not an approver of this onboarding")
		}
		return nil
	}
	err := workflow.SetUpdateHandlerWithOptions(ctx, contract.UpdateSupportDecision,
		func(ctx workflow.Context, d workflows.ApprovalDecision) (workflows.State, error) {
			decision = &d
			if d.Approved {
				return workflows.StateApproved, nil
			}
			return workflows.StateRejected, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, d workflows.ApprovalDecision) error { return counts(d) }})
	if err != nil {
		return workflows.OnboardResult{}, err
	}
	signals := workflow.GetSignalChannel(ctx, contract.SignalSupportApproval)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var d workflows.ApprovalDecision
			signals.Receive(ctx, &d)
			if counts(d) == nil {
				decision = &d
				return
			}
		}
	})
	if err := workflow.Await(ctx, func() bool { return decision != nil }); err != nil {
		// Canceled, as a revocation cancels an onboarding awaiting approval.
		st.State = workflows.StateCanceled
		return workflows.OnboardResult{}, err
	}
	st.Approval = &workflows.Approval{Decision: workflows.DecisionApproved, Approver: decision.Approver, Ticket: decision.Ticket}
	st.Steps[0].State, st.Steps[0].EndedAt = workflows.StepDone, workflow.Now(ctx)
	memo := map[string]any{workflows.MemoDecision: string(workflows.DecisionApproved), workflows.MemoApprover: decision.Approver}
	if !decision.Approved {
		memo[workflows.MemoDecision] = string(workflows.DecisionRejected)
	}
	if decision.Ticket != "" {
		memo[workflows.MemoTicket] = decision.Ticket
	}
	if err := workflow.UpsertMemo(ctx, memo); err != nil {
		return workflows.OnboardResult{}, err
	}
	if !decision.Approved {
		st.State = workflows.StateRejected
		upsert(workflows.StateRejected)
		return workflows.OnboardResult{}, temporal.NewNonRetryableApplicationError("rejected by "+decision.Approver, "Rejected", nil)
	}
	st.State = workflows.StateCompleted
	upsert(workflows.StateCompleted)
	expires := workflow.Now(ctx).Add(720 * time.Hour).UTC().Truncate(time.Second)
	_ = workflow.UpsertTypedSearchAttributes(ctx, temporal.NewSearchAttributeKeyTime(workflows.SearchAttrExpiry).ValueSet(expires))
	return workflows.OnboardResult{
		State: workflows.StateCompleted, GSAEmail: gsa, ExpiresAt: expires,
		Approval: *st.Approval,
		Revoke: workflows.RevokeRequest{
			Project: req.Project, Location: req.Location, Cluster: req.Cluster,
			Namespace: req.Namespace, Release: req.Helm.Release, KSA: ksa, GSAEmail: gsa, TokenExpiryWait: "30m",
		},
	}, nil
}

// standInRevoke echoes what it was asked in its warnings. Like the real Revoke it
// cancels a running onboarding of the grant, and then ends onboarding-canceled.
func standInRevoke(ctx workflow.Context, req workflows.RevokeRequest) (workflows.RevokeResult, error) {
	now := workflow.Now(ctx)
	res := workflows.RevokeResult{
		State:            workflows.StateRevoked,
		DeniedStage:      "generate-access-token",
		RefusedAt:        now,
		TokensValidUntil: now,
		AccessEndedAt:    now,
		Warnings: []string{"gsa=" + req.GSAEmail + " wait=" + string(req.TokenExpiryWait) + " reason=" + req.Reason +
			" bigquery=" + fmt.Sprint(req.BigQuery != nil)},
	}
	var grants *activities.Grants
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	onboardID := "gkewi-onboard/" + strings.Join([]string{req.Project, req.Location, req.Cluster, req.Namespace, req.Release}, "/")
	var desc activities.WorkflowRunDescription
	if err := workflow.ExecuteActivity(actx, grants.DescribeWorkflowRun, activities.DescribeWorkflowRunInput{WorkflowID: onboardID}).Get(ctx, &desc); err != nil {
		return workflows.RevokeResult{}, err
	}
	if desc.Found && desc.Run.Status == activities.WorkflowStatusRunning {
		cancel := activities.CancelWorkflowRunInput{WorkflowID: onboardID, RunID: desc.Run.RunID}
		if err := workflow.ExecuteActivity(actx, grants.CancelWorkflowRun, cancel).Get(ctx, nil); err != nil {
			return workflows.RevokeResult{}, err
		}
		res = workflows.RevokeResult{State: workflows.StateOnboardingCanceled, CanceledOnboarding: desc.Run.RunID, Warnings: res.Warnings}
	}
	st := workflows.Status{
		Workflow: workflows.RevokeWorkflowName, State: res.State, Project: req.Project, Location: req.Location,
		Cluster: req.Cluster, Namespace: req.Namespace, KSA: req.KSA, GSAEmail: req.GSAEmail, Steps: []workflows.Step{},
		RefusedAt: res.RefusedAt, TokensValidUntil: res.TokensValidUntil, AccessEndedAt: res.AccessEndedAt, UpdatedAt: now,
	}
	if err := workflow.SetQueryHandler(ctx, contract.QueryStatus, func() (workflows.Status, error) { return st, nil }); err != nil {
		return workflows.RevokeResult{}, err
	}
	return res, nil
}

func TestCLIAgainstDevServer(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{})
	w := worker.New(srv.Client(), workflows.TaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(standInOnboard, workflow.RegisterOptions{Name: workflows.OnboardWorkflowName})
	w.RegisterWorkflowWithOptions(standInRevoke, workflow.RegisterOptions{Name: workflows.RevokeWorkflowName})
	w.RegisterActivity(activities.NewGrants(srv.Client()))
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	env := mapEnv{
		"TEMPORAL_ADDRESS":     srv.FrontendHostPort(),
		"TEMPORAL_NAMESPACE":   "default",
		"TEMPORAL_CONFIG_FILE": filepath.Join(t.TempDir(), "absent.toml"),
	}
	gkewi := func(args ...string) result {
		t.Helper()
		return run(t, env, "", args...)
	}

	// Start an onboarding; a second start of the same grant is refused.
	r := gkewi("onboard", "-f", "testdata/onboard.yaml")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Workflow ID: "+onboardID+"\n")
	assert.Contains(t, r.stdout, "Started Onboard, run ")
	r = gkewi("onboard", "-f", "testdata/onboard.yaml")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "an onboarding of this grant is already running")

	// Status through the query.
	r = gkewi("status", "--workflow-id", onboardID)
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Onboard "+onboardID+": awaiting-approval\n")
	assert.Regexp(t, `(?m)^  GSA:\s+carto-backend@acme-prod\.iam\.gserviceaccount\.com$`, r.stdout)
	assert.Regexp(t, `(?m)^  Running now:\s+approval$`, r.stdout)
	assert.Regexp(t, `(?m)^approval\s+running\s+-\s+`, r.stdout)
	r = gkewi("status", "--workflow-id", onboardID, "-o", "json")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var st workflows.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, workflows.StateAwaitingApproval, st.State)
	assert.Equal(t, "carto-common-backend", st.KSA, "the KSA the workflow found")
	assert.Equal(t, "carto", st.Release)

	// The grant shows up in visibility with its search attributes.
	require.Eventually(t, func() bool {
		r = gkewi("list")
		return r.code == ExitOK && strings.Contains(r.stdout, "awaiting-approval")
	}, 15*time.Second, 200*time.Millisecond, "list never showed the onboarding: %s%s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^`+onboardID+`\s+Running\s+awaiting-approval\s+carto-backend@acme-prod\.iam\.gserviceaccount\.com\s+-\s+-\s+20`, r.stdout,
		"no approver and no expiry yet")

	// An update from someone who is not an approver is refused at once.
	r = gkewi("approve", "--update", "--workflow-id", onboardID, "--approver", "mallory@example.com")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "decision refused")
	assert.Contains(t, r.stderr, "mallory@example.com is not an approver of this onboarding")

	// The approver's update is accepted and answered.
	r = gkewi("approve", "--update", "--workflow-id", onboardID, "--approver", "alice@example.com", "--ticket", "SUP-7")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Decision accepted (approved by alice@example.com): the onboarding is now approved.\n")

	ctx := context.Background()
	require.NoError(t, srv.Client().GetWorkflow(ctx, onboardID, "").Get(ctx, nil))

	// The grant gets a revocation schedule, then a later one: gkewi prints the
	// temporal command that does the same, which works too.
	scheduleID := "gkewi-expiry/acme-prod/europe-west1/gke-main/carto/carto"
	schedules := activities.NewSchedules(srv.Client())
	nextRevocation := func() time.Time {
		t.Helper()
		st, err := schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: scheduleID})
		require.NoError(t, err)
		require.True(t, st.Exists)
		return st.NextActionAt
	}
	r = gkewi("extend", "--workflow-id", onboardID, "--at", "2099-01-01T00:00:00Z", "--token-expiry-wait", "5m")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Schedule ID: "+scheduleID+"\nRevoke starts at:  2099-01-01 00:00:00Z\n")
	assert.Contains(t, r.stdout, "  temporal schedule create --schedule-id '"+scheduleID+"' --calendar "+
		`'{"year":"2099","month":"1","dayOfMonth":"1","hour":"0","minute":"0","second":"0"}' --remaining-actions 1 --catchup-window 8760h `+
		`--workflow-id 'gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto' --type Revoke --task-queue gkewi --input `+
		`'{"project":"acme-prod","location":"europe-west1","cluster":"gke-main","namespace":"carto","release":"carto","ksa":"carto-common-backend",`+
		`"gsaEmail":"carto-backend@acme-prod.iam.gserviceaccount.com","tokenExpiryWait":"5m","reason":"grant expired at 2099-01-01T00:00:00Z"}'`+"\n")
	assert.Contains(t, r.stdout, "Created schedule "+scheduleID+": Revoke (workflow ID gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto-<time>) starts at 2099-01-01 00:00:00Z.\n")
	assert.Equal(t, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), nextRevocation())

	// Ending it sooner narrows the grant: the schedule moves at once.
	r = gkewi("extend", "--workflow-id", onboardID, "--at", "2098-06-01T12:30:00Z", "--dry-run")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Revoke was due at: 2099-01-01 00:00:00Z\nRevoke starts at:  2098-06-01 12:30:00Z\n")
	update := printedCommand(t, r.stdout)
	assert.True(t, strings.HasPrefix(update, "temporal schedule update --schedule-id '"+scheduleID+"' --calendar "+
		`'{"year":"2098","month":"6","dayOfMonth":"1","hour":"12","minute":"30","second":"0"}'`), update)
	assert.Equal(t, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), nextRevocation(), "a dry run changes nothing")
	runTemporal(t, srv.FrontendHostPort(), update)
	assert.Equal(t, time.Date(2098, 6, 1, 12, 30, 0, 0, time.UTC), nextRevocation(), "the printed command moved the schedule")

	// A later end is an extension: a new Onboard of the grant, which support
	// approves under the grant policy; the schedule stays until it completes.
	r = gkewi("extend", "--workflow-id", onboardID, "--at", "2099-06-01T12:30:00Z", "--dry-run")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Revoke is due at:  2098-06-01 12:30:00Z\nAsked to end at:   2099-06-01 12:30:00Z: later, so an extension that support approves under the grant policy.\n")
	start := printedCommand(t, r.stdout)
	assert.True(t, strings.HasPrefix(start, "temporal workflow start --type Onboard --task-queue gkewi --workflow-id '"+onboardID+"' --input "), start)
	assert.Contains(t, start, `"expiry":{"at":"2099-06-01T12:30:00Z"}`)
	assert.Equal(t, time.Date(2098, 6, 1, 12, 30, 0, 0, time.UTC), nextRevocation(), "an extension does not move the schedule")

	// Revoke by the onboarding's ID: the revoke request comes from its result.
	r = gkewi("revoke", "--workflow-id", onboardID, "--token-expiry-wait", "0s", "--reason", "test over", "--wait")
	require.Equal(t, ExitOK, r.code, r.stderr)
	revokeID := "gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto"
	assert.Contains(t, r.stdout, "Workflow ID: "+revokeID+"\n")
	assert.Contains(t, r.stdout, `"tokenExpiryWait":"0s","reason":"test over"}'`)
	assert.Contains(t, r.stdout, `"gsa=carto-backend@acme-prod.iam.gserviceaccount.com wait=0s reason=test over bigquery=false"`)
	assert.Regexp(t, `\nRevoked: fresh tokens refused since 20\S+ \S+; access ended 20\S+ \S+\.\n`, r.stdout)
	assert.Contains(t, r.stdout, `"state": "revoked"`)
	r = gkewi("status", "--workflow-id", revokeID)
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Revoke "+revokeID+": revoked (ended)\n")
	assert.Regexp(t, `\n  Refused since:\s+20`, r.stdout)
	assert.Regexp(t, `\n  Tokens valid until:\s+20`, r.stdout)
	assert.Regexp(t, `\n  Access ended:\s+20`, r.stdout)

	// A second grant, followed with --wait while support approves by signal.
	b, err := os.ReadFile("testdata/onboard.yaml")
	require.NoError(t, err)
	second := strings.Replace(string(b), "namespace: carto", "namespace: carto-staging", 1)
	secondID := "gkewi-onboard/acme-prod/europe-west1/gke-main/carto-staging/carto"
	waited := make(chan result, 1)
	go func() { waited <- run(t, env, second, "onboard", "-f", "-", "--wait") }()
	require.Eventually(t, func() bool {
		r = gkewi("status", "--workflow-id", secondID)
		return r.code == ExitOK
	}, 15*time.Second, 200*time.Millisecond)
	r = gkewi("approve", "--workflow-id", secondID, "--approver", "alice@example.com", "--ticket", "SUP-8")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Sent support-approval (approved by alice@example.com).")
	select {
	case r = <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("onboard --wait did not return after the approval")
	}
	require.Equal(t, ExitOK, r.code, r.stderr)
	// The follower prints each state it sees; whether it saw the wait before
	// the approval landed depends on timing, so only its progress line and the
	// outcome are asserted.
	assert.Regexp(t, `\d\d:\d\d:\d\d  (awaiting-approval, step approval|completed)\n`, r.stdout)
	assert.Contains(t, r.stdout, `"state": "completed"`)
	assert.Contains(t, r.stdout, `"approver": "alice@example.com"`)

	// A rejection by signal ends a third onboarding unsuccessfully.
	third := strings.Replace(string(b), "namespace: carto", "namespace: carto-dev", 1)
	thirdID := "gkewi-onboard/acme-prod/europe-west1/gke-main/carto-dev/carto"
	r = run(t, env, third, "onboard", "-f", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = gkewi("reject", "--workflow-id", thirdID, "--approver", "alice@example.com", "--comment", "not yet")
	require.Equal(t, ExitOK, r.code, r.stderr)

	// A grant still awaiting approval is revoked by canceling its onboarding;
	// the revoke request comes from its status and its input.
	fourth := strings.Replace(string(b), "namespace: carto", "namespace: carto-qa", 1) +
		"bigquery: {dataProject: acme-data, billingProject: acme-billing, tempDataset: carto_temp, connectionOwnerId: owner}\n"
	fourthID := "gkewi-onboard/acme-prod/europe-west1/gke-main/carto-qa/carto"
	r = run(t, env, fourth, "onboard", "-f", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Eventually(t, func() bool {
		r = gkewi("status", "--workflow-id", fourthID)
		return r.code == ExitOK
	}, 15*time.Second, 200*time.Millisecond)
	r = gkewi("revoke", "--workflow-id", fourthID, "--at", "2099-01-01T00:00:00Z")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "onboarding "+fourthID+" is still running: it sets the grant's revocation schedule itself when it completes")
	r = gkewi("revoke", "--workflow-id", fourthID, "--reason", "not needed", "--wait")
	require.Equal(t, ExitOK, r.code, r.stderr)
	fourthRevokeID := "gkewi-revoke/acme-prod/europe-west1/gke-main/carto-qa/carto"
	assert.Contains(t, r.stdout, "Onboarding "+fourthID+" is running (awaiting-approval).\n")
	assert.Contains(t, r.stdout, "It cancels the running onboarding "+fourthID+" first and waits for its clean-up.\n")
	assert.Contains(t, r.stdout, `"gsa=carto-backend@acme-prod.iam.gserviceaccount.com wait=30m reason=not needed bigquery=true"`)
	assert.Regexp(t, `\nNothing was granted: the onboarding \(run [0-9a-f-]{36}\) was canceled before the approval`, r.stdout)
	assert.Contains(t, r.stdout, `"state": "onboarding-canceled"`)
	r = gkewi("status", "--workflow-id", fourthRevokeID)
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Revoke "+fourthRevokeID+": onboarding-canceled (ended)\n")
	assert.Regexp(t, `\n  Outcome:\s+nothing was granted: the onboarding was canceled before the approval\n`, r.stdout)
	var canceled *temporal.CanceledError
	assert.ErrorAs(t, srv.Client().GetWorkflow(ctx, fourthID, "").Get(ctx, nil), &canceled, "the onboarding was canceled")

	// A revocation scheduled from a request file.
	later := strings.Replace(string(mustRead(t, "testdata/revoke.yaml")), "namespace: carto", "namespace: carto-later", 1)
	r = run(t, env, later, "revoke", "-f", "-", "--at", "2099-02-03T04:05:06Z", "--token-expiry-wait", "1m")
	require.Equal(t, ExitOK, r.code, r.stderr)
	laterScheduleID := "gkewi-expiry/acme-prod/europe-west1/gke-main/carto-later/carto"
	assert.Contains(t, r.stdout, "Created schedule "+laterScheduleID+": Revoke (workflow ID gkewi-revoke/acme-prod/europe-west1/gke-main/carto-later/carto-<time>) starts at 2099-02-03 04:05:06Z.\n")
	assert.Contains(t, r.stdout, `"tokenExpiryWait":"1m","reason":"contract ended"}'`)
	st2, err := schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: laterScheduleID})
	require.NoError(t, err)
	assert.Equal(t, time.Date(2099, 2, 3, 4, 5, 6, 0, time.UTC), st2.NextActionAt)

	// Completed grants, by state, as JSON with the expiry.
	query := "WorkflowType='Onboard' AND GkewiState='completed'"
	var grants []grant
	require.Eventually(t, func() bool {
		r = gkewi("list", "--query", query, "-o", "json")
		grants = nil
		return r.code == ExitOK && json.Unmarshal([]byte(r.stdout), &grants) == nil && len(grants) == 2
	}, 15*time.Second, 200*time.Millisecond, "list: %s%s", r.stdout, r.stderr)
	ids := []string{grants[0].WorkflowID, grants[1].WorkflowID}
	assert.ElementsMatch(t, []string{onboardID, secondID}, ids)
	for _, g := range grants {
		assert.Equal(t, "Completed", g.Status)
		assert.Equal(t, "completed", g.State)
		assert.WithinDuration(t, time.Now().Add(720*time.Hour), g.ExpiresAt, time.Hour)
		assert.Equal(t, "approved", g.Decision)
		assert.Equal(t, "alice@example.com", g.Approver, "the approver comes from the memo")
	}
	tickets := []string{grants[0].Ticket, grants[1].Ticket}
	assert.ElementsMatch(t, []string{"SUP-7", "SUP-8"}, tickets)
	require.Eventually(t, func() bool {
		r = gkewi("list", "--query", "WorkflowType='Onboard' AND GkewiState='rejected'")
		return r.code == ExitOK && strings.Contains(r.stdout, thirdID)
	}, 15*time.Second, 200*time.Millisecond, "list: %s%s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^`+thirdID+`\s+Failed\s+rejected\s+\S+\s+alice@example\.com\s+-\s+20`, r.stdout)

	// Revoking or extending a grant that never completed is refused with the reason.
	r = gkewi("revoke", "--workflow-id", thirdID)
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "onboarding "+thirdID+" is Failed: only a completed or running onboarding names its grant")
	r = gkewi("extend", "--workflow-id", thirdID, "--ttl", "1h")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "onboarding "+thirdID+" is Failed: only a completed grant can be extended")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// printedCommand is the command after "Equivalent temporal command:".
func printedCommand(t *testing.T, stdout string) string {
	t.Helper()
	_, after, ok := strings.Cut(stdout, "Equivalent temporal command:\n  ")
	require.True(t, ok, stdout)
	line, _, _ := strings.Cut(after, "\n")
	return line
}

// runTemporal runs a printed temporal command line through the shell with the
// pinned temporal CLI, against the dev server at address.
func runTemporal(t *testing.T, address, commandLine string) {
	t.Helper()
	rest, ok := strings.CutPrefix(commandLine, "temporal ")
	require.True(t, ok, commandLine)
	cmd := exec.Command("sh", "-c", `exec "$GKEWI_TEMPORAL_BIN" `+rest)
	cmd.Env = append(os.Environ(), "GKEWI_TEMPORAL_BIN="+workertest.TemporalCLIPath(), "TEMPORAL_ADDRESS="+address,
		"TEMPORAL_NAMESPACE=default", "TEMPORAL_CONFIG_FILE="+filepath.Join(t.TempDir(), "absent.toml"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", commandLine, out)
}
