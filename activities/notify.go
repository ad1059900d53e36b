package activities

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/mail"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
)

// SMTPConfig says how to reach the mail relay. It holds a path to the password,
// never the password, so configs and payloads stay free of secrets.
type SMTPConfig struct {
	// Addr is the relay's "host:port"; empty disables email targets.
	Addr string
	// From is the sender address of the notifications.
	From string
	// Username turns on AUTH PLAIN.
	Username string
	// PasswordFile holds the password for Username; it is read at each send, so a
	// rotated secret is picked up without a restart.
	PasswordFile string
	// StartTLS requires the relay to offer STARTTLS and upgrades before AUTH and MAIL.
	StartTLS bool
	// CAFile is a PEM bundle to trust for the relay's certificate instead of the
	// system roots (a private relay, or the sandbox sink's self-signed certificate).
	CAFile string
}

// NotifierConfig configures the Notifier.
type NotifierConfig struct {
	SMTP SMTPConfig
	// WebhookTimeout bounds each webhook POST; default 10s.
	WebhookTimeout time.Duration
	// TemporalUIURL is the base of the Temporal Web UI, e.g. "http://localhost:8233";
	// empty leaves the link out.
	TemporalUIURL string
	// TemporalNamespace is the namespace the workflows run in; default "default".
	TemporalNamespace string
	// TaskQueue is the worker's task queue, named in the message for operators.
	TaskQueue string
	// ApprovalURL is the worker's approval endpoint as support reaches it,
	// written into the commands of approval requests.
	ApprovalURL string
	// Links, with ApprovalURL, signs one-click decision links: an approver's
	// own email gets links that decide as that approver, for this run only.
	Links *Attestor
}

// Notifier tells the support team by email (SMTP) and webhook.
type Notifier struct {
	cfg  NotifierConfig
	http *http.Client
}

const defaultWebhookTimeout = 10 * time.Second

// NewNotifier returns a Notifier for cfg.
func NewNotifier(cfg NotifierConfig) *Notifier {
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = defaultWebhookTimeout
	}
	if cfg.TemporalNamespace == "" {
		cfg.TemporalNamespace = "default"
	}
	return &Notifier{cfg: cfg, http: &http.Client{Timeout: cfg.WebhookTimeout}}
}

// NotifySupport sends the notification to every target: the email addresses get one
// message together, each http(s) URL gets a Slack-compatible JSON POST.
//
// Delivery policy: once any target has the message the activity succeeds and lists
// the targets it missed in Failed (with the reasons in Errors). Retrying then would
// send the message again to everyone already reached, and a target that missed an
// approval request still gets the reminders. Only when no target was reached does the
// activity fail: retryably if some failure was transient (network, timeout, SMTP 4xx,
// HTTP 429/5xx), otherwise non-retryably. A malformed target is refused before
// anything is sent, with a message saying which one to fix.
func (n *Notifier) NotifySupport(ctx context.Context, in Notification) (NotifyResult, error) {
	switch in.Kind {
	case contract.NotifyApprovalRequest, contract.NotifyReminder, contract.NotifyOutcome:
	default:
		return NotifyResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("notification kind %q is not one of %s, %s, %s", in.Kind, contract.NotifyApprovalRequest, contract.NotifyReminder, contract.NotifyOutcome),
			"InvalidArgument", nil)
	}
	if in.WorkflowID == "" {
		return NotifyResult{}, temporal.NewNonRetryableApplicationError("notification has no workflowId", "InvalidArgument", nil)
	}
	emails, hooks, err := parseTargets(in.Targets)
	if err != nil {
		return NotifyResult{}, temporal.NewNonRetryableApplicationError(err.Error(), "InvalidArgument", err)
	}
	logger := notifyLogger(ctx)
	if len(emails) == 0 && len(hooks) == 0 {
		logger.Warn("notification has no targets; support must find the workflow in the Temporal UI", "kind", in.Kind)
		return NotifyResult{}, nil
	}

	msg := composeMessage(in, n.cfg)
	var (
		res       NotifyResult
		transient bool
	)
	record := func(target string, derr *deliveryError) {
		if derr == nil {
			res.Delivered = append(res.Delivered, target)
			return
		}
		res.Failed = append(res.Failed, target)
		res.Errors = append(res.Errors, derr.Error())
		transient = transient || derr.transient
		logger.Warn("notification not delivered", "kind", in.Kind, "target", derr.target, "transient", derr.transient, "error", derr.err)
	}

	shared, own := n.splitForLinks(in, emails)
	for _, e := range own {
		// The approver's own message: its links decide in their name.
		personal, err := n.withLinks(msg, in, e.address)
		if err != nil {
			logger.Warn("decision links not signed; sending the message without them", "target", e.target, "error", err)
			shared = append(shared, e)
			continue
		}
		record(e.target, n.sendMail(ctx, []emailTarget{e}, personal, messageID(ctx, n.cfg.SMTP.From))[e.target])
	}
	if len(shared) > 0 {
		outcome := n.sendMail(ctx, shared, msg, messageID(ctx, n.cfg.SMTP.From))
		for _, e := range shared {
			record(e.target, outcome[e.target])
		}
	}
	for _, h := range hooks {
		record(h.target, n.postWebhook(ctx, h, msg))
	}

	if len(res.Delivered) > 0 {
		logger.Info("notification delivered", "kind", in.Kind, "delivered", len(res.Delivered), "failed", len(res.Failed))
		return res, nil
	}
	summary := "no notification target was reached: " + strings.Join(res.Errors, "; ")
	if transient {
		return res, temporal.NewApplicationError(summary, "NotifyUnavailable")
	}
	return res, temporal.NewNonRetryableApplicationError(summary+"; fix the targets or the worker's SMTP/webhook settings", "NotifyRejected", nil)
}

// splitForLinks separates the email targets that get their own message with
// decision links (an approver's address, when proof is required and links can
// be signed) from those that share the plain one.
func (n *Notifier) splitForLinks(in Notification, emails []emailTarget) (shared, own []emailTarget) {
	if !in.ProofRequired || in.Kind == contract.NotifyOutcome || n.cfg.Links == nil || n.cfg.ApprovalURL == "" {
		return emails, nil
	}
	for _, e := range emails {
		if slices.ContainsFunc(in.Approvers, func(a string) bool { return strings.EqualFold(a, e.address) }) {
			own = append(own, e)
		} else {
			shared = append(shared, e)
		}
	}
	return shared, own
}

// withLinks adds to msg the approve and reject links of approver, valid until
// the approval deadline.
func (n *Notifier) withLinks(msg message, in Notification, approver string) (message, error) {
	expires := in.Deadline
	if expires.IsZero() {
		expires = time.Now().Add(24 * time.Hour)
	}
	link := func(approved bool) (string, error) {
		tok, err := n.cfg.Links.SignLink(LinkClaims{WorkflowID: in.WorkflowID, RunID: in.RunID, Approver: approver, Approved: approved, Expires: expires})
		return strings.TrimRight(n.cfg.ApprovalURL, "/") + LinkPath + tok, err
	}
	approve, err := link(true)
	if err != nil {
		return msg, err
	}
	reject, err := link(false)
	if err != nil {
		return msg, err
	}
	msg.text += fmt.Sprintf("\nOr decide with one click, as %s (these links are yours: they decide in your name, for this onboarding only, until %s):\n  Approve: %s\n  Reject:  %s\n",
		approver, expires.UTC().Format(time.RFC3339), approve, reject)
	return msg, nil
}

// LinkPath is where the approval endpoint takes signed decision links.
const LinkPath = "/v1/links/"

func notifyLogger(ctx context.Context) interface {
	Info(string, ...any)
	Warn(string, ...any)
} {
	if activity.IsActivity(ctx) {
		return activity.GetLogger(ctx)
	}
	return discardLogger{}
}

type discardLogger struct{}

func (discardLogger) Info(string, ...any) {}
func (discardLogger) Warn(string, ...any) {}

type emailTarget struct {
	target  string // as the request wrote it
	address string // the bare address for RCPT TO
}

type webhookTarget struct {
	target string
	url    *url.URL
}

// parseTargets sorts the targets into email addresses and webhook URLs and refuses
// anything else, naming every bad one.
func parseTargets(targets []string) ([]emailTarget, []webhookTarget, error) {
	var (
		emails []emailTarget
		hooks  []webhookTarget
		bad    []string
	)
	seen := map[string]bool{}
	for _, t := range targets {
		t = strings.TrimSpace(t)
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		if strings.Contains(t, "://") {
			u, err := url.Parse(t)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad = append(bad, fmt.Sprintf("%q is not an http(s) URL", text.RedactURL(t)))
				continue
			}
			hooks = append(hooks, webhookTarget{target: t, url: u})
			continue
		}
		addr, err := mail.ParseAddress(t)
		if err != nil || strings.ContainsAny(addr.Address, "\r\n") {
			bad = append(bad, fmt.Sprintf("%q is not an email address", t))
			continue
		}
		emails = append(emails, emailTarget{target: t, address: addr.Address})
	}
	if len(bad) > 0 {
		return nil, nil, fmt.Errorf("invalid notification targets (want email addresses or http(s) webhook URLs): %s", strings.Join(bad, ", "))
	}
	return emails, hooks, nil
}

// deliveryError is why one target did not get the message.
type deliveryError struct {
	target    string // safe to log: webhook URLs are cut to their host
	err       error
	transient bool
}

func (e *deliveryError) Error() string { return e.target + ": " + e.err.Error() }

// message is the notification rendered for both channels.
type message struct {
	subject string
	text    string
	slack   slackPayload
}

type slackPayload struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type string     `json:"type"`
	Text *slackText `json:"text,omitempty"`
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// approvalInputExample is the decision payload shown to support, with placeholders.
func approvalInputExample(approved bool) string {
	if approved {
		return `{"approved":true,"approver":"YOU@example.com","ticket":"TICKET"}`
	}
	return `{"approved":false,"approver":"YOU@example.com","ticket":"TICKET","comment":"REASON"}`
}

// approvalCommands are the ways support can answer, ready to paste.
type approvalCommands struct {
	signalApprove, signalReject string
	updateApprove, updateReject string
	gkewiApprove, gkewiReject   string
}

func buildApprovalCommands(workflowID, namespace string) approvalCommands {
	ns := ""
	if namespace != "" && namespace != "default" {
		ns = " --namespace " + text.ShellQuote(namespace)
	}
	id := text.ShellQuote(workflowID)
	signal := func(approved bool) string {
		return "temporal workflow signal" + ns + " --workflow-id " + id + " --name " + contract.SignalSupportApproval +
			" --input " + text.ShellQuote(approvalInputExample(approved))
	}
	update := func(approved bool) string {
		return "temporal workflow update execute" + ns + " --workflow-id " + id + " --name " + contract.UpdateSupportDecision +
			" --input " + text.ShellQuote(approvalInputExample(approved))
	}
	return approvalCommands{
		signalApprove: signal(true),
		signalReject:  signal(false),
		updateApprove: update(true),
		updateReject:  update(false),
		gkewiApprove:  "gkewi approve" + ns + " --workflow-id " + id + " --approver YOU@example.com --ticket TICKET",
		gkewiReject:   "gkewi reject" + ns + " --workflow-id " + id + " --approver YOU@example.com --ticket TICKET --comment REASON",
	}
}

// decisionSections are the ways support can answer, titled: with the
// approver's ID token through the approval endpoint when proof is required,
// else the bare signal, update and CLI forms, with a warning that they prove
// nothing.
func decisionSections(in Notification, cfg NotifierConfig) [][2]string {
	if in.ProofRequired {
		endpoint := cfg.ApprovalURL
		if endpoint == "" {
			endpoint = "$GKEWI_APPROVAL_ENDPOINT"
		}
		id := text.ShellQuote(in.WorkflowID)
		gkewi := func(verb, extra string) string {
			return "gkewi " + verb + " --endpoint " + endpoint + " --workflow-id " + id + " --run-id " + text.ShellQuote(in.RunID) + " --ticket TICKET" + extra
		}
		curl := "curl -sS -X POST " + strings.TrimRight(endpoint, "/") + "/v1/decisions" +
			" -H \"Authorization: Bearer $(gcloud auth print-identity-token --audiences=" + id + " --include-email)\"" +
			" -d " + text.ShellQuote(`{"workflowId":"`+in.WorkflowID+`","runId":"`+in.RunID+`","approved":true,"ticket":"TICKET"}`)
		return [][2]string{
			{"Decide with your ID token, which the worker checks (replace TICKET, and REASON to reject)",
				gkewi("approve", "") + "\n" + gkewi("reject", " --comment REASON")},
			{"Or post it yourself", curl},
			{"Only decisions proven this way count", "a signal or update that merely names an approver is recorded and ignored"},
		}
	}
	cmds := buildApprovalCommands(in.WorkflowID, cfg.TemporalNamespace)
	return [][2]string{
		{"Approve (replace YOU@example.com and TICKET)", cmds.signalApprove},
		{"Reject (replace REASON too)", cmds.signalReject},
		{"Or decide with an update, which answers with the workflow's verdict", cmds.updateApprove + "\n" + cmds.updateReject},
		{"Or with the gkewi CLI", cmds.gkewiApprove + "\n" + cmds.gkewiReject},
		{"Warning", "this grant takes decisions without proof of the approver's identity (support.proof: none): " +
			"whoever can signal the workflow can decide in a listed approver's name"},
	}
}

// workflowUIURL links to the workflow run in the Temporal Web UI.
func workflowUIURL(base, namespace, workflowID, runID string) string {
	if base == "" {
		return ""
	}
	u := strings.TrimRight(base, "/") + "/namespaces/" + url.PathEscape(namespace) + "/workflows/" + url.PathEscape(workflowID)
	if runID != "" {
		u += "/" + url.PathEscape(runID)
	}
	return u
}

func composeMessage(in Notification, cfg NotifierConfig) message {
	grant := fmt.Sprintf("%s/%s", in.Namespace, in.KSA)
	var subject, intro string
	switch in.Kind {
	case contract.NotifyApprovalRequest:
		subject = fmt.Sprintf("[gkewi] Approval needed: Workload Identity for %s in %s/%s", grant, in.Project, in.Cluster)
		intro = fmt.Sprintf("An onboarding waits for a support decision: the Kubernetes service account %s would act as the Google service account %s.", grant, in.GSAEmail)
	case contract.NotifyReminder:
		subject = fmt.Sprintf("[gkewi] Reminder: approval still needed for %s in %s/%s", grant, in.Project, in.Cluster)
		intro = fmt.Sprintf("Reminder: this onboarding still waits for a support decision: the Kubernetes service account %s would act as the Google service account %s.", grant, in.GSAEmail)
	default:
		subject = fmt.Sprintf("[gkewi] Onboarding of %s in %s/%s: %s", grant, in.Project, in.Cluster, in.Outcome)
		intro = "Outcome: " + in.Outcome
	}
	subject = oneLine(subject)
	link := workflowUIURL(cfg.TemporalUIURL, cfg.TemporalNamespace, in.WorkflowID, in.RunID)

	details := [][2]string{
		{"Project", in.Project},
		{"Cluster", in.Cluster},
		{"Location", in.Location},
		{"Namespace", in.Namespace},
		{"Kubernetes SA", in.KSA},
		{"Google SA", in.GSAEmail},
		{"Member", fmt.Sprintf("serviceAccount:%s.svc.id.goog[%s]", in.Project, grant)},
		{"Workflow ID", in.WorkflowID},
		{"Run ID", in.RunID},
	}
	if cfg.TaskQueue != "" {
		details = append(details, [2]string{"Task queue", cfg.TaskQueue})
	}

	var plain strings.Builder
	plain.WriteString(intro + "\n\n")
	for _, d := range details {
		if d[1] != "" {
			fmt.Fprintf(&plain, "  %-14s %s\n", d[0]+":", d[1])
		}
	}
	var mdDetails strings.Builder
	for _, d := range details {
		if d[1] != "" {
			fmt.Fprintf(&mdDetails, "*%s:* `%s`\n", slackEscape(d[0]), slackEscape(d[1]))
		}
	}
	blocks := []slackBlock{
		{Type: "header", Text: &slackText{Type: "plain_text", Text: text.Truncate(subject, 150)}},
		{Type: "section", Text: &slackText{Type: "mrkdwn", Text: slackEscape(intro)}},
		{Type: "section", Text: &slackText{Type: "mrkdwn", Text: strings.TrimRight(mdDetails.String(), "\n")}},
	}

	if len(in.Grant) > 0 && in.Kind != contract.NotifyOutcome {
		g := strings.Join(in.Grant, "\n")
		fmt.Fprintf(&plain, "\nWhat an approval grants:\n")
		for _, l := range in.Grant {
			fmt.Fprintf(&plain, "  %s\n", l)
		}
		blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{
			Type: "mrkdwn", Text: "*What an approval grants*\n```" + slackEscape(g) + "```",
		}})
	}
	if in.Kind != contract.NotifyOutcome {
		sections := decisionSections(in, cfg)
		for _, s := range sections {
			fmt.Fprintf(&plain, "\n%s:\n", s[0])
			for _, l := range strings.Split(s[1], "\n") {
				fmt.Fprintf(&plain, "  %s\n", l)
			}
			blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{
				Type: "mrkdwn",
				Text: "*" + slackEscape(s[0]) + "*\n```" + slackEscape(s[1]) + "```",
			}})
		}
	}
	if link != "" {
		fmt.Fprintf(&plain, "\nTemporal UI: %s\n", link)
		blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{
			Type: "mrkdwn", Text: "<" + link + "|Open the workflow in the Temporal UI>",
		}})
	}
	return message{
		subject: subject,
		text:    plain.String(),
		slack:   slackPayload{Text: subject, Blocks: blocks},
	}
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// messageID is stable across retries of one activity, so mail clients that dedupe by
// Message-ID show a retried notification once. It is written without the angle
// brackets, which the message adds.
func messageID(ctx context.Context, from string) string {
	domain := "gkewi.invalid"
	if a, err := mail.ParseAddress(from); err == nil {
		if _, d, ok := strings.Cut(a.Address, "@"); ok && d != "" {
			domain = d
		}
	}
	var seed []byte
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		seed = []byte(info.WorkflowExecution.ID + "\x00" + info.WorkflowExecution.RunID + "\x00" + info.ActivityID)
	} else {
		seed = make([]byte, 16)
		_, _ = rand.Read(seed)
	}
	sum := sha256.Sum256(seed)
	return "gkewi." + hex.EncodeToString(sum[:12]) + "@" + domain
}

// composeEmail renders msg as a plain-text UTF-8 message in 8 bits, as relays
// that speak 8BITMIME take it.
func (n *Notifier) composeEmail(to []emailTarget, msg message, msgID string) (*gomail.Msg, error) {
	m := gomail.NewMsg(gomail.WithEncoding(gomail.NoEncoding), gomail.WithNoDefaultUserAgent())
	if err := m.From(n.cfg.SMTP.From); err != nil {
		return nil, configError{fmt.Errorf("SMTP sender %q: %w", n.cfg.SMTP.From, err)}
	}
	addrs := make([]string, len(to))
	for i, t := range to {
		addrs[i] = t.address
	}
	// A plain header: the envelope is sent by transact, and the header lists
	// the bare addresses.
	m.SetGenHeader("To", strings.Join(addrs, ", "))
	m.Subject(msg.subject)
	m.SetDate()
	m.SetMessageIDWithValue(msgID)
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	m.SetBodyString(gomail.TypeTextPlain, msg.text)
	return m, nil
}

// configError is a failure that only a change of the worker's settings or of
// the relay can fix: retrying does not help.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// sendMail delivers one message to all email targets and reports per target; a
// missing entry means delivered.
func (n *Notifier) sendMail(ctx context.Context, to []emailTarget, msg message, msgID string) map[string]*deliveryError {
	m, err := n.composeEmail(to, msg, msgID)
	if err != nil {
		return failAll(to, err)
	}
	client, err := n.smtpClient(ctx)
	if err != nil {
		return failAll(to, err)
	}
	session, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return failAll(to, dialError(n.cfg.SMTP.Addr, err))
	}
	// The session has no context of its own: a cancelled activity closes it.
	stop := context.AfterFunc(ctx, func() { _ = session.Close() })
	defer stop()
	// The relay owns the message once DATA is accepted; a failed QUIT changes nothing.
	defer func() { _ = client.CloseWithSMTPClient(session) }()
	return transact(session, to, m)
}

// smtpClient is the relay client for the configured address, TLS and AUTH
// settings. The password file is read at each send, so a rotated secret is
// picked up without a restart.
func (n *Notifier) smtpClient(ctx context.Context) (*gomail.Client, error) {
	cfg := n.cfg.SMTP
	if cfg.Addr == "" || cfg.From == "" {
		return nil, configError{errors.New("the worker has no SMTP relay configured (set the SMTP address and sender)")}
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, configError{fmt.Errorf("SMTP address %q: %w", cfg.Addr, err)}
	}
	portNum, err := strconv.Atoi(port)
	if err != nil {
		return nil, configError{fmt.Errorf("SMTP address %q: port: %w", cfg.Addr, err)}
	}
	opts := []gomail.Option{gomail.WithPort(portNum), gomail.WithTLSPolicy(gomail.NoTLS)}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > 0 {
		opts = append(opts, gomail.WithTimeout(time.Until(dl)))
	}
	if cfg.StartTLS {
		tlsCfg, err := smtpTLSConfig(host, cfg.CAFile)
		if err != nil {
			return nil, configError{err}
		}
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(tlsCfg))
	}
	if cfg.Username != "" {
		password, err := readPasswordFile(cfg.PasswordFile)
		if err != nil {
			return nil, configError{err}
		}
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthPlain), gomail.WithUsername(cfg.Username), gomail.WithPassword(password))
	}
	client, err := gomail.NewClient(host, opts...)
	if err != nil {
		return nil, configError{fmt.Errorf("SMTP relay %s: %w", cfg.Addr, err)}
	}
	return client, nil
}

// dialError says which step of the session setup failed; go-mail reports a
// relay without STARTTLS or AUTH only in words.
func dialError(addr string, err error) error {
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("connect to SMTP relay %s: %w", addr, err)
	case strings.Contains(err.Error(), "does not support STARTTLS"):
		return configError{fmt.Errorf("SMTP relay %s does not offer STARTTLS, which the worker requires", addr)}
	case strings.Contains(err.Error(), "does not support SMTP AUTH"), errors.Is(err, gomail.ErrPlainAuthNotSupported):
		return configError{fmt.Errorf("SMTP relay %s does not offer AUTH PLAIN (is STARTTLS needed first?)", addr)}
	default:
		return fmt.Errorf("SMTP session with %s: %w", addr, err)
	}
}

// transact sends m in one mail transaction to the recipients the relay
// accepts; each refused one gets its own error.
func transact(session *smtp.Client, to []emailTarget, m *gomail.Msg) map[string]*deliveryError {
	from, err := m.GetSender(false)
	if err != nil {
		return failAll(to, configError{fmt.Errorf("SMTP sender: %w", err)})
	}
	if err := session.Mail(from); err != nil {
		return failAll(to, fmt.Errorf("SMTP MAIL FROM %s: %w", from, err))
	}
	out := map[string]*deliveryError{}
	var accepted []emailTarget
	for _, t := range to {
		// go-mail's session sends the path as given: in angle brackets.
		if err := session.Rcpt((&mail.Address{Address: t.address}).String()); err != nil {
			out[t.target] = newDeliveryError(t.target, fmt.Errorf("recipient refused: %w", err))
			continue
		}
		accepted = append(accepted, t)
	}
	if len(accepted) == 0 {
		_ = session.Reset()
		return out
	}
	if err := writeData(session, m); err != nil {
		maps.Copy(out, failAll(accepted, err))
	}
	return out
}

func writeData(session *smtp.Client, m *gomail.Msg) error {
	w, err := session.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if _, err := m.WriteTo(w); err != nil {
		return fmt.Errorf("SMTP message body: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP relay did not accept the message: %w", err)
	}
	return nil
}

func newDeliveryError(target string, err error) *deliveryError {
	return &deliveryError{target: target, err: err, transient: smtpTransient(err)}
}

// failAll gives every target the same failure.
func failAll(to []emailTarget, err error) map[string]*deliveryError {
	out := make(map[string]*deliveryError, len(to))
	for _, t := range to {
		out[t.target] = newDeliveryError(t.target, err)
	}
	return out
}

// smtpTransient: 4xx replies and connection trouble may pass; 5xx replies,
// certificate problems and configuration errors will not.
func smtpTransient(err error) bool {
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		return tpErr.Code < 500
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) || errors.As(err, new(configError)) {
		return false
	}
	if strings.Contains(err.Error(), "unencrypted connection") || strings.Contains(err.Error(), "wrong host name") {
		return false // AUTH PLAIN refused by the client: a configuration problem
	}
	return true
}

func smtpTLSConfig(host, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("SMTP CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("SMTP CA file %s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

func readPasswordFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("SMTP username is set but no password file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("SMTP password file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// postWebhook POSTs the Slack-compatible payload; nil means delivered.
func (n *Notifier) postWebhook(ctx context.Context, h webhookTarget, msg message) *deliveryError {
	safe := text.RedactURL(h.target)
	fail := func(err error, transient bool) *deliveryError {
		return &deliveryError{target: safe, err: err, transient: transient}
	}
	body, err := json.Marshal(msg.slack)
	if err != nil {
		return fail(err, false)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url.String(), bytes.NewReader(body))
	if err != nil {
		return fail(err, false)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "gkewi-notifier")
	resp, err := n.http.Do(req)
	if err != nil {
		// The *url.Error would repeat the full URL; keep only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fail(fmt.Errorf("POST failed: %w", err), true)
	}
	defer func() { _ = resp.Body.Close() }()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(snippet)))
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooEarly,
		resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fail(err, true)
	default:
		return fail(err, false)
	}
}
