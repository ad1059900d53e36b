package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/fx"
	"golang.org/x/time/rate"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
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
		Handler:           newApprovalEndpoint(approvals, c, logger),
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

// Paths of the approval endpoint.
const (
	// DecisionPath is where the approval endpoint takes decisions.
	DecisionPath = "/v1/decisions"
	// RequestPath is where it takes onboarding requests from requesters who
	// prove who they are, and starts them.
	RequestPath = "/v1/requests"
)

// DecisionRequest is the body of POST /v1/decisions; the approver's ID token,
// with the workflow ID as its audience, is the bearer token.
type DecisionRequest struct {
	WorkflowID string `json:"workflowId"`
	// RunID is the run the approver reviewed (the support email names it),
	// required: a decision for another run is refused, so a grant restarted
	// under the same workflow ID is not decided by a decision meant for its
	// earlier run.
	RunID    string `json:"runId"`
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

// RequestSubmission is the body of POST /v1/requests; the requester's ID
// token, with the grant's workflow ID (gkewi id) as its audience, is the
// bearer token.
type RequestSubmission struct {
	// Request is the onboarding request, without a requester: the endpoint
	// attests that from the token.
	Request *workflows.OnboardRequest `json:"request"`
}

// RequestResponse is the endpoint's answer to a request: the run it started
// and who proved they asked for it, or why it was refused.
type RequestResponse struct {
	WorkflowID string `json:"workflowId,omitempty"`
	RunID      string `json:"runId,omitempty"`
	Requester  string `json:"requester,omitempty"`
	Error      string `json:"error,omitempty"`
}

// MemoApprovalTimeout keeps an onboarding's approval timeout in the memo given
// at start (no workflow code involved), so `gkewi list --pending` can tell
// deadlines from visibility alone. gkewi onboard and the endpoint both set it.
const MemoApprovalTimeout = "gkewiApprovalTimeout"

// OnboardMemo is the memo an onboarding of req starts with.
func OnboardMemo(req workflows.OnboardRequest) map[string]any {
	return map[string]any{MemoApprovalTimeout: string(req.WithDefaults().Support.ApprovalTimeout)}
}

// Rate limits of the endpoint. A person deciding or requesting sends a few
// requests a minute; these leave them room and keep a flood of them (each
// one a token check, a Temporal call or both) from reaching the workers'
// Temporal namespace or the issuer's key endpoint.
const (
	clientRate  = rate.Limit(1) // requests per second from one address
	clientBurst = 10
	grantRate   = rate.Limit(1) // requests per second for one grant
	grantBurst  = 5
	// maxLimited bounds each map of buckets, so callers who make up
	// addresses or workflow IDs cannot make it grow without bound.
	maxLimited = 10000
)

// approvalEndpoint verifies an approver's ID token, then sends the decision
// with the worker's attestation of the token's claims as the support-decision
// update and answers with the workflow's verdict; it starts the onboarding of
// a requester who proves who they are the same way. The token goes no further:
// neither the history nor the logs see it.
type approvalEndpoint struct {
	approvals *activities.Attestor
	temporal  client.Client
	logger    *slog.Logger
	// clients limits each caller by remote address, grants each grant by
	// workflow ID, once its caller is proven.
	clients, grants *keyedLimiter
	now             func() time.Time
}

func newApprovalEndpoint(approvals *activities.Attestor, c client.Client, logger *slog.Logger) *approvalEndpoint {
	return &approvalEndpoint{
		approvals: approvals, temporal: c, logger: logger,
		clients: newKeyedLimiter(clientRate, clientBurst, maxLimited),
		grants:  newKeyedLimiter(grantRate, grantBurst, maxLimited),
		now:     time.Now,
	}
}

func (e *approvalEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Answers name grants and approvers, and link pages carry a link that
	// decides: no browser or proxy may keep one.
	w.Header().Set("Cache-Control", "no-store")
	if e.throttle(w, r, e.clients, clientAddr(r)) {
		return
	}
	if token, ok := strings.CutPrefix(r.URL.Path, activities.LinkPath); ok {
		e.serveLink(w, r, token)
		return
	}
	switch r.URL.Path {
	case DecisionPath:
		e.serveDecision(w, r)
	case RequestPath:
		e.serveRequest(w, r)
	default:
		http.NotFound(w, r)
	}
}

// clientAddr is the caller's IP address. Not X-Forwarded-For: any caller
// writes what it likes there, and would get a fresh bucket with each value.
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// throttle takes one request of key's budget in lim; when none is left it
// answers 429 with Retry-After (a page on link paths) and reports true.
func (e *approvalEndpoint) throttle(w http.ResponseWriter, r *http.Request, lim *keyedLimiter, key string) bool {
	wait := lim.take(key, e.now())
	if wait <= 0 {
		return false
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	msg := fmt.Sprintf("too many requests: try again in %d s", secs)
	e.logger.Debug("throttled", "path", r.URL.Path, "retryAfter", secs)
	if strings.HasPrefix(r.URL.Path, activities.LinkPath) {
		linkPage(w, http.StatusTooManyRequests, linkView{Error: msg})
	} else {
		answer(w, http.StatusTooManyRequests, DecisionResponse{Error: msg})
	}
	return true
}

// postOnly answers anything but a POST with 405 and reports false.
func postOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	if r.Method == http.MethodPost {
		return true
	}
	w.Header().Set("Allow", http.MethodPost)
	answer(w, http.StatusMethodNotAllowed, DecisionResponse{Error: "POST " + what + " to " + r.URL.Path})
	return false
}

// bearerToken is the request's bearer token, or false.
func bearerToken(r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	return token, ok && token != ""
}

func (e *approvalEndpoint) serveDecision(w http.ResponseWriter, r *http.Request) {
	if !postOnly(w, r, "a decision") {
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		answer(w, http.StatusUnauthorized, DecisionResponse{Error: "send your ID token as Authorization: Bearer TOKEN, with the workflow ID as its audience " +
			"(gcloud auth print-identity-token --audiences=WORKFLOW_ID --include-email)"})
		return
	}
	req, err := readDecision(w, r)
	if err != nil {
		answer(w, http.StatusBadRequest, DecisionResponse{Error: err.Error()})
		return
	}
	// The token first, before anything is looked up: a caller who proves
	// nothing gets the same answer whether the grant exists or not.
	v, err := e.approvals.Verify(r.Context(), req.WorkflowID, token)
	if err != nil {
		msg, status := refusedProof(err)
		e.answerDecision(w, req, DecisionResponse{WorkflowID: req.WorkflowID, Error: msg}, status)
		return
	}
	if e.throttle(w, r, e.grants, req.WorkflowID) {
		return
	}
	resp, status := e.decide(r.Context(), req, v)
	e.answerDecision(w, req, resp, status)
}

// readDecision decodes and checks a decision body.
func readDecision(w http.ResponseWriter, r *http.Request) (DecisionRequest, error) {
	var req DecisionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("decision body: %w", err)
	}
	switch {
	case req.WorkflowID == "":
		return req, errors.New("workflowId is required")
	case req.RunID == "":
		return req, errors.New("runId is required: the run you reviewed (the support email and gkewi status name it)")
	case req.Approved == nil:
		return req, errors.New("approved is required: true or false")
	}
	return req, nil
}

func (e *approvalEndpoint) answerDecision(w http.ResponseWriter, req DecisionRequest, resp DecisionResponse, status int) {
	e.logger.Info("decision", "workflow", req.WorkflowID, "run", req.RunID, "approved", *req.Approved, "approver", resp.Approver,
		"status", status, "state", resp.State, "error", resp.Error)
	answer(w, status, resp)
}

// decide hands the decision req, whose approver v proved who they are, to
// the run they reviewed.
func (e *approvalEndpoint) decide(ctx context.Context, req DecisionRequest, v activities.VerifiedToken) (DecisionResponse, int) {
	out := DecisionResponse{WorkflowID: req.WorkflowID, Approver: v.Email}
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
	if req.RunID != out.RunID {
		out.Error = fmt.Sprintf("run %s of %s is no longer the onboarding's current run (%s): review the current one before deciding", req.RunID, req.WorkflowID, out.RunID)
		return out, http.StatusConflict
	}
	d := activities.AttestedDecision{WorkflowID: req.WorkflowID, Approved: *req.Approved, Ticket: req.Ticket, Comment: req.Comment}
	return e.send(ctx, out, d, e.approvals.AttestVerified(d, out.RunID, v))
}

// refusedProof says why a token or link proves nothing (401), or why it could
// not be checked (503).
func refusedProof(err error) (string, int) {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() == contract.ErrTypeProofRefused {
		return appErr.Message(), http.StatusUnauthorized
	}
	return err.Error(), http.StatusServiceUnavailable
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

// serveRequest starts the onboarding of a requester who proves who they are:
// the run carries the worker's attestation of their token, bound to the
// request, which the grant policy may require and which names them.
func (e *approvalEndpoint) serveRequest(w http.ResponseWriter, r *http.Request) {
	if !postOnly(w, r, "an onboarding request") {
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		answer(w, http.StatusUnauthorized, RequestResponse{Error: "send your ID token as Authorization: Bearer TOKEN, with the grant's workflow ID (gkewi id) as its audience " +
			"(gcloud auth print-identity-token --audiences=WORKFLOW_ID --include-email)"})
		return
	}
	req, err := readSubmission(w, r)
	if err != nil {
		answer(w, http.StatusBadRequest, RequestResponse{Error: err.Error()})
		return
	}
	out := RequestResponse{WorkflowID: workflows.OnboardWorkflowID(req)}
	proof, err := e.attestRequester(r.Context(), req, out.WorkflowID, token)
	if err != nil {
		var status int
		out.Error, status = refusedProof(err)
		e.answerRequest(w, out, status)
		return
	}
	if e.throttle(w, r, e.grants, out.WorkflowID) {
		return
	}
	out, status := e.start(r.Context(), out, req, proof)
	e.answerRequest(w, out, status)
}

// readSubmission decodes a request body and validates its request; members
// the request does not know are refused by Validate, members of the body by
// the decoder.
func readSubmission(w http.ResponseWriter, r *http.Request) (workflows.OnboardRequest, error) {
	var s RequestSubmission
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return workflows.OnboardRequest{}, fmt.Errorf("request body: %w", err)
	}
	switch {
	case s.Request == nil:
		return workflows.OnboardRequest{}, errors.New(`request is required: {"request": ONBOARDING_REQUEST}`)
	case s.Request.Requester != nil:
		return workflows.OnboardRequest{}, errors.New("the request carries a requester: leave it out, the endpoint attests it from your ID token")
	}
	if err := s.Request.Validate(); err != nil {
		return workflows.OnboardRequest{}, err
	}
	return *s.Request, nil
}

// attestRequester verifies token for the grant workflowID and attests that its
// holder sent req, as the workflow reads it back (SignedJSON).
func (e *approvalEndpoint) attestRequester(ctx context.Context, req workflows.OnboardRequest, workflowID, token string) (activities.RequesterProof, error) {
	signed, err := req.SignedJSON()
	if err != nil {
		return activities.RequesterProof{}, fmt.Errorf("encoding the request: %w", err)
	}
	return e.approvals.AttestRequester(ctx, workflowID, signed, token)
}

// start starts the onboarding of req with its requester's proof, at once: the
// workflow accepts the proof only near the time it was made.
func (e *approvalEndpoint) start(ctx context.Context, out RequestResponse, req workflows.OnboardRequest, proof activities.RequesterProof) (RequestResponse, int) {
	out.Requester = proof.Email
	req.Requester = &proof
	run, err := e.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       out.WorkflowID,
		TaskQueue:                workflows.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// Else the SDK hands back the running run as if it were this one.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo:                                     OnboardMemo(req),
	}, workflows.OnboardWorkflowName, req)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case errors.As(err, &started):
		out.RunID = started.RunId
		out.Error = fmt.Sprintf("an onboarding of this grant is already running (run %s); follow it with: gkewi status --workflow-id %s",
			started.RunId, text.ShellQuote(out.WorkflowID))
		return out, http.StatusConflict
	case err != nil:
		out.Error = "starting the onboarding: " + err.Error()
		return out, http.StatusBadGateway
	}
	out.RunID = run.GetRunID()
	return out, http.StatusCreated
}

func (e *approvalEndpoint) answerRequest(w http.ResponseWriter, out RequestResponse, status int) {
	e.logger.Info("onboarding request", "workflow", out.WorkflowID, "run", out.RunID, "requester", out.Requester,
		"status", status, "error", out.Error)
	answer(w, status, out)
}

func answer(w http.ResponseWriter, status int, resp any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// keyedLimiter is a token bucket per key (a caller's address, a grant), at
// most capacity of them.
type keyedLimiter struct {
	limit    rate.Limit
	burst    int
	capacity int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(limit rate.Limit, burst, capacity int) *keyedLimiter {
	return &keyedLimiter{limit: limit, burst: burst, capacity: capacity, buckets: map[string]*bucket{}}
}

// take spends one token of key's bucket at now and returns 0, or, when the
// bucket is empty, spends nothing and returns how long until it holds one.
func (k *keyedLimiter) take(key string, now time.Time) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok {
		k.makeRoom(now)
		b = &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
		k.buckets[key] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return wait
	}
	return 0
}

// makeRoom keeps the buckets under capacity: it drops those idle long enough to
// have refilled (forgetting a full bucket loses nothing) and, should all be
// busy (a flood from many addresses), the one idle longest.
func (k *keyedLimiter) makeRoom(now time.Time) {
	if len(k.buckets) < k.capacity {
		return
	}
	refill := time.Duration(float64(k.burst) / float64(k.limit) * float64(time.Second))
	var oldest string
	var oldestSeen time.Time
	for key, b := range k.buckets {
		switch {
		case now.Sub(b.seen) >= refill:
			delete(k.buckets, key)
		case oldestSeen.IsZero() || b.seen.Before(oldestSeen):
			oldest, oldestSeen = key, b.seen
		}
	}
	if len(k.buckets) >= k.capacity {
		delete(k.buckets, oldest)
	}
}

// serveLink serves a signed decision link of the support email. GET shows
// what the link decides and a button; only POST decides, so mail scanners
// that follow links decide nothing.
func (e *approvalEndpoint) serveLink(w http.ResponseWriter, r *http.Request, token string) {
	claims, err := e.approvals.OpenLink(token)
	if err != nil {
		msg, status := refusedProof(err)
		linkPage(w, status, linkView{Error: msg})
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
		if e.throttle(w, r, e.grants, claims.WorkflowID) {
			return
		}
		out, status := e.decideByLink(r.Context(), claims, token)
		view.Done, view.State, view.Error = status == http.StatusOK, out.State, out.Error
		linkPage(w, status, view)
	default:
		w.Header().Set("Allow", "GET, POST")
		linkPage(w, http.StatusMethodNotAllowed, linkView{Error: "open the link, then press the button"})
	}
}

// decideByLink sends the decision of the link token, whose claims are open.
func (e *approvalEndpoint) decideByLink(ctx context.Context, claims activities.LinkClaims, token string) (DecisionResponse, int) {
	out := DecisionResponse{WorkflowID: claims.WorkflowID, RunID: claims.RunID}
	var status int
	d, proof, err := e.approvals.AttestLink(token)
	if err != nil {
		out.Error, status = refusedProof(err)
	} else {
		out, status = e.send(ctx, out, d, proof)
	}
	e.logger.Info("decision by link", "workflow", claims.WorkflowID, "run", claims.RunID, "approved", claims.Approved, "approver", claims.Approver,
		"status", status, "state", out.State, "error", out.Error)
	return out, status
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
