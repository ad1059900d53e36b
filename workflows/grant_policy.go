package workflows

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/policy"
)

// resolvePolicy has the worker decide the request against its grant policy,
// before any change: the rule the run goes by (who approves, at which levels,
// with what proof, the longest grant, the BigQuery it may touch), narrowed by
// the request, and its proven requester. A request the policy does not allow
// ends the run here, naming the rule and the field.
func (o *onboarding) resolvePolicy(ctx workflow.Context, sent OnboardRequest) error {
	var policies *activities.Policies
	info := workflow.GetInfo(ctx)
	in := activities.GrantPolicyInput{
		WorkflowID: info.WorkflowExecution.ID, StartedAt: info.WorkflowStartTime,
		Project: sent.Project, Cluster: sent.Cluster, Namespace: sent.Namespace, Release: sent.Helm.Release,
		Approvers: sent.Support.Approvers, Proof: sent.Support.Proof, Requester: sent.Requester,
	}
	if e := sent.Expiry; e != nil {
		in.TTL = e.TTL
		if e.At != "" {
			in.At, _ = time.Parse(time.RFC3339, e.At) // validated
		}
	}
	if bq := sent.BigQuery; bq != nil {
		in.BigQuery = &policy.BigQueryGrant{DataProject: bq.DataProject, BillingProject: bq.BillingProject, Datasets: bq.Datasets}
	}
	if sent.Requester != nil {
		// Deterministic: the request's fields in order, map keys sorted.
		b, err := sent.SignedJSON() //workflowcheck:ignore
		if err != nil {
			return invalidRequest(err)
		}
		in.Request = b
	}
	var res activities.GrantPolicy
	if err := o.t.run(ctx, stepPolicy, readOptions(), policies.ResolveGrantPolicy, in, &res); err != nil {
		return err
	}
	o.rules = &res
	o.gate.applyRules(&res.Resolved, res.Requester)
	o.req.Support.Proof = res.Proof
	s := &o.t.status
	s.Requester = res.Requester
	if res.Requester != "" {
		upsertRequesterAttribute(ctx, res.Requester)
	}
	detail := fmt.Sprintf("rule %q (%s): %s, proof %s", res.Rule, res.Digest, strings.Join(levelSummaries(&res.Resolved), "; then "), res.Proof)
	if res.DefaultTTL != "" {
		o.req.Expiry = &ExpirySpec{TTL: res.DefaultTTL}
		o.t.plan(stepScheduleRevocation)
		detail += "; expiry " + string(res.DefaultTTL) + " (the rule's maxDuration; the request set none)"
	}
	if res.Requester != "" {
		detail += "; requested by " + res.Requester
	}
	o.t.done(ctx, stepPolicy, detail, nil)
	return nil
}

// levelSummaries describes each level of a rule: who approves and how many.
func levelSummaries(r *policy.Resolved) []string {
	out := make([]string, len(r.Levels))
	for i, l := range r.Levels {
		who := slices.Clone(l.Approvers)
		for _, d := range l.Domains {
			who = append(who, "anyone@"+d)
		}
		out[i] = fmt.Sprintf("%d of %s", l.Needed(), strings.Join(who, ", "))
	}
	return out
}

// policyTargets is whom the grant policy has told of a notification of kind:
// the level deciding now (an outcome: every level), the rule's notify list and
// the request's support.notify; links is who of them gets decision links in
// their own name (the level's approvers, where the rule's proof is link).
func (o *onboarding) policyTargets(outcome bool) (targets, links []string) {
	r, rec := o.rules, o.t.status.Approval
	add := func(list []string) {
		for _, t := range list {
			if !slices.ContainsFunc(targets, func(x string) bool { return strings.EqualFold(x, t) }) {
				targets = append(targets, t)
			}
		}
	}
	if outcome {
		for _, l := range r.Levels {
			add(l.Notify)
		}
	} else {
		add(r.Levels[rec.Level].Notify)
		if r.Proof == policy.ProofLink {
			links = r.Levels[rec.Level].Notify
		}
	}
	add(r.Notify)
	add(o.req.Support.Notify)
	return targets, links
}

// linkDeadline is how long decision links sent now work: until the approval
// deadline, at most the rule's link lifetime (reminders send new ones).
func (o *onboarding) linkDeadline(ctx workflow.Context) time.Time {
	d := o.approvalDeadline(ctx)
	if limit := workflow.Now(ctx).Add(o.rules.LinkLifetime.Or(24 * time.Hour)); limit.Before(d) {
		return limit
	}
	return d
}

// grantSummary is everything a decision grants, as support reads it in the
// request: what they approve is what the run does.
func (o *onboarding) grantSummary() []string {
	r := o.req
	gsa := "reuses " + o.sa.Email
	if o.sa.Created {
		gsa = "created by this run: " + o.sa.Email
	}
	workloads := make([]string, len(o.release.Workloads))
	for i, w := range o.release.Workloads {
		workloads[i] = w.String()
	}
	lines := []string{
		"Google service account: " + gsa,
		fmt.Sprintf("Kubernetes service account: %s/%s (runs %s)", r.Namespace, r.KSA, strings.Join(workloads, ", ")),
		fmt.Sprintf("Roles: %s for %s on the GSA; %s for the GSA on itself", roleWorkloadIdentityUser, workloadIdentityMember(r.Project, r.Namespace, r.KSA), roleTokenCreator),
	}
	if bq := r.BigQuery; bq != nil {
		data := "project " + bq.DataProject
		if len(bq.Datasets) > 0 {
			data = "datasets " + bq.DataProject + "." + strings.Join(bq.Datasets, ", "+bq.DataProject+".")
		}
		lines = append(lines, fmt.Sprintf("BigQuery: roles/bigquery.dataEditor on %s and on dataset %s.%s; roles/bigquery.jobUser on project %s",
			data, bq.BillingProject, bq.TempDataset, bq.BillingProject))
	}
	expiry := "until revoked"
	if e := r.Expiry; e != nil && e.At != "" {
		expiry = "until " + e.At
	} else if e != nil {
		expiry = string(e.TTL) + " after the onboarding completes"
	}
	chart := r.Helm.Chart
	if r.Helm.Version != "" {
		chart += " " + r.Helm.Version
	}
	lines = append(lines, "Expiry: "+expiry,
		fmt.Sprintf("Chart: %s (release %s), values %s", chart, r.Helm.Release, valuesDigest(r.Helm.Values)))
	if o.rules != nil {
		lines = append(lines, fmt.Sprintf("Grant policy: rule %q (%s): %s", o.rules.Rule, o.rules.Digest, strings.Join(levelSummaries(&o.rules.Resolved), "; then ")))
		requester := "not proven"
		if o.rules.Requester != "" {
			requester = o.rules.Requester + " (ID token verified)"
		}
		lines = append(lines, "Requester: "+requester)
	}
	return lines
}

// valuesDigest identifies the request's Helm values without showing them.
func valuesDigest(v map[string]any) string {
	// Map keys are sorted: the same values, the same digest, on every replay.
	b, err := json.Marshal(v) //workflowcheck:ignore

	if err != nil {
		return "(unreadable)"
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])[:16]
}
