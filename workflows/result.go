package workflows

import "time"

// OnboardResult is what a completed Onboard returns.
type OnboardResult struct {
	State        State  `json:"state"`
	GSAEmail     string `json:"gsaEmail"`
	GSACreated   bool   `json:"gsaCreated"`
	HelmRevision int    `json:"helmRevision"`
	// Approval is the decision the grant rests on.
	Approval    Approval  `json:"approval"`
	CompletedAt time.Time `json:"completedAt"`
	// ExpiresAt is when a time-bound grant ends; zero when it lasts until revoked.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// Changed lists the steps that changed something; empty on a re-run that
	// found everything in place.
	Changed  []string `json:"changed,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Revoke is a ready request to revoke this grant later.
	Revoke RevokeRequest `json:"revoke"`
	// RevocationSchedule is the ID of the schedule that revokes a time-bound
	// grant at ExpiresAt; empty when none was scheduled.
	RevocationSchedule string `json:"revocationSchedule,omitempty"`
}

// RevokeResult is what a completed Revoke returns.
type RevokeResult struct {
	// State is StateRevoked, or StateOnboardingCanceled when the grant was still
	// awaiting approval and canceling the onboarding was all there was to do.
	State State `json:"state"`
	// AccessEndedAt is when access ended: the token chain refused fresh tokens
	// and every token handed out before had expired (see Revoke).
	AccessEndedAt time.Time `json:"accessEndedAt,omitzero"`
	// RefusedAt is when the token chain was first seen refusing a fresh token.
	RefusedAt time.Time `json:"refusedAt,omitzero"`
	// TokensValidUntil is the latest time a token handed out before RefusedAt
	// could still be used.
	TokensValidUntil time.Time `json:"tokensValidUntil,omitzero"`
	// DeniedStage is the first link of the token chain that was refused.
	DeniedStage string `json:"deniedStage,omitempty"`
	// CanceledOnboarding is the run ID of the onboarding this revocation canceled.
	CanceledOnboarding string   `json:"canceledOnboarding,omitempty"`
	Changed            []string `json:"changed,omitempty"`
	Warnings           []string `json:"warnings,omitempty"`
}

// changedSteps lists the steps that changed something.
func (s Status) changedSteps() []string {
	var out []string
	for _, st := range s.Steps {
		if st.Changed {
			out = append(out, st.Name)
		}
	}
	return out
}
