package activities

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/policy"
)

// ProofIDToken is the proof method of a decision whose approver presented an
// OpenID Connect ID token (what `gcloud auth print-identity-token` prints).
const ProofIDToken = policy.ProofIDToken

// GoogleIssuer is the issuer of Google's ID tokens.
const GoogleIssuer = "https://accounts.google.com"

// DecisionProof is the worker's attestation that the approver of a decision
// proved who they are: the verified claims of their ID token, never the token,
// bound to the grant's run and to the decision by an HMAC keyed with the
// worker's approval secret (which never enters a workflow history).
type DecisionProof struct {
	Method string `json:"method"`
	// Issuer, Subject and Email are the token's verified iss, sub and email.
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	Email   string `json:"email"`
	// Audience is the token's audience: the grant's workflow ID.
	Audience  string    `json:"audience"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	// TokenSHA256 identifies the token (hex SHA-256) without holding it.
	TokenSHA256 string `json:"tokenSha256"`
	// RunID is the run the decision was made for.
	RunID string `json:"runId"`
	// VerifiedAt is when the approval endpoint verified the token.
	VerifiedAt time.Time `json:"verifiedAt"`
	// MAC is the hex HMAC-SHA256 over the decision and the fields above.
	MAC string `json:"mac"`
}

// AttestedDecision is what a proof binds: the decision as the approver sent it.
type AttestedDecision struct {
	WorkflowID string `json:"workflowId"`
	Approved   bool   `json:"approved"`
	Ticket     string `json:"ticket,omitempty"`
	Comment    string `json:"comment,omitempty"`
}

// CheckProofInput asks whether proof attests the decision for run RunID of
// workflow WorkflowID by Approver.
type CheckProofInput struct {
	WorkflowID string        `json:"workflowId"`
	RunID      string        `json:"runId"`
	Approved   bool          `json:"approved"`
	Approver   string        `json:"approver"`
	Ticket     string        `json:"ticket,omitempty"`
	Comment    string        `json:"comment,omitempty"`
	Proof      DecisionProof `json:"proof"`
}

// ProofCheck is the verdict on a proof; Reason says why it is not valid.
type ProofCheck struct {
	Valid  bool   `json:"valid"`
	Reason string `json:"reason,omitempty"`
}

// AttestorConfig configures proof of approvers' identities.
type AttestorConfig struct {
	// Secret keys the attestations; without one no proof is made or accepted.
	Secret []byte
	// Issuer is the OpenID Connect issuer of approvers' ID tokens; default
	// GoogleIssuer. Its discovery document names the keys.
	Issuer string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Attestor verifies approvers' ID tokens and attests the decisions (the
// worker's approval endpoint), and checks those attestations (the
// CheckDecisionProof activity, which a workflow runs before a proven decision
// counts).
type Attestor struct {
	secret []byte
	issuer string
	now    func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider
}

// NewAttestor builds an attestor.
func NewAttestor(cfg AttestorConfig) *Attestor {
	a := &Attestor{secret: cfg.Secret, issuer: cfg.Issuer, now: cfg.Now}
	if a.issuer == "" {
		a.issuer = GoogleIssuer
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a
}

// Issuer is the issuer whose ID tokens prove approvers.
func (a *Attestor) Issuer() string { return a.issuer }

// VerifiedToken is an approver's ID token as the attestor verified it: its
// claims and hash, never the token.
type VerifiedToken struct {
	Issuer, Subject, Email string
	Audience               string
	IssuedAt, ExpiresAt    time.Time
	TokenSHA256            string
}

// Verify verifies rawToken as an ID token of the issuer with audience (the
// grant's workflow ID) and a verified email. A refused token is a
// contract.ErrTypeProofRefused error naming why. The approval endpoint verifies
// before it looks anything up, so an unproven caller learns nothing.
func (a *Attestor) Verify(ctx context.Context, audience, rawToken string) (VerifiedToken, error) {
	tok, email, err := a.verifyIDToken(ctx, audience, rawToken)
	if err != nil {
		return VerifiedToken{}, err
	}
	sum := sha256.Sum256([]byte(rawToken))
	return VerifiedToken{
		Issuer: tok.Issuer, Subject: tok.Subject, Email: email, Audience: audience,
		IssuedAt: tok.IssuedAt.UTC(), ExpiresAt: tok.Expiry.UTC(), TokenSHA256: hex.EncodeToString(sum[:]),
	}, nil
}

// AttestVerified is the proof of d by the holder of v for run runID.
func (a *Attestor) AttestVerified(d AttestedDecision, runID string, v VerifiedToken) DecisionProof {
	p := DecisionProof{
		Method: ProofIDToken, Issuer: v.Issuer, Subject: v.Subject, Email: v.Email,
		Audience: v.Audience, IssuedAt: v.IssuedAt, ExpiresAt: v.ExpiresAt,
		TokenSHA256: v.TokenSHA256, RunID: runID, VerifiedAt: a.now().UTC().Truncate(time.Second),
	}
	p.MAC = a.mac(d, p)
	return p
}

// Attest verifies rawToken for d's grant and returns the proof of d by its
// holder for run runID.
func (a *Attestor) Attest(ctx context.Context, d AttestedDecision, runID, rawToken string) (DecisionProof, error) {
	v, err := a.Verify(ctx, d.WorkflowID, rawToken)
	if err != nil {
		return DecisionProof{}, err
	}
	return a.AttestVerified(d, runID, v), nil
}

// couldNotCheck tells a failure to check a token (the issuer's keys out of
// reach, the request ended) from a token found wanting.
func couldNotCheck(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "fetching keys")
}

// isTrue reads email_verified, which issuers send as a boolean or a string.
func isTrue(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return strings.EqualFold(b, "true")
	}
	return false
}

func (a *Attestor) oidcProvider(ctx context.Context) (*oidc.Provider, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.provider != nil {
		return a.provider, nil
	}
	// The provider outlives this request: its key set is fetched and refreshed
	// later, with this client, whose timeout bounds every fetch.
	client := &http.Client{Timeout: 10 * time.Second}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), client), 15*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, a.issuer)
	if err != nil {
		return nil, fmt.Errorf("OpenID Connect discovery of %s: %w", a.issuer, err)
	}
	a.provider = p
	return p, nil
}

// mac is the attestation of d by p (p.MAC ignored).
func (a *Attestor) mac(d AttestedDecision, p DecisionProof) string {
	p.MAC = ""
	b, _ := json.Marshal(struct {
		Decision AttestedDecision `json:"decision"`
		Proof    DecisionProof    `json:"proof"`
	}{d, p}) // cannot fail: plain fields
	m := hmac.New(sha256.New, a.secret)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

// Approvals are the approval activities. The attestor's Attest is not one:
// an ID token must never be an activity's input, which the history keeps.
type Approvals struct{ attestor *Attestor }

// NewApprovals builds the approval activities on a.
func NewApprovals(a *Attestor) *Approvals { return &Approvals{attestor: a} }

// CheckDecisionProof tells a workflow whether a decision's proof is the
// worker's attestation of exactly this decision, for this run, by this
// approver. A refusal is a verdict, not an error: the workflow records it.
//
// A worker without the approval secret cannot tell: it fails retryably, so a
// worker that has the secret checks the proof.
func (a *Approvals) CheckDecisionProof(_ context.Context, in CheckProofInput) (ProofCheck, error) {
	if len(a.attestor.secret) == 0 {
		return ProofCheck{}, temporal.NewApplicationError(
			"this worker has no approval secret (--approval-secret-file), so it cannot check proofs; a worker with it will", contract.ErrTypeNoApprovalSecret)
	}
	return a.attestor.Check(in), nil
}

// Check is CheckDecisionProof's verdict.
func (a *Attestor) Check(in CheckProofInput) ProofCheck {
	refuse := func(format string, args ...any) ProofCheck {
		return ProofCheck{Reason: fmt.Sprintf(format, args...)}
	}
	p := in.Proof
	switch {
	case len(a.secret) == 0:
		return refuse("this worker has no approval secret configured, so it cannot check proofs")
	case p.Method != ProofIDToken && p.Method != ProofLink:
		return refuse("unknown proof method %q", p.Method)
	case p.MAC == "":
		return refuse("the proof carries no attestation")
	}
	d := AttestedDecision{WorkflowID: in.WorkflowID, Approved: in.Approved, Ticket: in.Ticket, Comment: in.Comment}
	want := a.mac(d, p)
	if !hmac.Equal([]byte(want), []byte(p.MAC)) {
		return refuse("the attestation does not match this decision for this grant: forged, altered, or made for another grant or by a worker with another approval secret")
	}
	switch {
	case p.Audience != in.WorkflowID:
		return refuse("the ID token was for %q, not this grant", p.Audience)
	case p.RunID != in.RunID:
		return refuse("the decision was proven for run %s, not this run", p.RunID)
	case !strings.EqualFold(strings.TrimSpace(in.Approver), p.Email):
		return refuse("the approver %q is not the ID token's email %s", in.Approver, p.Email)
	}
	return ProofCheck{Valid: true}
}

// ProofLink is the proof method of a decision made with a signed link from
// the support email: it proves that the approver's own mailbox received it.
const ProofLink = policy.ProofLink

// LinkClaims is what a signed decision link decides, for whom and until when.
type LinkClaims struct {
	WorkflowID string    `json:"w"`
	RunID      string    `json:"r"`
	Approver   string    `json:"a"`
	Approved   bool      `json:"d"`
	Expires    time.Time `json:"e"`
}

// linkDomain separates link signatures from decision attestations.
const linkDomain = "gkewi-decision-link\x00"

// SignLink makes the token of a link deciding c: the claims and an HMAC over
// them, keyed with the approval secret.
func (a *Attestor) SignLink(c LinkClaims) (string, error) {
	if len(a.secret) == 0 {
		return "", errors.New("this worker has no approval secret configured: it cannot sign links")
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + a.linkMAC(payload), nil
}

func (a *Attestor) linkMAC(payload string) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(linkDomain + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// OpenLink checks a link token's signature and expiry and returns its claims;
// a bad one is an contract.ErrTypeProofRefused error.
func (a *Attestor) OpenLink(token string) (LinkClaims, error) {
	refuse := func(why string) (LinkClaims, error) {
		return LinkClaims{}, temporal.NewNonRetryableApplicationError("decision link refused: "+why, contract.ErrTypeProofRefused, nil)
	}
	if len(a.secret) == 0 {
		return refuse("this worker has no approval secret configured")
	}
	payload, mac, ok := strings.Cut(token, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(a.linkMAC(payload))) {
		return refuse("it is not one this service signed (altered, or signed with another key)")
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return refuse("unreadable")
	}
	var c LinkClaims
	if err := json.Unmarshal(b, &c); err != nil {
		return refuse("unreadable")
	}
	if !a.now().Before(c.Expires) {
		return refuse("it expired at " + c.Expires.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// AttestLink opens a link token and attests its decision like a verified ID
// token's: the approver is the one the link was made for.
func (a *Attestor) AttestLink(token string) (AttestedDecision, DecisionProof, error) {
	c, err := a.OpenLink(token)
	if err != nil {
		return AttestedDecision{}, DecisionProof{}, err
	}
	d := AttestedDecision{WorkflowID: c.WorkflowID, Approved: c.Approved, Comment: "decided with the signed link of the support email"}
	sum := sha256.Sum256([]byte(token))
	p := DecisionProof{
		Method: ProofLink, Issuer: "gkewi approval link", Subject: c.Approver, Email: c.Approver,
		Audience: c.WorkflowID, ExpiresAt: c.Expires.UTC(), TokenSHA256: hex.EncodeToString(sum[:]),
		RunID: c.RunID, VerifiedAt: a.now().UTC().Truncate(time.Second),
	}
	p.MAC = a.mac(d, p)
	return d, p, nil
}
