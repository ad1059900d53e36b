package starter

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

// revocationCatchupWindow is the catch-up window SetRevocationTime gives a
// revocation schedule (365 days), as the temporal CLI takes it.
const revocationCatchupWindow = "8760h"

type extendOptions struct {
	conn                                connFlags
	onboardID, at, ttl, tokenExpiryWait string
	endpoint, tokenFile                 string
	dryRun                              bool
}

func (a *App) extendCommand() *cobra.Command {
	var o extendOptions
	cmd := newCommand("extend --workflow-id ONBOARD_ID (--at RFC3339 | --ttl DURATION) [--endpoint URL] [--token-expiry-wait 30m] [--dry-run]",
		"Extend a completed time-bound grant (a new approval), or end it sooner",
		`Change when a completed grant ends.

An earlier end (or one for a grant that has none) narrows the grant: the
grant's revocation schedule is created or moved at once, and the equivalent
temporal schedule command is printed.

A later end is an extension, which support approves like the grant itself:
gkewi starts the grant's Onboard again with the new expiry.at, under the
worker's grant policy (its maxDuration counts from now). The revocation stays
where it is until that run completes; a rejection leaves it there. With
--endpoint the run is started through the worker's approval endpoint, with your
ID token as the proven requester (as gkewi onboard --endpoint).`,
		func(ctx context.Context) error { return a.extend(ctx, o) })
	f := cmd.Flags()
	o.conn.register(cmd)
	f.StringVar(&o.onboardID, "workflow-id", "", "the completed Onboard workflow of the grant (required)")
	f.StringVar(&o.at, "at", "", "revoke the grant at this time, RFC 3339 (2026-12-31T18:00:00Z)")
	f.StringVar(&o.ttl, "ttl", "", "revoke the grant this long from now, e.g. 720h")
	f.StringVar(&o.tokenExpiryWait, "token-expiry-wait", "", "token expiry wait of the scheduled revocation (default: the grant's, 30m)")
	f.StringVar(&o.endpoint, "endpoint", "", "an extension: start it through the worker's approval endpoint, as its proven requester")
	f.StringVar(&o.tokenFile, "id-token-file", "", "with --endpoint: read your ID token from this file (- for stdin)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the schedule and the equivalent command without changing it")
	noFileFlag(cmd, "workflow-id", "at", "ttl", "token-expiry-wait")
	return cmd
}

// extend moves the revocation of a completed time-bound grant, or schedules one
// for a grant that has none.
func (a *App) extend(ctx context.Context, o extendOptions) error {
	if o.onboardID == "" {
		return usagef("--workflow-id is required")
	}
	when, err := a.revocationTime(o.at, o.ttl)
	if err != nil {
		return err
	}
	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	src, err := readOnboarding(ctx, c, o.onboardID)
	if err != nil {
		return err
	}
	if src.status != activities.WorkflowStatusCompleted {
		return fmt.Errorf("onboarding %s is %s: only a completed grant can be extended (a running onboarding schedules its revocation when it completes)",
			o.onboardID, src.status)
	}
	req, err := completedRevokeRequest(ctx, c, src)
	if err != nil {
		return err
	}
	if o.tokenExpiryWait != "" {
		req.TokenExpiryWait = contract.Duration(o.tokenExpiryWait)
	}
	req = req.WithDefaults()
	if err := req.Validate(); err != nil {
		return invalidRequest("the revoke request of "+o.onboardID, "revoke", err)
	}
	due, err := activities.NewSchedules(c).DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: workflows.NewRevocationSchedule(req, when).ScheduleID})
	if err != nil {
		return fmt.Errorf("describe the revocation schedule of %s: %w", o.onboardID, err)
	}
	if due.Exists && (due.NextActionAt.IsZero() || when.After(due.NextActionAt)) {
		return a.extendWithApproval(ctx, c, o, src, due.NextActionAt, when)
	}
	return a.scheduleRevocation(ctx, c, o.conn, req, when, o.dryRun)
}

// extendWithApproval starts the grant's Onboard again with expiry.at when: a
// longer grant is a new approval under the grant policy, never a schedule
// moved by whoever asks.
func (a *App) extendWithApproval(ctx context.Context, c client.Client, o extendOptions, src onboardingRun, due, when time.Time) error {
	req, err := onboardingInput(ctx, c, src)
	if err != nil {
		return fmt.Errorf("read the request of %s: %w", o.onboardID, err)
	}
	req.Requester = nil // a new proof, or none
	req.Expiry = &workflows.ExpirySpec{At: when.UTC().Format(time.RFC3339)}
	if err := req.Validate(); err != nil {
		return invalidRequest("the extension of "+o.onboardID, "onboard", err)
	}
	fmt.Fprintf(a.Stdout, "Revoke is due at:  %s\n", formatTime(due))
	fmt.Fprintf(a.Stdout, "Asked to end at:   %s: later, so an extension that support approves under the grant policy.\n"+
		"It runs as a new Onboard of the grant with expiry.at %s; the revocation stays due at %s until that run completes.\n",
		formatTime(ceilSecond(when)), req.Expiry.At, formatTime(due))
	onboard := onboardOptions{conn: o.conn, file: "the extension of " + o.onboardID, endpoint: o.endpoint, tokenFile: o.tokenFile, dryRun: o.dryRun}
	if o.endpoint != "" {
		return a.onboardWithProof(ctx, onboard, req)
	}
	return a.startOnboard(ctx, c, onboard, req)
}

// revocationTime is --at, or now plus --ttl; exactly one must be given, and the
// time must be in the future.
func (a *App) revocationTime(at, ttl string) (time.Time, error) {
	if (at == "") == (ttl == "") {
		return time.Time{}, usagef("give exactly one of --at RFC3339 and --ttl DURATION")
	}
	now := a.Now()
	var when time.Time
	if at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return time.Time{}, usagef("--at %q: want an RFC 3339 time such as 2026-12-31T18:00:00Z", at)
		}
		when = t
	} else {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 {
			return time.Time{}, usagef("--ttl %q: want a positive duration such as 720h", ttl)
		}
		when = now.Add(d)
	}
	if !when.After(now) {
		return time.Time{}, usagef("%s is not in the future (now %s): to revoke now, run gkewi revoke without --at",
			when.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return when, nil
}

// scheduleRevocation creates or moves the grant's revocation schedule so that
// it starts Revoke with req at when, printing the equivalent temporal command.
func (a *App) scheduleRevocation(ctx context.Context, c client.Client, conn connFlags, req workflows.RevokeRequest, when time.Time, dryRun bool) error {
	in := workflows.NewRevocationSchedule(req, when)
	schedules := activities.NewSchedules(c)
	existing, err := schedules.DescribeRevocationSchedule(ctx, activities.ScheduleRef{ScheduleID: in.ScheduleID})
	if err != nil {
		return fmt.Errorf("describe schedule %s: %w", in.ScheduleID, err)
	}
	verb := "create"
	if existing.Exists {
		verb = "update"
	}
	command, err := temporalScheduleCommand(conn, verb, in)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Schedule ID: %s\n", in.ScheduleID)
	if existing.Exists && !existing.NextActionAt.IsZero() {
		fmt.Fprintf(a.Stdout, "Revoke was due at: %s\n", formatTime(existing.NextActionAt))
	}
	fmt.Fprintf(a.Stdout, "Revoke starts at:  %s\n", formatTime(ceilSecond(when)))
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", command)
	if dryRun {
		return nil
	}
	res, err := schedules.SetRevocationTime(ctx, in)
	if err != nil {
		return fmt.Errorf("set schedule %s: %w", in.ScheduleID, err)
	}
	done := "Moved"
	if res.Created {
		done = "Created"
	}
	fmt.Fprintf(a.Stdout, "%s schedule %s: Revoke (workflow ID %s-<time>) starts at %s.\n", done, res.ScheduleID, in.Action.WorkflowID, formatTime(res.At))
	fmt.Fprintf(a.Stdout, "Check with: temporal schedule describe%s --schedule-id %s\n", conn.cliFlags(), text.ShellQuote(res.ScheduleID))
	return nil
}

// temporalScheduleCommand is `temporal schedule create|update` for a
// revocation schedule. An update replaces the whole schedule, so it repeats the
// action and its input.
func temporalScheduleCommand(conn connFlags, verb string, in activities.RevocationScheduleInput) (string, error) {
	input, err := compactJSON(in.Action.Input)
	if err != nil {
		return "", err
	}
	at := ceilSecond(in.At)
	return "temporal schedule " + verb + conn.cliFlags() +
		" --schedule-id " + text.ShellQuote(in.ScheduleID) +
		" --calendar " + text.ShellQuote(calendarJSON(at)) +
		" --remaining-actions 1 --catchup-window " + revocationCatchupWindow +
		" --workflow-id " + text.ShellQuote(in.Action.WorkflowID) +
		" --type " + in.Action.WorkflowType +
		" --task-queue " + in.Action.TaskQueue +
		" --input " + text.ShellQuote(input), nil
}

// calendarJSON is the calendar spec matching the single second at (UTC), in the
// field order of the temporal CLI's examples.
func calendarJSON(at time.Time) string {
	return fmt.Sprintf(`{"year":"%d","month":"%d","dayOfMonth":"%d","hour":"%d","minute":"%d","second":"%d"}`,
		at.Year(), int(at.Month()), at.Day(), at.Hour(), at.Minute(), at.Second())
}

// ceilSecond rounds t up to the whole second, in UTC, as the schedule does.
func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Second); r.Before(t) {
		return r.Add(time.Second)
	}
	return t
}
