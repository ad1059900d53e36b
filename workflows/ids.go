package workflows

import (
	"strings"
	"time"
)

// A grant is identified by where the workload runs and which release it is: the
// same project, location, cluster, namespace and Helm release always yield the
// same workflow IDs, so Temporal refuses a second concurrent run for one grant.
// The KSA is not part of the ID: it is known only once the chart is rendered.

// OnboardWorkflowID is the only workflow ID Onboard accepts for r:
// "gkewi-onboard/PROJECT/LOCATION/CLUSTER/NAMESPACE/RELEASE". It needs nothing
// but the request.
func OnboardWorkflowID(r OnboardRequest) string {
	return grantID(onboardPrefix, r.Project, r.Location, r.Cluster, r.Namespace, r.Helm.Release)
}

// legacyOnboardWorkflowID is the ID runs started before changeRenderedRelease
// had: "gkewi-onboard/PROJECT/LOCATION/CLUSTER/NAMESPACE/KSA", the KSA defaulted
// from the release name.
func legacyOnboardWorkflowID(r OnboardRequest) string {
	r = r.withLegacyKSA()
	return grantID(onboardPrefix, r.Project, r.Location, r.Cluster, r.Namespace, r.KSA)
}

// RevokeWorkflowID is the workflow ID to start Revoke with for r:
// "gkewi-revoke/PROJECT/LOCATION/CLUSTER/NAMESPACE/RELEASE" (the KSA in place of
// the release for a grant onboarded under the older scheme).
func RevokeWorkflowID(r RevokeRequest) string {
	return grantID(revokePrefix, r.Project, r.Location, r.Cluster, r.Namespace, r.grantName())
}

// RevocationScheduleID is the ID of the schedule that revokes a time-bound grant
// when it expires: "gkewi-expiry/PROJECT/LOCATION/CLUSTER/NAMESPACE/RELEASE".
func RevocationScheduleID(r RevokeRequest) string {
	return grantID(revocationSchedulePrefix, r.Project, r.Location, r.Cluster, r.Namespace, r.grantName())
}

// onboardWorkflowIDOf is the ID of the onboarding of r's grant.
func onboardWorkflowIDOf(r RevokeRequest) string {
	return grantID(onboardPrefix, r.Project, r.Location, r.Cluster, r.Namespace, r.grantName())
}

// Fixed IDs of the recurring sweep.
const (
	// SweepScheduleID is the schedule that starts Sweep every hour.
	SweepScheduleID = "gkewi-sweep"
	// SweepWorkflowID is the base ID of its runs (the schedule appends the time).
	SweepWorkflowID = "gkewi-sweep"
)

const (
	onboardPrefix            = "gkewi-onboard"
	revokePrefix             = "gkewi-revoke"
	revocationSchedulePrefix = "gkewi-expiry"
	// scheduledSuffixLen is the length of "-2006-01-02T15:04:05Z", which a
	// schedule appends to the workflow ID of each run it starts.
	scheduledSuffixLen = len("-2006-01-02T15:04:05Z")
)

// grantKeyOf returns "PROJECT/LOCATION/CLUSTER/NAMESPACE/RELEASE" (or KSA) from the workflow
// ID of an Onboard or Revoke run, a scheduled run's time suffix removed, and
// false for an ID of another form.
func grantKeyOf(prefix, workflowID string) (string, bool) {
	key, ok := strings.CutPrefix(workflowID, prefix+"/")
	if !ok || strings.Count(key, "/") != 4 {
		return "", false
	}
	if n := len(key) - scheduledSuffixLen; n > 0 && key[n] == '-' {
		// Release and KSA names are lowercase DNS names: an RFC 3339 time ("...T...Z") cannot end one.
		if _, err := time.Parse(time.RFC3339, key[n+1:]); err == nil {
			key = key[:n]
		}
	}
	return key, true
}

func grantID(prefix string, parts ...string) string {
	return prefix + "/" + strings.Join(parts, "/")
}
