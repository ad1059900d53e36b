package starter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	neturl "net/url"
	"os"
	"os/exec"
	"strings"

	"go.temporal.io/sdk/client"
	"golang.org/x/oauth2"
	"google.golang.org/api/idtoken"

	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

// decide sends support's decision. With --endpoint it proves who decided: it
// sends the approver's ID token (audience: the workflow ID) to the worker's
// approval endpoint, which verifies it and hands the workflow the decision
// with its attestation. Without, it sends a bare decision naming --approver,
// as the support-approval signal or, with --update, the support-decision
// update; that counts only for grants whose support.proof is none.
func (a *App) decide(ctx context.Context, verb string, args []string) error {
	fs := a.flagSet(verb, "--workflow-id ID (--endpoint URL [--id-token-file F] | --approver EMAIL [--update]) [--ticket T] [--comment C]")
	var (
		conn                                     connFlags
		workflowID, runID, approver, ticket, why string
		endpoint, tokenFile                      string
		useUpdate, dryRun                        bool
	)
	endpoint, _ = a.Env.LookupEnv(envApprovalEndpoint)
	fs.StringVar(&endpoint, "endpoint", endpoint, "the worker's approval endpoint, e.g. https://gkewi.example.com: prove who you are with your ID token (env "+envApprovalEndpoint+")")
	fs.StringVar(&tokenFile, "id-token-file", "", "read your ID token from this file (- for stdin) instead of asking gcloud or Application Default Credentials")
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
	if endpoint != "" {
		if useUpdate {
			return usagef("--update goes with a bare decision; with --endpoint the worker sends the update")
		}
		return a.decideWithProof(ctx, verb, endpoint, tokenFile, workflowID, runID, ticket, why, dryRun)
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
	fmt.Fprintf(a.Stdout, "This decision carries no proof of who you are: it counts only where support.proof is %q. "+
		"Prove it with --endpoint (the worker's approval endpoint) and your ID token.\n", workflows.ProofNone)
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

// envApprovalEndpoint names the worker's approval endpoint for gkewi approve/reject.
const envApprovalEndpoint = "GKEWI_APPROVAL_ENDPOINT"

// decideWithProof sends the decision with the approver's ID token to the
// worker's approval endpoint and reports the workflow's verdict.
func (a *App) decideWithProof(ctx context.Context, verb, endpoint, tokenFile, workflowID, runID, ticket, comment string, dryRun bool) error {
	if u, err := neturl.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--endpoint %q: want the http(s) URL of the worker's approval endpoint", endpoint)
	}
	url := strings.TrimRight(endpoint, "/") + worker.DecisionPath
	approved := verb == "approve"
	body, err := json.Marshal(worker.DecisionRequest{WorkflowID: workflowID, RunID: runID, Approved: &approved, Ticket: ticket, Comment: comment})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Equivalent command:\n  curl -sS -X POST %s -H \"Authorization: Bearer $(gcloud auth print-identity-token --audiences=%s --include-email)\" -d %s\n",
		shellQuote(url), shellQuote(workflowID), shellQuote(string(body)))
	if dryRun {
		return nil
	}
	token, source, err := a.idToken(ctx, tokenFile, workflowID)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the approval endpoint: %w", err)
	}
	defer resp.Body.Close()
	var out worker.DecisionResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return fmt.Errorf("the approval endpoint answered HTTP %d without a decision response: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("decision refused (HTTP %d): %s", resp.StatusCode, out.Error)
	}
	fmt.Fprintf(a.Stdout, "Decision accepted (%s by %s, proven by an ID token from %s): the onboarding is now %s.\n",
		pastTense(verb), out.Approver, source, out.State)
	return nil
}

// idToken is the approver's ID token for audience, and where it came from: the
// file, else gcloud (which sets custom audiences for service accounts), else
// Application Default Credentials (a service account, the metadata server).
func (a *App) idToken(ctx context.Context, file, audience string) (string, string, error) {
	if file != "" {
		var b []byte
		var err error
		if file == "-" {
			b, err = io.ReadAll(io.LimitReader(a.Stdin, 64<<10))
		} else {
			b, err = os.ReadFile(file)
		}
		if err != nil {
			return "", "", fmt.Errorf("--id-token-file: %w", err)
		}
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, "--id-token-file", nil
		}
		return "", "", usagef("--id-token-file %s is empty", file)
	}
	var problems []string
	out, err := exec.CommandContext(ctx, "gcloud", "auth", "print-identity-token", "--audiences="+audience, "--include-email").Output()
	if tok := strings.TrimSpace(string(out)); err == nil && tok != "" {
		return tok, "gcloud", nil
	}
	problems = append(problems, "gcloud auth print-identity-token: "+commandError(err))
	ts, err := idtoken.NewTokenSource(ctx, audience)
	if err == nil {
		var tok *oauth2.Token
		if tok, err = ts.Token(); err == nil {
			return tok.AccessToken, "Application Default Credentials", nil
		}
	}
	problems = append(problems, "Application Default Credentials: "+err.Error())
	return "", "", fmt.Errorf("no ID token for audience %s (%s); pass one with --id-token-file", audience, strings.Join(problems, "; "))
}

// commandError says why a command failed, with its stderr when it has one.
func commandError(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return strings.TrimSpace(string(ee.Stderr))
	}
	if err == nil {
		return "no token printed"
	}
	return err.Error()
}
