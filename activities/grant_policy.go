package activities

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/policy"
)

// RequesterProof is the worker's attestation that the requester of an
// onboarding proved who they are with an ID token whose audience is the
// grant's workflow ID, bound to that workflow ID and the request's digest:
// copied into another request, it no longer matches. Never the token.
type RequesterProof struct {
	Method  string `json:"method"`
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	Email   string `json:"email"`
	// WorkflowID is the token's audience, the grant's workflow ID.
	WorkflowID string `json:"workflowId"`
	// RequestSHA256 is the digest of the request as sent, this proof left out.
	RequestSHA256 string    `json:"requestSha256"`
	TokenSHA256   string    `json:"tokenSha256"`
	VerifiedAt    time.Time `json:"verifiedAt"`
	MAC           string    `json:"mac"`
}

// requesterDomain separates requester attestations from the others.
const requesterDomain = "gkewi-requester\x00"

// requesterProofWindow is how long after its verification a requester proof
// may start a run: the endpoint starts the run at once.
const requesterProofWindow = 2 * time.Minute

// RequestDigest is the hex SHA-256 of a request's JSON.
func RequestDigest(request []byte) string {
	sum := sha256.Sum256(request)
	return hex.EncodeToString(sum[:])
}

// AttestRequester verifies rawToken as an ID token of the issuer for audience
// workflowID with a verified email, and attests that its holder sent request.
func (a *Attestor) AttestRequester(ctx context.Context, workflowID string, request []byte, rawToken string) (RequesterProof, error) {
	v, err := a.Verify(ctx, workflowID, rawToken)
	if err != nil {
		return RequesterProof{}, err
	}
	return a.AttestVerifiedRequester(v, request), nil
}

// AttestVerifiedRequester attests that the holder of v, a token verified for
// the grant's workflow ID, sent request.
func (a *Attestor) AttestVerifiedRequester(v VerifiedToken, request []byte) RequesterProof {
	p := RequesterProof{
		Method: ProofIDToken, Issuer: v.Issuer, Subject: v.Subject, Email: v.Email, WorkflowID: v.Audience,
		RequestSHA256: RequestDigest(request), TokenSHA256: v.TokenSHA256,
		VerifiedAt: a.now().UTC().Truncate(time.Second),
	}
	p.MAC = a.requesterMAC(p)
	return p
}

func (a *Attestor) requesterMAC(p RequesterProof) string {
	p.MAC = ""
	b, _ := json.Marshal(p) // cannot fail: plain fields
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(requesterDomain))
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

// checkRequester says why p does not prove the requester of request for run
// startedAt of workflowID, or "" when it does.
func (a *Attestor) checkRequester(p RequesterProof, workflowID string, request []byte, startedAt time.Time) string {
	switch {
	case len(a.secret) == 0:
		return "this worker has no approval secret, so it cannot check a requester's proof"
	case p.MAC == "" || !hmac.Equal([]byte(p.MAC), []byte(a.requesterMAC(p))):
		return "the attestation is not this service's (forged, altered, or made with another approval secret)"
	case p.WorkflowID != workflowID:
		return fmt.Sprintf("it was made for %q, not this grant", p.WorkflowID)
	case p.RequestSHA256 != RequestDigest(request):
		return "it was made for another request: the request changed after the requester's token was verified"
	case startedAt.Sub(p.VerifiedAt) > requesterProofWindow || p.VerifiedAt.Sub(startedAt) > requesterProofWindow:
		return fmt.Sprintf("it was verified at %s, not when this run started (%s): a proof starts one run, at once",
			p.VerifiedAt.Format(time.RFC3339), startedAt.UTC().Format(time.RFC3339))
	}
	return ""
}

// verifyIDToken verifies rawToken for audience and returns it with its
// verified email; a refused token is a contract.ErrTypeProofRefused error.
func (a *Attestor) verifyIDToken(ctx context.Context, audience, rawToken string) (*oidc.IDToken, string, error) {
	if len(a.secret) == 0 {
		return nil, "", errors.New("this worker has no approval secret configured: it can neither make nor check proofs")
	}
	provider, err := a.oidcProvider(ctx)
	if err != nil {
		return nil, "", err
	}
	tok, err := provider.VerifierContext(ctx, &oidc.Config{ClientID: audience, Now: a.now}).Verify(ctx, rawToken)
	if err != nil {
		if couldNotCheck(ctx, err) {
			return nil, "", fmt.Errorf("the ID token could not be checked, try again: %w", err)
		}
		return nil, "", refusedToken(err.Error())
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified any    `json:"email_verified"`
	}
	if err := tok.Claims(&claims); err != nil {
		return nil, "", refusedToken("unreadable claims: " + err.Error())
	}
	switch {
	case claims.Email == "":
		return nil, "", refusedToken("it carries no email (gcloud: --include-email)")
	case !isTrue(claims.EmailVerified):
		return nil, "", refusedToken(fmt.Sprintf("the email %s is not verified (email_verified is not true)", claims.Email))
	}
	return tok, claims.Email, nil
}

func refusedToken(why string) error {
	return temporal.NewNonRetryableApplicationError("ID token refused: "+why, contract.ErrTypeProofRefused, nil)
}

// GrantPolicyInput is what the grant policy decides: a request's scope, what
// it asks, and the requester's proof.
type GrantPolicyInput struct {
	WorkflowID string    `json:"workflowId"`
	StartedAt  time.Time `json:"startedAt"`
	Project    string    `json:"project"`
	Cluster    string    `json:"cluster"`
	Namespace  string    `json:"namespace"`
	Release    string    `json:"release"`
	Approvers  []string  `json:"approvers,omitempty"`
	Proof      string    `json:"proof,omitempty"`
	// TTL and At are the request's expiry.
	TTL      contract.Duration     `json:"ttl,omitempty"`
	At       time.Time             `json:"at,omitzero"`
	BigQuery *policy.BigQueryGrant `json:"bigquery,omitempty"`
	// Request is the request as sent, without its requester proof: what the
	// proof's digest covers.
	Request   json.RawMessage `json:"request,omitempty"`
	Requester *RequesterProof `json:"requester,omitempty"`
}

// GrantPolicy is the rule a run goes by and its proven requester, if any.
type GrantPolicy struct {
	policy.Resolved
	// Requester is the requester's verified email; empty when unproven.
	Requester string `json:"requester,omitempty"`
}

// Policies resolve grants against the worker's grant policy.
type Policies struct {
	store    *policy.Store
	attestor *Attestor
}

// NewPolicies resolves grants against store; attestor checks requesters'
// proofs. A nil store refuses every new grant.
func NewPolicies(store *policy.Store, attestor *Attestor) *Policies {
	return &Policies{store: store, attestor: attestor}
}

// ResolveGrantPolicy decides a request against the grant policy in force: the
// rule it runs under, narrowed by the request, or a non-retryable
// contract.ErrTypePolicyRefused error naming the rule and the field. A
// requester proof that does not check out refuses the run too: it was forged
// or replayed.
func (p *Policies) ResolveGrantPolicy(_ context.Context, in GrantPolicyInput) (GrantPolicy, error) {
	if p.store == nil {
		return GrantPolicy{}, temporal.NewNonRetryableApplicationError(
			"this worker has no grant policy (--policy-file): it makes no grant, since the rules of who approves must not come from the request",
			contract.ErrTypePolicyRefused, nil)
	}
	var requester string
	if r := in.Requester; r != nil {
		if why := p.attestor.checkRequester(*r, in.WorkflowID, in.Request, in.StartedAt); why != "" {
			return GrantPolicy{}, temporal.NewNonRetryableApplicationError("requester proof refused: "+why, contract.ErrTypePolicyRefused, nil)
		}
		requester = r.Email
	}
	g := policy.Grant{
		Project: in.Project, Cluster: in.Cluster, Namespace: in.Namespace, Release: in.Release,
		Approvers: in.Approvers, Proof: in.Proof, TTL: in.TTL.Or(0), At: in.At, Now: in.StartedAt,
		BigQuery: in.BigQuery, Requester: requester,
	}
	res, err := p.store.Current().Resolve(g)
	if err != nil {
		return GrantPolicy{}, temporal.NewNonRetryableApplicationError(err.Error(), contract.ErrTypePolicyRefused, nil)
	}
	return GrantPolicy{Resolved: res, Requester: requester}, nil
}
