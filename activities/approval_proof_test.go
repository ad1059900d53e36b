package activities

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// issuer is an emulator serving as OpenID Connect issuer.
type issuer struct {
	emu *gcpemu.Emulator
	url string
}

func newIssuer(t *testing.T) issuer {
	t.Helper()
	emu, err := gcpemu.New(gcpemu.Config{Operator: emuOperator})
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		_ = emu.Close()
	})
	return issuer{emu: emu, url: srv.URL}
}

func (i issuer) token(t *testing.T, c gcpemu.IDTokenClaims) string {
	t.Helper()
	tok, err := i.emu.MintIDToken(i.url, c)
	require.NoError(t, err)
	return tok
}

const (
	grantID   = "gkewi-onboard/p/europe-west1/c/ns/prod"
	supporter = "support-lead@example.com"
)

var approvalSecret = []byte("0123456789abcdef0123456789abcdef")

func TestAttestAndCheckADecision(t *testing.T) {
	iss := newIssuer(t)
	a := NewAttestor(AttestorConfig{Secret: approvalSecret, Issuer: iss.url})
	ctx := context.Background()
	d := AttestedDecision{WorkflowID: grantID, Approved: true, Ticket: "SUP-1"}
	raw := iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID, EmailVerified: true})

	p, err := a.Attest(ctx, d, "run-1", raw)
	require.NoError(t, err)
	assert.Equal(t, ProofIDToken, p.Method)
	assert.Equal(t, iss.url, p.Issuer)
	assert.Equal(t, supporter, p.Email)
	assert.Equal(t, grantID, p.Audience)
	assert.NotEmpty(t, p.Subject)
	assert.Len(t, p.TokenSHA256, 64)
	assert.NotContains(t, p.TokenSHA256+p.MAC+p.Subject, raw, "the proof does not carry the token")

	in := CheckProofInput{WorkflowID: grantID, RunID: "run-1", Approved: true, Approver: supporter, Ticket: "SUP-1", Proof: p}
	assert.Equal(t, ProofCheck{Valid: true}, a.Check(in))

	for name, tc := range map[string]struct {
		change func(*CheckProofInput)
		reason string
	}{
		"forged approver":   {func(in *CheckProofInput) { in.Approver = "mallory@example.com" }, "is not the ID token's email"},
		"altered decision":  {func(in *CheckProofInput) { in.Approved = false }, "does not match this decision"},
		"altered ticket":    {func(in *CheckProofInput) { in.Ticket = "SUP-2" }, "does not match this decision"},
		"another grant":     {func(in *CheckProofInput) { in.WorkflowID = grantID + "-other" }, "does not match this decision"},
		"another run":       {func(in *CheckProofInput) { in.RunID = "run-2" }, "not this run"},
		"made-up mac":       {func(in *CheckProofInput) { in.Proof.MAC = "00" }, "does not match"},
		"another claim":     {func(in *CheckProofInput) { in.Proof.Email = "mallory@example.com"; in.Approver = in.Proof.Email }, "does not match"},
		"no attestation":    {func(in *CheckProofInput) { in.Proof.MAC = "" }, "no attestation"},
		"unknown method":    {func(in *CheckProofInput) { in.Proof.Method = "sms" }, "unknown proof method"},
		"approver spelling": {func(in *CheckProofInput) { in.Approver = "Support-Lead@Example.com" }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := in
			tc.change(&c)
			got := a.Check(c)
			if tc.reason == "" {
				assert.True(t, got.Valid, got.Reason)
				return
			}
			assert.False(t, got.Valid)
			assert.Contains(t, got.Reason, tc.reason)
		})
	}
	other := NewAttestor(AttestorConfig{Secret: []byte("another worker's secret, 32 byte"), Issuer: iss.url})
	assert.Contains(t, other.Check(in).Reason, "another approval secret")
	assert.Contains(t, NewAttestor(AttestorConfig{Issuer: iss.url}).Check(in).Reason, "no approval secret")
}

func TestAttestRefusesTokens(t *testing.T) {
	iss := newIssuer(t)
	stranger := newIssuer(t)
	a := NewAttestor(AttestorConfig{Secret: approvalSecret, Issuer: iss.url})
	d := AttestedDecision{WorkflowID: grantID, Approved: true}
	for name, tc := range map[string]struct {
		token  string
		reason string
	}{
		"expired": {iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID, EmailVerified: true,
			IssuedAt: time.Now().Add(-2 * time.Hour)}), "expired"},
		"another grant": {iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID + "-other", EmailVerified: true}), "audience"},
		"another audience": {iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: "32555940559.apps.googleusercontent.com",
			EmailVerified: true}), "audience"},
		"unverified email": {iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID}), "is not verified"},
		"another issuer":   {stranger.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID, EmailVerified: true}), "signature"},
		"not a token":      {"eyJub3QiOiJhIHRva2VuIn0", "ID token refused"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Attest(context.Background(), d, "run-1", tc.token)
			var appErr *temporal.ApplicationError
			require.ErrorAs(t, err, &appErr)
			assert.Equal(t, contract.ErrTypeProofRefused, appErr.Type())
			assert.Contains(t, appErr.Message(), tc.reason)
		})
	}
	_, err := NewAttestor(AttestorConfig{Issuer: iss.url}).Attest(context.Background(), d, "run-1",
		iss.token(t, gcpemu.IDTokenClaims{Email: supporter, Audience: grantID, EmailVerified: true}))
	assert.ErrorContains(t, err, "no approval secret")
}

func TestSignedDecisionLinks(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	a := NewAttestor(AttestorConfig{Secret: approvalSecret, Now: func() time.Time { return now }})
	c := LinkClaims{WorkflowID: grantID, RunID: "run-1", Approver: supporter, Approved: true, Expires: now.Add(time.Hour)}
	tok, err := a.SignLink(c)
	require.NoError(t, err)

	got, err := a.OpenLink(tok)
	require.NoError(t, err)
	assert.Equal(t, c.WorkflowID, got.WorkflowID)
	assert.True(t, got.Approved)

	d, p, err := a.AttestLink(tok)
	require.NoError(t, err)
	assert.Equal(t, ProofLink, p.Method)
	assert.Equal(t, supporter, p.Email)
	in := CheckProofInput{WorkflowID: grantID, RunID: "run-1", Approved: true, Approver: supporter, Comment: d.Comment, Proof: p}
	assert.Equal(t, ProofCheck{Valid: true}, a.Check(in), "a link's decision is attested like a token's")
	other := in
	other.RunID = "run-2"
	assert.Contains(t, a.Check(other).Reason, "not this run")

	// Another grant's claims under this link's signature, another key, expiry.
	forged := c
	forged.WorkflowID = grantID + "-other"
	forgedTok, err := a.SignLink(forged)
	require.NoError(t, err)
	payload, _, _ := strings.Cut(forgedTok, ".")
	_, sig, _ := strings.Cut(tok, ".")
	for name, bad := range map[string]string{
		"claims of another grant": payload + "." + sig,
		"no signature":            payload,
		"signed with another key": must(NewAttestor(AttestorConfig{Secret: []byte("another worker's secret, 32 byte")}).SignLink(c)),
		"expired":                 must(a.SignLink(LinkClaims{WorkflowID: grantID, RunID: "run-1", Approver: supporter, Expires: now})),
	} {
		_, err := a.OpenLink(bad)
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, err, &appErr, name)
		assert.Equal(t, contract.ErrTypeProofRefused, appErr.Type(), name)
	}
	_, err = NewAttestor(AttestorConfig{}).SignLink(c)
	assert.ErrorContains(t, err, "no approval secret")
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// A worker without the secret cannot judge a proof: it fails retryably, for a
// worker with the secret to check it, instead of calling it forged.
func TestCheckWithoutSecretIsRetryable(t *testing.T) {
	_, err := NewApprovals(NewAttestor(AttestorConfig{})).CheckDecisionProof(context.Background(), CheckProofInput{WorkflowID: grantID})
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, contract.ErrTypeNoApprovalSecret, appErr.Type())
	assert.False(t, appErr.NonRetryable())
}
