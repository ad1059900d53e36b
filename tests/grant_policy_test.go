package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// refusedBeforeAnyChange starts req and requires the run to fail with the
// policy's refusal containing want, with no Google call that changes anything
// and no GSA.
func refusedBeforeAnyChange(t *testing.T, req workflows.OnboardRequest, want string) {
	t.Helper()
	since := time.Now()
	id := startOnboard(t, req)
	d := waitClosed(t, id, time.Minute)
	require.NotNil(t, d.CloseEvent)
	require.NotNil(t, d.CloseEvent.Failed, "the run must fail")
	f := d.CloseEvent.Failed.Failure
	require.NotNil(t, f.Info)
	assert.Equal(t, contract.ErrTypePolicyRefused, f.Info.Type)
	assert.Contains(t, f.Message, want)
	for _, c := range callsSince(since) {
		assert.Falsef(t, isMutating(c.Method), "no change before the policy decides: %s", c.Method)
	}
	assert.False(t, gsaExists(t, req.GSAEmail()))
}

// A requester who names their own approver, asks for proof none, for longer
// than the rule allows, or where no rule covers them, gets nothing: the run is
// refused before any Google change.
func TestRequestsWideningThePolicyAreRefusedBeforeAnyChange(t *testing.T) {
	requireSandbox(t)
	// e2e-proof is under carto-production: support-lead, id-token.
	req := onboardRequest(t, "e2e-proof")
	req.GSA.AccountID = "e2e-widen"
	req.Support.Proof = ""

	mine := req
	mine.Support.Approvers = []string{unlistedEmail}
	refusedBeforeAnyChange(t, mine, `grant policy rule "carto-production": support.approvers[0]: `+unlistedEmail+` may not approve under this rule`)

	none := req
	none.Support.Proof = workflows.ProofNone
	refusedBeforeAnyChange(t, none, `grant policy rule "carto-production": support.proof: "none" is weaker than the rule's "id-token"`)

	// A signed link needs an approver's address: a request cannot have one
	// mailed to an address the policy does not list (e2e-link: proof link).
	link := onboardRequest(t, "e2e-link")
	link.GSA.AccountID = "e2e-widen-link"
	link.Support.Proof = ""
	link.Support.Approvers = []string{unlistedEmail}
	refusedBeforeAnyChange(t, link, `grant policy rule "sandbox-links": support.approvers[0]`)
	for _, m := range sandbox.Mail() {
		assert.NotContains(t, m.To, unlistedEmail, "nothing is mailed to the requester's address")
	}

	// pol-* grants last at most 8 hours and need a proven requester.
	long := onboardRequest(t, "pol-long")
	long.Support.Proof = ""
	long.Expiry = &workflows.ExpirySpec{TTL: "9h"}
	refusedBeforeAnyChange(t, long, `grant policy rule "sandbox-two-level": expiry.ttl: 9h0m0s is longer than the rule's maxDuration 8h`)
	unproven := onboardRequest(t, "pol-unproven")
	unproven.Support.Proof = ""
	refusedBeforeAnyChange(t, unproven, `grant policy rule "sandbox-two-level": requester: the rule requires a proven requester`)

	nowhere := onboardRequest(t, "nowhere")
	refusedBeforeAnyChange(t, nowhere, "no rule of the grant policy covers project carto-sandbox, cluster carto, namespace nowhere")
}

// A changed policy file is read again: runs started after it follow it and
// record its digest; a run started before keeps the rule it began with.
func TestPolicyReloadTakesEffectForNewRunsOnly(t *testing.T) {
	requireSandbox(t)
	path := sandbox.PolicyPath()
	original, err := os.ReadFile(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.WriteFile(path, original, 0o644) })
	const other = "other-support@carto.example"
	writePolicy := func(approver string) string {
		// The new rule goes first, so it decides e2e-reload.
		text := strings.Replace(string(original), "rules:\n", `rules:
  - name: reload
    scope: {projects: [carto-sandbox], namespaces: [e2e-reload]}
    approval: {proof: none, levels: [{approvers: [`+approver+`]}]}
    bigquery: {dataProjects: [carto-data], billingProjects: [carto-billing], projectWide: true}
`, 1)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		sum := sha256.Sum256([]byte(text))
		time.Sleep(2500 * time.Millisecond) // the sandbox worker reads it every second
		return "sha256:" + hex.EncodeToString(sum[:])
	}

	first := writePolicy(approver)
	req := onboardRequest(t, "e2e-reload")
	req.Support.Approvers = nil
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	assert.Equal(t, "reload", s.Approval.Rule)
	assert.Equal(t, first, s.Approval.PolicyDigest)

	second := writePolicy(other)
	// The running run keeps its rule: the new approver does not count there.
	signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: other})
	s = waitStatus(t, id, 30*time.Second, "the decision recorded", func(s workflows.Status) bool { return len(s.Approval.Ignored) > 0 })
	assert.Contains(t, s.Approval.Ignored[0].Reason, other+` is not an approver of grant policy rule "reload"`)
	assert.Equal(t, workflows.StateAwaitingApproval, s.State)

	// A new run follows the new text.
	again := onboardRequest(t, "e2e-reload")
	again.Helm.Release = "second"
	again.GSA.AccountID = "e2e-reload-2"
	again.Support.Approvers = nil
	id2 := startOnboard(t, again)
	s2 := waitStatus(t, id2, time.Minute, "the policy resolved", func(s workflows.Status) bool {
		return s.Approval != nil && s.Approval.PolicyDigest != "" || s.State == workflows.StateFailed
	})
	assert.Equal(t, second, s2.Approval.PolicyDigest)
	assert.Equal(t, []string{other}, s2.Approval.Levels[0].Approvers)

	signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: approver})
	s = waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
	assert.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	assert.Equal(t, approver, s.Approval.Approver)
	temporal(t, "workflow", "terminate", "--workflow-id", id2, "--reason", "test over")
}

// onboardProven starts req with `gkewi onboard --endpoint`, as requester proves
// with their ID token, and returns the workflow ID.
func onboardProven(t *testing.T, req workflows.OnboardRequest, requester string) string {
	t.Helper()
	id := workflows.OnboardWorkflowID(req)
	dir := t.TempDir()
	reqFile, tokFile := filepath.Join(dir, "request.json"), filepath.Join(dir, "token")
	b, err := json.Marshal(req)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(reqFile, b, 0o600))
	tok := idToken(t, gcpemu.IDTokenClaims{Email: requester, Audience: id, EmailVerified: true})
	require.NoError(t, os.WriteFile(tokFile, []byte(tok), 0o600))
	r := gkewi(t, "onboard", "-f", reqFile, "--endpoint", sandbox.ApprovalURL(), "--id-token-file", tokFile)
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "requested by "+requester+" (ID token verified by the worker)")
	return id
}

// decideAs posts who's decision with their own ID token for the current run.
func decideAs(t *testing.T, id, who string, approved bool) (int, string, workflows.State) {
	t.Helper()
	code, resp := postDecision(t, id, idToken(t, gcpemu.IDTokenClaims{Email: who, Audience: id, EmailVerified: true}), approved)
	return code, resp.Error, resp.State
}

// Under a two-level rule with a proven requester: the requester's own approval
// never counts, even as an eligible approver; level 2 cannot approve before
// level 1; the grant needs both levels; a rejection at level 1 ends it.
func TestTwoLevelsAndAProvenRequester(t *testing.T) {
	requireSandbox(t)
	const security = "security@carto.example"

	// Someone else requests: level 1 then level 2. (First: a run that finds the
	// API enabled seconds ago by another would take SERVICE_DISABLED as final.)
	req := onboardRequest(t, "pol-levels")
	req.Support = workflows.SupportSpec{ApprovalTimeout: "1h"}
	id := onboardProven(t, req, "dev@carto.example")
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	assert.Equal(t, "sandbox-two-level", s.Approval.Rule)
	code, why, _ := decideAs(t, id, security, true)
	assert.Equal(t, http.StatusConflict, code)
	assert.Contains(t, why, "approves at level 2")
	code, why, state := decideAs(t, id, approver, true)
	require.Equal(t, http.StatusOK, code, why)
	assert.Equal(t, workflows.StateAwaitingApproval, state, "level 2 still decides")
	code, why, _ = decideAs(t, id, approver, true)
	assert.Equal(t, http.StatusConflict, code, "one approver, one level: %s", why)
	code, why, state = decideAs(t, id, security, true)
	require.Equal(t, http.StatusOK, code, why)
	assert.Equal(t, workflows.StateApproved, state)
	s = waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	require.Len(t, s.Approval.Levels, 2)
	assert.Equal(t, approver, s.Approval.Levels[0].Approvals[0].Approver)
	assert.Equal(t, security, s.Approval.Levels[1].Approvals[0].Approver)
	// The request set no expiry: the rule's maxDuration (8h) ends the grant.
	assert.WithinDuration(t, time.Now().Add(8*time.Hour), s.ExpiresAt, 5*time.Minute)
	assert.NotEmpty(t, s.RevocationSchedule)

	// The support lead requests a grant: their own approval does not count.
	own := onboardRequest(t, "pol-own")
	own.Support = workflows.SupportSpec{ApprovalTimeout: "1h"}
	id = onboardProven(t, own, approver)
	s = waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	assert.Equal(t, approver, s.Requester)
	code, why, _ = decideAs(t, id, approver, true)
	assert.Equal(t, http.StatusConflict, code)
	assert.Contains(t, why, approver+" requested this grant, and nobody approves their own")
	code, why, _ = decideAs(t, id, approver, false)
	assert.Equal(t, http.StatusConflict, code, "nor rejects it: %s", why)
	temporal(t, "workflow", "terminate", "--workflow-id", id, "--reason", "test over")

	// A rejection at level 1 ends the request; nothing is granted.
	rej := onboardRequest(t, "pol-reject")
	rej.Support = workflows.SupportSpec{ApprovalTimeout: "1h"}
	id = onboardProven(t, rej, "dev@carto.example")
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	code, why, state = decideAs(t, id, approver, false)
	require.Equal(t, http.StatusOK, code, why)
	assert.Equal(t, workflows.StateRejected, state)
	waitClosed(t, id, time.Minute)
	assert.False(t, gsaExists(t, rej.GSAEmail()), "the GSA this run created is gone")
}
