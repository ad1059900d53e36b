package activities

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/smtpsink"
)

const testWorkflowID = "gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend"

func testNotification(kind string, targets ...string) Notification {
	return Notification{
		Kind:       kind,
		Targets:    targets,
		WorkflowID: testWorkflowID,
		RunID:      "0195f1c2-run",
		Project:    "acme-prod",
		Location:   "europe-west1",
		Cluster:    "gke-main",
		Namespace:  "carto",
		KSA:        "carto-common-backend",
		GSAEmail:   "carto-wi@acme-prod.iam.gserviceaccount.com",
	}
}

// webhookRecorder is a Slack-style endpoint that records each POST.
type webhookRecorder struct {
	mu     sync.Mutex
	bodies [][]byte
	status int
	srv    *httptest.Server
}

func newWebhook(t *testing.T, status int) *webhookRecorder {
	t.Helper()
	w := &webhookRecorder{status: status}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			http.Error(rw, "bad request", http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.bodies = append(w.bodies, body)
		w.mu.Unlock()
		rw.WriteHeader(w.status)
		_, _ = io.WriteString(rw, "ok")
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookRecorder) url() string { return w.srv.URL + "/services/T000/B000/secret-token" }

func (w *webhookRecorder) received() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.bodies...)
}

// secureSink is an SMTP relay that insists on STARTTLS and AUTH PLAIN, with the files
// a worker would be configured with.
type secureSink struct {
	sink         *smtpsink.Sink
	caFile       string
	passwordFile string
}

func startSecureSink(t *testing.T, opts smtpsink.Options) secureSink {
	t.Helper()
	cert, err := smtpsink.NewSelfSigned("127.0.0.1")
	require.NoError(t, err)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, cert.CertPEM, 0o600))
	passwordFile := filepath.Join(dir, "smtp-password")
	require.NoError(t, os.WriteFile(passwordFile, []byte("relay-pass\n"), 0o600))

	opts.TLSConfig = cert.ServerTLS
	opts.RequireTLS = true
	opts.Users = map[string]string{"gkewi": "relay-pass"}
	sink, err := smtpsink.Start("127.0.0.1:0", opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sink.Close() })
	return secureSink{sink: sink, caFile: caFile, passwordFile: passwordFile}
}

func (s secureSink) smtpConfig() SMTPConfig {
	return SMTPConfig{
		Addr:         s.sink.Addr(),
		From:         "gkewi@acme.example",
		Username:     "gkewi",
		PasswordFile: s.passwordFile,
		StartTLS:     true,
		CAFile:       s.caFile,
	}
}

func testNotifierConfig(smtp SMTPConfig) NotifierConfig {
	return NotifierConfig{
		SMTP:              smtp,
		WebhookTimeout:    5 * time.Second,
		TemporalUIURL:     "http://localhost:8233/",
		TemporalNamespace: "default",
		TaskQueue:         "gkewi",
	}
}

// The commands support pastes, written out literally: they are the contract with
// the people reading the notification.
const (
	wantSignalApprove = `temporal workflow signal --workflow-id 'gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --name support-approval --input '{"approved":true,"approver":"YOU@example.com","ticket":"TICKET"}'`
	wantSignalReject  = `temporal workflow signal --workflow-id 'gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --name support-approval --input '{"approved":false,"approver":"YOU@example.com","ticket":"TICKET","comment":"REASON"}'`
	wantUpdateApprove = `temporal workflow update execute --workflow-id 'gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --name support-decision --input '{"approved":true,"approver":"YOU@example.com","ticket":"TICKET"}'`
	wantGkewiApprove  = `gkewi approve --workflow-id 'gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --approver YOU@example.com --ticket TICKET`
	wantGkewiReject   = `gkewi reject --workflow-id 'gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --approver YOU@example.com --ticket TICKET --comment REASON`
	wantUILink        = `http://localhost:8233/namespaces/default/workflows/gkewi-onboard%2Facme-prod%2Feurope-west1%2Fgke-main%2Fcarto%2Fcarto-common-backend/0195f1c2-run`
)

func TestApprovalRequestReachesEmailAndWebhook(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{})
	hook := newWebhook(t, http.StatusOK)
	n := NewNotifier(testNotifierConfig(relay.smtpConfig()))

	var env testsuite.WorkflowTestSuite
	aenv := env.NewTestActivityEnvironment()
	aenv.RegisterActivity(n)
	in := testNotification(contract.NotifyApprovalRequest, "support@acme.example", "Oncall <oncall@acme.example>", hook.url())
	val, err := aenv.ExecuteActivity(n.NotifySupport, in)
	require.NoError(t, err)
	var res NotifyResult
	require.NoError(t, val.Get(&res))
	assert.Equal(t, []string{"support@acme.example", "Oncall <oncall@acme.example>", hook.url()}, res.Delivered)
	assert.Empty(t, res.Failed)

	// One message for both addresses, over TLS, authenticated.
	msgs := relay.sink.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, "gkewi@acme.example", m.From)
	assert.Equal(t, []string{"support@acme.example", "oncall@acme.example"}, m.To)
	assert.True(t, m.TLS)
	assert.Equal(t, "gkewi", m.AuthUser)

	parsed, err := mail.ReadMessage(strings.NewReader(string(m.Data)))
	require.NoError(t, err)
	assert.Equal(t, "[gkewi] Approval needed: Workload Identity for carto/carto-common-backend in acme-prod/gke-main", parsed.Header.Get("Subject"))
	assert.Equal(t, "support@acme.example, oncall@acme.example", parsed.Header.Get("To"))
	assert.Equal(t, "auto-generated", parsed.Header.Get("Auto-Submitted"))
	assert.Regexp(t, `^<gkewi\.[0-9a-f]{24}@acme\.example>$`, parsed.Header.Get("Message-Id"))
	body, err := io.ReadAll(parsed.Body)
	require.NoError(t, err)
	text := string(body)
	for _, want := range []string{
		"Project:       acme-prod",
		"Cluster:       gke-main",
		"Location:      europe-west1",
		"Namespace:     carto",
		"Kubernetes SA: carto-common-backend",
		"Google SA:     carto-wi@acme-prod.iam.gserviceaccount.com",
		"Member:        serviceAccount:acme-prod.svc.id.goog[carto/carto-common-backend]",
		"Workflow ID:   " + testWorkflowID,
		"  " + wantSignalApprove + "\n",
		"  " + wantSignalReject + "\n",
		"  " + wantUpdateApprove + "\n",
		"  " + wantGkewiApprove + "\n",
		"  " + wantGkewiReject + "\n",
		"Temporal UI: " + wantUILink + "\n",
	} {
		assert.Contains(t, text, want)
	}

	// The webhook got a Slack-compatible payload carrying the same commands.
	bodies := hook.received()
	require.Len(t, bodies, 1)
	var payload struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
		} `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal(bodies[0], &payload))
	assert.Equal(t, parsed.Header.Get("Subject"), payload.Text)
	require.NotEmpty(t, payload.Blocks)
	assert.Equal(t, "header", payload.Blocks[0].Type)
	var mrkdwn []string
	for _, b := range payload.Blocks[1:] {
		assert.Equal(t, "section", b.Type)
		assert.Equal(t, "mrkdwn", b.Text.Type)
		mrkdwn = append(mrkdwn, b.Text.Text)
	}
	all := strings.Join(mrkdwn, "\n")
	assert.Contains(t, all, "*Google SA:* `carto-wi@acme-prod.iam.gserviceaccount.com`")
	assert.Contains(t, all, "*Cluster:* `gke-main`")
	assert.Contains(t, all, "```"+wantSignalApprove+"```")
	assert.Contains(t, all, "```"+wantSignalReject+"```")
	assert.Contains(t, all, "<"+wantUILink+"|Open the workflow in the Temporal UI>")
}

func TestMessageIDFollowsTheActivityIdentity(t *testing.T) {
	sink, err := smtpsink.Start("127.0.0.1:0", smtpsink.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, sink.Close()) }()
	n := NewNotifier(testNotifierConfig(SMTPConfig{Addr: sink.Addr(), From: "gkewi@acme.example"}))
	in := testNotification(contract.NotifyReminder, "support@acme.example")

	// Two test environments both run "activity 0 of the same workflow run", which is
	// what a retry of one activity looks like; the second call in one environment is
	// another activity.
	var suite testsuite.WorkflowTestSuite
	first, retry := suite.NewTestActivityEnvironment(), suite.NewTestActivityEnvironment()
	first.RegisterActivity(n)
	retry.RegisterActivity(n)
	for _, env := range []*testsuite.TestActivityEnvironment{first, retry, first} {
		_, err := env.ExecuteActivity(n.NotifySupport, in)
		require.NoError(t, err)
	}
	// Outside an activity there is no identity to derive it from: a fresh one.
	_, err = n.NotifySupport(context.Background(), in)
	require.NoError(t, err)

	msgs := sink.Messages()
	require.Len(t, msgs, 4)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		parsed, err := mail.ReadMessage(strings.NewReader(string(m.Data)))
		require.NoError(t, err)
		ids[i] = parsed.Header.Get("Message-Id")
		assert.Equal(t, "[gkewi] Reminder: approval still needed for carto/carto-common-backend in acme-prod/gke-main", parsed.Header.Get("Subject"))
	}
	assert.Equal(t, ids[0], ids[1], "a retry keeps the Message-ID")
	assert.NotEqual(t, ids[0], ids[2], "another activity gets another Message-ID")
	assert.NotEqual(t, ids[0], ids[3])
}

func TestOutcomeCarriesNoApprovalCommands(t *testing.T) {
	hook := newWebhook(t, http.StatusOK)
	cfg := testNotifierConfig(SMTPConfig{})
	cfg.TemporalUIURL = ""
	n := NewNotifier(cfg)
	in := testNotification(contract.NotifyOutcome, hook.url())
	in.Outcome = "completed: access verified"
	res, err := n.NotifySupport(context.Background(), in)
	require.NoError(t, err)
	assert.Equal(t, []string{hook.url()}, res.Delivered)

	bodies := hook.received()
	require.Len(t, bodies, 1)
	var payload slackPayload
	require.NoError(t, json.Unmarshal(bodies[0], &payload))
	assert.Equal(t, "[gkewi] Onboarding of carto/carto-common-backend in acme-prod/gke-main: completed: access verified", payload.Text)
	raw := string(bodies[0])
	assert.NotContains(t, raw, "support-approval")
	assert.NotContains(t, raw, "Temporal UI", "no UI URL configured, no link")
	assert.Contains(t, raw, "Outcome: completed: access verified")
}

func TestNonDefaultNamespaceAppearsInCommandsAndLink(t *testing.T) {
	cmds := buildApprovalCommands("gkewi-onboard/p/l/c/ns/k", "team-a")
	assert.Equal(t, `temporal workflow signal --namespace 'team-a' --workflow-id 'gkewi-onboard/p/l/c/ns/k' --name support-approval --input '{"approved":true,"approver":"YOU@example.com","ticket":"TICKET"}'`, cmds.signalApprove)
	assert.Equal(t, `gkewi approve --namespace 'team-a' --workflow-id 'gkewi-onboard/p/l/c/ns/k' --approver YOU@example.com --ticket TICKET`, cmds.gkewiApprove)
	assert.Equal(t, "https://ui.example/namespaces/team-a/workflows/it%27s", workflowUIURL("https://ui.example", "team-a", "it's", ""))
}

func applicationError(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an ApplicationError, got %T: %v", err, err)
	return appErr
}

func TestPartialFailureSucceedsAndRecordsMissedTargets(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{CheckRecipient: func(addr string) *smtpsink.Reply {
		if addr == "gone@acme.example" {
			return &smtpsink.Reply{Code: 550, Text: "5.1.1 no such user"}
		}
		return nil
	}})
	broken := newWebhook(t, http.StatusInternalServerError)
	n := NewNotifier(testNotifierConfig(relay.smtpConfig()))

	res, err := n.NotifySupport(context.Background(),
		testNotification(contract.NotifyApprovalRequest, "gone@acme.example", "support@acme.example", broken.url()))
	require.NoError(t, err, "one target was reached: no retry that would send it again")
	assert.Equal(t, []string{"support@acme.example"}, res.Delivered)
	assert.Equal(t, []string{"gone@acme.example", broken.url()}, res.Failed)
	require.Len(t, res.Errors, 2)
	assert.Contains(t, res.Errors[0], "gone@acme.example: recipient refused")
	assert.Contains(t, res.Errors[0], "no such user")
	assert.Equal(t, broken.srv.URL+": HTTP 500: ok", res.Errors[1])
	assert.NotContains(t, strings.Join(res.Errors, " "), "secret-token", "a webhook's path is its credential")

	msgs := relay.sink.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, []string{"support@acme.example"}, msgs[0].To)
	assert.Len(t, broken.received(), 1)
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestAllTargetsFailingTransientlyIsRetryable(t *testing.T) {
	busy := newWebhook(t, http.StatusTooManyRequests)
	n := NewNotifier(testNotifierConfig(SMTPConfig{Addr: closedAddr(t), From: "gkewi@acme.example"}))
	res, err := n.NotifySupport(context.Background(),
		testNotification(contract.NotifyApprovalRequest, "support@acme.example", busy.url()))
	appErr := applicationError(t, err)
	assert.False(t, appErr.NonRetryable())
	assert.Equal(t, "NotifyUnavailable", appErr.Type())
	assert.Contains(t, appErr.Error(), "connect to SMTP relay")
	assert.Contains(t, appErr.Error(), "HTTP 429")
	assert.Empty(t, res.Delivered)
}

func TestAllTargetsRejectedIsNotRetryable(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{CheckRecipient: func(string) *smtpsink.Reply {
		return &smtpsink.Reply{Code: 550, Text: "5.7.1 relaying denied"}
	}})
	gone := newWebhook(t, http.StatusNotFound)
	n := NewNotifier(testNotifierConfig(relay.smtpConfig()))
	_, err := n.NotifySupport(context.Background(),
		testNotification(contract.NotifyReminder, "support@acme.example", gone.url()))
	appErr := applicationError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, "NotifyRejected", appErr.Type())
	assert.Contains(t, appErr.Error(), "relaying denied")
	assert.Contains(t, appErr.Error(), "HTTP 404")
	assert.Empty(t, relay.sink.Messages())
}

func TestInvalidTargetsAreRefusedBeforeSending(t *testing.T) {
	hook := newWebhook(t, http.StatusOK)
	relay := startSecureSink(t, smtpsink.Options{})
	n := NewNotifier(testNotifierConfig(relay.smtpConfig()))
	_, err := n.NotifySupport(context.Background(),
		testNotification(contract.NotifyApprovalRequest, hook.url(), "support@acme.example", "not an address", "ftp://files.example/x"))
	appErr := applicationError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, "InvalidArgument", appErr.Type())
	assert.Contains(t, appErr.Error(), `"not an address" is not an email address`)
	assert.Contains(t, appErr.Error(), `"ftp://files.example" is not an http(s) URL`)
	assert.Empty(t, hook.received())
	assert.Empty(t, relay.sink.Messages())

	_, err = n.NotifySupport(context.Background(), Notification{Kind: "party", WorkflowID: "x", Targets: []string{"a@b.example"}})
	assert.True(t, applicationError(t, err).NonRetryable())
}

func TestSMTPConfigurationProblemsAreNotRetryable(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{})
	plain, err := smtpsink.Start("127.0.0.1:0", smtpsink.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, plain.Close()) }()

	cases := map[string]struct {
		mutate func(*SMTPConfig)
		want   string
	}{
		"relay without STARTTLS": {
			mutate: func(c *SMTPConfig) { c.Addr = plain.Addr() },
			want:   "does not offer STARTTLS",
		},
		"relay without AUTH": {
			mutate: func(c *SMTPConfig) { c.Addr, c.StartTLS = plain.Addr(), false },
			want:   "does not offer AUTH",
		},
		"untrusted certificate": {
			mutate: func(c *SMTPConfig) { c.CAFile = "" },
			want:   "certificate",
		},
		"wrong password": {
			mutate: func(c *SMTPConfig) {
				p := filepath.Join(t.TempDir(), "pw")
				require.NoError(t, os.WriteFile(p, []byte("nope"), 0o600))
				c.PasswordFile = p
			},
			want: "535",
		},
		"no relay configured": {
			mutate: func(c *SMTPConfig) { c.Addr = "" },
			want:   "no SMTP relay configured",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := relay.smtpConfig()
			tc.mutate(&cfg)
			n := NewNotifier(testNotifierConfig(cfg))
			_, err := n.NotifySupport(context.Background(), testNotification(contract.NotifyApprovalRequest, "support@acme.example"))
			appErr := applicationError(t, err)
			assert.True(t, appErr.NonRetryable(), "%v", err)
			assert.Contains(t, appErr.Error(), tc.want)
		})
	}
	assert.Empty(t, relay.sink.Messages())
}

func TestPasswordFileIsReadAtSendTime(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{})
	cfg := relay.smtpConfig()
	require.NoError(t, os.WriteFile(cfg.PasswordFile, []byte("old-pass"), 0o600))
	n := NewNotifier(testNotifierConfig(cfg))
	in := testNotification(contract.NotifyApprovalRequest, "support@acme.example")

	_, err := n.NotifySupport(context.Background(), in)
	require.Error(t, err)

	// The secret is rotated under the running worker.
	require.NoError(t, os.WriteFile(cfg.PasswordFile, []byte("relay-pass\n"), 0o600))
	res, err := n.NotifySupport(context.Background(), in)
	require.NoError(t, err)
	assert.Equal(t, []string{"support@acme.example"}, res.Delivered)
	assert.Len(t, relay.sink.Messages(), 1)
}

func TestNoTargetsSendsNothing(t *testing.T) {
	n := NewNotifier(testNotifierConfig(SMTPConfig{}))
	res, err := n.NotifySupport(context.Background(), testNotification(contract.NotifyApprovalRequest))
	require.NoError(t, err)
	assert.Empty(t, res.Delivered)
	assert.Empty(t, res.Failed)
}

// A request that needs proof tells support to decide with their ID token at
// the approval endpoint, not with a bare signal; one that does not says so.
func TestApprovalRequestSaysHowToProveTheDecision(t *testing.T) {
	cfg := testNotifierConfig(SMTPConfig{})
	cfg.ApprovalURL = "https://gkewi.example.com"
	in := testNotification(contract.NotifyApprovalRequest, "support@example.com")
	in.ProofRequired = true
	text := composeMessage(in, cfg).text
	assert.Contains(t, text, "gkewi approve --endpoint https://gkewi.example.com --workflow-id '"+in.WorkflowID+"' --run-id '"+in.RunID+"' --ticket TICKET")
	assert.Contains(t, text, "curl -sS -X POST https://gkewi.example.com/v1/decisions -H \"Authorization: Bearer $(gcloud auth print-identity-token --audiences='"+in.WorkflowID+"' --include-email)\"")
	assert.Contains(t, text, "merely names an approver is recorded and ignored")
	assert.NotContains(t, text, "temporal workflow signal")

	in.ProofRequired = false
	text = composeMessage(in, cfg).text
	assert.Contains(t, text, "temporal workflow signal")
	assert.Contains(t, text, "without proof of the approver's identity (support.proof: none)")
}

// With proof required, each approver's own address gets a message of its own
// with links that decide in that approver's name; other addresses share one
// without links.
func TestApproversGetTheirOwnDecisionLinks(t *testing.T) {
	relay := startSecureSink(t, smtpsink.Options{})
	cfg := testNotifierConfig(relay.smtpConfig())
	cfg.ApprovalURL = "https://gkewi.example.com/"
	cfg.Links = NewAttestor(AttestorConfig{Secret: []byte("0123456789abcdef0123456789abcdef")})
	n := NewNotifier(cfg)
	in := testNotification(contract.NotifyApprovalRequest, "support@acme.example", "Lead <lead@acme.example>")
	in.ProofRequired = true
	in.Approvers = []string{"LEAD@acme.example"}
	in.Deadline = time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	res, err := n.NotifySupport(context.Background(), in)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"support@acme.example", "Lead <lead@acme.example>"}, res.Delivered)

	msgs := relay.sink.Messages()
	require.Len(t, msgs, 2)
	byTo := map[string]string{}
	for _, m := range msgs {
		require.Len(t, m.To, 1)
		byTo[m.To[0]] = string(m.Data)
	}
	assert.NotContains(t, byTo["support@acme.example"], "/v1/links/", "not an approver: no links")
	lead := byTo["lead@acme.example"]
	require.Contains(t, lead, "Approve: https://gkewi.example.com/v1/links/")
	for _, approved := range []bool{true, false} {
		label := map[bool]string{true: "Approve: ", false: "Reject:  "}[approved]
		i := strings.Index(lead, label+"https://gkewi.example.com/v1/links/")
		require.GreaterOrEqual(t, i, 0)
		tok := strings.Fields(lead[i+len(label+"https://gkewi.example.com/v1/links/"):])[0]
		c, err := cfg.Links.OpenLink(tok)
		require.NoError(t, err)
		assert.Equal(t, LinkClaims{WorkflowID: in.WorkflowID, RunID: in.RunID, Approver: "lead@acme.example", Approved: approved, Expires: in.Deadline}, c)
	}
}
