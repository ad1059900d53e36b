package starter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

type onboardOptions struct {
	conn                connFlags
	file                string
	endpoint, tokenFile string
	wait, dryRun        bool
}

func (a *App) onboardCommand() *cobra.Command {
	var o onboardOptions
	cmd := newCommand("onboard -f request.yaml [--endpoint URL [--id-token-file F]] [--wait] [--dry-run]",
		"Validate an onboarding request and start the Onboard workflow",
		`Validate an onboarding request and start the Onboard workflow under the ID the
request derives (gkewi id prints it). It prints the equivalent command; support
is notified and must approve before anything is granted. A second start of the
same grant is refused while the first runs.

With --endpoint it proves who asks: it sends the request with your ID token
(audience: the workflow ID, from --id-token-file, else gcloud, else Application
Default Credentials) to the worker's approval endpoint, which verifies it and
starts the workflow with its attestation of you as the requester. Without, it
starts the workflow through Temporal, with no proven requester.`,
		func(ctx context.Context) error { return a.onboard(ctx, o) })
	o.conn.register(cmd)
	fileFlag(cmd, &o.file, "onboarding request, YAML or JSON (- for stdin)")
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", "", "the worker's approval endpoint, e.g. https://gkewi.example.com: prove who asks with your ID token")
	f.StringVar(&o.tokenFile, "id-token-file", "", "with --endpoint: read your ID token from this file (- for stdin) instead of asking gcloud or Application Default Credentials")
	f.BoolVar(&o.wait, "wait", false, "follow the run until it ends and print its result")
	f.BoolVar(&o.dryRun, "dry-run", false, "validate and print the workflow ID and command without starting anything")
	_ = cmd.MarkFlagFilename("id-token-file")
	noFileFlag(cmd, "endpoint")
	return cmd
}

func (a *App) onboard(ctx context.Context, o onboardOptions) error {
	if o.tokenFile != "" && o.endpoint == "" {
		return usagef("--id-token-file goes with --endpoint: only the worker's approval endpoint checks who asks")
	}
	if o.file == "-" && o.tokenFile == "-" {
		return usagef("-f - and --id-token-file - both read standard input: put one of them in a file")
	}
	req, err := a.loadOnboardRequest(o.file)
	if err != nil {
		return err
	}
	if o.endpoint != "" {
		return a.onboardWithProof(ctx, o, req)
	}
	return a.startOnboard(ctx, nil, o, req)
}

// startOnboard starts Onboard for req through Temporal, with no proven
// requester, on c (dialed here when nil).
func (a *App) startOnboard(ctx context.Context, c client.Client, o onboardOptions, req workflows.OnboardRequest) error {
	id := workflows.OnboardWorkflowID(req)
	input, err := compactJSON(req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Workflow ID: %s\n", id)
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", temporalStartCommand(o.conn, workflows.OnboardWorkflowName, id, input))
	if o.dryRun {
		return nil
	}
	if c == nil {
		dialed, _, err := a.dial(ctx, o.conn)
		if err != nil {
			return err
		}
		defer dialed.Close()
		c = dialed
	}
	run, err := startOnce(ctx, c, o.conn, workflows.OnboardWorkflowName, id, "an onboarding", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s.\n", workflows.OnboardWorkflowName, run.GetRunID())
	a.printSupportNotified(o, req)
	if !o.wait {
		return nil
	}
	return a.followOnboarding(ctx, c, run)
}

// onboardWithProof sends the request with the requester's ID token to the
// worker's approval endpoint, which verifies it and starts the workflow with
// its attestation of the requester.
func (a *App) onboardWithProof(ctx context.Context, o onboardOptions, req workflows.OnboardRequest) error {
	url, err := endpointURL(o.endpoint, worker.RequestPath)
	if err != nil {
		return err
	}
	if req.Requester != nil {
		return usagef("%s: requester: leave it out; the worker's approval endpoint attests it from your ID token", o.file)
	}
	id := workflows.OnboardWorkflowID(req)
	body, err := json.Marshal(worker.RequestSubmission{Request: &req})
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	fmt.Fprintf(a.Stdout, "Workflow ID: %s\n", id)
	fmt.Fprintf(a.Stdout, "Equivalent command:\n  %s\n", curlCommand(url, id, body))
	if o.dryRun {
		return nil
	}
	token, _, err := a.idToken(ctx, o.tokenFile, id)
	if err != nil {
		return err
	}
	var out worker.RequestResponse
	status, err := postWithToken(ctx, url, token, body, &out)
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		return fmt.Errorf("onboarding refused (HTTP %d): %s", status, out.Error)
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s, requested by %s (ID token verified by the worker).\n",
		workflows.OnboardWorkflowName, out.RunID, out.Requester)
	a.printSupportNotified(o, req)
	if !o.wait {
		return nil
	}
	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	return a.followOnboarding(ctx, c, c.GetWorkflow(ctx, id, out.RunID))
}

func (a *App) printSupportNotified(o onboardOptions, req workflows.OnboardRequest) {
	fmt.Fprintf(a.Stdout, "Support is notified at %v and must approve; follow with: gkewi status%s --workflow-id %s\n",
		supportTargets(req), o.conn.cliFlags(), text.ShellQuote(workflows.OnboardWorkflowID(req)))
}

// followOnboarding follows run until it ends and prints its result.
func (a *App) followOnboarding(ctx context.Context, c client.Client, run client.WorkflowRun) error {
	var res workflows.OnboardResult
	if err := a.follow(ctx, c, run, &res); err != nil {
		return fmt.Errorf("onboarding %s ended without a grant: %w", run.GetID(), err)
	}
	return a.printJSON(res)
}

func supportTargets(req workflows.OnboardRequest) []string {
	if len(req.Support.Notify) > 0 {
		return req.Support.Notify
	}
	return req.Support.Approvers
}

func (a *App) idCommand() *cobra.Command {
	var file string
	cmd := newCommand("id -f request.yaml",
		"Print the workflow ID an onboarding request derives",
		`Print the workflow ID an onboarding request derives: one ID per grant
(project, location, cluster, namespace, release), so a second start of the
same grant is refused while the first runs.`,
		func(context.Context) error { return a.id(file) })
	fileFlag(cmd, &file, "onboarding request, YAML or JSON (- for stdin)")
	return cmd
}

func (a *App) id(file string) error {
	req, err := a.loadOnboardRequest(file)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout, workflows.OnboardWorkflowID(req))
	return nil
}

// follow prints each change of the run's state until it ends, then decodes its
// result into out.
func (a *App) follow(ctx context.Context, c client.Client, run client.WorkflowRun, out any) error {
	done := make(chan error, 1)
	go func() { done <- run.Get(ctx, out) }()
	ticker := time.NewTicker(a.PollInterval)
	defer ticker.Stop()
	last := ""
	ended := false
	report := func() {
		if ended {
			return // the state is final; only the result is still to come
		}
		st, err := queryStatus(ctx, c, run.GetID(), run.GetRunID())
		if err != nil {
			return // no worker yet, or the run just ended: the next tick or the result tells
		}
		ended = st.State.Terminal()
		line := string(st.State)
		if st.Approval != nil && st.State == workflows.StateAwaitingApproval && !st.Approval.Deadline.IsZero() {
			line += fmt.Sprintf(" (deadline %s)", formatTime(st.Approval.Deadline))
		}
		if cur := currentStep(st); cur != "" {
			line += ", step " + cur
		}
		if line != last {
			fmt.Fprintf(a.Stdout, "%s  %s\n", a.Now().Format("15:04:05"), line)
			last = line
		}
	}
	report()
	for {
		select {
		case err := <-done:
			return err
		case <-ticker.C:
			report()
		}
	}
}

// currentStep is the running step, if any.
func currentStep(st workflows.Status) string {
	for _, s := range st.Steps {
		if s.State == workflows.StepRunning {
			return s.Name
		}
	}
	return ""
}

func (a *App) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.Stdout, string(b))
	return err
}

// startMemo is the memo an onboarding starts with; nil for other workflows.
func startMemo(input any) map[string]any {
	req, ok := input.(workflows.OnboardRequest)
	if !ok {
		return nil
	}
	return worker.OnboardMemo(req)
}

// startOnce starts workflow name under id, refusing (with how to follow it) when a
// run of the same grant is already going: a second start must not silently attach
// to the first.
func startOnce(ctx context.Context, c client.Client, conn connFlags, name, id, what string, input any) (client.WorkflowRun, error) {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                workflows.TaskQueue,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo:                                     startMemo(input),
	}, name, input)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, fmt.Errorf("%s of this grant is already running (run %s); follow it with: gkewi status%s --workflow-id %s",
			what, started.RunId, conn.cliFlags(), text.ShellQuote(id))
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return run, nil
}
