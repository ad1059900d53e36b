// Package text holds the string helpers the CLI, the worker, the activities and
// the workflows share: shell quoting, URL checks and redaction, truncation. They
// are pure functions of their input, so workflow code may call them.
package text

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// ShellQuote quotes s for a POSIX shell, always: the result is one word that
// stands for s in sh, bash and zsh.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellWord is s as one shell word, quoted only when it needs it, so common
// arguments (paths, flags, emails, host:port) stay readable. A word starting
// with '=' is quoted: zsh would expand it to a command's path.
func ShellWord(s string) string {
	if s != "" && s[0] != '=' && strings.IndexFunc(s, needsQuote) < 0 {
		return s
	}
	return ShellQuote(s)
}

// needsQuote is a rune a shell gives a meaning to in an unquoted word.
func needsQuote(r rune) bool {
	safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=,+@%", r)
	return !safe
}

// IsHTTPURL reports whether s is an absolute http:// or https:// URL with a host.
func IsHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Webhook URLs often carry their credential in the path or query (a Slack
// incoming webhook's path is its secret), so what is logged or shown keeps a
// URL's scheme and host only.

// RedactURL cuts a URL to scheme://host, dropping user info, path, query and
// fragment; one that does not parse with a host is "(malformed URL)".
func RedactURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return "(malformed URL)"
	}
	return u.Scheme + "://" + u.Host
}

// RedactTarget is RedactURL for a notification target that is a URL, and
// anything else, an email address, as it is.
func RedactTarget(target string) string {
	if !strings.Contains(target, "://") {
		return target
	}
	return RedactURL(target)
}

// RedactTargets is RedactTarget of each target.
func RedactTargets(targets []string) []string {
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = RedactTarget(t)
	}
	return out
}

// RedactURLs cuts every http(s) URL in free text to scheme://host: messages of
// delivery errors are not trusted to have done it.
func RedactURLs(s string) string {
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
		b.WriteString(RedactTarget(s[i:end]))
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

// Truncate cuts s to at most n bytes of valid UTF-8, ending in "…" when it cut,
// so it fits limits counted in bytes (IAM's display name) and in characters
// (Slack's header) alike. A cut never splits a character.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	if n < len(ellipsis) {
		return cutRunes(s, n)
	}
	return cutRunes(s, n-len(ellipsis)) + ellipsis
}

// cutRunes is the longest prefix of s of at most n bytes that ends on a
// character boundary.
func cutRunes(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
