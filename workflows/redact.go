package workflows

import "github.com/gkewi/gkewi/internal/text"

// The status, its warnings and the result are read by anyone who can query the
// workflow, so they show a webhook as scheme://host only (its path or query is
// often its credential); email addresses are shown as they are.

func redactTargets(targets []string) []string { return text.RedactTargets(targets) }

func redactURLs(s string) string { return text.RedactURLs(s) }
