// Package policy is the operator's grant policy: which grants gkewi may make,
// who approves them, with what proof, and for how long. The worker loads it from
// a file the requester cannot edit; a request can narrow what its rule allows,
// never widen it. The model is Google's Privileged Access Manager entitlement:
// eligible approvers in up to two sequential levels, one denial ends a request,
// nobody approves their own, service accounts approve only where allowed.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/mail"
	"path"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/contract"
)

// Proof methods, weakest first: what a decision must carry to count.
const (
	// ProofNone counts a decision that merely names an approver.
	ProofNone = "none"
	// ProofLink also counts a signed link from the approver's own copy of the
	// support email.
	ProofLink = "link"
	// ProofIDToken counts only a decision whose approver presented an ID token
	// the worker verified.
	ProofIDToken = "id-token"
)

// Limits of a rule, as Google's PAM sets them.
const (
	MaxLevels            = 2
	MaxApprovalsPerLevel = 5
	// DefaultLinkLifetime caps how long a signed decision link works; each
	// reminder sends new ones.
	DefaultLinkLifetime contract.Duration = "24h"
)

// Policy is the grant policy: rules tried in order, the first whose scope
// covers a grant decides it. A grant no rule covers is refused.
type Policy struct {
	Rules []Rule `json:"rules"`

	digest string
}

// Rule says who approves the grants of its scope and what they may hold.
type Rule struct {
	// Name identifies the rule in refusals and in each run's status.
	Name  string `json:"name"`
	Scope Scope  `json:"scope"`
	// Approval is who decides and with what proof.
	Approval Approval `json:"approval"`
	// Requester says whether the requester must prove who they are.
	Requester Requester `json:"requester,omitzero"`
	// MaxDuration is the longest grant: a request without expiry gets it, a
	// longer one is refused. Empty: grants may last until revoked.
	MaxDuration contract.Duration `json:"maxDuration,omitempty"`
	// BigQuery is where a grant may get BigQuery roles; nil refuses every
	// request with a bigquery section.
	BigQuery *BigQuery `json:"bigquery,omitempty"`
	// Notify is told of every request of the scope, besides the approvers.
	Notify []string `json:"notify,omitempty"`
}

// Scope is what a rule covers: shell globs (path.Match) on each name; an empty
// list covers every value. Projects are required.
type Scope struct {
	Projects   []string `json:"projects"`
	Clusters   []string `json:"clusters,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	Releases   []string `json:"releases,omitempty"`
}

// Approval is a rule's approval gate.
type Approval struct {
	// Proof is the least proof a decision must carry: id-token (the default),
	// link or none.
	Proof string `json:"proof,omitempty"`
	// ServiceAccountApprovers lets service accounts approve (off, as in PAM).
	ServiceAccountApprovers bool `json:"serviceAccountApprovers,omitempty"`
	// LinkLifetime caps a signed decision link's life; default 24h.
	LinkLifetime contract.Duration `json:"linkLifetime,omitempty"`
	// Levels run in order; each needs Count distinct approvals.
	Levels []Level `json:"levels"`
}

// Level is one step of approval: who may approve at it and how many must.
type Level struct {
	// Approvers are eligible approvers' emails.
	Approvers []string `json:"approvers,omitempty"`
	// Domains make every verified email of the domain eligible.
	Domains []string `json:"domains,omitempty"`
	// Count is how many distinct approvals the level needs; default 1.
	Count int `json:"count,omitempty"`
}

// Requester is what the rule asks of the requester.
type Requester struct {
	// Required refuses runs whose requester did not prove who they are
	// (gkewi onboard --endpoint).
	Required bool `json:"required,omitempty"`
}

// BigQuery is where a rule's grants may hold BigQuery roles. The roles are
// gkewi's fixed ones: dataEditor on the data (project or datasets) and the
// temp dataset, jobUser on the billing project.
type BigQuery struct {
	// DataProjects and BillingProjects are globs of the projects allowed.
	DataProjects    []string `json:"dataProjects"`
	BillingProjects []string `json:"billingProjects"`
	// Datasets are globs of the datasets of the data project that a grant may
	// name in bigquery.datasets; empty allows none.
	Datasets []string `json:"datasets,omitempty"`
	// ProjectWide allows dataEditor on the whole data project (a request
	// without bigquery.datasets).
	ProjectWide bool `json:"projectWide,omitempty"`
}

// Parse reads a policy from YAML (or JSON) and checks it. Unknown keys are
// refused: a misspelt rule must not silently allow more.
func Parse(src []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(src, &p); err != nil {
		return nil, fmt.Errorf("grant policy: %w", err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(src)
	p.digest = "sha256:" + hex.EncodeToString(sum[:])
	return &p, nil
}

// Digest identifies the policy's text; each run records the one it used.
func (p *Policy) Digest() string { return p.digest }

func (p *Policy) validate() error {
	var problems []string
	fail := func(field, rule string) { problems = append(problems, field+": "+rule) }
	if len(p.Rules) == 0 {
		fail("rules", "at least one rule is required (a grant no rule covers is refused)")
	}
	names := map[string]bool{}
	for i, r := range p.Rules {
		at := fmt.Sprintf("rules[%d]", i)
		switch {
		case r.Name == "":
			fail(at+".name", "required")
		case names[r.Name]:
			fail(at+".name", fmt.Sprintf("%q names another rule too", r.Name))
		}
		names[r.Name] = true
		if len(r.Scope.Projects) == 0 {
			fail(at+".scope.projects", "at least one project (or glob) is required")
		}
		for field, globs := range map[string][]string{
			"projects": r.Scope.Projects, "clusters": r.Scope.Clusters,
			"namespaces": r.Scope.Namespaces, "releases": r.Scope.Releases,
		} {
			checkGlobs(at+".scope."+field, globs, fail)
		}
		r.Approval.validate(at+".approval", fail)
		checkDuration(at+".maxDuration", r.MaxDuration, fail)
		if bq := r.BigQuery; bq != nil {
			checkGlobs(at+".bigquery.dataProjects", bq.DataProjects, fail)
			checkGlobs(at+".bigquery.billingProjects", bq.BillingProjects, fail)
			checkGlobs(at+".bigquery.datasets", bq.Datasets, fail)
		}
		for j, n := range r.Notify {
			if !isEmail(n) {
				fail(fmt.Sprintf("%s.notify[%d]", at, j), "must be an email address")
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("grant policy: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (a Approval) validate(at string, fail func(field, rule string)) {
	if proofRank(a.Proof) < 0 {
		fail(at+".proof", fmt.Sprintf("must be %q (the default), %q or %q", ProofIDToken, ProofLink, ProofNone))
	}
	checkDuration(at+".linkLifetime", a.LinkLifetime, fail)
	if n := len(a.Levels); n < 1 || n > MaxLevels {
		fail(at+".levels", fmt.Sprintf("1 or %d levels are required, not %d", MaxLevels, n))
	}
	for j, l := range a.Levels {
		lat := fmt.Sprintf("%s.levels[%d]", at, j)
		if len(l.Approvers)+len(l.Domains) == 0 {
			fail(lat, "name approvers or domains")
		}
		for k, e := range l.Approvers {
			switch {
			case slices.ContainsFunc(l.Approvers[:k], func(a string) bool { return strings.EqualFold(a, e) }):
				// Listed twice, it would count once: a level needing both could never pass.
				fail(fmt.Sprintf("%s.approvers[%d]", lat, k), e+" is listed twice")
			case !isEmail(e):
				fail(fmt.Sprintf("%s.approvers[%d]", lat, k), "must be an email address")
			case IsServiceAccount(e) && !a.ServiceAccountApprovers:
				fail(fmt.Sprintf("%s.approvers[%d]", lat, k), e+" is a service account: set approval.serviceAccountApprovers to let service accounts approve")
			}
		}
		for k, d := range l.Domains {
			if d == "" || strings.ContainsAny(d, "@*? ") || !strings.Contains(d, ".") {
				fail(fmt.Sprintf("%s.domains[%d]", lat, k), "must be a domain such as example.com")
			}
		}
		if l.Count < 0 || l.Count > MaxApprovalsPerLevel {
			fail(lat+".count", fmt.Sprintf("must be 1 to %d", MaxApprovalsPerLevel))
		}
		if len(l.Domains) == 0 && l.count() > len(l.Approvers) {
			fail(lat+".count", fmt.Sprintf("needs %d approvals but names %d approvers", l.count(), len(l.Approvers)))
		}
	}
}

func checkGlobs(field string, globs []string, fail func(field, rule string)) {
	for i, g := range globs {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			fail(fmt.Sprintf("%s[%d]", field, i), "must be a name or a glob (*, ?, [...])")
		}
	}
}

func checkDuration(field string, d contract.Duration, fail func(field, rule string)) {
	if v, err := d.Parse(); err != nil || v < 0 {
		fail(field, "must be a duration such as 720h")
	}
}

// proofRank orders proofs by strength; -1 for an unknown one. Empty is the
// default, id-token.
func proofRank(p string) int {
	switch p {
	case ProofNone:
		return 0
	case ProofLink:
		return 1
	case ProofIDToken, "":
		return 2
	}
	return -1
}

// ProofCounts says whether a decision proven by method (empty: not proven)
// meets the least proof required.
func ProofCounts(required, method string) bool {
	if required == ProofNone {
		return true
	}
	// An unknown requirement is met by nothing: fail closed.
	return method != "" && proofRank(required) >= 0 && proofRank(method) >= proofRank(required)
}

// IsServiceAccount reports whether email is a Google service account's.
func IsServiceAccount(email string) bool {
	return strings.HasSuffix(strings.ToLower(email), ".gserviceaccount.com")
}

func isEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && strings.Contains(s, "@")
}

func (l Level) count() int { return max(l.Count, 1) }

// Needed is how many distinct approvals the level needs.
func (l Level) Needed() int { return l.count() }

// Eligible reports whether email may approve at this level.
func (l Level) Eligible(email string) bool {
	email = strings.TrimSpace(email)
	if slices.ContainsFunc(l.Approvers, func(a string) bool { return strings.EqualFold(a, email) }) {
		return true
	}
	_, domain, ok := strings.Cut(email, "@")
	return ok && slices.ContainsFunc(l.Domains, func(d string) bool { return strings.EqualFold(d, domain) })
}

func covers(globs []string, name string) bool {
	if len(globs) == 0 {
		return true
	}
	return slices.ContainsFunc(globs, func(g string) bool { ok, _ := path.Match(g, name); return ok })
}

// Grant is what a request asks, as far as the policy decides it.
type Grant struct {
	Project, Cluster, Namespace, Release string
	// Approvers are the request's support.approvers: whom to notify first.
	Approvers []string
	// Proof is the request's support.proof; empty takes the rule's.
	Proof string
	// TTL or At is the request's expiry (zero: none asked); Now is when the
	// run started, for At.
	TTL time.Duration
	At  time.Time
	Now time.Time
	// BigQuery is nil when the request has no bigquery section.
	BigQuery *BigQueryGrant
	// Requester is the requester's verified email, empty when unproven.
	Requester string
}

// BigQueryGrant is the request's bigquery section.
type BigQueryGrant struct {
	DataProject, BillingProject string
	Datasets                    []string
}

// Refusal is a grant the policy does not allow: the rule that decided (empty
// when none covers it), the request field at fault and why.
type Refusal struct {
	Rule, Field, Reason string
}

func (r *Refusal) Error() string {
	if r.Rule == "" {
		return r.Reason
	}
	return fmt.Sprintf("grant policy rule %q: %s: %s", r.Rule, r.Field, r.Reason)
}

// Match is the first rule covering the grant's scope, or a Refusal.
func (p *Policy) Match(g Grant) (*Rule, error) {
	for i := range p.Rules {
		r := &p.Rules[i]
		s := r.Scope
		if covers(s.Projects, g.Project) && covers(s.Clusters, g.Cluster) &&
			covers(s.Namespaces, g.Namespace) && covers(s.Releases, g.Release) {
			return r, nil
		}
	}
	return nil, &Refusal{Field: "project", Reason: fmt.Sprintf(
		"no rule of the grant policy covers project %s, cluster %s, namespace %s, release %s: nothing may be granted there until the operator adds one",
		g.Project, g.Cluster, g.Namespace, g.Release)}
}

// Resolve decides g: the rules it runs under, narrowed by the request, or a
// Refusal naming the rule and the field.
func (p *Policy) Resolve(g Grant) (Resolved, error) {
	r, err := p.Match(g)
	if err != nil {
		return Resolved{}, err
	}
	refuse := func(field, format string, args ...any) (Resolved, error) {
		return Resolved{}, &Refusal{Rule: r.Name, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	a := r.Approval
	proof := orDefault(a.Proof, ProofIDToken)
	if g.Proof != "" {
		if proofRank(g.Proof) < 0 {
			return refuse("support.proof", "%q is not a proof method", g.Proof)
		}
		if proofRank(g.Proof) < proofRank(proof) {
			return refuse("support.proof", "%q is weaker than the rule's %q: a request may ask for more proof, never less", g.Proof, proof)
		}
		proof = g.Proof
	}
	for i, e := range g.Approvers {
		if !slices.ContainsFunc(a.Levels, func(l Level) bool { return l.Eligible(e) }) {
			return refuse(fmt.Sprintf("support.approvers[%d]", i), "%s may not approve under this rule (its approvers: %s); a request only chooses whom of them to notify first",
				e, strings.Join(a.describe(), "; "))
		}
		if IsServiceAccount(e) && !a.ServiceAccountApprovers {
			return refuse(fmt.Sprintf("support.approvers[%d]", i), "%s is a service account, and the rule lets no service account approve", e)
		}
		if g.Requester != "" && strings.EqualFold(e, g.Requester) {
			return refuse(fmt.Sprintf("support.approvers[%d]", i), "%s is the requester, who never approves their own grant", e)
		}
	}
	res := Resolved{
		Rule: r.Name, Digest: p.digest, Proof: proof,
		ServiceAccountApprovers: a.ServiceAccountApprovers, RequireRequester: r.Requester.Required,
		MaxDuration: r.MaxDuration, LinkLifetime: orDefault(a.LinkLifetime, DefaultLinkLifetime), Notify: r.Notify,
	}
	if maxD := r.MaxDuration.Or(0); maxD > 0 {
		switch {
		case g.TTL > maxD:
			return refuse("expiry.ttl", "%s is longer than the rule's maxDuration %s", g.TTL, r.MaxDuration)
		case !g.At.IsZero() && g.At.After(g.Now.Add(maxD)):
			return refuse("expiry.at", "%s is more than the rule's maxDuration %s after the request (%s)",
				g.At.UTC().Format(time.RFC3339), r.MaxDuration, g.Now.UTC().Format(time.RFC3339))
		case g.TTL == 0 && g.At.IsZero():
			res.DefaultTTL = r.MaxDuration
		}
	}
	if bq := g.BigQuery; bq != nil {
		if field, why := r.BigQuery.refuses(bq); field != "" {
			return refuse(field, "%s", why)
		}
	}
	if r.Requester.Required && g.Requester == "" {
		return refuse("requester", "the rule requires a proven requester: send the request with gkewi onboard --endpoint URL, which presents your ID token to the worker")
	}
	for _, l := range a.Levels {
		res.Levels = append(res.Levels, ResolvedLevel{Level: l, Notify: l.notify(g.Approvers)})
	}
	return res, nil
}

// refuses names the first bigquery field b does not allow, and why.
func (b *BigQuery) refuses(g *BigQueryGrant) (field, why string) {
	switch {
	case b == nil:
		return "bigquery", "the rule allows no BigQuery grant"
	case !allows(b.DataProjects, g.DataProject):
		return "bigquery.dataProject", fmt.Sprintf("%s is not among the rule's dataProjects (%s)", g.DataProject, strings.Join(b.DataProjects, ", "))
	case !allows(b.BillingProjects, g.BillingProject):
		return "bigquery.billingProject", fmt.Sprintf("%s is not among the rule's billingProjects (%s)", g.BillingProject, strings.Join(b.BillingProjects, ", "))
	case len(g.Datasets) == 0 && !b.ProjectWide:
		return "bigquery.datasets", "the rule allows dataEditor on named datasets only, not on the whole data project: list them in bigquery.datasets"
	}
	for i, d := range g.Datasets {
		if !allows(b.Datasets, d) {
			return fmt.Sprintf("bigquery.datasets[%d]", i), fmt.Sprintf("%s is not among the rule's datasets (%s)", d, strings.Join(b.Datasets, ", "))
		}
	}
	return "", ""
}

// allows is covers where an empty allow-list allows nothing (covers takes
// empty as all). No sentinel glob: a requester could name it.
func allows(globs []string, name string) bool {
	return len(globs) > 0 && covers(globs, name)
}

// notify is whom to tell at this level: the request's approvers eligible at
// it, else the level's listed approvers.
func (l Level) notify(requested []string) []string {
	var out []string
	for _, e := range requested {
		if l.Eligible(e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		out = slices.Clone(l.Approvers)
	}
	return out
}

func (a Approval) describe() []string {
	var out []string
	for i, l := range a.Levels {
		who := slices.Clone(l.Approvers)
		for _, d := range l.Domains {
			who = append(who, "anyone@"+d)
		}
		out = append(out, fmt.Sprintf("level %d: %s", i+1, strings.Join(who, ", ")))
	}
	return out
}

func orDefault[T ~string](v, def T) T {
	if v == "" {
		return def
	}
	return v
}

// Resolved is the rule a run goes by, as the worker resolved it when the run
// began: a later change of the policy file changes new runs only.
type Resolved struct {
	// Rule and Digest name the rule and the policy text.
	Rule   string `json:"rule"`
	Digest string `json:"digest"`
	// Proof is the least proof a decision must carry (the rule's, or the
	// request's when stricter).
	Proof                   string          `json:"proof"`
	ServiceAccountApprovers bool            `json:"serviceAccountApprovers,omitempty"`
	Levels                  []ResolvedLevel `json:"levels"`
	// Notify is told of every request of the rule, besides the approvers.
	Notify           []string          `json:"notify,omitempty"`
	RequireRequester bool              `json:"requireRequester,omitempty"`
	MaxDuration      contract.Duration `json:"maxDuration,omitempty"`
	// DefaultTTL is the expiry a request without one gets: the maxDuration.
	DefaultTTL   contract.Duration `json:"defaultTtl,omitempty"`
	LinkLifetime contract.Duration `json:"linkLifetime"`
}

// ResolvedLevel is a level with whom to notify at it.
type ResolvedLevel struct {
	Level
	Notify []string `json:"notify,omitempty"`
}
