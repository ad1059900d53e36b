package workflows

import "strings"

// A grant is identified by where the workload runs and which KSA it uses: the
// same project, location, cluster, namespace and KSA always yield the same
// workflow IDs, so Temporal refuses a second concurrent run for one grant.

// OnboardWorkflowID is the only workflow ID Onboard accepts for r:
// "gkewi-onboard/PROJECT/LOCATION/CLUSTER/NAMESPACE/KSA" (KSA after defaults).
func OnboardWorkflowID(r OnboardRequest) string {
	r = r.WithDefaults()
	return grantID("gkewi-onboard", r.Project, r.Location, r.Cluster, r.Namespace, r.KSA)
}

// RevokeWorkflowID is the workflow ID to start Revoke with for r:
// "gkewi-revoke/PROJECT/LOCATION/CLUSTER/NAMESPACE/KSA".
func RevokeWorkflowID(r RevokeRequest) string {
	return grantID("gkewi-revoke", r.Project, r.Location, r.Cluster, r.Namespace, r.KSA)
}

func grantID(prefix string, parts ...string) string {
	return prefix + "/" + strings.Join(parts, "/")
}
