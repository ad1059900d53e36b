package workflows

import (
	"net/mail"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Checks for the names in a request. Kubernetes' own validation decides the
// DNS-style names; the Google names it has no rule for are plain functions, so
// the rule each one enforces reads directly.

// Rules, as shown to operators after the offending field and value.
const (
	ruleRequired     = "required"
	ruleGoogleName   = "must be 6-30 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen"
	ruleClusterName  = "must be 1-40 characters, start with a lowercase letter, and contain only lowercase letters, digits and hyphens, not ending with a hyphen"
	ruleLocation     = "must be a region such as europe-west1 or a zone such as europe-west1-b"
	ruleDNSLabel     = "must be a DNS-1123 label: at most 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit"
	ruleDNSSubdomain = "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, hyphens and dots, each dot-separated part starting and ending with a letter or digit"
	ruleRelease      = "must be a DNS-1123 label of at most 53 characters: lowercase letters, digits and hyphens, starting and ending with a letter or digit"
	ruleSAEmail      = "must be a service account email ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com"
	ruleEmail        = "must be an email address"
	ruleNotifyTarget = "must be an email address or an http:// or https:// URL"
	ruleHTTPURL      = "must be an http:// or https:// URL"
	ruleDataset      = "must be 1-1024 letters, digits and underscores"
	ruleDuration     = "must be a duration such as 90m or 24h"
	rulePositive     = "must be positive"
	ruleRFC3339      = "must be an RFC 3339 time such as 2026-12-31T18:00:00Z"
	ruleDuplicate    = "duplicate"
)

func isLower(c byte) bool      { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isLowerAlnum(c byte) bool { return isLower(c) || isDigit(c) }

// isLowerHyphenated: lowercase letters, digits and hyphens, starting with a
// letter and ending with a letter or digit, minLen..maxLen long (maxLen at most 63):
// a DNS-1035 label.
func isLowerHyphenated(s string, minLen, maxLen int) bool {
	return len(s) >= minLen && len(s) <= maxLen && len(validation.IsDNS1035Label(s)) == 0
}

// isProjectID and isAccountID share Google's rule: 6-30 of [a-z][-a-z0-9]*[a-z0-9].
func isProjectID(s string) bool { return isLowerHyphenated(s, 6, 30) }
func isAccountID(s string) bool { return isLowerHyphenated(s, 6, 30) }

// isGKEName is a GKE cluster or node pool name.
func isGKEName(s string) bool { return isLowerHyphenated(s, 1, 40) }

// isDNSLabel is a Kubernetes DNS-1123 label of at most maxLen (at most 63) characters.
func isDNSLabel(s string, maxLen int) bool {
	return len(s) <= maxLen && len(validation.IsDNS1123Label(s)) == 0
}

// isDNSSubdomain is a Kubernetes DNS-1123 subdomain, the rule for object names
// such as service accounts. Like Kubernetes it bounds only the whole name, not
// each dot-separated part: "<53-character release>-common-backend" is a valid
// KSA name.
func isDNSSubdomain(s string) bool { return len(validation.IsDNS1123Subdomain(s)) == 0 }

// isLocation is a Google Cloud region ("europe-west1") or zone ("europe-west1-b").
func isLocation(s string) bool {
	parts := strings.Split(s, "-")
	if len(parts) == 3 && len(parts[2]) == 1 && isLower(parts[2][0]) {
		parts = parts[:2]
	}
	if len(parts) != 2 || !allLower(parts[0]) {
		return false
	}
	// The second part is letters then a number: "west1", "northeast2", "central1".
	p := parts[1]
	i := 0
	for i < len(p) && isLower(p[i]) {
		i++
	}
	return i > 0 && i < len(p) && allDigits(p[i:])
}

func allLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLower(s[i]) {
			return false
		}
	}
	return s != ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

// isEmail accepts a plain address local@domain: no display name, no quoting,
// an ASCII local part, and a domain of at least two DNS labels.
func isEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || len(s) > 254 {
		return false
	}
	local, domain, _ := strings.Cut(s, "@")
	if len(local) > 64 || strings.ContainsFunc(local, func(r rune) bool { return r > '~' }) {
		return false
	}
	labels := strings.Split(strings.ToLower(domain), ".")
	for _, l := range labels {
		if !isDNSLabel(l, 63) {
			return false
		}
	}
	return len(labels) >= 2
}

// saEmailDomain ends the email of every user-managed service account.
const saEmailDomain = ".iam.gserviceaccount.com"

// isServiceAccountEmail is ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com.
func isServiceAccountEmail(s string) bool {
	account, rest, ok := strings.Cut(s, "@")
	if !ok {
		return false
	}
	project, ok := strings.CutSuffix(rest, saEmailDomain)
	return ok && isAccountID(account) && isProjectID(project)
}

// isDatasetID is a BigQuery dataset id.
func isDatasetID(s string) bool {
	if len(s) == 0 || len(s) > 1024 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && (c < 'A' || c > 'Z') && c != '_' {
			return false
		}
	}
	return true
}
