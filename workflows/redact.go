package workflows

import (
	"net/url"
	"strings"
)

// Webhook URLs often carry their credential in the path or query (a Slack
// incoming webhook's path is its secret). The status, its warnings and the
// result are read by anyone who can query the workflow, so they show a webhook
// as scheme://host only; email addresses are shown as they are.

// redactTarget cuts a webhook URL to scheme://host and leaves anything else,
// an email address, as it is.
func redactTarget(target string) string {
	if !strings.Contains(target, "://") {
		return target
	}
	u, err := url.Parse(strings.TrimSpace(target))
	if err != nil || u.Host == "" {
		return "(malformed URL)"
	}
	return u.Scheme + "://" + u.Host
}

func redactTargets(targets []string) []string {
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = redactTarget(t)
	}
	return out
}

// redactURLs cuts every http(s) URL in free text to scheme://host: the
// messages of delivery errors are not trusted to have done it.
func redactURLs(s string) string {
	var b strings.Builder
	for {
		i := indexURL(s)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		end := i + strings.IndexFunc(s[i:]+" ", isURLEnd)
		// Punctuation ending a sentence or introducing a reason stays.
		for end > i && strings.ContainsRune(".:)", rune(s[end-1])) {
			end--
		}
		b.WriteString(redactTarget(s[i:end]))
		s = s[end:]
	}
}

// indexURL is the start of the first "http://" or "https://" in s, or -1.
func indexURL(s string) int {
	lower := strings.ToLower(s)
	i, j := strings.Index(lower, "http://"), strings.Index(lower, "https://")
	switch {
	case i < 0:
		return j
	case j < 0:
		return i
	}
	return min(i, j)
}

// isURLEnd ends a URL in text: whitespace, or quoting and punctuation that
// cannot be part of the host.
func isURLEnd(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', '<', '>', ',', ';':
		return true
	}
	return false
}
