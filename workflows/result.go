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
}

// RevokeResult is what a completed Revoke returns.
type RevokeResult struct {
	State State `json:"state"`
	// AccessEndedAt is when verification found the token chain denied.
	AccessEndedAt time.Time `json:"accessEndedAt"`
	// DeniedStage is the first link of the token chain that was refused.
	DeniedStage string   `json:"deniedStage"`
	Changed     []string `json:"changed,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
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
