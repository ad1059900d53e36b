package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/policy"
)

// ErrTypeDecisionIgnored marks an update whose decision did not count (another
// came first, or the wait ended) while its proof was being checked.
const ErrTypeDecisionIgnored = "DecisionIgnored"

// How a decision reached the workflow.
const (
	viaSignal = "signal"
	viaUpdate = "update"
)

// approvalGate takes in support decisions from the support-approval signal and
// the support-decision update, counts only allowlisted approvers (who proved
// who they are, when proof is required), and records every other decision as
// ignored with the reason.
//
// A proof is the worker's attestation of the approver's ID token, made by its
// approval endpoint, which sends the decision as the update. The update's
// handler has the CheckDecisionProof activity check it before the decision
// counts: whoever can send updates cannot forge one without the worker's
// approval secret, which never enters the history.
//
// Signals are taken from their channel whenever the workflow waits (on an
// activity, a retry timer or the approval itself), so a decision sent before the
// wait, even before the request went out, counts and shows in the status at once.
type approvalGate struct {
	approvers []string
	record    *Approval
	// checkProofs: proofs are checked (changeApprovalProof); requireProof: only
	// decisions with a valid proof count (support.proof id-token).
	checkProofs, requireProof bool
	// rules is the grant policy's rule (changeGrantPolicy): it, not the
	// request, says who approves, at which level and with what proof; nil for
	// runs before it. requester is the run's proven requester, who never counts.
	rules     *policy.Resolved
	requester string
	// levelUp: a level completed and the next one must be asked.
	levelUp bool
	// awaiting is true while the workflow waits for the decision; the update is
	// refused outside it.
	awaiting bool
	signals  workflow.ReceiveChannel
	// wake lets the update handler end the wait's Select.
	wake workflow.Channel
}

func newApprovalGate(ctx workflow.Context, approvers []string, record *Approval) *approvalGate {
	return &approvalGate{
		approvers: approvers,
		record:    record,
		signals:   workflow.GetSignalChannel(ctx, contract.SignalSupportApproval),
		wake:      workflow.NewBufferedChannel(ctx, 1),
	}
}

// registerUpdate installs the support-decision update. Its validator refuses
// unlisted approvers and decisions outside the wait, so the caller learns at once;
// its handler returns the resulting state.
func (g *approvalGate) registerUpdate(ctx workflow.Context) error {
	return workflow.SetUpdateHandlerWithOptions(ctx, contract.UpdateSupportDecision,
		func(ctx workflow.Context, d ApprovalDecision) (State, error) {
			var evidence *ApprovalEvidence
			if d.Proof != nil && g.checkProofs {
				ev, refused, err := g.checkProof(ctx, d)
				if err != nil {
					return "", fmt.Errorf("the proof could not be checked, send the decision again: %w", err)
				}
				if refused != "" {
					g.ignore(ignoredDecision(ctx, d, viaUpdate, "proof refused: "+refused))
					g.wake.SendAsync(true)
					return "", temporal.NewNonRetryableApplicationError("proof refused: "+refused, contract.ErrTypeProofRefused, nil)
				}
				evidence = ev
			}
			counted := g.consider(ctx, d, viaUpdate, evidence)
			g.wake.SendAsync(true)
			if !counted {
				// Decided or closed while the proof was checked.
				last := g.record.Ignored[len(g.record.Ignored)-1]
				return "", temporal.NewNonRetryableApplicationError("decision not counted: "+last.Reason, ErrTypeDecisionIgnored, nil)
			}
			switch g.record.Decision {
			case DecisionApproved:
				return StateApproved, nil
			case DecisionRejected:
				return StateRejected, nil
			}
			// Counted at a level; more approvals are needed.
			return StateAwaitingApproval, nil
		},
		workflow.UpdateHandlerOptions{
			Validator: func(ctx workflow.Context, d ApprovalDecision) error {
				// A proof is checked by the handler; here only that it is for
				// this run, so junk proofs never reach the history.
				method := ""
				if d.Proof != nil && g.checkProofs {
					method = d.Proof.Method
				}
				if reason := g.whyNotCounted(d, method); reason != "" {
					return errors.New(reason)
				}
				if run := workflow.GetInfo(ctx).WorkflowExecution; d.Proof != nil && g.checkProofs &&
					(d.Proof.RunID != run.RunID || d.Proof.Audience != run.ID) {
					return fmt.Errorf("the proof is for run %s of %s, not this run", d.Proof.RunID, d.Proof.Audience)
				}
				if !g.awaiting {
					return errors.New("not awaiting approval yet: the onboarding has not reached the approval step")
				}
				return nil
			},
			Description: "Approve or reject the onboarding as an allowlisted approver",
		})
}

func (g *approvalGate) decided() bool {
	return g.record.Decision == DecisionApproved || g.record.Decision == DecisionRejected
}

// whyNotCounted says why d does not count, or "" when it does; method is the
// method of its proof found valid, "" without one.
func (g *approvalGate) whyNotCounted(d ApprovalDecision, method string) string {
	approver := strings.TrimSpace(d.Approver)
	proven := method != ""
	switch {
	case g.decided():
		return fmt.Sprintf("already %s by %s", g.record.Decision, g.record.Approver)
	case g.record.Decision != DecisionPending:
		return "the approval is closed: " + string(g.record.Decision)
	case approver == "":
		return "approver is empty"
	case g.rules != nil:
		return g.whyNotCountedByRule(d, approver, method)
	case !g.listed(approver):
		return fmt.Sprintf("approver %q is not in support.approvers", approver)
	case g.requireProof && !proven && d.Proof != nil:
		return "a proof is checked only on the " + contract.UpdateSupportDecision + " update, which the worker's approval endpoint sends (gkewi approve)"
	case g.requireProof && !proven:
		return "no proof of the approver's identity (support.proof is " + ProofIDToken + "): decide with gkewi approve or gkewi reject, " +
			"which send your ID token to the worker's approval endpoint"
	}
	return ""
}

// whyNotCountedByRule is whyNotCounted under the grant policy's rule: the
// requester never counts, service accounts only where the rule allows, an
// approval only from an approver of the level deciding now who has not
// approved at another, a rejection from an approver of any level, each with
// at least the rule's proof.
func (g *approvalGate) whyNotCountedByRule(d ApprovalDecision, approver, method string) string {
	r, rec := g.rules, g.record
	eligible := func(l policy.ResolvedLevel) bool { return l.Eligible(approver) }
	switch {
	case g.requester != "" && strings.EqualFold(approver, g.requester):
		return approver + " requested this grant, and nobody approves their own"
	case policy.IsServiceAccount(approver) && !r.ServiceAccountApprovers:
		return fmt.Sprintf("%s is a service account, and rule %q lets no service account approve", approver, r.Rule)
	case !slices.ContainsFunc(r.Levels, eligible):
		return fmt.Sprintf("%s is not an approver of grant policy rule %q", approver, r.Rule)
	case d.Approved && !r.Levels[rec.Level].Eligible(approver):
		return fmt.Sprintf("%s approves at level %d of rule %q; level %d decides now", approver,
			slices.IndexFunc(r.Levels, eligible)+1, r.Rule, rec.Level+1)
	}
	if d.Approved {
		for i, l := range rec.Levels {
			if slices.ContainsFunc(l.Approvals, func(c CountedDecision) bool { return strings.EqualFold(c.Approver, approver) }) {
				return fmt.Sprintf("%s already approved at level %d: each approval must come from another approver", approver, i+1)
			}
		}
	}
	switch {
	case policy.ProofCounts(r.Proof, method):
		return ""
	case d.Proof != nil && method == "":
		return "a proof is checked only on the " + contract.UpdateSupportDecision + " update, which the worker's approval endpoint sends (gkewi approve)"
	case method != "":
		return fmt.Sprintf("a %s proof is less than rule %q requires (%s): decide with gkewi approve or gkewi reject, which send your ID token", method, r.Rule, r.Proof)
	}
	return fmt.Sprintf("no proof of the approver's identity (rule %q requires %s): decide with gkewi approve or gkewi reject, "+
		"which send your ID token to the worker's approval endpoint", r.Rule, r.Proof)
}

// checkProof has the worker check d's proof for this run. It returns the
// evidence of a valid proof, or why it was refused.
func (g *approvalGate) checkProof(ctx workflow.Context, d ApprovalDecision) (*ApprovalEvidence, string, error) {
	var approvals *activities.Approvals
	run := workflow.GetInfo(ctx).WorkflowExecution
	p := *d.Proof
	in := activities.CheckProofInput{WorkflowID: run.ID, RunID: run.RunID, Approved: d.Approved, Approver: d.Approver,
		Ticket: d.Ticket, Comment: d.Comment, Proof: p}
	var res activities.ProofCheck
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, proofCheckOptions()), approvals.CheckDecisionProof, in).Get(ctx, &res); err != nil {
		return nil, "", err
	}
	if !res.Valid {
		return nil, res.Reason, nil
	}
	return &ApprovalEvidence{Method: p.Method, Issuer: p.Issuer, Subject: p.Subject, Email: p.Email, TokenSHA256: p.TokenSHA256,
		IssuedAt: p.IssuedAt, ExpiresAt: p.ExpiresAt, VerifiedAt: p.VerifiedAt}, "", nil
}

func ignoredDecision(ctx workflow.Context, d ApprovalDecision, via, reason string) IgnoredDecision {
	return IgnoredDecision{
		Approver: d.Approver, Approved: d.Approved, Ticket: d.Ticket, Comment: d.Comment,
		Via: via, ReceivedAt: workflow.Now(ctx), Reason: reason,
	}
}

func (g *approvalGate) listed(approver string) bool {
	for _, a := range g.approvers {
		if strings.EqualFold(a, approver) {
			return true
		}
	}
	return false
}

// consider records d as the decision, or as ignored with the reason, and
// says whether it counted; evidence is what proved the approver, nil without a
// valid proof.
func (g *approvalGate) consider(ctx workflow.Context, d ApprovalDecision, via string, evidence *ApprovalEvidence) bool {
	now := workflow.Now(ctx)
	method := ""
	if evidence != nil {
		method = evidence.Method
	}
	if reason := g.whyNotCounted(d, method); reason != "" {
		g.ignore(ignoredDecision(ctx, d, via, reason))
		workflow.GetLogger(ctx).Warn("approval decision ignored", "approver", d.Approver, "reason", reason)
		return false
	}
	if g.rules != nil && d.Approved && !g.completesLevels(d, via, now, evidence) {
		workflow.GetLogger(ctx).Info("approval counted", "approver", d.Approver, "level", g.record.Level+1)
		return true
	}
	g.record.Decision = DecisionRejected
	if d.Approved {
		g.record.Decision = DecisionApproved
	}
	g.record.Approver = strings.TrimSpace(d.Approver)
	g.record.Ticket = d.Ticket
	g.record.Comment = d.Comment
	g.record.DecidedAt = now
	g.record.Via = via
	g.record.Evidence = evidence
	g.awaiting = false
	workflow.GetLogger(ctx).Info("approval decision", "decision", g.record.Decision, "approver", g.record.Approver)
	return true
}

// completesLevels counts the approval d at the level deciding now and says
// whether it completed the last level; when it completes another, the next
// level decides (levelUp).
func (g *approvalGate) completesLevels(d ApprovalDecision, via string, now time.Time, evidence *ApprovalEvidence) bool {
	rec := g.record
	l := &rec.Levels[rec.Level]
	l.Approvals = append(l.Approvals, CountedDecision{Approver: strings.TrimSpace(d.Approver), Ticket: d.Ticket, Comment: d.Comment,
		DecidedAt: now, Via: via, Evidence: evidence})
	if len(l.Approvals) < l.Needed {
		return false
	}
	if rec.Level+1 < len(rec.Levels) {
		rec.Level++
		g.levelUp = true
		return false
	}
	return true
}

// applyRules makes the gate follow the grant policy's rule r for a run
// requested by requester (empty: unproven).
func (g *approvalGate) applyRules(r *policy.Resolved, requester string) {
	g.rules, g.requester = r, requester
	g.checkProofs = true
	g.requireProof = r.Proof != policy.ProofNone
	rec := g.record
	rec.Proof, rec.Rule, rec.PolicyDigest, rec.Requester = r.Proof, r.Rule, r.Digest, requester
	rec.Levels = make([]ApprovalLevel, len(r.Levels))
	for i, l := range r.Levels {
		rec.Levels[i] = ApprovalLevel{Approvers: l.Approvers, Domains: l.Domains, Needed: l.Needed()}
	}
}

func (g *approvalGate) ignore(d IgnoredDecision) {
	g.record.Ignored = append(g.record.Ignored, d)
}

// takeSignal receives one signal, decoding it here rather than in the channel so
// a malformed payload is recorded instead of being dropped by the SDK.
func (g *approvalGate) takeSignal(ctx workflow.Context, c workflow.ReceiveChannel, block bool) bool {
	var raw converter.RawValue
	if block {
		c.Receive(ctx, &raw)
	} else if !c.ReceiveAsync(&raw) {
		return false
	}
	var d ApprovalDecision
	if err := converter.GetDefaultDataConverter().FromPayload(raw.Payload(), &d); err != nil {
		g.ignore(IgnoredDecision{Via: viaSignal, ReceivedAt: workflow.Now(ctx), Reason: "malformed payload: " + err.Error()})
		workflow.GetLogger(ctx).Warn("malformed approval signal ignored", "error", err)
		return true
	}
	g.consider(ctx, d, viaSignal, nil)
	return true
}

// drain takes in every signal already received.
func (g *approvalGate) drain(ctx workflow.Context) {
	for g.takeSignal(ctx, g.signals, false) {
	}
}
