package starter

import (
	"encoding/json"
	"errors"
	"os"
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

	"github.com/gkewi/gkewi/worker/workertest"
	"github.com/gkewi/gkewi/workflows"
)

// standInOnboard has the real Onboard's interface (name, input, status query,
// decision signal and update, search attributes, result) and none of its steps, so
// the CLI is tested against a real server without Google or Kubernetes.
func standInOnboard(ctx workflow.Context, req workflows.OnboardRequest) (workflows.OnboardResult, error) {
	gsa := req.GSA.AccountID + "@" + req.Project + ".iam.gserviceaccount.com"
	st := workflows.Status{
		Workflow: workflows.OnboardWorkflowName, State: workflows.StateAwaitingApproval,
		Project: req.Project, Location: req.Location, Cluster: req.Cluster,
		Namespace: req.Namespace, KSA: req.KSA, GSAEmail: gsa,
		Steps:    []workflows.Step{{Name: "approval", State: workflows.StepRunning, StartedAt: workflow.Now(ctx)}},
		Approval: &workflows.Approval{Decision: workflows.DecisionPending},
	}
	if err := workflow.SetQueryHandler(ctx, workflows.QueryStatus, func() (workflows.Status, error) { return st, nil }); err != nil {
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
	err := workflow.SetUpdateHandlerWithOptions(ctx, workflows.UpdateSupportDecision,
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
	signals := workflow.GetSignalChannel(ctx, workflows.SignalSupportApproval)
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
		return workflows.OnboardResult{}, err
	}
	st.Approval = &workflows.Approval{Decision: workflows.DecisionApproved, Approver: decision.Approver, Ticket: decision.Ticket}
	st.Steps[0].State, st.Steps[0].EndedAt = workflows.StepDone, workflow.Now(ctx)
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
			Namespace: req.Namespace, KSA: req.KSA, GSAEmail: gsa, TokenExpiryWait: "30m",
		},
	}, nil
}

// standInRevoke echoes what it was asked in its warnings.
func standInRevoke(ctx workflow.Context, req workflows.RevokeRequest) (workflows.RevokeResult, error) {
	return workflows.RevokeResult{
		State:       workflows.StateRevoked,
		DeniedStage: "generate-access-token",
		Warnings:    []string{"gsa=" + req.GSAEmail + " wait=" + string(req.TokenExpiryWait) + " reason=" + req.Reason},
	}, nil
}

func TestCLIAgainstDevServer(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{})
	w := worker.New(srv.Client(), workflows.TaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(standInOnboard, workflow.RegisterOptions{Name: workflows.OnboardWorkflowName})
	w.RegisterWorkflowWithOptions(standInRevoke, workflow.RegisterOptions{Name: workflows.RevokeWorkflowName})
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
	assert.Contains(t, r.stdout, "  GSA:       carto-backend@acme-prod.iam.gserviceaccount.com\n")
	assert.Regexp(t, `(?m)^approval\s+running\s+-\s+`, r.stdout)
	r = gkewi("status", "--workflow-id", onboardID, "-o", "json")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var st workflows.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, workflows.StateAwaitingApproval, st.State)
	assert.Equal(t, "carto-common-backend", st.KSA, "the defaulted KSA reached the workflow")

	// The grant shows up in visibility with its search attributes.
	require.Eventually(t, func() bool {
		r = gkewi("list")
		return r.code == ExitOK && strings.Contains(r.stdout, "awaiting-approval")
	}, 15*time.Second, 200*time.Millisecond, "list never showed the onboarding: %s%s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^`+onboardID+`\s+Running\s+awaiting-approval\s+carto-backend@acme-prod\.iam\.gserviceaccount\.com\s+-\s+20`, r.stdout)

	// An update from someone who is not an approver is refused at once.
	r = gkewi("approve", "--update", "--workflow-id", onboardID, "--approver", "mallory@example.com")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "decision refused")
	assert.Contains(t, r.stderr, "mallory@example.com is not an approver of this onboarding")

	// The approver's update is accepted and answered.
	r = gkewi("approve", "--update", "--workflow-id", onboardID, "--approver", "alice@example.com", "--ticket", "SUP-7")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Decision accepted (approved by alice@example.com): the onboarding is now approved.\n")

	// Revoke by the onboarding's ID: the revoke request comes from its result.
	require.Eventually(t, func() bool {
		r = gkewi("revoke", "--workflow-id", onboardID, "--token-expiry-wait", "0s", "--reason", "test over", "--wait")
		return r.code == ExitOK
	}, 15*time.Second, 300*time.Millisecond, "revoke: %s%s", r.stdout, r.stderr)
	revokeID := "gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto-common-backend"
	assert.Contains(t, r.stdout, "Workflow ID: "+revokeID+"\n")
	assert.Contains(t, r.stdout, `"tokenExpiryWait":"0s","reason":"test over"}'`)
	assert.Contains(t, r.stdout, `"gsa=carto-backend@acme-prod.iam.gserviceaccount.com wait=0s reason=test over"`)
	assert.Contains(t, r.stdout, `"state": "revoked"`)

	// A second grant, followed with --wait while support approves by signal.
	b, err := os.ReadFile("testdata/onboard.yaml")
	require.NoError(t, err)
	second := strings.Replace(string(b), "namespace: carto", "namespace: carto-staging", 1)
	secondID := "gkewi-onboard/acme-prod/europe-west1/gke-main/carto-staging/carto-common-backend"
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
	assert.Regexp(t, `\d\d:\d\d:\d\d  awaiting-approval, step approval\n`, r.stdout)
	assert.Contains(t, r.stdout, `"state": "completed"`)
	assert.Contains(t, r.stdout, `"approver": "alice@example.com"`)

	// A rejection by signal ends a third onboarding unsuccessfully.
	third := strings.Replace(string(b), "namespace: carto", "namespace: carto-dev", 1)
	thirdID := "gkewi-onboard/acme-prod/europe-west1/gke-main/carto-dev/carto-common-backend"
	r = run(t, env, third, "onboard", "-f", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = gkewi("reject", "--workflow-id", thirdID, "--approver", "alice@example.com", "--comment", "not yet")
	require.Equal(t, ExitOK, r.code, r.stderr)

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
	}
	require.Eventually(t, func() bool {
		r = gkewi("list", "--query", "WorkflowType='Onboard' AND GkewiState='rejected'")
		return r.code == ExitOK && strings.Contains(r.stdout, thirdID)
	}, 15*time.Second, 200*time.Millisecond, "list: %s%s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^`+thirdID+`\s+Failed\s+rejected\s+`, r.stdout)

	// Revoking a grant that never completed is refused with the reason.
	r = gkewi("revoke", "--workflow-id", thirdID)
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "onboarding "+thirdID+" is Failed: only a completed onboarding holds a revoke request")
}
