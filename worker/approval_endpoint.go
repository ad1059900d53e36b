package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/fx"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/worker/config"
	"github.com/gkewi/gkewi/workflows"
)

// minApprovalSecret is the shortest attestation key accepted, in bytes.
const minApprovalSecret = 16

// NewAttestor builds the attestor of approvals: every worker checks proofs
// with its key; the approval endpoint, where configured, makes them.
func NewAttestor(cfg config.Config, logger *slog.Logger) (*activities.Attestor, error) {
	var secret []byte
	if f := cfg.Approval.SecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("approval secret: %w", err)
		}
		if secret = bytes.TrimSpace(b); len(secret) < minApprovalSecret {
			return nil, fmt.Errorf("approval secret in %s has %d bytes: use at least %d (32 random bytes: head -c 32 /dev/urandom | base64)",
				f, len(secret), minApprovalSecret)
		}
	} else {
		logger.Warn("no approval secret (--approval-secret-file): decisions proven by an ID token cannot be checked, " +
			"so grants that require proof (support.proof id-token, the default) wait until a worker with the secret checks them")
	}
	return activities.NewAttestor(activities.AttestorConfig{Secret: secret, Issuer: cfg.Approval.Issuer}), nil
}

// serveApprovals starts the approval endpoint when one is configured.
func serveApprovals(lc fx.Lifecycle, cfg config.Config, approvals *activities.Attestor, c client.Client, logger *slog.Logger) {
	if cfg.Approval.Addr == "" {
		return
	}
	logger = logger.With("component", "approval-endpoint")
	srv := &http.Server{
		Handler:           &approvalEndpoint{approvals: approvals, temporal: c, logger: logger},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		// The update waits for the workflow's verdict, proof check included.
		WriteTimeout: 3 * time.Minute,
	}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", cfg.Approval.Addr)
			if err != nil {
				return fmt.Errorf("approval endpoint: %w", err)
			}
			logger.Info("approval endpoint listening", "addr", ln.Addr().String(), "issuer", approvals.Issuer())
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					logger.Error("approval endpoint stopped", "error", err)
				}
			}()
			return nil
		},
		OnStop: srv.Shutdown,
	})
}

// DecisionPath is where the approval endpoint takes decisions.
const DecisionPath = "/v1/decisions"

// DecisionRequest is the body of POST /v1/decisions; the approver's ID token,
// with the workflow ID as its audience, is the bearer token.
type DecisionRequest struct {
	WorkflowID string `json:"workflowId"`
	// RunID is the run the approver reviewed (the support email names it); a
	// decision for another run is refused, so a grant restarted under the same
	// workflow ID is not decided by a decision meant for its earlier run.
	RunID    string `json:"runId,omitempty"`
	Approved *bool  `json:"approved"`
	Ticket   string `json:"ticket,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

// DecisionResponse is the endpoint's answer: whose decision it was and what
// the onboarding did with it, or why it was refused.
type DecisionResponse struct {
	WorkflowID string          `json:"workflowId,omitempty"`
	RunID      string          `json:"runId,omitempty"`
	Approver   string          `json:"approver,omitempty"`
	State      workflows.State `json:"state,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// approvalEndpoint verifies an approver's ID token, then sends the decision
// with the worker's attestation of the token's claims as the support-decision
// update and answers with the workflow's verdict. The token goes no further:
// neither the history nor the logs see it.
type approvalEndpoint struct {
	approvals *activities.Attestor
	temporal  client.Client
	logger    *slog.Logger
}

func (e *approvalEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if token, ok := strings.CutPrefix(r.URL.Path, activities.LinkPath); ok {
		e.serveLink(w, r, token)
		return
	}
	if r.URL.Path != DecisionPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		answer(w, http.StatusMethodNotAllowed, DecisionResponse{Error: "POST a decision to " + DecisionPath})
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		answer(w, http.StatusUnauthorized, DecisionResponse{Error: "send your ID token as Authorization: Bearer TOKEN, with the workflow ID as its audience " +
			"(gcloud auth print-identity-token --audiences=WORKFLOW_ID --include-email)"})
		return
	}
	var req DecisionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		answer(w, http.StatusBadRequest, DecisionResponse{Error: "decision body: " + err.Error()})
		return
	}
	switch {
	case req.WorkflowID == "":
		answer(w, http.StatusBadRequest, DecisionResponse{Error: "workflowId is required"})
		return
	case req.Approved == nil:
		answer(w, http.StatusBadRequest, DecisionResponse{Error: "approved is required: true or false"})
		return
	}
	resp, status := e.decide(r.Context(), req, strings.TrimSpace(token))
	e.logger.Info("decision", "workflow", req.WorkflowID, "approved", *req.Approved, "approver", resp.Approver,
		"status", status, "state", resp.State, "error", resp.Error)
	answer(w, status, resp)
}

func (e *approvalEndpoint) decide(ctx context.Context, req DecisionRequest, token string) (DecisionResponse, int) {
	out := DecisionResponse{WorkflowID: req.WorkflowID}
	desc, err := e.temporal.DescribeWorkflowExecution(ctx, req.WorkflowID, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		out.Error = "no onboarding with workflow ID " + req.WorkflowID
		return out, http.StatusNotFound
	case err != nil:
		out.Error = "reading the onboarding: " + err.Error()
		return out, http.StatusBadGateway
	}
	out.RunID = desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	if req.RunID != "" && req.RunID != out.RunID {
		out.Error = fmt.Sprintf("run %s of %s is no longer the onboarding's current run (%s): review the current one before deciding", req.RunID, req.WorkflowID, out.RunID)
		return out, http.StatusConflict
	}
	d := activities.AttestedDecision{WorkflowID: req.WorkflowID, Approved: *req.Approved, Ticket: req.Ticket, Comment: req.Comment}
	proof, err := e.approvals.Attest(ctx, d, out.RunID, token)
	if err != nil {
		return refusedProof(out, err)
	}
	return e.send(ctx, out, d, proof)
}

// refusedProof answers a token or link that proves nothing (401), or a
// failure to check it (503).
func refusedProof(out DecisionResponse, err error) (DecisionResponse, int) {
	out.Error = err.Error()
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() == contract.ErrTypeProofRefused {
		out.Error = appErr.Message()
		return out, http.StatusUnauthorized
	}
	return out, http.StatusServiceUnavailable
}

// send hands the run out.RunID the attested decision d as the update and
// answers with the workflow's verdict.
func (e *approvalEndpoint) send(ctx context.Context, out DecisionResponse, d activities.AttestedDecision, proof activities.DecisionProof) (DecisionResponse, int) {
	out.Approver = proof.Email
	handle, err := e.temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: d.WorkflowID, RunID: out.RunID, UpdateName: contract.UpdateSupportDecision,
		Args: []any{workflows.ApprovalDecision{
			Approved: d.Approved, Approver: proof.Email, Ticket: d.Ticket, Comment: d.Comment, Proof: &proof,
		}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = handle.Get(ctx, &out.State)
	}
	if err != nil {
		// The onboarding refused it: not awaiting approval, already decided,
		// an approver not in support.approvers, a proof it found invalid.
		out.Error = err.Error()
		return out, http.StatusConflict
	}
	return out, http.StatusOK
}

func answer(w http.ResponseWriter, status int, resp DecisionResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// serveLink serves a signed decision link of the support email. GET shows
// what the link decides and a button; only POST decides, so mail scanners
// that follow links decide nothing.
func (e *approvalEndpoint) serveLink(w http.ResponseWriter, r *http.Request, token string) {
	claims, err := e.approvals.OpenLink(token)
	if err != nil {
		resp, status := refusedProof(DecisionResponse{}, err)
		linkPage(w, status, linkView{Error: resp.Error})
		return
	}
	view := linkView{Claims: claims, Verb: "Reject", Past: "Rejected"}
	if claims.Approved {
		view.Verb, view.Past = "Approve", "Approved"
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		linkPage(w, http.StatusOK, view)
	case http.MethodPost:
		out := DecisionResponse{WorkflowID: claims.WorkflowID, RunID: claims.RunID}
		d, proof, err := e.approvals.AttestLink(token)
		var status int
		if err != nil {
			out, status = refusedProof(out, err)
		} else {
			out, status = e.send(r.Context(), out, d, proof)
		}
		e.logger.Info("decision by link", "workflow", claims.WorkflowID, "approved", claims.Approved, "approver", claims.Approver,
			"status", status, "state", out.State, "error", out.Error)
		view.Done, view.State, view.Error = status == http.StatusOK, out.State, out.Error
		linkPage(w, status, view)
	default:
		w.Header().Set("Allow", "GET, POST")
		linkPage(w, http.StatusMethodNotAllowed, linkView{Error: "open the link, then press the button"})
	}
}

type linkView struct {
	Claims activities.LinkClaims
	Verb   string
	Past   string
	Done   bool
	State  workflows.State
	Error  string
}

var linkTemplate = template.Must(template.New("link").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>gkewi decision</title></head><body>
{{if .Error}}<p>Not decided: {{.Error}}</p>
{{else if .Done}}<p>{{.Past}} as {{.Claims.Approver}}: the onboarding {{.Claims.WorkflowID}} is now {{.State}}.</p>
{{else}}<p>{{.Verb}} the onboarding <code>{{.Claims.WorkflowID}}</code> as {{.Claims.Approver}}?</p>
<form method="post"><button type="submit">{{.Verb}}</button></form>
<p>This link decides in your name, for this onboarding only, until {{.Claims.Expires.UTC.Format "2006-01-02 15:04 MST"}}.</p>
{{end}}</body></html>
`))

func linkPage(w http.ResponseWriter, status int, v linkView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = linkTemplate.Execute(w, v)
}
