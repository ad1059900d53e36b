package workflows

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
)

func TestOnboardRequestValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *OnboardRequest)
		want   string // "" means valid
	}{
		{"valid", func(*OnboardRequest) {}, ""},
		{"valid zone, reused GSA, explicit KSA, no BigQuery", func(r *OnboardRequest) {
			r.Location = "northamerica-northeast1-b"
			r.GSA = GSASpec{Email: "shared-backend@other-project.iam.gserviceaccount.com"}
			r.KSA = "carto.backend-sa"
			r.BigQuery = nil
			r.Support.Notify = nil
			r.Expiry = &ExpirySpec{At: "2027-01-01T00:00:00+01:00"}
		}, ""},
		{"project too short", func(r *OnboardRequest) { r.Project = "proj" },
			`project "proj": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`},
		{"project ends with hyphen", func(r *OnboardRequest) { r.Project = "my-project-" },
			`project "my-project-": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`},
		{"project missing", func(r *OnboardRequest) { r.Project = "" }, `project: required`},
		{"location", func(r *OnboardRequest) { r.Location = "europe-west" },
			`location "europe-west": must be a region such as europe-west1 or a zone such as europe-west1-b`},
		{"location zone with two letters", func(r *OnboardRequest) { r.Location = "europe-west1-bc" },
			`location "europe-west1-bc": must be a region such as europe-west1 or a zone such as europe-west1-b`},
		{"cluster uppercase", func(r *OnboardRequest) { r.Cluster = "Prod" },
			`cluster "Prod": must be 1-40 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`},
		{"cluster too long", func(r *OnboardRequest) { r.Cluster = "c" + strings.Repeat("x", 40) },
			`cluster "c` + strings.Repeat("x", 40) + `": must be 1-40 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`},
		{"node pools", func(r *OnboardRequest) { r.NodePools = []string{"pool-a", "", "pool-a"} },
			`nodePools[1]: required; nodePools[2] "pool-a": duplicate`},
		{"gsa account id", func(r *OnboardRequest) { r.GSA.AccountID = "ab" },
			`gsa.accountId "ab": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen`},
		{"gsa both", func(r *OnboardRequest) { r.GSA.Email = wantGSA }, `gsa: set exactly one of accountId and email`},
		{"gsa neither", func(r *OnboardRequest) { r.GSA = GSASpec{} }, `gsa: set exactly one of accountId and email`},
		{"gsa email", func(r *OnboardRequest) { r.GSA = GSASpec{Email: "backend@my-project.gserviceaccount.com"} },
			`gsa.email "backend@my-project.gserviceaccount.com": must be a service account email ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com`},
		{"gsa display name", func(r *OnboardRequest) { r.GSA.DisplayName = strings.Repeat("d", 101) },
			`gsa.displayName: must be at most 100 bytes of UTF-8`},
		{"gsa display name counted in bytes", func(r *OnboardRequest) { r.GSA.DisplayName = strings.Repeat("é", 51) },
			`gsa.displayName: must be at most 100 bytes of UTF-8`},
		{"gsa display name of 100 bytes", func(r *OnboardRequest) { r.GSA.DisplayName = strings.Repeat("é", 50) }, ""},
		{"gsa problems in field order", func(r *OnboardRequest) {
			r.GSA = GSASpec{Email: "backend@my-project.gserviceaccount.com", DisplayName: strings.Repeat("d", 101)}
		}, `gsa.displayName: must be at most 100 bytes of UTF-8; ` +
			`gsa.email "backend@my-project.gserviceaccount.com": must be a service account email ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com`},
		{"longest release with the defaulted KSA", func(r *OnboardRequest) { r.Helm.Release = "r" + strings.Repeat("x", 52) }, ""},
		{"ksa longer than a DNS label", func(r *OnboardRequest) { r.KSA = strings.Repeat("k", 64) + ".sa" }, ""},
		{"ksa longer than a DNS subdomain", func(r *OnboardRequest) { r.KSA = strings.Repeat("k", 254) },
			`ksa "` + strings.Repeat("k", 254) + `": must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, hyphens and dots, each dot-separated part starting and ending with a letter or digit`},
		{"namespace", func(r *OnboardRequest) { r.Namespace = "Carto_NS" },
			`namespace "Carto_NS": must be a DNS-1123 label: at most 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit`},
		{"namespace missing", func(r *OnboardRequest) { r.Namespace = "" }, `namespace: required`},
		{"ksa", func(r *OnboardRequest) { r.KSA = "backend..sa" },
			`ksa "backend..sa": must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, hyphens and dots, each dot-separated part starting and ending with a letter or digit`},
		{"helm release too long", func(r *OnboardRequest) { r.Helm.Release = strings.Repeat("r", 54) },
			`helm.release "` + strings.Repeat("r", 54) + `": must be a DNS-1123 label of at most 53 characters: lowercase letters, digits and hyphens, starting and ending with a letter or digit`},
		{"helm chart and repo", func(r *OnboardRequest) { r.Helm.Chart = ""; r.Helm.RepoURL = "ftp://charts.example.com" },
			`helm.chart: required; helm.repoURL "ftp://charts.example.com": must be an http:// or https:// URL`},
		{"bigquery", func(r *OnboardRequest) {
			r.BigQuery = &BigQuerySpec{DataProject: "Data", TempDataset: "carto-temp", Datasets: []string{"ok_1", "ok_1"}}
		}, `bigquery.dataProject "Data": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen; ` +
			`bigquery.billingProject: required; bigquery.tempDataset "carto-temp": must be 1-1024 letters, digits and underscores; ` +
			`bigquery.connectionOwnerId: required; bigquery.datasets[1] "ok_1": duplicate`},
		{"bad approver and notify target", func(r *OnboardRequest) {
			r.Support.Approvers = []string{alice, "Alice <alice@example.com>", "bob@localhost"}
			r.Support.Notify = []string{"#support", "https://hooks.example.com/x", "http://"}
		}, `support.approvers[1] "Alice <alice@example.com>": must be an email address; support.approvers[2] "bob@localhost": must be an email address; ` +
			`support.notify[0] "#support": must be an email address or an http:// or https:// URL; support.notify[2] "http://": must be an email address or an http:// or https:// URL`},
		{"durations", func(r *OnboardRequest) { r.Support.ReminderInterval = "1 day"; r.Support.ApprovalTimeout = "-5h" },
			`support.reminderInterval "1 day": must be a duration such as 90m or 24h; support.approvalTimeout "-5h": must be positive`},
		{"reminder too often", func(r *OnboardRequest) { r.Support.ReminderInterval = "30s" },
			`support.reminderInterval "30s": must be at least 1m`},
		{"proof", func(r *OnboardRequest) { r.Support.Proof = "email" },
			`support.proof "email": must be "id-token" (decisions count only with the approver's verified ID token), "link" (signed links of the support email count too) or "none" (decisions that merely name an approver count too); the grant policy sets the least, a request may only ask for more`},
		{"expiry both", func(r *OnboardRequest) { r.Expiry = &ExpirySpec{At: "2027-01-01T00:00:00Z", TTL: "24h"} },
			`expiry: set at most one of at and ttl`},
		{"expiry at format", func(r *OnboardRequest) { r.Expiry = &ExpirySpec{At: "2027-01-01"} },
			`expiry.at "2027-01-01": must be an RFC 3339 time such as 2026-12-31T18:00:00Z`},
		{"expiry at past", func(r *OnboardRequest) { r.Expiry = &ExpirySpec{At: "2026-06-01T08:00:00Z"} },
			`expiry.at "2026-06-01T08:00:00Z": must be in the future (now 2026-06-01T08:00:00Z)`},
		{"expiry ttl", func(r *OnboardRequest) { r.Expiry = &ExpirySpec{TTL: "0s"} }, `expiry.ttl "0s": must be positive`},
		{"several at once, in field order", func(r *OnboardRequest) {
			r.Support.Approvers = nil
			r.Project = "x"
			r.Helm.Release = ""
		}, `project "x": must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen; ` +
			`helm.release: required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := validRequest()
			tc.change(&r)
			err := r.ValidateAt(testStart)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, "invalid request: "+tc.want, err.Error())
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
		})
	}
}

func TestEmptyRequests(t *testing.T) {
	onboard := OnboardRequest{}
	assert.EqualError(t, onboard.Validate(), "invalid request: project: required; location: required; cluster: required; "+
		"gsa: set exactly one of accountId and email; namespace: required; helm.release: required; helm.chart: required")
	assert.EqualError(t, onboard.WithDefaults().Validate(), onboard.Validate().Error(), "the defaults add no problem")

	assert.EqualError(t, RevokeRequest{}.Validate(), "invalid request: project: required; location: required; cluster: required; "+
		"namespace: required; ksa: required; gsaEmail: required")
	assert.EqualError(t, RevokeRequest{}.WithDefaults().Validate(), RevokeRequest{}.Validate().Error())
}

func TestValidateIgnoresTheClock(t *testing.T) {
	r := validRequest()
	r.Expiry = &ExpirySpec{At: "2020-01-01T00:00:00Z"}
	require.NoError(t, r.Validate(), "Validate checks the format only")
	require.Error(t, r.ValidateAt(time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)))
}

func TestRevokeRequestValidation(t *testing.T) {
	valid := func() RevokeRequest {
		return RevokeRequest{
			Project: "my-project", Location: "europe-west1-b", Cluster: "prod-cluster", Namespace: "carto",
			KSA: "carto-common-backend", GSAEmail: wantGSA,
		}
	}
	for _, tc := range []struct {
		name   string
		change func(r *RevokeRequest)
		want   string
	}{
		{"valid", func(*RevokeRequest) {}, ""},
		{"no wait", func(r *RevokeRequest) { r.TokenExpiryWait = "0s" }, ""},
		{"longest wait", func(r *RevokeRequest) { r.TokenExpiryWait = "12h" }, ""},
		{"wait too long", func(r *RevokeRequest) { r.TokenExpiryWait = "12h1s" }, `tokenExpiryWait "12h1s": must be between 0s and 12h`},
		{"negative wait", func(r *RevokeRequest) { r.TokenExpiryWait = "-1m" }, `tokenExpiryWait "-1m": must be between 0s and 12h`},
		{"wait not a duration", func(r *RevokeRequest) { r.TokenExpiryWait = "soon" }, `tokenExpiryWait "soon": must be a duration such as 90m or 24h`},
		{"ksa required", func(r *RevokeRequest) { r.KSA = "" }, `ksa: required`},
		{"gsa email", func(r *RevokeRequest) { r.GSAEmail = "carto-backend" },
			`gsaEmail "carto-backend": must be a service account email ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com`},
		{"bigquery", func(r *RevokeRequest) {
			r.BigQuery = &BigQuerySpec{DataProject: "my-data-project", BillingProject: "my-billing-project"}
		},
			`bigquery.tempDataset: required; bigquery.connectionOwnerId: required`},
		{"cluster fields", func(r *RevokeRequest) { r.Project, r.Location, r.Cluster, r.Namespace = "", "", "", "" },
			`project: required; location: required; cluster: required; namespace: required`},
		{"reason", func(r *RevokeRequest) { r.Reason = strings.Repeat("x", 1001) }, `reason: must be at most 1000 bytes of UTF-8`},
		{"reason counted in bytes", func(r *RevokeRequest) { r.Reason = strings.Repeat("終", 334) }, `reason: must be at most 1000 bytes of UTF-8`},
		{"defaulted KSA of the longest release", func(r *RevokeRequest) { r.KSA = "r" + strings.Repeat("x", 52) + "-common-backend" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := valid()
			tc.change(&r)
			err := r.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, "invalid request: "+tc.want, err.Error())
		})
	}
}

func TestWithDefaults(t *testing.T) {
	r := OnboardRequest{Helm: HelmSpec{Release: "carto"}}.WithDefaults()
	assert.Empty(t, r.KSA, "the KSA comes from the rendered chart, not the release name")
	assert.Equal(t, "carto-common-backend", r.withLegacyKSA().KSA, "as runs before rendered-release had it")
	assert.Equal(t, contract.Duration("24h"), r.Support.ReminderInterval)
	assert.Equal(t, contract.Duration("168h"), r.Support.ApprovalTimeout)

	kept := OnboardRequest{KSA: "own", Helm: HelmSpec{Release: "carto"}, Support: SupportSpec{ReminderInterval: "2h", ApprovalTimeout: "48h"}}.WithDefaults()
	assert.Equal(t, "own", kept.KSA)
	assert.Equal(t, contract.Duration("2h"), kept.Support.ReminderInterval)
	assert.Equal(t, contract.Duration("48h"), kept.Support.ApprovalTimeout)

	assert.Equal(t, contract.Duration("30m"), RevokeRequest{}.WithDefaults().TokenExpiryWait)
	assert.Equal(t, contract.Duration("0s"), RevokeRequest{TokenExpiryWait: "0s"}.WithDefaults().TokenExpiryWait)
}

func TestWorkflowIDs(t *testing.T) {
	r := validRequest()
	assert.Equal(t, "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto", OnboardWorkflowID(r))
	r.KSA = "carto-api"
	assert.Equal(t, "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto", OnboardWorkflowID(r),
		"one grant per release, whichever KSA it runs as")
	assert.Equal(t, "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto-api", legacyOnboardWorkflowID(r))
	r.KSA = ""
	assert.Equal(t, "gkewi-onboard/my-project/europe-west1/prod-cluster/carto/carto-common-backend", legacyOnboardWorkflowID(r))
	r.Namespace = "carto-staging"
	assert.Equal(t, "gkewi-onboard/my-project/europe-west1/prod-cluster/carto-staging/carto", OnboardWorkflowID(r))
	assert.Equal(t, "gkewi-revoke/my-project/europe-west1/prod-cluster/carto/prod", RevokeWorkflowID(RevokeRequest{
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto", Release: "prod", KSA: "ksa", GSAEmail: wantGSA,
	}), "the release names the grant")
	assert.Equal(t, "gkewi-revoke/my-project/europe-west1/prod-cluster/carto/ksa", RevokeWorkflowID(RevokeRequest{
		Project: "my-project", Location: "europe-west1", Cluster: "prod-cluster", Namespace: "carto", KSA: "ksa", GSAEmail: wantGSA,
	}))
}

func TestSearchAttributeFlags(t *testing.T) {
	assert.Equal(t, []string{
		"GkewiProject=Keyword", "GkewiCluster=Keyword", "GkewiNamespace=Keyword", "GkewiKSA=Keyword",
		"GkewiGSA=Keyword", "GkewiState=Keyword", "GkewiRequester=Keyword", "GkewiExpiry=Datetime",
	}, SearchAttributeFlags())
	types := SearchAttributeTypes()
	assert.Len(t, types, 8)
	assert.Equal(t, "Datetime", types[SearchAttrExpiry].String())
	assert.Equal(t, "Keyword", types[SearchAttrGSA].String())
}

// isEmail takes only what an approver list needs: net/mail parses more forms
// than a plain address, and each of them is refused.
func TestIsEmailAcceptsOnlyPlainAddresses(t *testing.T) {
	for s, want := range map[string]bool{
		"alice@example.com":                      true,
		"A.Lice+ops@Sub.Example.COM":             true,
		"o'neil@example.co":                      true,
		"Alice <alice@example.com>":              false,
		"<alice@example.com>":                    false,
		`"alice"@example.com`:                    false,
		`"a b"@example.com`:                      false,
		"alice@localhost":                        false,
		"alice@[192.0.2.1]":                      false,
		"(ops)alice@example.com":                 false,
		" alice@example.com":                     false,
		"élise@example.com":                      false,
		"a..b@example.com":                       false,
		"alice@-example.com":                     false,
		strings.Repeat("a", 65) + "@example.com": false,
	} {
		assert.Equal(t, want, isEmail(s), s)
	}
}
