package starter

import (
	"encoding/json"
	"fmt"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

// compactJSON is the workflow input as one line, as `--input` takes it.
func compactJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode input: %w", err)
	}
	return string(b), nil
}

// temporalStartCommand is `temporal workflow start` for a gkewi workflow.
func temporalStartCommand(conn connFlags, workflowType, workflowID, input string) string {
	return "temporal workflow start" + conn.cliFlags() +
		" --type " + workflowType +
		" --task-queue " + workflows.TaskQueue +
		" --workflow-id " + text.ShellQuote(workflowID) +
		" --input " + text.ShellQuote(input)
}

// temporalSignalCommand sends the support decision as the support-approval signal.
func temporalSignalCommand(conn connFlags, workflowID, input string) string {
	return "temporal workflow signal" + conn.cliFlags() +
		" --workflow-id " + text.ShellQuote(workflowID) +
		" --name " + contract.SignalSupportApproval +
		" --input " + text.ShellQuote(input)
}

// temporalUpdateCommand sends the support decision as the support-decision update.
func temporalUpdateCommand(conn connFlags, workflowID, input string) string {
	return "temporal workflow update execute" + conn.cliFlags() +
		" --workflow-id " + text.ShellQuote(workflowID) +
		" --name " + contract.UpdateSupportDecision +
		" --input " + text.ShellQuote(input)
}

// temporalQueryCommand reads the status.
func temporalQueryCommand(conn connFlags, workflowID string) string {
	return "temporal workflow query" + conn.cliFlags() +
		" --workflow-id " + text.ShellQuote(workflowID) +
		" --type " + contract.QueryStatus
}
