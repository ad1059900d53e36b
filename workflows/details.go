package workflows

import (
	"fmt"
	"strings"
	"time"
)

// currentDetails is the short markdown summary shown as "current details" in the
// Temporal UI; the status query has the full picture.
//
//nolint:staticcheck // QF1012: Sprintf rather than Fprintf, as workflowcheck cannot tell the writer is memory.
func currentDetails(s Status) string {
	var b strings.Builder
	b.WriteString(fmt.Sprintf("**%s**: %s", s.Workflow, s.State))
	if s.KSA != "" {
		b.WriteString(fmt.Sprintf("\n\nKSA `%s/%s` on cluster `%s/%s/%s`", s.Namespace, s.KSA, s.Project, s.Location, s.Cluster))
	}
	if s.GSAEmail != "" {
		b.WriteString(fmt.Sprintf("\n\nGSA `%s`", s.GSAEmail))
	}
	if s.HelmRevision > 0 {
		b.WriteString(fmt.Sprintf(", Helm revision %d", s.HelmRevision))
	}
	done := 0
	for _, st := range s.Steps {
		switch st.State {
		case StepDone, StepSkipped:
			done++
		case StepRunning:
			b.WriteString(fmt.Sprintf("\n\nStep **%s**, attempt %d", st.Name, st.Attempts))
			if st.LastError != "" {
				b.WriteString(fmt.Sprintf("; last error: %s", st.LastError))
			}
		}
	}
	if len(s.Steps) > 0 {
		b.WriteString(fmt.Sprintf("\n\n%d of %d steps done", done, len(s.Steps)))
	}
	if a := s.Approval; a != nil {
		switch {
		case a.Decision == DecisionPending && !a.Deadline.IsZero():
			b.WriteString(fmt.Sprintf("\n\nWaiting for support approval until %s (%d reminder(s) sent)", stamp(a.Deadline), a.RemindersSent))
		case a.Decision != DecisionPending && a.Approver != "":
			b.WriteString(fmt.Sprintf("\n\n%s by %s", a.Decision, a.Approver))
		}
		if n := len(a.Ignored); n > 0 {
			b.WriteString(fmt.Sprintf("; %d decision(s) ignored", n))
		}
	}
	if s.State == StateWaitingTokenExpiry {
		b.WriteString(fmt.Sprintf("\n\nWaiting for issued tokens to expire until %s", stamp(s.WaitUntil)))
	}
	if !s.ExpiresAt.IsZero() {
		b.WriteString(fmt.Sprintf("\n\nExpires %s", stamp(s.ExpiresAt)))
		if s.RevocationSchedule != "" {
			b.WriteString(fmt.Sprintf(", revoked then by schedule `%s`", s.RevocationSchedule))
		}
	}
	if !s.AccessEndedAt.IsZero() {
		b.WriteString(fmt.Sprintf("\n\nAccess ended %s", stamp(s.AccessEndedAt)))
		if !s.RefusedAt.IsZero() {
			b.WriteString(fmt.Sprintf(" (fresh tokens refused since %s)", stamp(s.RefusedAt)))
		}
	}
	if s.Error != "" {
		b.WriteString(fmt.Sprintf("\n\n**Error**: %s", s.Error))
	}
	return b.String()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
