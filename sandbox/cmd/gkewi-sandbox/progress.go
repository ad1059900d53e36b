package main

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gkewi/gkewi/workflows"
)

// progressView shows a run's steps as the status query reports them: on a
// terminal, a compact list redrawn in place with ticks, elapsed times and the
// current wait; otherwise one plain line per change.
type progressView struct {
	out    io.Writer
	tty    bool
	width  int
	height int
	// drawn is the number of lines of the last redraw.
	drawn int
	frame int
	// seen is the last state printed per step, in plain mode.
	seen      map[string]workflows.StepState
	lastState workflows.State
	// lastWaitAt is when the current wait was last printed, in plain mode.
	lastWaitAt time.Time
}

func newProgressView(out io.Writer, tty bool, width, height int) *progressView {
	if width <= 20 {
		width = 100
	}
	if height <= 5 {
		height = 40
	}
	return &progressView{out: out, tty: tty, width: width, height: height, seen: map[string]workflows.StepState{}}
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func stepMark(st workflows.StepState, frame int) string {
	switch st {
	case workflows.StepDone:
		return "✔"
	case workflows.StepFailed:
		return "✘"
	case workflows.StepSkipped:
		return "–"
	case workflows.StepRunning:
		return spinner[frame%len(spinner)]
	default:
		return "·"
	}
}

// stepElapsed is how long a step ran, or has been running.
func stepElapsed(st workflows.Step, now time.Time) time.Duration {
	if st.StartedAt.IsZero() {
		return 0
	}
	end := st.EndedAt
	if end.IsZero() {
		end = now
	}
	return end.Sub(st.StartedAt)
}

func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// currentWait says what the run waits for, or "".
func currentWait(s workflows.Status, now time.Time) string {
	switch s.State {
	case workflows.StateAwaitingApproval:
		w := "waiting for support's approval"
		if a := s.Approval; a != nil {
			if !a.Deadline.IsZero() {
				w += fmt.Sprintf(" (times out in %s)", a.Deadline.Sub(now).Round(time.Minute))
			}
			if n := len(a.Ignored); n > 0 {
				w += fmt.Sprintf("; %d decision(s) ignored", n)
			}
		}
		return w
	case workflows.StateWaitingTokenExpiry:
		return fmt.Sprintf("waiting for tokens issued before the revocation to expire: %s left", s.WaitUntil.Sub(now).Round(time.Second))
	}
	for _, st := range s.Steps {
		if st.State != workflows.StepRunning {
			continue
		}
		w := fmt.Sprintf("running %s", st.Name)
		if st.Attempts > 1 {
			w += fmt.Sprintf(", attempt %d", st.Attempts)
		}
		if st.LastError != "" {
			w += ", last: " + st.LastError
		}
		return w
	}
	return ""
}

// show renders the status.
func (p *progressView) show(title string, s workflows.Status, started time.Time) {
	now := time.Now()
	if p.tty {
		p.redraw(title, s, started, now)
		return
	}
	for _, st := range s.Steps {
		if p.seen[st.Name] == st.State || st.State == workflows.StepPending {
			continue
		}
		p.seen[st.Name] = st.State
		line := fmt.Sprintf("  %s %s", stepMark(st.State, 0), st.Name)
		if st.State == workflows.StepRunning {
			line = "  → " + st.Name
		} else if d := fmtDuration(stepElapsed(st, now)); d != "" {
			line += " (" + d + ")"
		}
		if st.Detail != "" && st.State != workflows.StepRunning {
			line += ": " + st.Detail
		}
		fmt.Fprintln(p.out, p.clip(line))
	}
	if s.State != p.lastState {
		fmt.Fprintf(p.out, "  [%s] %s\n", fmtDuration(now.Sub(started)), s.State)
		p.lastState = s.State
	}
	waiting := s.State == workflows.StateAwaitingApproval || s.State == workflows.StateWaitingTokenExpiry
	if !waiting {
		p.lastWaitAt = time.Time{}
	} else if now.Sub(p.lastWaitAt) >= 10*time.Second {
		// Long waits are printed again every 10s, not at every poll.
		fmt.Fprintln(p.out, p.clip("  ⏳ "+currentWait(s, now)))
		p.lastWaitAt = now
	}
}

func (p *progressView) redraw(title string, s workflows.Status, started, now time.Time) {
	p.frame++
	var lines []string
	lines = append(lines, fmt.Sprintf("%s  %s  %s", title, s.State, fmtDuration(now.Sub(started))))
	nameWidth := 0
	for _, st := range s.Steps {
		nameWidth = max(nameWidth, utf8.RuneCountInString(st.Name))
	}
	for _, st := range s.Steps {
		line := fmt.Sprintf("  %s %-*s %7s", stepMark(st.State, p.frame), nameWidth, st.Name, fmtDuration(stepElapsed(st, now)))
		if st.Detail != "" && st.State != workflows.StepPending {
			line += "  " + st.Detail
		}
		lines = append(lines, p.clip(line))
	}
	if w := currentWait(s, now); w != "" {
		lines = append(lines, p.clip("  ⏳ "+w))
	} else {
		lines = append(lines, "")
	}
	// Lines scrolled off the top cannot be redrawn: on a short terminal keep the
	// title and the latest steps.
	if room := p.height - 2; len(lines) > room {
		lines = append(lines[:1], lines[len(lines)-room+1:]...)
	}
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K")
		b.WriteString(l)
		b.WriteString("\n")
	}
	b.WriteString("\x1b[J")
	p.drawn = len(lines)
	fmt.Fprint(p.out, b.String())
}

// finish ends the live view so the next output starts below it.
func (p *progressView) finish() { p.drawn = 0 }

func (p *progressView) clip(s string) string {
	if utf8.RuneCountInString(s) <= p.width-1 {
		return s
	}
	r := []rune(s)
	return string(r[:p.width-2]) + "…"
}
