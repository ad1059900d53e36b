package workflows

import "github.com/gkewi/gkewi/contract"

// RevokeRequest is the input of the Revoke workflow. Its JSON field names are a
// stable contract, like OnboardRequest's (a member that matches no field is
// refused); OnboardResult.Revoke holds a ready one.
type RevokeRequest struct {
	Project   string `json:"project"`
	Location  string `json:"location"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	// Release is the Helm release of the grant; it names the grant's workflows.
	// Empty for grants onboarded before releases named them (the KSA does).
	Release string `json:"release,omitempty"`
	KSA     string `json:"ksa"`
	// GSAEmail is the Google service account the KSA was allowed to act as.
	GSAEmail string `json:"gsaEmail"`
	// RemoveAnnotation also removes the KSA's iam.gke.io/gcp-service-account
	// annotation. Off by default: Helm owns it and would put it back.
	RemoveAnnotation bool `json:"removeAnnotation,omitempty"`
	// BigQuery, when set, also revokes the connection's BigQuery roles.
	BigQuery *BigQuerySpec `json:"bigquery,omitempty"`
	// TokenExpiryWait is how long to wait for tokens already handed out to expire
	// before proving access is gone; default 30m, "0s" skips it, at most 12h.
	TokenExpiryWait contract.Duration `json:"tokenExpiryWait,omitempty"`
	// Reason is recorded in the status and the logs.
	Reason string `json:"reason,omitempty"`

	// unknownFields are the members of the decoded JSON that match no field;
	// Validate refuses them.
	unknownFields []unknownField
}

// WithDefaults returns r with the token expiry wait defaulted to 30m.
func (r RevokeRequest) WithDefaults() RevokeRequest {
	if r.TokenExpiryWait == "" {
		r.TokenExpiryWait = DefaultTokenExpiryWait
	}
	return r
}

// grantName is the last part of the grant's workflow IDs: the release, or the KSA
// for a grant onboarded before releases named them.
func (r RevokeRequest) grantName() string {
	if r.Release != "" {
		return r.Release
	}
	return r.KSA
}

// member is the Workload Identity principal of the grant.
func workloadIdentityMember(project, namespace, ksa string) string {
	return "serviceAccount:" + project + ".svc.id.goog[" + namespace + "/" + ksa + "]"
}

// serviceAccountMember is the IAM member naming a Google service account.
func serviceAccountMember(email string) string { return "serviceAccount:" + email }
