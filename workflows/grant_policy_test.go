package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
)

const bob = "Bob@Example.com"

// twoLevelPolicy: alice approves first, then one of bob and alice; grants
// last at most 8 hours; service accounts of the project's domain are listed
// by domain but may not approve.
const twoLevelPolicy = `
rules:
  - name: two-level
    scope: {projects: [my-project], namespaces: [carto]}
    maxDuration: 8h
    approval:
      proof: none
      levels:
        - approvers: [alice@example.com]
          domains: [my-project.iam.gserviceaccount.com]
        - approvers: [alice@example.com, Bob@Example.com]
    bigquery: {dataProjects: [my-data-project], billingProjects: [my-billing-project], projectWide: true}
`

func reject(approver string) ApprovalDecision {
	return ApprovalDecision{Approved: false, Approver: approver}
}

// A request asking more than its rule allows gets nothing: the policy refuses
// it before any step, naming the rule and the field.
func TestRequestWideningThePolicyIsRefusedBeforeAnyStep(t *testing.T) {
	for name, tc := range map[string]struct {
		patch func(*OnboardRequest)
		want  string
	}{
		"another approver": {func(r *OnboardRequest) { r.Support.Approvers = []string{mallory} },
			`grant policy rule "two-level": support.approvers[0]: mallory@example.com may not approve under this rule`},
		"longer than maxDuration": {func(r *OnboardRequest) { r.Expiry = &ExpirySpec{TTL: "9h"} },
			`grant policy rule "two-level": expiry.ttl: 9h0m0s is longer than the rule's maxDuration 8h`},
		"another data project": {func(r *OnboardRequest) { r.BigQuery.DataProject = "their-data" },
			`grant policy rule "two-level": bigquery.dataProject: their-data is not among the rule's dataProjects`},
		"no rule covers it": {func(r *OnboardRequest) { r.Namespace = "elsewhere" },
			"no rule of the grant policy covers project my-project, cluster prod-cluster, namespace elsewhere"},
	} {
		t.Run(name, func(t *testing.T) {
			fake := newFakeCloud().withPolicy(t, twoLevelPolicy)
			req := validRequest()
			req.Support.Approvers = nil
			req.Support.Proof = ""
			tc.patch(&req)
			env := newOnboardEnv(t, fake, req)
			env.ExecuteWorkflow(Onboard, req)
			appErr := workflowAppError(t, env)
			assert.Equal(t, contract.ErrTypePolicyRefused, appErr.Type())
			assert.Contains(t, appErr.Error(), tc.want)
			assert.Empty(t, fake.names(), "nothing ran, nothing changed")
		})
	}
}

// Two levels: a level-2 approval before level 1 does not count, level 1's
// approver cannot approve level 2 too, level 2 is asked once level 1 approved,
// and the grant needs both.
func TestTwoLevelsNeedBothWithDistinctApprovers(t *testing.T) {
	fake := newFakeCloud().withPolicy(t, twoLevelPolicy)
	req := validRequest()
	req.Support.Approvers = nil
	req.Support.Proof = ""
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(bob))
	signalAt(env, 2*time.Hour, approve(alice))
	signalAt(env, 3*time.Hour, approve(alice))
	signalAt(env, 4*time.Hour, approve(bob))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	a := s.Approval
	assert.Equal(t, DecisionApproved, a.Decision)
	assert.Equal(t, bob, a.Approver)
	assert.Equal(t, "two-level", a.Rule)
	assert.NotEmpty(t, a.PolicyDigest)
	require.Len(t, a.Levels, 2)
	require.Len(t, a.Levels[0].Approvals, 1)
	assert.Equal(t, alice, a.Levels[0].Approvals[0].Approver)
	require.Len(t, a.Levels[1].Approvals, 1)
	assert.Equal(t, bob, a.Levels[1].Approvals[0].Approver)
	require.Len(t, a.Ignored, 2)
	assert.Contains(t, a.Ignored[0].Reason, "approves at level 2")
	assert.Contains(t, a.Ignored[1].Reason, "already approved at level 1")

	var asked [][]string
	for _, in := range fake.inputs("NotifySupport") {
		if n := in.(activities.Notification); n.Kind == contract.NotifyApprovalRequest {
			asked = append(asked, n.Targets)
			assert.Contains(t, n.Grant, `Expiry: 8h after the onboarding completes`, "the rule's maxDuration, shown to support")
		}
	}
	assert.Equal(t, [][]string{
		{alice, "support@example.com", "https://hooks.example.com/gkewi"},
		{alice, bob, "support@example.com", "https://hooks.example.com/gkewi"},
	}, asked, "level 2 is asked once level 1 approved")
	// The request set no expiry: it got the rule's maxDuration.
	require.Len(t, fake.inputs("SetRevocationTime"), 1)
}

// One rejection at level 1 ends the request; nothing is granted.
func TestRejectionAtLevelOneEndsTheRequest(t *testing.T) {
	fake := newFakeCloud().withPolicy(t, twoLevelPolicy)
	req := validRequest()
	req.Support.Approvers = nil
	req.Support.Proof = ""
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, reject(alice))
	signalAt(env, 2*time.Hour, approve(bob))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeRejected, appErr.Type())
	assert.Empty(t, fake.inputs("AddServiceAccountIAMMember")[1:], "only the self token creator, before the approval")
	assert.Empty(t, fake.inputs("HelmUpgradeInstall"))
}

// A service account of a listed domain may not approve where the rule does
// not let service accounts approve.
func TestServiceAccountsDoNotApproveUnlessAllowed(t *testing.T) {
	fake := newFakeCloud().withPolicy(t, twoLevelPolicy)
	req := validRequest()
	req.Support.Approvers = nil
	req.Support.Proof = ""
	req.Support.ApprovalTimeout = "3h"
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve("ci@my-project.iam.gserviceaccount.com"))

	env.ExecuteWorkflow(Onboard, req)

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeApprovalTimedOut, appErr.Type())
	a := queryStatus(t, env).Approval
	require.Len(t, a.Ignored, 1)
	assert.Contains(t, a.Ignored[0].Reason, `is a service account, and rule "two-level" lets no service account approve`)
}

// requesterProof is the worker's attestation that email sent req.
func requesterProof(t *testing.T, email string, req OnboardRequest) *activities.RequesterProof {
	t.Helper()
	b, err := req.SignedJSON()
	require.NoError(t, err)
	p := testAttestor().AttestVerifiedRequester(activities.VerifiedToken{
		Issuer: "https://accounts.google.com", Subject: "42", Email: email, Audience: OnboardWorkflowID(req), TokenSHA256: "cd34",
	}, b)
	return &p
}

// The proven requester is recorded and never approves their own grant, even
// as an eligible approver; another approver's decision counts.
func TestRequesterNeverApprovesTheirOwnGrant(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	req.Support.Approvers = nil
	req.Requester = requesterProof(t, alice, req)
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))
	signalAt(env, 2*time.Hour, approve(bob))

	env.ExecuteWorkflow(Onboard, req)

	require.NoError(t, env.GetWorkflowError())
	s := queryStatus(t, env)
	assert.Equal(t, alice, s.Requester)
	assert.Equal(t, alice, s.Approval.Requester)
	assert.Equal(t, bob, s.Approval.Approver)
	require.Len(t, s.Approval.Ignored, 1)
	assert.Equal(t, "alice@example.com requested this grant, and nobody approves their own", s.Approval.Ignored[0].Reason)
}

// A requester proof copied into another request, altered, or forged refuses
// the run before any step.
func TestRequesterProofThatDoesNotCheckOutRefusesTheRun(t *testing.T) {
	for name, tc := range map[string]struct {
		proof func(req OnboardRequest) *activities.RequesterProof
		want  string
	}{
		"made for another request": {func(req OnboardRequest) *activities.RequesterProof {
			other := req
			other.Support.Notify = nil
			return requesterProof(t, bob, other)
		}, "made for another request"},
		"another email written in": {func(req OnboardRequest) *activities.RequesterProof {
			p := requesterProof(t, bob, req)
			p.Email = "ceo@example.com"
			return p
		}, "not this service's"},
		"made up": {func(OnboardRequest) *activities.RequesterProof {
			return &activities.RequesterProof{Method: "id-token", Email: bob, MAC: "00"}
		}, "not this service's"},
	} {
		t.Run(name, func(t *testing.T) {
			fake := newFakeCloud()
			req := validRequest()
			req.Requester = tc.proof(req)
			env := newOnboardEnv(t, fake, req)
			env.ExecuteWorkflow(Onboard, req)
			appErr := workflowAppError(t, env)
			assert.Equal(t, contract.ErrTypePolicyRefused, appErr.Type())
			assert.Contains(t, appErr.Error(), "requester proof refused: ")
			assert.Contains(t, appErr.Error(), tc.want)
			assert.Empty(t, fake.names())
		})
	}
}

// Under an id-token rule a signed link's proof is not enough, even when the
// worker finds it valid.
func TestLinkProofDoesNotMeetAnIDTokenRule(t *testing.T) {
	fake := newFakeCloud().withPolicy(t, `
rules:
  - name: strict
    scope: {projects: ["*"]}
    approval: {proof: id-token, levels: [{approvers: [alice@example.com]}]}
    bigquery: {dataProjects: ["*"], billingProjects: ["*"], projectWide: true}
`)
	req := validRequest()
	req.Support.Approvers = nil
	req.Support.Proof = ""
	req.Support.ApprovalTimeout = "3h"
	env := newOnboardEnv(t, fake, req)
	link := proven(alice, true)
	link.Proof.Method = activities.ProofLink
	var res updateResult
	env.RegisterDelayedCallback(func() { sendUpdate(env, "link", link, &res) }, time.Hour)

	env.ExecuteWorkflow(Onboard, req)

	assert.Equal(t, ErrTypeApprovalTimedOut, workflowAppError(t, env).Type())
	require.Error(t, res.rejected, "the validator refuses it before the history")
	assert.Contains(t, res.rejected.Error(), `a link proof is less than rule "strict" requires (id-token)`)
}
