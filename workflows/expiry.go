package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// expiresAt is when the grant ends if it completes at completedAt: expiry.at, or
// completedAt plus expiry.ttl; zero for a grant without expiry.
func (r OnboardRequest) expiresAt(completedAt time.Time) time.Time {
	switch {
	case r.Expiry == nil:
		return time.Time{}
	case r.Expiry.At != "":
		at, err := time.Parse(time.RFC3339, r.Expiry.At)
		if err != nil {
			return time.Time{} // refused by validation before any step
		}
		return at
	case r.Expiry.TTL != "":
		return completedAt.Add(r.Expiry.TTL.Or(0))
	}
	return time.Time{}
}

// arrangeRevocation is the extension point for time-bound grants: it is where the
// revocation at expiresAt gets arranged (a Temporal schedule that starts Revoke
// with OnboardResult.Revoke). This version does not arrange it; the step says so
// and a warning tells the operator to start Revoke by then.
func (o *onboarding) arrangeRevocation(ctx workflow.Context, expiresAt time.Time) {
	when := expiresAt.UTC().Format(time.RFC3339)
	o.t.skip(ctx, stepScheduleRevocation, "revocation at "+when+" is not scheduled automatically")
	o.t.warn(ctx, stepScheduleRevocation, "the grant expires at "+when+" but nothing revokes it then: start Revoke with the result's revoke request by that time")
}
