package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
)

// testPolicy is the operator's file the requester tries to widen. prod-data
// comes before prod-any on purpose: the narrower rule must decide its scope.
const testPolicy = `
rules:
- name: prod-data
  scope:
    projects: [carto-prod]
    namespaces: ["data-*"]
  approval:
    levels:
    - approvers: [lead@carto.example]
      domains: [carto.example]
    - approvers: [cto@carto.example, vp@carto.example]
      count: 2
  requester: {required: true}
  maxDuration: 72h
  bigquery:
    dataProjects: ["carto-data-*"]
    billingProjects: [carto-billing]
    datasets: ["analytics_*"]
  notify: [audit@carto.example]
- name: prod-any
  scope:
    projects: [carto-prod]
  approval:
    proof: none
    levels:
    - approvers: [lead@carto.example]
- name: dev
  scope:
    projects: ["carto-dev-*"]
    clusters: [dev-1]
    releases: ["web-*"]
  approval:
    proof: link
    serviceAccountApprovers: true
    linkLifetime: 1h
    levels:
    - approvers: [deployer@carto-dev.iam.gserviceaccount.com, lead@carto.example]
  bigquery:
    dataProjects: ["carto-dev-*"]
    billingProjects: ["carto-dev-*"]
    projectWide: true
- name: robots
  scope:
    projects: [robots]
  approval:
    levels:
    - domains: [robots.iam.gserviceaccount.com]
  bigquery:
    dataProjects: [robots]
    billingProjects: [robots]
- name: locked
  scope:
    projects: [locked]
  approval:
    levels:
    - approvers: [lead@carto.example]
  bigquery:
    dataProjects: []
    billingProjects: [locked]
    projectWide: true
`

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src))
	require.NoError(t, err)
	return p
}

// prodData is a request prod-data allows as it stands; each test widens one thing.
func prodData() Grant {
	return Grant{
		Project: "carto-prod", Cluster: "prod-1", Namespace: "data-eu", Release: "etl",
		Approvers: []string{"sre@carto.example"}, Now: now, Requester: "dev@carto.example",
	}
}

// toProdAny moves g to prod-any's scope, whose only approver is lead.
func toProdAny(g *Grant) { g.Namespace, g.Approvers = "web", nil }

func refusal(t *testing.T, err error) *Refusal {
	t.Helper()
	var r *Refusal
	require.ErrorAs(t, err, &r)
	return r
}

// rule wraps a rule's body (indented as a list item) into a one-rule policy.
func rule(body string) string {
	return "rules:\n- name: r\n" + body
}

const (
	scope    = "  scope: {projects: [p]}\n"
	oneLevel = "  approval: {levels: [{approvers: [a@carto.example]}]}\n"
)

func TestParseRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		src  string
		want []string // the field path and what is wrong
	}{
		// A misspelt key must not silently drop the rule it meant to set.
		"unknown key":        {rule(scope + "  aproval: {levels: [{approvers: [a@carto.example]}]}\n"), []string{`unknown field "aproval"`}},
		"unknown nested key": {rule(scope + "  approval: {levels: [{aprovers: [a@carto.example]}]}\n"), []string{`unknown field "aprovers"`}},
		"duplicate key":      {rule(scope + oneLevel + "  maxDuration: 1h\n  maxDuration: 100000h\n"), []string{`"maxDuration" already set`}},
		"not yaml":           {"rules: [", []string{"grant policy"}},
		// No rule would refuse every grant: that is a mistake, not a policy.
		"empty file":     {"", []string{"rules: at least one rule"}},
		"no rules":       {"rules: []\n", []string{"rules: at least one rule"}},
		"no name":        {"rules:\n- scope: {projects: [p]}\n" + oneLevel, []string{"rules[0].name: required"}},
		"duplicate name": {rule(scope+oneLevel) + "- name: r\n" + scope + oneLevel, []string{`rules[1].name: "r" names another rule too`}},
		// A rule without projects would cover every project.
		"no projects":          {rule("  scope: {namespaces: [ns]}\n" + oneLevel), []string{"rules[0].scope.projects: at least one project"}},
		"empty glob":           {rule("  scope: {projects: [\"\"]}\n" + oneLevel), []string{"rules[0].scope.projects[0]: must be a name or a glob"}},
		"bad glob":             {rule("  scope: {projects: [p], namespaces: [ok, \"data-[\"]}\n" + oneLevel), []string{"rules[0].scope.namespaces[1]: must be a name or a glob"}},
		"bad bigquery glob":    {rule(scope + oneLevel + "  bigquery: {dataProjects: [d], billingProjects: [b], datasets: [\"[\"]}\n"), []string{"rules[0].bigquery.datasets[0]"}},
		"bad proof":            {rule(scope + "  approval: {proof: strong, levels: [{approvers: [a@carto.example]}]}\n"), []string{"rules[0].approval.proof: must be"}},
		"no levels":            {rule(scope + "  approval: {levels: []}\n"), []string{"rules[0].approval.levels: 1 or 2 levels are required, not 0"}},
		"three levels":         {rule(scope + "  approval: {levels: [{approvers: [a@carto.example]}, {approvers: [b@carto.example]}, {approvers: [c@carto.example]}]}\n"), []string{"rules[0].approval.levels: 1 or 2 levels are required, not 3"}},
		"level without anyone": {rule(scope + "  approval: {levels: [{count: 1}]}\n"), []string{"rules[0].approval.levels[0]: name approvers or domains"}},
		// A level needing more approvers than it names could never pass.
		"count above approvers": {rule(scope + "  approval: {levels: [{approvers: [a@carto.example, b@carto.example], count: 3}]}\n"), []string{"rules[0].approval.levels[0].count: needs 3 approvals but names 2 approvers"}},
		"count above PAM's":     {rule(scope + "  approval: {levels: [{domains: [carto.example], count: 6}]}\n"), []string{"rules[0].approval.levels[0].count: must be 1 to 5"}},
		"negative count":        {rule(scope + "  approval: {levels: [{domains: [carto.example], count: -1}]}\n"), []string{"rules[0].approval.levels[0].count: must be 1 to 5"}},
		"approver listed twice": {rule(scope + "  approval: {levels: [{approvers: [a@carto.example, A@carto.example], count: 2}]}\n"), []string{"rules[0].approval.levels[0].approvers[1]: A@carto.example is listed twice"}},
		"approver not an email": {rule(scope + "  approval: {levels: [{approvers: [lead]}]}\n"), []string{"rules[0].approval.levels[0].approvers[0]: must be an email address"}},
		// Service accounts approve only where the operator says so, as in PAM.
		"service account approver": {rule(scope + "  approval: {levels: [{approvers: [a@carto.example]}, {approvers: [ci@p.iam.gserviceaccount.com]}]}\n"), []string{"rules[0].approval.levels[1].approvers[0]: ci@p.iam.gserviceaccount.com is a service account"}},
		"domain with @":            {rule(scope + "  approval: {levels: [{domains: [\"@carto.example\"]}]}\n"), []string{"rules[0].approval.levels[0].domains[0]: must be a domain"}},
		"domain glob":              {rule(scope + "  approval: {levels: [{domains: [\"*.example\"]}]}\n"), []string{"rules[0].approval.levels[0].domains[0]: must be a domain"}},
		"top-level domain":         {rule(scope + "  approval: {levels: [{domains: [com]}]}\n"), []string{"rules[0].approval.levels[0].domains[0]: must be a domain"}},
		"bad maxDuration":          {rule(scope + oneLevel + "  maxDuration: 3days\n"), []string{"rules[0].maxDuration: must be a duration"}},
		"negative maxDuration":     {rule(scope + oneLevel + "  maxDuration: -1h\n"), []string{"rules[0].maxDuration: must be a duration"}},
		"bad linkLifetime":         {rule(scope + "  approval: {linkLifetime: forever, levels: [{approvers: [a@carto.example]}]}\n"), []string{"rules[0].approval.linkLifetime: must be a duration"}},
		"notify not an email":      {rule(scope + oneLevel + "  notify: [audit]\n"), []string{"rules[0].notify[0]: must be an email address"}},
		// The operator fixes every problem in one go.
		"all problems": {rule("  scope: {}\n  approval: {proof: strong, levels: []}\n"), []string{"rules[0].scope.projects", "rules[0].approval.proof", "rules[0].approval.levels"}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Parse([]byte(tc.src))
			require.Error(t, err)
			assert.Nil(t, p)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	for name, src := range map[string]string{
		"the test policy": testPolicy,
		"json":            `{"rules": [{"name": "r", "scope": {"projects": ["p"]}, "approval": {"levels": [{"approvers": ["a@carto.example"]}]}}]}`,
		// With domains, anyone of the domain counts towards count.
		"count above approvers with domains": rule(scope + "  approval: {levels: [{domains: [carto.example], count: 3}]}\n"),
		"service account approver allowed":   rule(scope + "  approval: {serviceAccountApprovers: true, levels: [{approvers: [ci@p.iam.gserviceaccount.com]}]}\n"),
		"two levels":                         rule(scope + "  approval: {levels: [{approvers: [a@carto.example]}, {domains: [carto.example]}]}\n"),
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Parse([]byte(src))
			require.NoError(t, err)
			assert.NotEmpty(t, p.Rules)
		})
	}
}

func TestDigest(t *testing.T) {
	p := mustParse(t, testPolicy)
	// Each run records the digest: the same text must give the same one.
	assert.Equal(t, p.Digest(), mustParse(t, testPolicy).Digest())
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, p.Digest())

	changed := strings.Replace(testPolicy, "maxDuration: 72h", "maxDuration: 73h", 1)
	require.Len(t, changed, len(testPolicy), "one byte changed, no more")
	assert.NotEqual(t, p.Digest(), mustParse(t, changed).Digest())
}

func TestMatch(t *testing.T) {
	p := mustParse(t, testPolicy)
	for name, tc := range map[string]struct {
		grant Grant
		rule  string
	}{
		// prod-any covers data-eu too; prod-data is first, so it decides.
		"first rule wins":          {Grant{Project: "carto-prod", Cluster: "c", Namespace: "data-eu", Release: "r"}, "prod-data"},
		"glob on namespaces":       {Grant{Project: "carto-prod", Cluster: "c", Namespace: "data-", Release: "r"}, "prod-data"},
		"glob needs its prefix":    {Grant{Project: "carto-prod", Cluster: "c", Namespace: "data", Release: "r"}, "prod-any"},
		"glob anchored at start":   {Grant{Project: "carto-prod", Cluster: "c", Namespace: "metadata-eu", Release: "r"}, "prod-any"},
		"globs on every name":      {Grant{Project: "carto-dev-7", Cluster: "dev-1", Namespace: "any", Release: "web-ui"}, "dev"},
		"empty list covers all ns": {Grant{Project: "carto-prod", Cluster: "c", Namespace: "web", Release: "r"}, "prod-any"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := p.Match(tc.grant)
			require.NoError(t, err)
			assert.Equal(t, tc.rule, r.Name)
		})
	}

	t.Run("order matters", func(t *testing.T) {
		reversed := &Policy{Rules: []Rule{p.Rules[1], p.Rules[0]}}
		r, err := reversed.Match(Grant{Project: "carto-prod", Namespace: "data-eu"})
		require.NoError(t, err)
		assert.Equal(t, "prod-any", r.Name)
	})
}

func TestMatchRefusesWhatNoRuleCovers(t *testing.T) {
	p := mustParse(t, testPolicy)
	for name, g := range map[string]Grant{
		"unknown project":   {Project: "other-prod", Cluster: "c1", Namespace: "ns1", Release: "rel1"},
		"glob on clusters":  {Project: "carto-dev-7", Cluster: "dev-2", Namespace: "ns1", Release: "web-ui"},
		"glob on releases":  {Project: "carto-dev-7", Cluster: "dev-1", Namespace: "ns1", Release: "api"},
		"project as a glob": {Project: "carto-*", Cluster: "dev-1", Namespace: "ns1", Release: "web-ui"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := p.Match(g)
			assert.Nil(t, r)
			ref := refusal(t, err)
			assert.Empty(t, ref.Rule, "no rule decided")
			assert.Equal(t, ref.Reason, err.Error())
			// The requester learns exactly which grant needs a rule.
			for _, name := range []string{g.Project, g.Cluster, g.Namespace, g.Release} {
				assert.Contains(t, err.Error(), name)
			}

			_, err = p.Resolve(g)
			assert.Empty(t, refusal(t, err).Rule, "Resolve refuses it too")
		})
	}
}

func TestRefusalError(t *testing.T) {
	err := &Refusal{Rule: "prod-data", Field: "expiry.ttl", Reason: "too long"}
	assert.Equal(t, `grant policy rule "prod-data": expiry.ttl: too long`, err.Error())
}

// TestResolveRefusesWidening acts as a requester asking for more than the
// rule allows: each attempt must be refused naming the rule and the field.
func TestResolveRefusesWidening(t *testing.T) {
	p := mustParse(t, testPolicy)
	for name, tc := range map[string]struct {
		change              func(*Grant)
		rule, field, reason string
	}{
		"approver not in the policy": {func(g *Grant) { g.Approvers = []string{"mallory@evil.example"} },
			"prod-data", "support.approvers[0]", "may not approve"},
		"second approver not in the policy": {func(g *Grant) { g.Approvers = []string{"sre@carto.example", "mallory@evil.example"} },
			"prod-data", "support.approvers[1]", "may not approve"},
		"look-alike domain suffix": {func(g *Grant) { g.Approvers = []string{"mallory@carto.example.evil.com"} },
			"prod-data", "support.approvers[0]", "may not approve"},
		"look-alike domain prefix": {func(g *Grant) { g.Approvers = []string{"mallory@evilcarto.example"} },
			"prod-data", "support.approvers[0]", "may not approve"},
		// A domain covers its own emails, not its subdomains'.
		"subdomain": {func(g *Grant) { g.Approvers = []string{"mallory@eu.carto.example"} },
			"prod-data", "support.approvers[0]", "may not approve"},
		"approver of another rule": {func(g *Grant) { g.Approvers = []string{"deployer@carto-dev.iam.gserviceaccount.com"} },
			"prod-data", "support.approvers[0]", "may not approve"},
		"proof none under id-token": {func(g *Grant) { g.Proof = ProofNone },
			"prod-data", "support.proof", "weaker"},
		"proof link under id-token": {func(g *Grant) { g.Proof = ProofLink },
			"prod-data", "support.proof", "weaker"},
		"proof none under link": {func(g *Grant) {
			*g = Grant{Project: "carto-dev-1", Cluster: "dev-1", Release: "web-ui", Proof: ProofNone}
		},
			"dev", "support.proof", "weaker"},
		"unknown proof": {func(g *Grant) { g.Proof = "trust-me" },
			"prod-data", "support.proof", "not a proof method"},
		"ttl beyond maxDuration": {func(g *Grant) { g.TTL = 72*time.Hour + time.Second },
			"prod-data", "expiry.ttl", "longer than the rule's maxDuration 72h"},
		"at beyond maxDuration": {func(g *Grant) { g.At = now.Add(72*time.Hour + time.Second) },
			"prod-data", "expiry.at", "more than the rule's maxDuration 72h"},
		"bigquery where the rule has none": {func(g *Grant) {
			toProdAny(g)
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-billing", Datasets: []string{"analytics_eu"}}
		}, "prod-any", "bigquery", "allows no BigQuery grant"},
		"data project not allowed": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-prod", BillingProject: "carto-billing", Datasets: []string{"analytics_eu"}}
		}, "prod-data", "bigquery.dataProject", "carto-prod is not among"},
		"billing project not allowed": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-prod", Datasets: []string{"analytics_eu"}}
		}, "prod-data", "bigquery.billingProject", "carto-prod is not among"},
		"project-wide where not allowed": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-billing"}
		}, "prod-data", "bigquery.datasets", "named datasets only"},
		"dataset not among the globs": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-billing", Datasets: []string{"payroll"}}
		}, "prod-data", "bigquery.datasets[0]", "payroll is not among"},
		"second dataset not among the globs": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-billing", Datasets: []string{"analytics_eu", "payroll"}}
		}, "prod-data", "bigquery.datasets[1]", "payroll is not among"},
		// An empty allow-list allows nothing, whatever name is asked.
		"no data project allowed": {func(g *Grant) {
			*g = Grant{Project: "locked", BigQuery: &BigQueryGrant{DataProject: "\x00none", BillingProject: "locked"}}
		}, "locked", "bigquery.dataProject", "is not among"},
		"no dataset allowed": {func(g *Grant) {
			*g = Grant{Project: "robots", BigQuery: &BigQueryGrant{DataProject: "robots", BillingProject: "robots", Datasets: []string{"\x00none"}}}
		}, "robots", "bigquery.datasets[0]", "is not among"},
		"requester as approver": {func(g *Grant) { g.Approvers = []string{"dev@carto.example"} },
			"prod-data", "support.approvers[0]", "is the requester"},
		"requester as approver in another case": {func(g *Grant) { g.Approvers = []string{"sre@carto.example", "Dev@CARTO.example"} },
			"prod-data", "support.approvers[1]", "is the requester"},
		"unproven requester": {func(g *Grant) { g.Requester = "" },
			"prod-data", "requester", "requires a proven requester"},
		// Eligible by domain, but the rule lets no service account approve.
		"service account without serviceAccountApprovers": {func(g *Grant) {
			*g = Grant{Project: "robots", Approvers: []string{"ci@robots.iam.gserviceaccount.com"}}
		}, "robots", "support.approvers[0]", "service account"},
	} {
		t.Run(name, func(t *testing.T) {
			g := prodData()
			tc.change(&g)
			res, err := p.Resolve(g)
			ref := refusal(t, err)
			assert.Equal(t, tc.rule, ref.Rule)
			assert.Equal(t, tc.field, ref.Field)
			assert.Contains(t, ref.Reason, tc.reason)
			assert.Zero(t, res, "a refused grant resolves to nothing")
		})
	}
}

// TestResolveAllowsNarrowing: a request may ask for more proof or a shorter
// grant than its rule, and gets what it asked.
func TestResolveAllowsNarrowing(t *testing.T) {
	p := mustParse(t, testPolicy)
	devGrant := func(g *Grant) {
		*g = Grant{Project: "carto-dev-1", Cluster: "dev-1", Namespace: "ns", Release: "web-ui"}
	}
	for name, tc := range map[string]struct {
		change     func(*Grant)
		rule       string
		proof      string
		defaultTTL contract.Duration
	}{
		"as the rule":                 {func(*Grant) {}, "prod-data", ProofIDToken, "72h"},
		"the rule's proof named":      {func(g *Grant) { g.Proof = ProofIDToken }, "prod-data", ProofIDToken, "72h"},
		"id-token under none":         {func(g *Grant) { toProdAny(g); g.Proof = ProofIDToken }, "prod-any", ProofIDToken, ""},
		"link under none":             {func(g *Grant) { toProdAny(g); g.Proof = ProofLink }, "prod-any", ProofLink, ""},
		"id-token under link":         {func(g *Grant) { devGrant(g); g.Proof = ProofIDToken }, "dev", ProofIDToken, ""},
		"none rule without proof":     {func(g *Grant) { toProdAny(g) }, "prod-any", ProofNone, ""},
		"ttl of maxDuration":          {func(g *Grant) { g.TTL = 72 * time.Hour }, "prod-data", ProofIDToken, ""},
		"shorter ttl":                 {func(g *Grant) { g.TTL = time.Hour }, "prod-data", ProofIDToken, ""},
		"at maxDuration from now":     {func(g *Grant) { g.At = now.Add(72 * time.Hour) }, "prod-data", ProofIDToken, ""},
		"any ttl without maxDuration": {func(g *Grant) { toProdAny(g); g.TTL = 10000 * time.Hour }, "prod-any", ProofNone, ""},
		"approver by domain, any case": {func(g *Grant) { g.Approvers = []string{"Someone@CARTO.EXAMPLE"} },
			"prod-data", ProofIDToken, "72h"},
		"listed approver, any case": {func(g *Grant) { g.Approvers = []string{"VP@carto.example"} },
			"prod-data", ProofIDToken, "72h"},
		"datasets among the globs": {func(g *Grant) {
			g.BigQuery = &BigQueryGrant{DataProject: "carto-data-eu", BillingProject: "carto-billing", Datasets: []string{"analytics_eu", "analytics_us"}}
		}, "prod-data", ProofIDToken, "72h"},
		"project-wide where allowed": {func(g *Grant) {
			devGrant(g)
			g.BigQuery = &BigQueryGrant{DataProject: "carto-dev-1", BillingProject: "carto-dev-2"}
		}, "dev", ProofLink, ""},
		"service account where allowed": {func(g *Grant) {
			devGrant(g)
			g.Approvers = []string{"deployer@carto-dev.iam.gserviceaccount.com"}
		}, "dev", ProofLink, ""},
	} {
		t.Run(name, func(t *testing.T) {
			g := prodData()
			tc.change(&g)
			res, err := p.Resolve(g)
			require.NoError(t, err)
			assert.Equal(t, tc.rule, res.Rule)
			assert.Equal(t, tc.proof, res.Proof)
			assert.Equal(t, tc.defaultTTL, res.DefaultTTL)
		})
	}
}

func TestResolveRecordsTheRule(t *testing.T) {
	p := mustParse(t, testPolicy)

	res, err := p.Resolve(prodData())
	require.NoError(t, err)
	assert.Equal(t, "prod-data", res.Rule)
	// The run records which text it went by.
	assert.Equal(t, p.Digest(), res.Digest)
	assert.True(t, res.RequireRequester)
	assert.False(t, res.ServiceAccountApprovers)
	assert.Equal(t, contract.Duration("72h"), res.MaxDuration)
	assert.Equal(t, DefaultLinkLifetime, res.LinkLifetime)
	assert.Equal(t, []string{"audit@carto.example"}, res.Notify)
	require.Len(t, res.Levels, 2)
	assert.Equal(t, 1, res.Levels[0].Needed())
	assert.Equal(t, 2, res.Levels[1].Needed())

	res, err = p.Resolve(Grant{Project: "carto-dev-1", Cluster: "dev-1", Release: "web-ui"})
	require.NoError(t, err)
	assert.True(t, res.ServiceAccountApprovers)
	assert.False(t, res.RequireRequester)
	assert.Equal(t, contract.Duration("1h"), res.LinkLifetime)
	assert.Empty(t, res.MaxDuration, "no maxDuration: grants last until revoked")
}

func TestResolvedLevelNotify(t *testing.T) {
	p := mustParse(t, testPolicy)
	for name, tc := range map[string]struct {
		approvers []string
		notify    [][]string
	}{
		// Without a choice, each level's listed approvers are told.
		"none asked": {nil, [][]string{{"lead@carto.example"}, {"cto@carto.example", "vp@carto.example"}}},
		// sre is eligible at level 1 only: level 2 falls back to its list.
		"one level's approver": {[]string{"sre@carto.example"}, [][]string{{"sre@carto.example"}, {"cto@carto.example", "vp@carto.example"}}},
		"eligible at both":     {[]string{"sre@carto.example", "vp@carto.example"}, [][]string{{"sre@carto.example", "vp@carto.example"}, {"vp@carto.example"}}},
	} {
		t.Run(name, func(t *testing.T) {
			g := prodData()
			g.Approvers = tc.approvers
			res, err := p.Resolve(g)
			require.NoError(t, err)
			require.Len(t, res.Levels, len(tc.notify))
			for i, want := range tc.notify {
				assert.Equal(t, want, res.Levels[i].Notify, "level %d", i+1)
			}
		})
	}
}

func TestLevelEligible(t *testing.T) {
	l := Level{Approvers: []string{"lead@carto.example"}, Domains: []string{"carto.example"}}
	for email, want := range map[string]bool{
		"lead@carto.example":       true,
		"LEAD@Carto.Example":       true,
		"anyone@carto.example":     true,
		"Anyone@CARTO.EXAMPLE":     true,
		" anyone@carto.example ":   true,
		"x@carto.example.evil.com": false,
		"x@evilcarto.example":      false,
		"x@eu.carto.example":       false,
		"carto.example":            false,
		"x@evil.com@carto.example": false,
		"lead@evil.example":        false,
		"":                         false,
	} {
		assert.Equal(t, want, l.Eligible(email), "%q", email)
	}
	// Without domains only the listed emails may approve.
	assert.False(t, Level{Approvers: []string{"lead@carto.example"}}.Eligible("other@carto.example"))
}

func TestLevelNeeded(t *testing.T) {
	assert.Equal(t, 1, Level{}.Needed(), "count defaults to 1")
	assert.Equal(t, 3, Level{Count: 3}.Needed())
}

func TestProofCounts(t *testing.T) {
	for _, tc := range []struct {
		required, method string
		want             bool
	}{
		{ProofNone, "", true},
		{ProofNone, ProofNone, true},
		{ProofNone, ProofLink, true},
		{ProofNone, ProofIDToken, true},
		{ProofLink, "", false},
		{ProofLink, ProofNone, false},
		{ProofLink, ProofLink, true},
		{ProofLink, ProofIDToken, true},
		{ProofLink, "forged", false},
		{ProofIDToken, "", false},
		{ProofIDToken, ProofNone, false},
		{ProofIDToken, ProofLink, false},
		{ProofIDToken, ProofIDToken, true},
		// Empty required is the default, id-token.
		{"", ProofLink, false},
		{"", ProofIDToken, true},
		// An unknown requirement is met by nothing: fail closed.
		{"strong", ProofIDToken, false},
		{"strong", ProofNone, false},
	} {
		assert.Equal(t, tc.want, ProofCounts(tc.required, tc.method), "required %q, method %q", tc.required, tc.method)
	}
}

func TestIsServiceAccount(t *testing.T) {
	for email, want := range map[string]bool{
		"ci@p.iam.gserviceaccount.com":              true,
		"CI@P.IAM.GSERVICEACCOUNT.COM":              true,
		"p@appspot.gserviceaccount.com":             true,
		"123-compute@developer.gserviceaccount.com": true,
		"lead@carto.example":                        false,
		"x@gserviceaccount.com":                     false,
		"x@p.iam.gserviceaccount.com.evil":          false,
		"":                                          false,
	} {
		assert.Equal(t, want, IsServiceAccount(email), "%q", email)
	}
}
