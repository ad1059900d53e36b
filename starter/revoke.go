package starter

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/workflows"
)

func (a *App) revoke(ctx context.Context, args []string) error {
	fs := a.flagSet("revoke", "(--workflow-id ONBOARD_ID | -f revoke.yaml) [--token-expiry-wait 30m] [--reason R] [--wait] [--dry-run]")
	var (
		conn                          connFlags
		onboardID, file, wait, reason string
		removeAnnotation              bool
		follow, dryRun                bool
	)
	conn.register(fs)
	fs.StringVar(&onboardID, "workflow-id", "", "revoke the grant of this completed Onboard workflow (its result holds the revoke request)")
	fs.StringVar(&file, "f", "", "revoke request, YAML or JSON (- for stdin), instead of --workflow-id")
	fs.StringVar(&file, "file", "", "same as -f")
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

	var (
		c   client.Client
		req workflows.RevokeRequest
		err error
	)
	if onboardID != "" {
		c, _, err = a.dial(ctx, conn)
		if err != nil {
			return err
		}
		defer c.Close()
		if req, err = revokeRequestOf(ctx, c, onboardID); err != nil {
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
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                workflows.TaskQueue,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflows.RevokeWorkflowName, req)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return fmt.Errorf("a revocation of this grant is already running (run %s); follow it with: gkewi status%s --workflow-id %s",
			started.RunId, conn.cliFlags(), shellQuote(id))
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", workflows.RevokeWorkflowName, err)
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s; token expiry wait %s.\n", workflows.RevokeWorkflowName, run.GetRunID(), req.TokenExpiryWait)
	fmt.Fprintf(a.Stdout, "Follow with: gkewi status%s --workflow-id %s\n", conn.cliFlags(), shellQuote(id))
	if !follow {
		return nil
	}
	var res workflows.RevokeResult
	if err := a.follow(ctx, c, run, &res); err != nil {
		return fmt.Errorf("revocation %s failed: %w", id, err)
	}
	return a.printJSON(res)
}

// revokeRequestOf reads the ready revoke request from a completed onboarding's result.
func revokeRequestOf(ctx context.Context, c client.Client, onboardID string) (workflows.RevokeRequest, error) {
	desc, err := c.DescribeWorkflowExecution(ctx, onboardID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return workflows.RevokeRequest{}, usagef("no workflow %s in this namespace", onboardID)
	}
	if err != nil {
		return workflows.RevokeRequest{}, fmt.Errorf("describe %s: %w", onboardID, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	if typ := info.GetType().GetName(); typ != workflows.OnboardWorkflowName {
		return workflows.RevokeRequest{}, usagef("%s is a %s workflow, not %s", onboardID, typ, workflows.OnboardWorkflowName)
	}
	if st := info.GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		return workflows.RevokeRequest{}, fmt.Errorf("onboarding %s is %s: only a completed onboarding holds a revoke request; for any other, write one and use -f",
			onboardID, executionStatus(st))
	}
	var res workflows.OnboardResult
	if err := c.GetWorkflow(ctx, onboardID, info.GetExecution().GetRunId()).Get(ctx, &res); err != nil {
		return workflows.RevokeRequest{}, fmt.Errorf("read the result of %s: %w", onboardID, err)
	}
	return res.Revoke, nil
}
