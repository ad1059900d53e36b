package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
)

// FieldError is one problem with a request: the JSON path of the field, the
// offending value (empty when the field is missing) and the rule it breaks.
type FieldError struct {
	Field string `json:"field"`
	Value string `json:"value,omitempty"`
	Rule  string `json:"rule"`
}

func (e FieldError) String() string {
	if e.Value == "" {
		return e.Field + ": " + e.Rule
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Rule)
}

// ValidationError lists every problem found in a request, in field order.
type ValidationError struct {
	Problems []FieldError `json:"problems"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// checker collects FieldErrors.
type checker struct{ problems []FieldError }

func (c *checker) fail(field, value, rule string) {
	c.problems = append(c.problems, FieldError{Field: field, Value: value, Rule: rule})
}

// check records rule against field when value is set and ok reports false, and
// "required" when value is empty and required.
func (c *checker) check(field, value string, required bool, ok func(string) bool, rule string) {
	switch {
	case value == "" && required:
		c.fail(field, "", ruleRequired)
	case value != "" && !ok(value):
		c.fail(field, value, rule)
	}
}

// duration checks an optional duration that must be at least least when set.
func (c *checker) duration(field string, d contract.Duration, least time.Duration, minRule string) {
	if d == "" {
		return
	}
	v, err := d.Parse()
	switch {
	case err != nil:
		c.fail(field, string(d), ruleDuration)
	case v < least:
		c.fail(field, string(d), minRule)
	}
}

// unknown records each member that matches no field, before any other problem:
// a misspelt key usually explains the "required" that follows.
func (c *checker) unknown(fields []unknownField) {
	for _, u := range fields {
		c.fail(u.Path, "", u.rule())
	}
}

func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: c.problems}
}

// Validate checks every field of r that does not depend on the clock and returns
// a *ValidationError listing all problems, or nil. An empty KSA is fine: Onboard
// takes the one the chart's workloads run as. Members of the decoded JSON that
// match no field come first, as "<path>: unknown field".
func (r OnboardRequest) Validate() error {
	var c checker
	r.validate(&c)
	return c.err()
}

// ValidateAt is Validate plus the checks that need the current time: expiry.at
// must be after now. The workflow calls it with workflow time.
func (r OnboardRequest) ValidateAt(now time.Time) error {
	var c checker
	r.validate(&c)
	if r.Expiry != nil && r.Expiry.At != "" {
		if at, err := time.Parse(time.RFC3339, r.Expiry.At); err == nil && !at.After(now) {
			c.fail("expiry.at", r.Expiry.At, "must be in the future (now "+now.UTC().Format(time.RFC3339)+")")
		}
	}
	return c.err()
}

func (r OnboardRequest) validate(c *checker) {
	c.unknown(r.unknownFields)
	validateCluster(c, r.Project, r.Location, r.Cluster)
	for i, p := range r.NodePools {
		field := fmt.Sprintf("nodePools[%d]", i)
		c.check(field, p, true, isGKEName, ruleClusterName)
		if slices.Contains(r.NodePools[:i], p) {
			c.fail(field, p, ruleDuplicate)
		}
	}
	// Checked in the order of the GSA fields, so problems stay in field order.
	if (r.GSA.AccountID == "") == (r.GSA.Email == "") {
		c.fail("gsa", "", "set exactly one of accountId and email")
	} else {
		c.check("gsa.accountId", r.GSA.AccountID, false, isAccountID, ruleGoogleName)
	}
	// IAM counts the display name in UTF-8 bytes, not characters.
	if len(r.GSA.DisplayName) > 100 {
		c.fail("gsa.displayName", "", "must be at most 100 bytes of UTF-8")
	}
	if r.GSA.AccountID == "" {
		c.check("gsa.email", r.GSA.Email, false, isServiceAccountEmail, ruleSAEmail)
	}
	c.check("namespace", r.Namespace, true, isDNSLabelK8s, ruleDNSLabel)
	c.check("ksa", r.KSA, false, isDNSSubdomain, ruleDNSSubdomain)
	c.check("helm.release", r.Helm.Release, true, isReleaseName, ruleRelease)
	c.check("helm.chart", r.Helm.Chart, true, func(string) bool { return true }, "")
	c.check("helm.repoURL", r.Helm.RepoURL, false, text.IsHTTPURL, ruleHTTPURL)
	validateBigQuery(c, r.BigQuery)

	for i, a := range r.Support.Approvers {
		c.check(fmt.Sprintf("support.approvers[%d]", i), a, true, isEmail, ruleEmail)
	}
	for i, n := range r.Support.Notify {
		c.check(fmt.Sprintf("support.notify[%d]", i), n, true, isNotifyTarget, ruleNotifyTarget)
	}
	c.duration("support.reminderInterval", r.Support.ReminderInterval, time.Minute, "must be at least 1m")
	c.duration("support.approvalTimeout", r.Support.ApprovalTimeout, 1, rulePositive)
	if p := r.Support.Proof; p != "" && p != ProofIDToken && p != ProofLink && p != ProofNone {
		c.fail("support.proof", p, fmt.Sprintf("must be %q (decisions count only with the approver's verified ID token), %q (signed links of the support email count too) or %q (decisions that merely name an approver count too); the grant policy sets the least, a request may only ask for more", ProofIDToken, ProofLink, ProofNone))
	}

	if e := r.Expiry; e != nil {
		if e.At != "" && e.TTL != "" {
			c.fail("expiry", "", "set at most one of at and ttl")
		}
		c.check("expiry.at", e.At, false, isRFC3339, ruleRFC3339)
		c.duration("expiry.ttl", e.TTL, 1, rulePositive)
	}
}

// Validate checks r and returns a *ValidationError listing all problems, or nil;
// members of the decoded JSON that match no field come first.
func (r RevokeRequest) Validate() error {
	var c checker
	c.unknown(r.unknownFields)
	validateCluster(&c, r.Project, r.Location, r.Cluster)
	c.check("namespace", r.Namespace, true, isDNSLabelK8s, ruleDNSLabel)
	c.check("release", r.Release, false, isReleaseName, ruleRelease)
	c.check("ksa", r.KSA, true, isDNSSubdomain, ruleDNSSubdomain)
	c.check("gsaEmail", r.GSAEmail, true, isServiceAccountEmail, ruleSAEmail)
	validateBigQuery(&c, r.BigQuery)
	if r.TokenExpiryWait != "" {
		v, err := r.TokenExpiryWait.Parse()
		switch {
		case err != nil:
			c.fail("tokenExpiryWait", string(r.TokenExpiryWait), ruleDuration)
		case v < 0 || v > maxTokenExpiryWait:
			c.fail("tokenExpiryWait", string(r.TokenExpiryWait), "must be between 0s and 12h")
		}
	}
	if len(r.Reason) > 1000 {
		c.fail("reason", "", "must be at most 1000 bytes of UTF-8")
	}
	return c.err()
}

// maxTokenExpiryWait bounds the wait: Google access tokens live at most 12h.
const maxTokenExpiryWait = 12 * time.Hour

func validateCluster(c *checker, project, location, cluster string) {
	c.check("project", project, true, isProjectID, ruleGoogleName)
	c.check("location", location, true, isLocation, ruleLocation)
	c.check("cluster", cluster, true, isGKEName, ruleClusterName)
}

func validateBigQuery(c *checker, bq *BigQuerySpec) {
	if bq == nil {
		return
	}
	c.check("bigquery.dataProject", bq.DataProject, true, isProjectID, ruleGoogleName)
	c.check("bigquery.billingProject", bq.BillingProject, true, isProjectID, ruleGoogleName)
	c.check("bigquery.tempDataset", bq.TempDataset, true, isDatasetID, ruleDataset)
	c.check("bigquery.connectionOwnerId", bq.ConnectionOwnerID, true, func(string) bool { return true }, "")
	for i, d := range bq.Datasets {
		field := fmt.Sprintf("bigquery.datasets[%d]", i)
		c.check(field, d, true, isDatasetID, ruleDataset)
		if slices.Contains(bq.Datasets[:i], d) {
			c.fail(field, d, ruleDuplicate)
		}
	}
}

func isDNSLabelK8s(s string) bool  { return isDNSLabel(s, 63) }
func isReleaseName(s string) bool  { return isDNSLabel(s, 53) }
func isNotifyTarget(s string) bool { return isEmail(s) || text.IsHTTPURL(s) }

func isRFC3339(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}
