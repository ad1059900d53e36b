package starter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

type onboardOptions struct {
	conn         connFlags
	file         string
	wait, dryRun bool
}

func (a *App) onboardCommand() *cobra.Command {
	var o onboardOptions
	cmd := newCommand("onboard -f request.yaml [--wait] [--dry-run]",
		"Validate an onboarding request and start the Onboard workflow",
		`Validate an onboarding request and start the Onboard workflow under the ID the
request derives (gkewi id prints it). It prints the equivalent temporal
command; support is notified and must approve before anything is granted.
A second start of the same grant is refused while the first runs.`,
		func(ctx context.Context) error { return a.onboard(ctx, o) })
	o.conn.register(cmd)
	fileFlag(cmd, &o.file, "onboarding request, YAML or JSON (- for stdin)")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "follow the run until it ends and print its result")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "validate and print the workflow ID and command without starting anything")
	return cmd
}

func (a *App) onboard(ctx context.Context, o onboardOptions) error {
	req, err := a.loadOnboardRequest(o.file)
	if err != nil {
		return err
	}
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

	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	run, err := startOnce(ctx, c, o.conn, workflows.OnboardWorkflowName, id, "an onboarding", req)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Started %s, run %s.\n", workflows.OnboardWorkflowName, run.GetRunID())
	fmt.Fprintf(a.Stdout, "Support is notified at %v and must approve; follow with: gkewi status%s --workflow-id %s\n",
		supportTargets(req), o.conn.cliFlags(), text.ShellQuote(id))
	if !o.wait {
		return nil
	}
	var res workflows.OnboardResult
	if err := a.follow(ctx, c, run, &res); err != nil {
		return fmt.Errorf("onboarding %s ended without a grant: %w", id, err)
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

// memoApprovalTimeout keeps an onboarding's approval timeout in the memo given
// at start (no workflow code involved), so `gkewi list --pending` can tell
// deadlines from visibility alone.
const memoApprovalTimeout = "gkewiApprovalTimeout"

// startMemo is the memo an onboarding starts with; nil for other workflows.
func startMemo(input any) map[string]any {
	req, ok := input.(workflows.OnboardRequest)
	if !ok {
		return nil
	}
	return map[string]any{memoApprovalTimeout: string(req.WithDefaults().Support.ApprovalTimeout)}
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
