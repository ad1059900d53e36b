package starter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

type revokeOptions struct {
	conn                                         connFlags
	onboardID, file, tokenExpiryWait, reason, at string
	removeAnnotation, wait, dryRun               bool
}

func (a *App) revokeCommand() *cobra.Command {
	var o revokeOptions
	cmd := newCommand("revoke (--workflow-id ONBOARD_ID | -f revoke.yaml) [--at RFC3339] [--token-expiry-wait 30m] [--reason R] [--remove-annotation] [--wait] [--dry-run]",
		"Start the Revoke workflow for a grant, now or at a set time",
		`Start the Revoke workflow for a grant: the one a completed onboarding made (its
result holds the revoke request), a running onboarding (it is canceled
first), or the one a revoke request file names. With --at the grant's
revocation schedule is created or moved instead. After the removals, Revoke
waits for issued tokens to expire and proves the access is gone.`,
		func(ctx context.Context) error { return a.revoke(ctx, o) })
	f := cmd.Flags()
	o.conn.register(cmd)
	f.StringVar(&o.onboardID, "workflow-id", "", "revoke the grant of this Onboard workflow: a completed one (its result holds the revoke request) or a running one (it is canceled first)")
	fileFlag(cmd, &o.file, "revoke request, YAML or JSON (- for stdin), instead of --workflow-id")
	f.StringVar(&o.at, "at", "", "schedule the revocation for this time, RFC 3339, instead of starting it now (the grant's revocation schedule is created or moved)")
	f.StringVar(&o.tokenExpiryWait, "token-expiry-wait", "", "wait this long for issued tokens to expire before proving access is gone (default 30m, 0s skips, at most 12h)")
	f.StringVar(&o.reason, "reason", "", "why the grant is revoked, recorded in the status")
	f.BoolVar(&o.removeAnnotation, "remove-annotation", false, "also remove the KSA's iam.gke.io/gcp-service-account annotation")
	f.BoolVar(&o.wait, "wait", false, "follow the run until it ends and print its result")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the workflow ID and command without starting anything")
	noFileFlag(cmd, "workflow-id", "at", "token-expiry-wait", "reason")
	return cmd
}

func (a *App) revoke(ctx context.Context, o revokeOptions) error {
	if (o.onboardID == "") == (o.file == "") {
		return usagef("give exactly one of --workflow-id ONBOARD_ID and -f revoke.yaml")
	}
	when, err := a.revokeAt(o)
	if err != nil {
		return err
	}
	// Dialed once, when first needed: a request file with --dry-run needs no server.
	var c client.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	req, running, err := a.revokeRequest(ctx, o, &c)
	if err != nil {
		return err
	}
	if o.at != "" {
		if err := a.dialOnce(ctx, o.conn, &c); err != nil {
			return err
		}
		return a.scheduleRevocation(ctx, c, o.conn, req, when, o.dryRun)
	}
	return a.startRevocation(ctx, o, &c, req, running)
}

// revokeAt is the time of --at, zero without it.
func (a *App) revokeAt(o revokeOptions) (time.Time, error) {
	if o.at == "" {
		return time.Time{}, nil
	}
	if o.wait {
		return time.Time{}, usagef("--wait follows a revocation started now; with --at it starts later (follow it then with gkewi status)")
	}
	return a.revocationTime(o.at, "")
}

// dialOnce connects *c unless it is connected already; the caller closes it.
func (a *App) dialOnce(ctx context.Context, conn connFlags, c *client.Client) error {
	if *c != nil {
		return nil
	}
	cl, _, err := a.dial(ctx, conn)
	if err != nil {
		return err
	}
	*c = cl
	return nil
}

// revokeRequest is the validated request to revoke: the onboarding's or the
// file's, with the flags applied. running says the onboarding still runs.
func (a *App) revokeRequest(ctx context.Context, o revokeOptions, c *client.Client) (workflows.RevokeRequest, bool, error) {
	var (
		req     workflows.RevokeRequest
		running bool
		err     error
	)
	if o.onboardID != "" {
		if err := a.dialOnce(ctx, o.conn, c); err != nil {
			return req, false, err
		}
		req, running, err = a.onboardingRevokeRequest(ctx, *c, o)
	} else {
		req, err = a.loadRevokeRequest(o.file)
	}
	if err != nil {
		return req, false, err
	}
	if o.tokenExpiryWait != "" {
		req.TokenExpiryWait = contract.Duration(o.tokenExpiryWait)
	}
	if o.reason != "" {
		req.Reason = o.reason
	}
	if o.removeAnnotation {
		req.RemoveAnnotation = true
	}
	req = req.WithDefaults()
	source := o.file
	if source == "" {
		source = "the revoke request of " + o.onboardID
	}
	if err := req.Validate(); err != nil {
		return req, false, invalidRequest(source, "revoke", err)
	}
	return req, running, nil
}

// onboardingRevokeRequest is the revoke request of a completed or running
// onboarding; running says it still runs.
func (a *App) onboardingRevokeRequest(ctx context.Context, c client.Client, o revokeOptions) (workflows.RevokeRequest, bool, error) {
	src, err := readOnboarding(ctx, c, o.onboardID)
	if err != nil {
		return workflows.RevokeRequest{}, false, err
	}
	switch src.status {
	case activities.WorkflowStatusCompleted:
		req, err := completedRevokeRequest(ctx, c, src)
		return req, false, err
	case activities.WorkflowStatusRunning:
		if o.at != "" {
			return workflows.RevokeRequest{}, false, usagef("onboarding %s is still running: it sets the grant's revocation schedule itself when it completes; schedule the revocation after that, or revoke now without --at", o.onboardID)
		}
		req, err := a.runningRevokeRequest(ctx, c, o.conn, src)
		return req, true, err
	}
	return workflows.RevokeRequest{}, false, fmt.Errorf("onboarding %s is %s: only a completed or running onboarding names its grant; for any other, write a revoke request and use -f",
		o.onboardID, src.status)
}

// startRevocation prints the workflow ID and the equivalent command, and,
// unless --dry-run, starts Revoke and, with --wait, follows it to its result.
func (a *App) startRevocation(ctx context.Context, o revokeOptions, c *client.Client, req workflows.RevokeRequest, running bool) error {
	id := workflows.RevokeWorkflowID(req)
	input, err := compactJSON(req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Workflow ID: %s\n", id)
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", temporalStartCommand(o.conn, workflows.RevokeWorkflowName, id, input))
	if o.dryRun {
		return nil
	}
	if err := a.dialOnce(ctx, o.conn, c); err != nil {
		return err
	}
	run, err := startOnce(ctx, *c, o.conn, workflows.RevokeWorkflowName, id, "a revocation", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s; token expiry wait %s.\n", workflows.RevokeWorkflowName, run.GetRunID(), req.TokenExpiryWait)
	if running {
		fmt.Fprintf(a.Stdout, "It cancels the running onboarding %s first and waits for its clean-up.\n", o.onboardID)
	}
	fmt.Fprintf(a.Stdout, "Follow with: gkewi status%s --workflow-id %s\n", o.conn.cliFlags(), text.ShellQuote(id))
	if !o.wait {
		return nil
	}
	var res workflows.RevokeResult
	if err := a.follow(ctx, *c, run, &res); err != nil {
		return fmt.Errorf("revocation %s failed: %w", id, err)
	}
	fmt.Fprintln(a.Stdout, revokeOutcome(res))
	return a.printJSON(res)
}

// revokeOutcome says in a line how a revocation ended.
func revokeOutcome(res workflows.RevokeResult) string {
	switch res.State {
	case workflows.StateOnboardingCanceled:
		return fmt.Sprintf("Nothing was granted: the onboarding (run %s) was canceled before the approval and deleted the service account it had created.", res.CanceledOnboarding)
	case workflows.StateRevoked:
		line := "Revoked"
		if !res.RefusedAt.IsZero() {
			line += ": fresh tokens refused since " + formatTime(res.RefusedAt)
		}
		if !res.AccessEndedAt.IsZero() {
			line += "; access ended " + formatTime(res.AccessEndedAt)
		}
		return line + "."
	}
	return "Ended " + string(res.State) + "."
}

// onboardingRun is the latest run of an Onboard workflow ID.
type onboardingRun struct {
	workflowID, runID string
	// status is the execution status, as activities.WorkflowStatus* names it.
	status string
}

// readOnboarding describes the latest run of an Onboard workflow.
func readOnboarding(ctx context.Context, c client.Client, onboardID string) (onboardingRun, error) {
	desc, err := c.DescribeWorkflowExecution(ctx, onboardID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return onboardingRun{}, usagef("no workflow %s in this namespace", onboardID)
	}
	if err != nil {
		return onboardingRun{}, fmt.Errorf("describe %s: %w", onboardID, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	if typ := info.GetType().GetName(); typ != workflows.OnboardWorkflowName {
		return onboardingRun{}, usagef("%s is a %s workflow, not %s", onboardID, typ, workflows.OnboardWorkflowName)
	}
	return onboardingRun{workflowID: onboardID, runID: info.GetExecution().GetRunId(), status: executionStatus(info.GetStatus())}, nil
}

// completedRevokeRequest reads the ready revoke request from a completed
// onboarding's result.
func completedRevokeRequest(ctx context.Context, c client.Client, run onboardingRun) (workflows.RevokeRequest, error) {
	var res workflows.OnboardResult
	if err := c.GetWorkflow(ctx, run.workflowID, run.runID).Get(ctx, &res); err != nil {
		return workflows.RevokeRequest{}, fmt.Errorf("read the result of %s: %w", run.workflowID, err)
	}
	return res.Revoke, nil
}

// runningRevokeRequest builds the revoke request of a running onboarding from
// its status (the grant and the GSA it uses), completed from its input where
// the status does not tell yet (the GSA email before the service-account step)
// or at all (the BigQuery connection, whose roles go too).
func (a *App) runningRevokeRequest(ctx context.Context, c client.Client, conn connFlags, run onboardingRun) (workflows.RevokeRequest, error) {
	st, err := queryStatus(ctx, c, run.workflowID, run.runID)
	if err != nil {
		return workflows.RevokeRequest{}, fmt.Errorf("onboarding %s is running but its status cannot be read (is a worker running? %s): %w",
			run.workflowID, temporalQueryCommand(conn, run.workflowID), err)
	}
	req := workflows.RevokeRequest{
		Project: st.Project, Location: st.Location, Cluster: st.Cluster,
		Namespace: st.Namespace, Release: st.Release, KSA: st.KSA, GSAEmail: st.GSAEmail,
	}
	in, err := onboardingInput(ctx, c, run)
	if err != nil {
		fmt.Fprintf(a.Stderr, "gkewi revoke: the request of %s cannot be read (%v): its BigQuery roles, if any, stay\n", run.workflowID, err)
	} else {
		in = in.WithDefaults()
		fill := func(dst *string, v string) {
			if *dst == "" {
				*dst = v
			}
		}
		fill(&req.Project, in.Project)
		fill(&req.Location, in.Location)
		fill(&req.Cluster, in.Cluster)
		fill(&req.Namespace, in.Namespace)
		fill(&req.Release, in.Helm.Release)
		fill(&req.KSA, in.KSA)
		fill(&req.GSAEmail, in.GSA.Email)
		if in.GSA.AccountID != "" {
			fill(&req.GSAEmail, in.GSA.AccountID+"@"+in.Project+".iam.gserviceaccount.com")
		}
		req.BigQuery = in.BigQuery
	}
	fmt.Fprintf(a.Stdout, "Onboarding %s is running (%s).\n", run.workflowID, st.State)
	return req, nil
}

// onboardingInput is the request a run was started with, from its history.
func onboardingInput(ctx context.Context, c client.Client, run onboardingRun) (workflows.OnboardRequest, error) {
	it := c.GetWorkflowHistory(ctx, run.workflowID, run.runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return workflows.OnboardRequest{}, errors.New("empty history")
	}
	ev, err := it.Next()
	if err != nil {
		return workflows.OnboardRequest{}, err
	}
	payloads := ev.GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads()
	if len(payloads) == 0 {
		return workflows.OnboardRequest{}, errors.New("the run was started without input")
	}
	var req workflows.OnboardRequest
	if err := converter.GetDefaultDataConverter().FromPayload(payloads[0], &req); err != nil {
		return workflows.OnboardRequest{}, err
	}
	return req, nil
}
