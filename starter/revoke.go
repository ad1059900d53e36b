package starter

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/workflows"
)

func (a *App) revoke(ctx context.Context, args []string) error {
	fs := a.flagSet("revoke", "(--workflow-id ONBOARD_ID | -f revoke.yaml) [--at RFC3339] [--token-expiry-wait 30m] [--reason R] [--remove-annotation] [--wait] [--dry-run]")
	var (
		conn                              connFlags
		onboardID, file, wait, reason, at string
		removeAnnotation                  bool
		follow, dryRun                    bool
	)
	conn.register(fs)
	fs.StringVar(&onboardID, "workflow-id", "", "revoke the grant of this Onboard workflow: a completed one (its result holds the revoke request) or a running one (it is canceled first)")
	fs.StringVar(&file, "f", "", "revoke request, YAML or JSON (- for stdin), instead of --workflow-id")
	fs.StringVar(&file, "file", "", "same as -f")
	fs.StringVar(&at, "at", "", "schedule the revocation for this time, RFC 3339, instead of starting it now (the grant's revocation schedule is created or moved)")
	fs.StringVar(&wait, "token-expiry-wait", "", "wait this long for issued tokens to expire before proving access is gone (default 30m, 0s skips, at most 12h)")
	fs.StringVar(&reason, "reason", "", "why the grant is revoked, recorded in the status")
	fs.BoolVar(&removeAnnotation, "remove-annotation", false, "also remove the KSA's iam.gke.io/gcp-service-account annotation")
	fs.BoolVar(&follow, "wait", false, "follow the run until it ends and print its result")
	fs.BoolVar(&dryRun, "dry-run", false, "print the workflow ID and command without starting anything")
	if err := parse(fs, args); err != nil {
		return err
	}
	if (onboardID == "") == (file == "") {
		return usagef("give exactly one of --workflow-id ONBOARD_ID and -f revoke.yaml")
	}
	var when time.Time
	if at != "" {
		if follow {
			return usagef("--wait follows a revocation started now; with --at it starts later (follow it then with gkewi status)")
		}
		var err error
		if when, err = a.revocationTime(at, ""); err != nil {
			return err
		}
	}

	var (
		c       client.Client
		req     workflows.RevokeRequest
		running bool
		err     error
	)
	if onboardID != "" {
		c, _, err = a.dial(ctx, conn)
		if err != nil {
			return err
		}
		defer c.Close()
		src, err := readOnboarding(ctx, c, onboardID)
		if err != nil {
			return err
		}
		switch src.status {
		case activities.WorkflowStatusCompleted:
			req, err = completedRevokeRequest(ctx, c, src)
		case activities.WorkflowStatusRunning:
			if at != "" {
				return usagef("onboarding %s is still running: it sets the grant's revocation schedule itself when it completes; schedule the revocation after that, or revoke now without --at", onboardID)
			}
			running = true
			req, err = a.runningRevokeRequest(ctx, c, conn, src)
		default:
			err = fmt.Errorf("onboarding %s is %s: only a completed or running onboarding names its grant; for any other, write a revoke request and use -f",
				onboardID, src.status)
		}
		if err != nil {
			return err
		}
	} else if req, err = a.loadRevokeRequest(file); err != nil {
		return err
	}
	if wait != "" {
		req.TokenExpiryWait = workflows.Duration(wait)
	}
	if reason != "" {
		req.Reason = reason
	}
	if removeAnnotation {
		req.RemoveAnnotation = true
	}
	req = req.WithDefaults()
	source := file
	if source == "" {
		source = "the revoke request of " + onboardID
	}
	if err := req.Validate(); err != nil {
		return invalidRequest(source, "revoke", err)
	}

	if at != "" {
		if c == nil {
			if c, _, err = a.dial(ctx, conn); err != nil {
				return err
			}
			defer c.Close()
		}
		return a.scheduleRevocation(ctx, c, conn, req, when, dryRun)
	}

	id := workflows.RevokeWorkflowID(req)
	input, err := compactJSON(req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Workflow ID: %s\n", id)
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", temporalStartCommand(conn, workflows.RevokeWorkflowName, id, input))
	if dryRun {
		return nil
	}
	if c == nil {
		if c, _, err = a.dial(ctx, conn); err != nil {
			return err
		}
		defer c.Close()
	}
	run, err := startOnce(ctx, c, conn, workflows.RevokeWorkflowName, id, "a revocation", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s; token expiry wait %s.\n", workflows.RevokeWorkflowName, run.GetRunID(), req.TokenExpiryWait)
	if running {
		fmt.Fprintf(a.Stdout, "It cancels the running onboarding %s first and waits for its clean-up.\n", onboardID)
	}
	fmt.Fprintf(a.Stdout, "Follow with: gkewi status%s --workflow-id %s\n", conn.cliFlags(), shellQuote(id))
	if !follow {
		return nil
	}
	var res workflows.RevokeResult
	if err := a.follow(ctx, c, run, &res); err != nil {
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
