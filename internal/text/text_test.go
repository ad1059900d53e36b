package text

import (
	"os/exec"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	for _, tc := range []struct{ in, quote, word string }{
		{"", `''`, `''`},
		{"plain", `'plain'`, `plain`},
		{"gkewi-onboard/p/l/c/ns/rel", `'gkewi-onboard/p/l/c/ns/rel'`, `gkewi-onboard/p/l/c/ns/rel`},
		{"a@b.example,c:1=2+3%", `'a@b.example,c:1=2+3%'`, `a@b.example,c:1=2+3%`},
		{"it's", `'it'\''s'`, `'it'\''s'`},
		{"two words", `'two words'`, `'two words'`},
		{`$HOME`, `'$HOME'`, `'$HOME'`},
		{"~/x", `'~/x'`, `'~/x'`},
		{"=ls", `'=ls'`, `'=ls'`},
		{"a*b", `'a*b'`, `'a*b'`},
		{"serviceAccount:a@b.iam.gserviceaccount.com", `'serviceAccount:a@b.iam.gserviceaccount.com'`, `serviceAccount:a@b.iam.gserviceaccount.com`},
		{"P.svc.id.goog[ns/ksa]", `'P.svc.id.goog[ns/ksa]'`, `'P.svc.id.goog[ns/ksa]'`},
		{`{"approved":true}`, `'{"approved":true}'`, `'{"approved":true}'`},
	} {
		assert.Equal(t, tc.quote, ShellQuote(tc.in), "ShellQuote(%q)", tc.in)
		assert.Equal(t, tc.word, ShellWord(tc.in), "ShellWord(%q)", tc.in)
	}
}

// TestShellQuoteRoundTrip has a real shell read each word back.
func TestShellQuoteRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, in := range []string{"", "it's", "a b\tc\nd", `$x "y" \z`, "'''", "=ls", "*", "%1"} {
		for _, q := range []func(string) string{ShellQuote, ShellWord} {
			out, err := exec.Command(sh, "-c", "printf %s "+q(in)).Output()
			require.NoError(t, err, in)
			assert.Equal(t, in, string(out))
		}
	}
}

func TestIsHTTPURL(t *testing.T) {
	for in, want := range map[string]bool{
		"https://ui.example.com":      true,
		"http://localhost:8233/x?y=1": true,
		"HTTPS://Host.example":        true,
		"ftp://files.example":         false,
		"https://":                    false,
		"https:/path":                 false,
		"ui.example.com":              false,
		"/relative":                   false,
		"":                            false,
		"http://[::1":                 false,
	} {
		assert.Equal(t, want, IsHTTPURL(in), in)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T0001/B0002/s3cr3t": "https://hooks.slack.com",
		"http://user:pw@host:8080/p?q=1#f":                    "http://host:8080",
		" https://relay.example.com/hook?token=abc ":          "https://relay.example.com",
		"ftp://files.example/x":                               "ftp://files.example",
		"https://":                                            "(malformed URL)",
		"not a url":                                           "(malformed URL)",
		"http://[::1":                                         "(malformed URL)",
	} {
		assert.Equal(t, want, RedactURL(in), in)
	}
}

func TestRedactTargets(t *testing.T) {
	assert.Equal(t,
		[]string{"support@example.com", "https://hooks.slack.com", "(malformed URL)"},
		RedactTargets([]string{"support@example.com", "https://hooks.slack.com/services/T/B/x", "https://"}))
	assert.Empty(t, RedactTargets(nil))
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"alice@example.com":                  "alice@example.com",
		"https://hooks.slack.com/services/x": "https://hooks.slack.com",
		"to https://relay.example.com/hook?token=abc, and more": "to https://relay.example.com, and more",
		"HTTPS://Hooks.Example.com/x/y: 500":                    "https://Hooks.Example.com: 500",
		"(see https://h.example/a/b.)":                          "(see https://h.example.)",
		"a http:// b":                                           "a (malformed URL) b",
		`"https://h.example/a" and 'http://i.example/b'`:        `"https://h.example" and 'http://i.example'`,
	} {
		assert.Equal(t, want, RedactURLs(in), in)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven …"},
		{"héllo wörld", 8, "héll…"}, // "é" is 2 bytes; the cut stays on a boundary
		{"日本語のテキスト", 10, "日本…"},     // 3-byte characters
		{"abcdef", 2, "ab"},         // no room for the ellipsis
		{"日本", 2, ""},
		{"", 0, ""},
	} {
		got := Truncate(tc.in, tc.n)
		assert.Equal(t, tc.want, got, "Truncate(%q, %d)", tc.in, tc.n)
		assert.LessOrEqual(t, len(got), tc.n)
		assert.True(t, utf8.ValidString(got))
	}
}
