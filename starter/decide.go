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

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"golang.org/x/oauth2"
	"google.golang.org/api/idtoken"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

type decideOptions struct {
	conn                                         connFlags
	workflowID, runID, approver, ticket, comment string
	endpoint, tokenFile                          string
	update, dryRun                               bool
}

// decideCommand is approve or reject, as verb says.
func (a *App) decideCommand(verb string) *cobra.Command {
	var o decideOptions
	cmd := newCommand(verb+" --workflow-id ID (--endpoint URL --run-id RUN [--id-token-file F] | --approver EMAIL [--update]) [--ticket T] [--comment C]",
		fmt.Sprintf("Send support's decision: %s an onboarding", verb),
		fmt.Sprintf(`Send support's decision to %s an onboarding awaiting approval.

With --endpoint (or %s) it proves who decided: it sends your ID token
(audience: the workflow ID, from --id-token-file, else gcloud, else Application
Default Credentials) to the worker's approval endpoint, which verifies it and
hands the decision to the run you reviewed (--run-id, required: the support
email and gkewi status name it). Without, it sends a bare decision naming
--approver, as the support-approval signal or, with --update, the
support-decision update; that counts only for grants whose support.proof is
none.`, verb, envApprovalEndpoint),
		func(ctx context.Context) error { return a.decide(ctx, verb, o) })
	endpoint, _ := a.Env.LookupEnv(envApprovalEndpoint)
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", endpoint, "the worker's approval endpoint, e.g. https://gkewi.example.com: prove who you are with your ID token (env "+envApprovalEndpoint+")")
	f.StringVar(&o.tokenFile, "id-token-file", "", "read your ID token from this file (- for stdin) instead of asking gcloud or Application Default Credentials")
	o.conn.register(cmd)
	f.StringVar(&o.workflowID, "workflow-id", "", "the Onboard workflow ID (required)")
	f.StringVar(&o.runID, "run-id", "", "the run you reviewed, as the support email and gkewi status name it (required with --endpoint; without, default the latest)")
	f.StringVar(&o.approver, "approver", "", "your email; it must be one of the request's approvers (required without --endpoint)")
	f.StringVar(&o.ticket, "ticket", "", "the support ticket this decision belongs to")
	f.StringVar(&o.comment, "comment", "", "a note recorded with the decision")
	f.BoolVar(&o.update, "update", false, "use the support-decision update: wait for the workflow's verdict instead of firing a signal")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the equivalent command without sending anything")
	_ = cmd.MarkFlagFilename("id-token-file")
	noFileFlag(cmd, "endpoint", "workflow-id", "run-id", "approver", "ticket", "comment")
	return cmd
}

// decide sends support's decision. With --endpoint it proves who decided: it
// sends the approver's ID token (audience: the workflow ID) to the worker's
// approval endpoint, which verifies it and hands the workflow the decision
// with its attestation. Without, it sends a bare decision naming --approver,
// as the support-approval signal or, with --update, the support-decision
// update; that counts only for grants whose support.proof is none.
func (a *App) decide(ctx context.Context, verb string, o decideOptions) error {
	if o.workflowID == "" {
		return usagef("--workflow-id is required")
	}
	if o.endpoint != "" {
		if o.update {
			return usagef("--update goes with a bare decision; with --endpoint the worker sends the update")
		}
		if o.runID == "" {
			// A proven decision binds the run it was made for: never "the latest".
			return usagef("--run-id is required with --endpoint: the run you reviewed (the support email and gkewi status name it)")
		}
		return a.decideWithProof(ctx, verb, o)
	}
	if o.approver == "" {
		return usagef("--approver is required (your email, one of the request's approvers)")
	}
	if addr, err := mail.ParseAddress(o.approver); err != nil || addr.Address != o.approver {
		return usagef("--approver %q: want a bare email address such as you@example.com", o.approver)
	}
	decision := workflows.ApprovalDecision{Approved: verb == "approve", Approver: o.approver, Ticket: o.ticket, Comment: o.comment}
	input, err := compactJSON(decision)
	if err != nil {
		return err
	}
	equivalent := temporalSignalCommand(o.conn, o.workflowID, input)
	if o.update {
		equivalent = temporalUpdateCommand(o.conn, o.workflowID, input)
	}
	fmt.Fprintf(a.Stdout, "Equivalent temporal command:\n  %s\n", equivalent)
	fmt.Fprintf(a.Stdout, "This decision carries no proof of who you are: it counts only where support.proof is %q. "+
		"Prove it with --endpoint (the worker's approval endpoint) and your ID token.\n", workflows.ProofNone)
	if o.dryRun {
		return nil
	}

	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	if !o.update {
		if err := c.SignalWorkflow(ctx, o.workflowID, o.runID, contract.SignalSupportApproval, decision); err != nil {
			return fmt.Errorf("signal %s: %w", o.workflowID, err)
		}
		fmt.Fprintf(a.Stdout, "Sent %s (%s by %s). A signal does not report whether it counted; check with: gkewi status%s --workflow-id %s\n",
			contract.SignalSupportApproval, pastTense(verb), o.approver, o.conn.cliFlags(), text.ShellQuote(o.workflowID))
		return nil
	}
	handle, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   o.workflowID,
		RunID:        o.runID,
		UpdateName:   contract.UpdateSupportDecision,
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
	fmt.Fprintf(a.Stdout, "Decision accepted (%s by %s): the onboarding is now %s.\n", pastTense(verb), o.approver, state)
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
func (a *App) decideWithProof(ctx context.Context, verb string, o decideOptions) error {
	url, err := endpointURL(o.endpoint, worker.DecisionPath)
	if err != nil {
		return err
	}
	approved := verb == "approve"
	body, err := json.Marshal(worker.DecisionRequest{WorkflowID: o.workflowID, RunID: o.runID, Approved: &approved, Ticket: o.ticket, Comment: o.comment})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Equivalent command:\n  %s\n", curlCommand(url, o.workflowID, body))
	if o.dryRun {
		return nil
	}
	token, source, err := a.idToken(ctx, o.tokenFile, o.workflowID)
	if err != nil {
		return err
	}
	var out worker.DecisionResponse
	status, err := postWithToken(ctx, url, token, body, &out)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("decision refused (HTTP %d): %s", status, out.Error)
	}
	fmt.Fprintf(a.Stdout, "Decision accepted (%s by %s, proven by an ID token from %s): the onboarding is now %s.\n",
		pastTense(verb), out.Approver, source, out.State)
	return nil
}

// endpointURL is path on the worker's approval endpoint, or a usage error
// naming --endpoint.
func endpointURL(endpoint, path string) (string, error) {
	if u, err := neturl.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usagef("--endpoint %q: want the http(s) URL of the worker's approval endpoint", endpoint)
	}
	return strings.TrimRight(endpoint, "/") + path, nil
}

// curlCommand is the curl command that POSTs body to url with the caller's
// ID token for audience, which it leaves to gcloud to print.
func curlCommand(url, audience string, body []byte) string {
	return fmt.Sprintf(`curl -sS -X POST %s -H "Authorization: Bearer $(gcloud auth print-identity-token --audiences=%s --include-email)" -d %s`,
		text.ShellQuote(url), text.ShellQuote(audience), text.ShellQuote(string(body)))
}

// postWithToken POSTs body to url with token as the bearer and decodes the
// endpoint's JSON answer into out; the status is the caller's to judge.
func postWithToken(ctx context.Context, url, token string, body []byte, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("the approval endpoint: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("the approval endpoint answered HTTP %d, not with its JSON answer: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

// idToken is the caller's (approver's, requester's) ID token for audience, and where it came from: the
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
