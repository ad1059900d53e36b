package gcpemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"
)

// policy is the REST representation of an IAM policy (google.iam.v1.Policy).
type policy struct {
	Version      int             `json:"version,omitempty"`
	Bindings     []binding       `json:"bindings,omitempty"`
	AuditConfigs json.RawMessage `json:"auditConfigs,omitempty"`
	Etag         string          `json:"etag,omitempty"`
}

type binding struct {
	Role      string   `json:"role"`
	Members   []string `json:"members"`
	Condition *expr    `json:"condition,omitempty"`
}

type expr struct {
	Expression  string `json:"expression"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	Location    string `json:"location,omitempty"`
}

func (p *policy) clone() *policy {
	if p == nil {
		return nil
	}
	b, _ := json.Marshal(p)
	out := &policy{}
	_ = json.Unmarshal(b, out)
	return out
}

func (p *policy) hasConditions() bool {
	for _, b := range p.Bindings {
		if b.Condition != nil {
			return true
		}
	}
	return false
}

// add grants role to member without a condition.
func (p *policy) add(role, member string) {
	for i := range p.Bindings {
		if p.Bindings[i].Role == role && p.Bindings[i].Condition == nil {
			for _, m := range p.Bindings[i].Members {
				if m == member {
					return
				}
			}
			p.Bindings[i].Members = append(p.Bindings[i].Members, member)
			return
		}
	}
	p.Bindings = append(p.Bindings, binding{Role: role, Members: []string{member}})
}

// normalize merges bindings of the same role and condition, removes duplicate
// and empty members and sorts, as Google returns policies.
func (p *policy) normalize() {
	type key struct{ role, cond string }
	merged := map[key]*binding{}
	var order []key
	for _, b := range p.Bindings {
		k := key{b.Role, condKey(b.Condition)}
		if merged[k] == nil {
			nb := binding{Role: b.Role, Condition: b.Condition}
			merged[k] = &nb
			order = append(order, k)
		}
		merged[k].Members = append(merged[k].Members, b.Members...)
	}
	out := make([]binding, 0, len(order))
	for _, k := range order {
		b := merged[k]
		seen := map[string]bool{}
		var members []string
		for _, m := range b.Members {
			if m != "" && !seen[m] {
				seen[m] = true
				members = append(members, m)
			}
		}
		if len(members) == 0 {
			continue
		}
		sort.Strings(members)
		b.Members = members
		out = append(out, *b)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role
		}
		return condKey(out[i].Condition) < condKey(out[j].Condition)
	})
	p.Bindings = out
	if p.hasConditions() {
		p.Version = 3
	} else {
		p.Version = 1
	}
}

func condKey(c *expr) string {
	if c == nil {
		return ""
	}
	return c.Expression + "\x00" + c.Title + "\x00" + c.Description
}

// policyHistory keeps the versions of a policy that permission checks may still
// see: a write becomes effective only PropagationDelay after it was made.
type policyHistory struct {
	Versions []policyVersion `json:"versions"`
}

type policyVersion struct {
	At     time.Time `json:"at"`
	Policy *policy   `json:"policy"`
}

func newPolicyHistory(p *policy, at time.Time) *policyHistory {
	return &policyHistory{Versions: []policyVersion{{At: at, Policy: p}}}
}

// current is the latest written policy (what getIamPolicy returns).
func (h *policyHistory) current() *policy {
	if h == nil || len(h.Versions) == 0 {
		return &policy{Version: 1}
	}
	return h.Versions[len(h.Versions)-1].Policy
}

// effective is the newest policy old enough to have propagated.
func (h *policyHistory) effective(now time.Time, delay time.Duration) *policy {
	if h == nil || len(h.Versions) == 0 {
		return &policy{Version: 1}
	}
	for i := len(h.Versions) - 1; i > 0; i-- {
		if !now.Before(h.Versions[i].At.Add(delay)) {
			return h.Versions[i].Policy
		}
	}
	return h.Versions[0].Policy
}

// pending says whether a written change has not propagated yet.
func (h *policyHistory) pending(now time.Time, delay time.Duration) bool {
	return h != nil && len(h.Versions) > 0 && h.effective(now, delay) != h.current()
}

// write records a new policy and forgets versions no check can see any more.
func (h *policyHistory) write(p *policy, now time.Time, delay time.Duration) {
	h.Versions = append(h.Versions, policyVersion{At: now, Policy: p})
	// Keep the newest version that is already effective and everything after it.
	keepFrom := 0
	for i := len(h.Versions) - 1; i > 0; i-- {
		if !now.Before(h.Versions[i].At.Add(delay)) {
			keepFrom = i
			break
		}
	}
	h.Versions = append([]policyVersion(nil), h.Versions[keepFrom:]...)
}

// grants says whether the policy gives perm to any of the identities.
func (p *policy) grants(identities []string, perm string, now time.Time) bool {
	for _, b := range p.Bindings {
		if !roleHasPermission(b.Role, perm) {
			continue
		}
		if !membersMatch(b.Members, identities) {
			continue
		}
		if b.Condition != nil && !evalCondition(b.Condition.Expression, now) {
			continue
		}
		return true
	}
	return false
}

func membersMatch(members, identities []string) bool {
	for _, m := range members {
		if m == "allUsers" || m == "allAuthenticatedUsers" {
			return true
		}
		for _, id := range identities {
			if strings.EqualFold(m, id) {
				return true
			}
		}
	}
	return false
}

var timeCondition = regexp.MustCompile(`^\s*request\.time\s*(<|<=|>|>=)\s*timestamp\(\s*["']([^"']+)["']\s*\)\s*$`)

// evalCondition evaluates the request.time comparisons IAM conditions are most
// often written with; any other expression is treated as not satisfied, the
// safe reading for a permission check.
func evalCondition(expression string, now time.Time) bool {
	var clauses []string
	for _, part := range strings.Split(expression, "&&") {
		clauses = append(clauses, unwrapParens(part))
	}
	for _, cl := range clauses {
		m := timeCondition.FindStringSubmatch(cl)
		if m == nil {
			return false
		}
		t, err := time.Parse(time.RFC3339, m[2])
		if err != nil {
			return false
		}
		var ok bool
		switch m[1] {
		case "<":
			ok = now.Before(t)
		case "<=":
			ok = !now.After(t)
		case ">":
			ok = now.After(t)
		case ">=":
			ok = !now.Before(t)
		}
		if !ok {
			return false
		}
	}
	return true
}

// unwrapParens drops the parentheses around a whole clause, "(a < b)" -> "a < b",
// and leaves those of calls in it: timestamp("...") keeps its own.
func unwrapParens(clause string) string {
	c := strings.TrimSpace(clause)
	for len(c) >= 2 && c[0] == '(' && c[len(c)-1] == ')' && balanced(c[1:len(c)-1]) {
		c = strings.TrimSpace(c[1 : len(c)-1])
	}
	return c
}

// balanced reports whether s's parentheses pair up in order.
func balanced(s string) bool {
	depth := 0
	for _, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			if depth--; depth < 0 {
				return false
			}
		}
	}
	return depth == 0
}

// withCondSuffix is how IAM names a conditional binding's role in a version 1 view.
func withCondSuffix(role string, c *expr) string {
	sum := sha256.Sum256([]byte(condKey(c)))
	return role + "_withcond_" + hex.EncodeToString(sum[:])[:20]
}

// memberForEmail is the IAM member string for an email address.
func memberForEmail(email string) string {
	if strings.HasPrefix(email, "user:") || strings.HasPrefix(email, "serviceAccount:") {
		return email
	}
	if strings.HasSuffix(email, ".gserviceaccount.com") {
		return "serviceAccount:" + email
	}
	return "user:" + email
}

// splitServiceAccountEmail splits "acct@project.iam.gserviceaccount.com".
func splitServiceAccountEmail(email string) (account, project string, ok bool) {
	account, domain, found := strings.Cut(email, "@")
	if !found {
		return "", "", false
	}
	project, found = strings.CutSuffix(domain, ".iam.gserviceaccount.com")
	if !found || project == "" || account == "" {
		return "", "", false
	}
	return account, project, true
}

var (
	emailPattern        = regexp.MustCompile(`^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$`)
	workloadSAPattern   = regexp.MustCompile(`^([a-z][-a-z0-9.:]*[a-z0-9])\.svc\.id\.goog\[([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)\]$`)
	principalWIPattern  = regexp.MustCompile(`^principal://iam\.googleapis\.com/projects/(\d+)/locations/global/workloadIdentityPools/([^/]+)/subject/(.+)$`)
	principalSetPattern = regexp.MustCompile(`^principalSet://iam\.googleapis\.com/projects/(\d+)/locations/global/workloadIdentityPools/([^/]+)/(.+)$`)
	domainPattern       = regexp.MustCompile(`^[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$`)
)
