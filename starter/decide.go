package starter

import (
	"context"
	"fmt"
	"net/mail"

	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/workflows"
)

// decide sends support's decision, as the support-approval signal or, with
// --update, the support-decision update, which answers at once.
func (a *App) decide(ctx context.Context, verb string, args []string) error {
	fs := a.flagSet(verb, "--workflow-id ID --approver EMAIL [--ticket T] [--comment C] [--update]")
	var (
		conn                                     connFlags
		workflowID, runID, approver, ticket, why string
		useUpdate, dryRun                        bool
	)
	conn.register(fs)
	fs.StringVar(&workflowID, "workflow-id", "", "the Onboard workflow ID (required)")
	fs.StringVar(&runID, "run-id", "", "a specific run (default: the latest)")
	fs.StringVar(&approver, "approver", "", "your email; it must be one of the request's approvers (required)")
	fs.StringVar(&ticket, "ticket", "", "the support ticket this decision belongs to")
	fs.StringVar(&why, "comment", "", "a note recorded with the decision")
	fs.BoolVar(&useUpdate, "update", false, "use the support-decision update: wait for the workflow's verdict instead of firing a signal")
	fs.BoolVar(&dryRun, "dry-run", false, "print the equivalent command without sending anything")
	if err := parse(fs, args); err != nil {
		return err
	}
	if workflowID == "" {
		return usagef("--workflow-id is required")
	}
	if approver == "" {
		return usagef("--approver is required (your email, one of the request's approvers)")
	}
	if addr, err := mail.ParseAddress(approver); err != nil || addr.Address != approver {
		return usagef("--approver %q: want a bare email address such as you@example.com", approver)
	}
	decision := workflows.ApprovalDecision{Approved: verb == "approve", Approver: approver, Ticket: ticket, Comment: why}
	input, err := compactJSON(decision)
	if err != nil {
		return err
	}
	equivalent := temporalSignalCommand(conn, workflowID, input)
	if useUpdate {
		equivalent = temporalUpdateCommand(conn, workflowID, input)
	}
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", equivalent)
	if dryRun {
		return nil
	}

	c, _, err := a.dial(ctx, conn)
	if err != nil {
		return err
	}
	defer c.Close()
	if !useUpdate {
		if err := c.SignalWorkflow(ctx, workflowID, runID, workflows.SignalSupportApproval, decision); err != nil {
			return fmt.Errorf("signal %s: %w", workflowID, err)
		}
		fmt.Fprintf(a.Stdout, "Sent %s (%s by %s). A signal does not report whether it counted; check with: gkewi status%s --workflow-id %s\n",
			workflows.SignalSupportApproval, pastTense(verb), approver, conn.cliFlags(), shellQuote(workflowID))
		return nil
	}
	handle, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   workflowID,
		RunID:        runID,
		UpdateName:   workflows.UpdateSupportDecision,
		Args:         []any{decision},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return fmt.Errorf("decision refused: %w", err)
	}
	var state workflows.State
	if err := handle.Get(ctx, &state); err != nil {
		return fmt.Errorf("decision refused: %w", err)
	}
	fmt.Fprintf(a.Stdout, "Decision accepted (%s by %s): the onboarding is now %s.\n", pastTense(verb), approver, state)
	return nil
}

func pastTense(verb string) string {
	if verb == "approve" {
		return "approved"
	}
	return "rejected"
}
