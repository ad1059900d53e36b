package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

// idToken is an ID token the sandbox's issuer signs, as Google signs what
// `gcloud auth print-identity-token --audiences=AUD --include-email` prints.
func idToken(t *testing.T, c gcpemu.IDTokenClaims) string {
	t.Helper()
	tok, err := sandbox.Emulator().MintIDToken(sandbox.IDTokenIssuer(), c)
	require.NoError(t, err)
	return tok
}

// currentRun is the run ID of the workflow's current run: the run a decision
// names, as the support email does.
func currentRun(t *testing.T, workflowID string) string {
	t.Helper()
	desc, err := sandbox.TemporalClient().DescribeWorkflowExecution(context.Background(), workflowID, "")
	require.NoError(t, err)
	return desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
}

// postDecision sends a decision for the current run to the worker's approval
// endpoint with token.
func postDecision(t *testing.T, workflowID, token string, approved bool) (int, worker.DecisionResponse) {
	t.Helper()
	body, err := json.Marshal(worker.DecisionRequest{WorkflowID: workflowID, RunID: currentRun(t, workflowID), Approved: &approved, Ticket: "SUP-P"})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, sandbox.ApprovalURL()+worker.DecisionPath, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out worker.DecisionResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

// By default a decision counts only when the approver proves who they are: a
// signal naming an approver, a token for another grant, an expired one, one
// with an unverified email and one of someone not listed are refused and
// recorded; the listed approver's token approves, and no token ever reaches
// the history.
func TestApprovalNeedsTheApproversIDToken(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-proof")
	req.Support.Proof = "" // the sandbox policy's rule for e2e-proof: id-token
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	assert.Equal(t, workflows.ProofIDToken, s.Approval.Proof)

	// Whoever can signal the workflow can type support's address: not enough.
	signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: approver})

	tokens := map[string]string{
		"another grant": idToken(t, gcpemu.IDTokenClaims{Email: approver, Audience: id + "-other", EmailVerified: true}),
		"expired": idToken(t, gcpemu.IDTokenClaims{Email: approver, Audience: id, EmailVerified: true,
			IssuedAt: time.Now().Add(-2 * time.Hour)}),
		"unverified email": idToken(t, gcpemu.IDTokenClaims{Email: approver, Audience: id}),
	}
	for name, tok := range tokens {
		code, resp := postDecision(t, id, tok, true)
		assert.Equal(t, http.StatusUnauthorized, code, "%s: %+v", name, resp)
		assert.Contains(t, resp.Error, "ID token refused", name)
	}
	unlisted := idToken(t, gcpemu.IDTokenClaims{Email: "mallory@carto.example", Audience: id, EmailVerified: true})
	code, resp := postDecision(t, id, unlisted, true)
	assert.Equal(t, http.StatusConflict, code, "%+v", resp)
	assert.Contains(t, resp.Error, `mallory@carto.example is not an approver of grant policy rule "carto-production"`)
	tokens["unlisted"] = unlisted

	s = queryStatus(t, id)
	assert.Equal(t, workflows.StateAwaitingApproval, s.State, "nothing counted yet")
	require.NotEmpty(t, s.Approval.Ignored)
	assert.Contains(t, s.Approval.Ignored[0].Reason, "no proof of the approver's identity")

	good := idToken(t, gcpemu.IDTokenClaims{Email: approver, Audience: id, EmailVerified: true})
	tokens["good"] = good

	// A decision for a run that is no longer the current one is refused.
	stale, err := json.Marshal(worker.DecisionRequest{WorkflowID: id, RunID: "an-earlier-run", Approved: new(true)})
	require.NoError(t, err)
	hreq, err := http.NewRequest(http.MethodPost, sandbox.ApprovalURL()+worker.DecisionPath, bytes.NewReader(stale))
	require.NoError(t, err)
	hreq.Header.Set("Authorization", "Bearer "+good)
	hresp, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	hresp.Body.Close()
	assert.Equal(t, http.StatusConflict, hresp.StatusCode, "a decision for an earlier run")

	code, resp = postDecision(t, id, good, true)
	require.Equal(t, http.StatusOK, code, "%+v", resp)
	assert.Equal(t, approver, resp.Approver)
	assert.Equal(t, workflows.StateApproved, resp.State)

	s = waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	ev := s.Approval.Evidence
	require.NotNil(t, ev)
	sum := sha256.Sum256([]byte(good))
	assert.Equal(t, workflows.ApprovalEvidence{
		Method: workflows.ProofIDToken, Issuer: sandbox.IDTokenIssuer(), Subject: ev.Subject, Email: approver,
		TokenSHA256: hex.EncodeToString(sum[:]), IssuedAt: ev.IssuedAt, ExpiresAt: ev.IssuedAt.Add(time.Hour), VerifiedAt: ev.VerifiedAt,
	}, *ev)
	assert.NotEmpty(t, ev.Subject)
	assert.Equal(t, approver, s.Approval.Approver)

	history := historyText(t, id)
	assert.Contains(t, history, hex.EncodeToString(sum[:]), "the history holds the token's hash")
	for name, tok := range tokens {
		assert.NotContains(t, history, tok, "the %s token is in the history", name)
	}
}

// historyText is the workflow's history as the temporal CLI shows it, with
// every payload decoded: what anyone who can read the namespace can read.
func historyText(t *testing.T, id string) string {
	t.Helper()
	raw := temporal(t, "workflow", "show", "--workflow-id", id, "--output", "json")
	var doc any
	require.NoError(t, json.Unmarshal([]byte(raw), &doc))
	var b strings.Builder
	b.WriteString(raw)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "data" {
					if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
						b.WriteString("\n")
						b.Write(dec)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return b.String()
}

// mailedLink is the decision link the approver's own support email carries.
func mailedLink(t *testing.T, id, to, label string) string {
	t.Helper()
	for _, m := range sandbox.Mail() {
		body := string(m.Data)
		if len(m.To) != 1 || m.To[0] != to || !strings.Contains(body, id) {
			continue
		}
		if i := strings.Index(body, label+" "); i >= 0 {
			return strings.Fields(body[i+len(label):])[0]
		}
	}
	t.Fatalf("no email to %s about %s carries a %q link", to, id, label)
	return ""
}

func linkRequest(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b strings.Builder
	_, err = io.Copy(&b, resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b.String()
}

// The approver's own email carries signed links in their name: opening one
// decides nothing (mail scanners open links), its button decides once, and a
// link altered to name another grant is refused.
func TestSignedLinkApprovesOnceAndOnlyItsGrant(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-link")
	req.Support.Proof = "" // the sandbox policy's rule for e2e-link: link
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	approve := mailedLink(t, id, approver, "Approve:")
	require.True(t, strings.HasPrefix(approve, sandbox.ApprovalURL()+"/v1/links/"), approve)

	code, page := linkRequest(t, http.MethodGet, approve)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, page, "Approve the onboarding <code>"+id+"</code> as "+approver+"?")
	assert.Equal(t, workflows.StateAwaitingApproval, queryStatus(t, id).State, "opening the link decides nothing")

	// This link's signature on claims naming another grant.
	tok := strings.TrimPrefix(approve, sandbox.ApprovalURL()+"/v1/links/")
	payload, sig, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	require.NoError(t, err)
	other := strings.Replace(string(raw), "e2e-link", "e2e-full", 1)
	require.NotEqual(t, string(raw), other)
	code, page = linkRequest(t, http.MethodPost, sandbox.ApprovalURL()+"/v1/links/"+base64.RawURLEncoding.EncodeToString([]byte(other))+"."+sig)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, page, "decision link refused")

	code, page = linkRequest(t, http.MethodPost, approve)
	require.Equal(t, http.StatusOK, code, page)
	assert.Contains(t, page, "Approved as "+approver)
	code, page = linkRequest(t, http.MethodPost, approve)
	assert.Equal(t, http.StatusConflict, code, "a link decides once")
	assert.Contains(t, page, "already approved by "+approver)

	s = waitStatus(t, id, toCompleted, "the end of the onboarding", inState(workflows.StateCompleted, workflows.StateFailed))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	require.NotNil(t, s.Approval.Evidence)
	assert.Equal(t, "link", s.Approval.Evidence.Method)
	assert.Equal(t, approver, s.Approval.Evidence.Email)
	assert.NotContains(t, historyText(t, id), tok, "the link's token is not in the history")
}
