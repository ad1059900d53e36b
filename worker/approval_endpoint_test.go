package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/mocks"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// testIssuer is the emulator as the OpenID Connect issuer of ID tokens.
type testIssuer struct {
	emu *gcpemu.Emulator
	url string
}

func newTestIssuer(t *testing.T) testIssuer {
	t.Helper()
	emu, err := gcpemu.New(gcpemu.Config{Operator: "gkewi-worker@ops.iam.gserviceaccount.com"})
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		_ = emu.Close()
	})
	return testIssuer{emu: emu, url: srv.URL}
}

// token is a verified-email ID token of email for audience.
func (i testIssuer) token(t *testing.T, email, audience string) string {
	t.Helper()
	tok, err := i.emu.MintIDToken(i.url, gcpemu.IDTokenClaims{Email: email, Audience: audience, EmailVerified: true})
	require.NoError(t, err)
	return tok
}

const (
	grantID  = "gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto"
	runID    = "run-1"
	approver = "alice@example.com"
)

var endpointSecret = []byte("0123456789abcdef0123456789abcdef")

// endpointFixture is an approval endpoint with a real attestor, a mocked
// Temporal client, a fixed clock (buckets never refill) and its log.
type endpointFixture struct {
	e        *approvalEndpoint
	iss      testIssuer
	temporal *mocks.Client
	attestor *activities.Attestor
	log      *bytes.Buffer
}

func newEndpointFixture(t *testing.T, iss testIssuer) endpointFixture {
	t.Helper()
	f := endpointFixture{
		iss:      iss,
		temporal: mocks.NewClient(t),
		attestor: activities.NewAttestor(activities.AttestorConfig{Secret: endpointSecret, Issuer: iss.url}),
		log:      &bytes.Buffer{},
	}
	logger := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.e = newApprovalEndpoint(f.attestor, f.temporal, logger)
	now := time.Now()
	f.e.now = func() time.Time { return now }
	return f
}

// do serves one request from remote (host:port) and returns the answer.
func (f endpointFixture) do(method, path, remote, token string, body any) *httptest.ResponseRecorder {
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	r := httptest.NewRequest(method, path, bytes.NewReader(b))
	r.RemoteAddr = remote
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	f.e.ServeHTTP(w, r)
	return w
}

func decision(runID string, approved bool) DecisionRequest {
	return DecisionRequest{WorkflowID: grantID, RunID: runID, Approved: &approved, Ticket: "SUP-1"}
}

func described(runID string) *workflowservice.DescribeWorkflowExecutionResponse {
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: grantID, RunId: runID},
	}}
}

// A caller who proves nothing gets the same answer whether the grant exists
// or not, and nothing is looked up for it.
func TestEndpointUnauthenticatedAnswersAlikeWhetherTheGrantExistsOrNot(t *testing.T) {
	iss := newTestIssuer(t)
	exists := newEndpointFixture(t, iss)
	exists.temporal.On("DescribeWorkflowExecution", mock.Anything, grantID, "").Return(described(runID), nil).Maybe()
	missing := newEndpointFixture(t, iss)
	missing.temporal.On("DescribeWorkflowExecution", mock.Anything, grantID, "").Return(nil, serviceerror.NewNotFound("not found")).Maybe()

	unverified, err := iss.emu.MintIDToken(iss.url, gcpemu.IDTokenClaims{Email: approver, Audience: grantID})
	require.NoError(t, err)
	tokens := map[string]string{
		"no token":           "",
		"not a token":        "not-a-token",
		"another audience":   iss.token(t, approver, "gkewi-onboard/other/europe-west1/c/ns/r"),
		"unverified email":   unverified,
		"another issuer":     newTestIssuer(t).token(t, approver, grantID),
		"tampered signature": iss.token(t, approver, grantID) + "x",
	}
	for name, token := range tokens {
		t.Run(name, func(t *testing.T) {
			a := exists.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", token, decision(runID, true))
			b := missing.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", token, decision(runID, true))
			assert.Equal(t, http.StatusUnauthorized, a.Code, a.Body.String())
			assert.Equal(t, a.Code, b.Code)
			assert.Equal(t, a.Body.String(), b.Body.String())
			assert.Equal(t, a.Header(), b.Header())
		})
	}
	exists.temporal.AssertNotCalled(t, "DescribeWorkflowExecution", mock.Anything, mock.Anything, mock.Anything)
	missing.temporal.AssertNotCalled(t, "DescribeWorkflowExecution", mock.Anything, mock.Anything, mock.Anything)
}

// A decision names the run the approver reviewed; the proven one reaches it.
func TestEndpointDecisionNeedsTheRunReviewed(t *testing.T) {
	f := newEndpointFixture(t, newTestIssuer(t))
	token := f.iss.token(t, approver, grantID)
	for _, tok := range []string{"not-a-token", token} {
		w := f.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", tok, decision("", true))
		assert.Equal(t, http.StatusBadRequest, w.Code)
		assert.Contains(t, w.Body.String(), "runId is required: the run you reviewed (the support email and gkewi status name it)")
	}

	f.temporal.On("DescribeWorkflowExecution", mock.Anything, grantID, "").Return(described(runID), nil)
	w := f.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", token, decision("an-earlier-run", true))
	assert.Equal(t, http.StatusConflict, w.Code)
	assert.Contains(t, w.Body.String(), "run an-earlier-run of "+grantID+" is no longer the onboarding's current run (run-1)")

	handle := mocks.NewWorkflowUpdateHandle(t)
	handle.On("Get", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		*args.Get(1).(*workflows.State) = workflows.StateApproved
	}).Return(nil)
	var sent client.UpdateWorkflowOptions
	f.temporal.On("UpdateWorkflow", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		sent = args.Get(1).(client.UpdateWorkflowOptions)
	}).Return(handle, nil)
	w = f.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", token, decision(runID, true))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	assert.JSONEq(t, `{"workflowId":"`+grantID+`","runId":"run-1","approver":"alice@example.com","state":"approved"}`, w.Body.String())
	assert.Equal(t, runID, sent.RunID)
	d := sent.Args[0].(workflows.ApprovalDecision)
	require.NotNil(t, d.Proof)
	assert.Equal(t, activities.ProofCheck{Valid: true}, f.attestor.Check(activities.CheckProofInput{
		WorkflowID: grantID, RunID: runID, Approved: true, Approver: approver, Ticket: "SUP-1", Proof: *d.Proof,
	}))
	assert.NotContains(t, f.log.String(), token)
}

// No answer may be kept by a browser or proxy: JSON or link page, success or
// refusal.
func TestEndpointAnswersAreNotStored(t *testing.T) {
	f := newEndpointFixture(t, newTestIssuer(t))
	link, err := f.attestor.SignLink(activities.LinkClaims{WorkflowID: grantID, RunID: runID, Approver: approver, Approved: true, Expires: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	f.temporal.On("DescribeWorkflowExecution", mock.Anything, grantID, "").Return(nil, serviceerror.NewNotFound("not found"))
	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
	}{
		{"link page", http.MethodGet, activities.LinkPath + link, "", nil, http.StatusOK},
		{"forged link", http.MethodGet, activities.LinkPath + "forged.link", "", nil, http.StatusUnauthorized},
		{"no token", http.MethodPost, DecisionPath, "", decision(runID, true), http.StatusUnauthorized},
		{"no such grant", http.MethodPost, DecisionPath, f.iss.token(t, approver, grantID), decision(runID, true), http.StatusNotFound},
		{"bad body", http.MethodPost, DecisionPath, "t", "{", http.StatusBadRequest},
		{"GET a decision", http.MethodGet, DecisionPath, "", nil, http.StatusMethodNotAllowed},
		{"unknown path", http.MethodGet, "/v1/else", "", nil, http.StatusNotFound},
		{"request without token", http.MethodPost, RequestPath, "", RequestSubmission{}, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(tc.method, tc.path, "192.0.2.1:1000", tc.token, tc.body)
			assert.Equal(t, tc.status, w.Code, w.Body.String())
			assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
		})
	}
}

// Each caller and each grant has a budget; past it the endpoint answers 429
// with Retry-After, and other callers and grants are unaffected.
func TestEndpointRateLimits(t *testing.T) {
	t.Run("per client", func(t *testing.T) {
		f := newEndpointFixture(t, newTestIssuer(t))
		for i := range clientBurst {
			w := f.do(http.MethodPost, DecisionPath, "192.0.2.1:1000", "", decision(runID, true))
			require.Equal(t, http.StatusUnauthorized, w.Code, "request %d", i)
		}
		// The port is not the client: a new connection is the same caller.
		w := f.do(http.MethodPost, DecisionPath, "192.0.2.1:2000", "", decision(runID, true))
		assert.Equal(t, http.StatusTooManyRequests, w.Code)
		assert.Equal(t, "1", w.Header().Get("Retry-After"))
		assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
		assert.Contains(t, w.Body.String(), "too many requests")

		w = f.do(http.MethodGet, activities.LinkPath+"a.b", "192.0.2.1:1000", "", nil)
		assert.Equal(t, http.StatusTooManyRequests, w.Code)
		assert.Contains(t, w.Header().Get("Content-Type"), "text/html")

		w = f.do(http.MethodPost, DecisionPath, "192.0.2.2:1000", "", decision(runID, true))
		assert.Equal(t, http.StatusUnauthorized, w.Code, "another client")
	})
	t.Run("per grant", func(t *testing.T) {
		f := newEndpointFixture(t, newTestIssuer(t))
		f.temporal.On("DescribeWorkflowExecution", mock.Anything, grantID, "").Return(nil, serviceerror.NewNotFound("not found"))
		token := f.iss.token(t, approver, grantID)
		for i := range grantBurst {
			w := f.do(http.MethodPost, DecisionPath, fmt.Sprintf("192.0.2.%d:1000", 10+i), token, decision(runID, true))
			require.Equal(t, http.StatusNotFound, w.Code, "request %d", i)
		}
		w := f.do(http.MethodPost, DecisionPath, "198.51.100.1:1000", token, decision(runID, true))
		assert.Equal(t, http.StatusTooManyRequests, w.Code)
		assert.Equal(t, "1", w.Header().Get("Retry-After"))
		f.temporal.AssertNumberOfCalls(t, "DescribeWorkflowExecution", grantBurst)
	})
}

// The buckets are bounded: idle ones go first, else the one idle longest.
func TestKeyedLimiterStaysBounded(t *testing.T) {
	k := newKeyedLimiter(1, 2, 3)
	t0 := time.Now()
	for i, key := range []string{"a", "b", "c"} {
		assert.Zero(t, k.take(key, t0.Add(time.Duration(i)*time.Millisecond)))
	}
	assert.Zero(t, k.take("d", t0.Add(time.Second)))
	assert.Len(t, k.buckets, 3)
	assert.NotContains(t, k.buckets, "a", "the one idle longest")

	assert.Zero(t, k.take("e", t0.Add(time.Hour)))
	assert.Len(t, k.buckets, 1, "all the others refilled and were forgotten")

	assert.Zero(t, k.take("e", t0.Add(time.Hour)))
	assert.Equal(t, time.Second, k.take("e", t0.Add(time.Hour)))
}

// onboardRequest is a valid request with values the JSON round trip must
// keep as they are.
func onboardRequest() workflows.OnboardRequest {
	return workflows.OnboardRequest{
		Project: "acme-prod", Location: "europe-west1", Cluster: "gke-main", Namespace: "carto",
		GSA: workflows.GSASpec{AccountID: "carto-backend"},
		Helm: workflows.HelmSpec{Release: "carto", Chart: "carto", RepoURL: "https://helm.carto.com",
			Values: map[string]any{"replicas": 2, "ratio": 0.1, "zones": []any{"b", "a"}}},
		Support: workflows.SupportSpec{Approvers: []string{approver}, Notify: []string{"support@example.com"}},
	}
}

// A requester who proves who they are has the endpoint start the onboarding
// with its attestation, bound to the request as the workflow will read it.
func TestEndpointStartsProvenRequests(t *testing.T) {
	f := newEndpointFixture(t, newTestIssuer(t))
	req := onboardRequest()
	require.Equal(t, grantID, workflows.OnboardWorkflowID(req))
	const requester = "rita@example.com"

	w := f.do(http.MethodPost, RequestPath, "192.0.2.1:1000", f.iss.token(t, requester, "gkewi-onboard/other/europe-west1/c/ns/r"), RequestSubmission{Request: &req})
	assert.Equal(t, http.StatusUnauthorized, w.Code, w.Body.String())
	assert.Contains(t, w.Body.String(), "ID token refused")

	token := f.iss.token(t, requester, grantID)
	var opts client.StartWorkflowOptions
	var started workflows.OnboardRequest
	run := mocks.NewWorkflowRun(t)
	run.On("GetRunID").Return("run-9")
	f.temporal.On("ExecuteWorkflow", mock.Anything, mock.Anything, workflows.OnboardWorkflowName, mock.Anything).Run(func(args mock.Arguments) {
		opts, started = args.Get(1).(client.StartWorkflowOptions), args.Get(3).(workflows.OnboardRequest)
	}).Return(run, nil).Once()
	w = f.do(http.MethodPost, RequestPath, "192.0.2.1:1000", token, RequestSubmission{Request: &req})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	var resp RequestResponse
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
	assert.Equal(t, RequestResponse{WorkflowID: grantID, RunID: "run-9", Requester: requester}, resp)

	assert.Equal(t, grantID, opts.ID)
	assert.Equal(t, workflows.TaskQueue, opts.TaskQueue)
	assert.Equal(t, enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL, opts.WorkflowIDConflictPolicy)
	assert.Equal(t, enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE, opts.WorkflowIDReusePolicy)
	assert.True(t, opts.WorkflowExecutionErrorWhenAlreadyStarted)
	assert.Equal(t, OnboardMemo(req), opts.Memo)
	require.NotNil(t, started.Requester)
	assert.Equal(t, requester, started.Requester.Email)
	assert.Equal(t, grantID, started.Requester.WorkflowID)
	signed, err := started.SignedJSON()
	require.NoError(t, err)
	assert.Equal(t, activities.RequestDigest(signed), started.Requester.RequestSHA256)
	sent, err := req.SignedJSON()
	require.NoError(t, err)
	assert.Equal(t, activities.RequestDigest(sent), started.Requester.RequestSHA256, "the request as sent")
	// The workflow reads the request back from its JSON input.
	payload, err := json.Marshal(started)
	require.NoError(t, err)
	var read workflows.OnboardRequest
	require.NoError(t, json.Unmarshal(payload, &read))
	readSigned, err := read.SignedJSON()
	require.NoError(t, err)
	assert.Equal(t, started.Requester.RequestSHA256, activities.RequestDigest(readSigned))
	assert.NotContains(t, f.log.String(), token)
}

// Requests the endpoint refuses before starting anything.
func TestEndpointRefusesBadRequests(t *testing.T) {
	f := newEndpointFixture(t, newTestIssuer(t))
	req := onboardRequest()
	token := f.iss.token(t, "rita@example.com", grantID)

	withRequester := req
	withRequester.Requester = &activities.RequesterProof{Email: "someone@example.com"}
	invalid := req
	invalid.Project = "Not A Project"
	body, err := json.Marshal(req)
	require.NoError(t, err)
	cases := []struct {
		name string
		body any
		want string
	}{
		{"requester already set", RequestSubmission{Request: &withRequester}, "the request carries a requester"},
		{"invalid request", RequestSubmission{Request: &invalid}, "invalid request: project"},
		{"no request", `{}`, "request is required"},
		{"unknown member", `{"request":` + string(body) + `,"requester":{}}`, `unknown field "requester"`},
		{"unknown member of the request", `{"request":{"projekt":"x"}}`, "projekt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(http.MethodPost, RequestPath, "192.0.2.1:1000", token, tc.body)
			assert.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
			var resp RequestResponse
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
			assert.Contains(t, resp.Error, tc.want)
		})
	}

	f.temporal.On("ExecuteWorkflow", mock.Anything, mock.Anything, workflows.OnboardWorkflowName, mock.Anything).
		Return(nil, serviceerror.NewWorkflowExecutionAlreadyStarted("running", "", "run-3"))
	w := f.do(http.MethodPost, RequestPath, "192.0.2.1:1000", token, RequestSubmission{Request: &req})
	assert.Equal(t, http.StatusConflict, w.Code, w.Body.String())
	assert.Contains(t, w.Body.String(), "an onboarding of this grant is already running (run run-3)")
	assert.False(t, strings.Contains(f.log.String(), token), "the token is never logged")
}

// A signed link shows its decision on GET and decides on POST, for the run
// it was made for.
func TestEndpointLinkDecides(t *testing.T) {
	f := newEndpointFixture(t, newTestIssuer(t))
	link, err := f.attestor.SignLink(activities.LinkClaims{WorkflowID: grantID, RunID: runID, Approver: approver, Approved: true, Expires: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	w := f.do(http.MethodGet, activities.LinkPath+link, "192.0.2.1:1000", "", nil)
	require.Equal(t, http.StatusOK, w.Code)
	assert.Contains(t, w.Body.String(), `<form method="post"><button type="submit">Approve</button></form>`)

	handle := mocks.NewWorkflowUpdateHandle(t)
	handle.On("Get", mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
		*args.Get(1).(*workflows.State) = workflows.StateApproved
	}).Return(nil)
	f.temporal.On("UpdateWorkflow", mock.Anything, mock.MatchedBy(func(o client.UpdateWorkflowOptions) bool {
		return o.WorkflowID == grantID && o.RunID == runID
	})).Return(handle, nil).Once()
	w = f.do(http.MethodPost, activities.LinkPath+link, "192.0.2.1:1000", "", nil)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	assert.Contains(t, w.Body.String(), "Approved as alice@example.com: the onboarding "+grantID+" is now approved.")
}
