package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/sandbox/stack"
	"github.com/gkewi/gkewi/starter"
	"github.com/gkewi/gkewi/workflows"
)

// demo is one run of `gkewi-sandbox demo`.
type demo struct {
	sb      *stack.Sandbox
	out     io.Writer
	tty     bool
	width   int
	height  int
	insp    *inspector
	report  demoReport
	started time.Time
	// views keeps each run's view, so a later watch continues where one ended.
	views map[string]*progressView
}

// demoReport is written to .sandbox/demo-report.json.
type demoReport struct {
	OK                   bool                               `json:"ok"`
	StartedAt            time.Time                          `json:"startedAt"`
	SandboxStartSeconds  float64                            `json:"sandboxStartSeconds"`
	TotalSeconds         float64                            `json:"totalSeconds"`
	Workflows            []workflowReport                   `json:"workflows"`
	Verification         map[string]activities.VerifyResult `json:"verification"`
	EmulatorRequestCount map[string]int                     `json:"emulatorRequestCounts"`
	Proofs               map[string]any                     `json:"proofs,omitempty"`
	Failures             []string                           `json:"failures,omitempty"`
	Commands             []string                           `json:"commands"`
}

type workflowReport struct {
	Type       string       `json:"type"`
	WorkflowID string       `json:"workflowId"`
	RunID      string       `json:"runId,omitempty"`
	State      string       `json:"state"`
	Error      string       `json:"error,omitempty"`
	Seconds    float64      `json:"seconds"`
	Steps      []stepReport `json:"steps"`
}

type stepReport struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	DurationMS int64  `json:"durationMs"`
	Attempts   int    `json:"attempts,omitempty"`
	Changed    bool   `json:"changed,omitempty"`
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gkewi-sandbox demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf sandboxFlags
	sf.register(fs)
	requestFile := fs.String("request", "deploy/sandbox/onboard-request.json", "the onboarding request (OnboardRequest JSON)")
	expiryWait := fs.Duration("token-expiry-wait", 20*time.Second, "how long the revocation waits for issued tokens to expire (30m outside the demo)")
	keep := fs.Bool("keep", false, "keep the sandbox running after the demo, until Ctrl-C or `gkewi-sandbox down`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*requestFile)
	if err != nil {
		return fmt.Errorf("the onboarding request: %w", err)
	}
	var req workflows.OnboardRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("the onboarding request %s: %w", *requestFile, err)
	}
	if len(req.Support.Approvers) == 0 {
		return fmt.Errorf("the onboarding request %s names no support.approvers", *requestFile)
	}

	d := &demo{out: stdout, started: time.Now(), views: map[string]*progressView{}}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		d.tty = true
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			d.width, d.height = w, h
		}
	}
	d.report = demoReport{StartedAt: d.started, Verification: map[string]activities.VerifyResult{}, Proofs: map[string]any{}}

	d.section("Starting the sandbox")
	log := io.Writer(&prefixWriter{w: stdout, prefix: "  "})
	sb, err := stack.Start(ctx, sf.options(log))
	if err != nil {
		return err
	}
	d.sb = sb
	d.insp = newInspector(sb)
	d.report.SandboxStartSeconds = sb.StartedIn().Seconds()
	defer func() {
		if !*keep || ctx.Err() != nil {
			if err := sb.Stop(); err != nil {
				fmt.Fprintln(stderr, "gkewi-sandbox: stopping the sandbox:", err)
			}
		}
	}()

	runErr := d.run(ctx, req, *expiryWait)
	d.report.TotalSeconds = time.Since(d.started).Seconds()
	d.report.EmulatorRequestCount = sb.Emulator().RequestCounts()
	if runErr != nil {
		d.report.Failures = append(d.report.Failures, runErr.Error())
	}
	d.report.OK = len(d.report.Failures) == 0
	reportPath := filepath.Join(sb.Dir(), "demo-report.json")
	if err := writeJSON(reportPath, d.report); err != nil {
		return err
	}

	d.section("Summary")
	for _, w := range d.report.Workflows {
		fmt.Fprintf(stdout, "  %-8s %-10s %6.1fs  %s\n", w.Type, w.State, w.Seconds, w.WorkflowID)
	}
	fmt.Fprintf(stdout, "  sandbox started in %.1fs; demo took %.1fs in all\n", d.report.SandboxStartSeconds, d.report.TotalSeconds)
	fmt.Fprintf(stdout, "  report: %s\n", relPath(reportPath))
	if d.report.OK {
		fmt.Fprintln(stdout, "\n  ✔ onboarding verified allowed, revocation verified denied")
	} else {
		fmt.Fprintln(stdout, "\n  ✘ the demo failed:")
		for _, f := range d.report.Failures {
			fmt.Fprintln(stdout, "    - "+f)
		}
		fmt.Fprintf(stdout, "    logs: %s\n", relPath(sb.LogDir()))
	}

	if *keep && ctx.Err() == nil {
		fmt.Fprintln(stdout)
		printHowTo(stdout, sb)
		fmt.Fprintln(stdout, "\nThe sandbox keeps running here; Ctrl-C stops it too.")
		<-ctx.Done()
		fmt.Fprintln(stdout, "stopping the sandbox")
		if err := sb.Stop(); err != nil {
			return err
		}
	}
	if !d.report.OK {
		return exitError{code: 1}
	}
	return nil
}

// run is the demo proper: onboarding, approval, proofs, revocation, proofs.
func (d *demo) run(ctx context.Context, req workflows.OnboardRequest, expiryWait time.Duration) error {
	req = req.WithDefaults()
	approver := req.Support.Approvers[0]
	onboardID := workflows.OnboardWorkflowID(req)

	d.section("1. Start the onboarding with the temporal CLI")
	input, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := d.temporal(ctx, "workflow", "start", "--type", workflows.OnboardWorkflowName, "--task-queue", workflows.TaskQueue,
		"--workflow-id", onboardID, "--input", string(input)); err != nil {
		return err
	}

	d.section("2. Progress: support is asked once the GSA exists, the cluster work runs beside the wait")
	status, err := d.watch(ctx, workflows.OnboardWorkflowName, onboardID, func(s workflows.Status) bool {
		return (s.State == workflows.StateAwaitingApproval && clusterWorkDone(s)) || terminal(s.State)
	})
	if err != nil {
		return err
	}
	if status.State != workflows.StateAwaitingApproval {
		d.recordWorkflow(ctx, workflows.OnboardWorkflowName, onboardID, status)
		return fmt.Errorf("the onboarding ended %s before the approval: %s", status.State, status.Error)
	}
	// The grant's KSA is the one the rendered chart's workloads run as.
	req.KSA = status.KSA
	rendered, _ := status.Step("render-release")
	fmt.Fprintf(d.out, "\n  The rendered release runs its backends as %s/%s (%s).\n", req.Namespace, req.KSA, rendered.Detail)
	fmt.Fprintf(d.out, "\n  The status query shows the wait:\n")
	d.command("workflow", "query", "--workflow-id", onboardID, "--name", contract.QueryStatus)
	if err := d.provePending(ctx, req, status.GSAEmail); err != nil {
		return err
	}

	d.section("3. The email support received (read from the SMTP sink)")
	d.showMail(ctx, req.Support)

	if err := d.approve(ctx, onboardID, approver); err != nil {
		return err
	}

	d.section("5. Progress of the grant")
	status, err = d.watch(ctx, workflows.OnboardWorkflowName, onboardID, func(s workflows.Status) bool { return terminal(s.State) })
	if err != nil {
		return err
	}
	d.recordWorkflow(ctx, workflows.OnboardWorkflowName, onboardID, status)
	if status.State != workflows.StateCompleted {
		return fmt.Errorf("the onboarding ended %s: %s", status.State, status.Error)
	}
	var result workflows.OnboardResult
	if err := d.sb.TemporalClient().GetWorkflow(ctx, onboardID, "").Get(ctx, &result); err != nil {
		return fmt.Errorf("the onboarding's result: %w", err)
	}

	d.section("6. Proof, read from the systems themselves")
	vi := activities.VerifyInput{
		Cluster:   activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster},
		Namespace: req.Namespace, KSA: req.KSA, GSAEmail: result.GSAEmail, BigQueryProject: req.Project,
	}
	if req.BigQuery != nil {
		vi.BigQueryProject = req.BigQuery.BillingProject
	}
	allowed, err := d.proveOnboarding(ctx, req, result.GSAEmail, vi)
	if err != nil {
		return err
	}
	if !allowed {
		return errors.New("after the onboarding, the token chain was not allowed")
	}

	d.section(fmt.Sprintf("7. Revoke, with a token expiry wait of %s (30m by default)", expiryWait))
	rev := result.Revoke
	rev.TokenExpiryWait = contract.Duration(expiryWait.String())
	rev.Reason = "sandbox demo"
	revokeID := workflows.RevokeWorkflowID(rev)
	revInput, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	if err := d.temporal(ctx, "workflow", "start", "--type", workflows.RevokeWorkflowName, "--task-queue", workflows.TaskQueue,
		"--workflow-id", revokeID, "--input", string(revInput)); err != nil {
		return err
	}
	status, err = d.watch(ctx, workflows.RevokeWorkflowName, revokeID, func(s workflows.Status) bool { return terminal(s.State) })
	if err != nil {
		return err
	}
	d.recordWorkflow(ctx, workflows.RevokeWorkflowName, revokeID, status)
	if status.State != workflows.StateRevoked {
		return fmt.Errorf("the revocation ended %s: %s", status.State, status.Error)
	}

	d.section("8. Proof that the access is gone")
	denied, err := d.proveRevocation(ctx, req, result.GSAEmail, vi)
	if err != nil {
		return err
	}
	if !denied {
		return errors.New("after the revocation, the token chain was still allowed")
	}
	return nil
}

func terminal(s workflows.State) bool {
	switch s {
	case workflows.StateCompleted, workflows.StateFailed, workflows.StateRejected, workflows.StateTimedOut,
		workflows.StateCanceled, workflows.StateRevoked:
		return true
	}
	return false
}

// temporal prints a temporal CLI command, runs it against the sandbox and shows
// its output.
func (d *demo) temporal(ctx context.Context, args ...string) error {
	d.command(args...)
	cmd := exec.CommandContext(ctx, d.sb.TemporalCLIPath(), append(args, "--address", d.sb.TemporalAddress())...)
	cmd.Env = append(os.Environ(), d.sb.Env()...)
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l != "" {
			fmt.Fprintln(d.out, "    "+l)
		}
	}
	if err != nil {
		return fmt.Errorf("temporal %s: %w", strings.Join(args[:2], " "), err)
	}
	return nil
}

// command prints the exact temporal command, as a user would type it with the
// sandbox's environment (.sandbox/env.sh sets TEMPORAL_ADDRESS).
func (d *demo) command(args ...string) {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = text.ShellWord(a)
	}
	line := "temporal " + strings.Join(quoted, " ")
	d.report.Commands = append(d.report.Commands, line)
	fmt.Fprintf(d.out, "\n  $ %s\n\n", line)
}

// approve shows that naming an approver proves nothing, then approves with
// the approver's ID token through the worker's approval endpoint.
func (d *demo) approve(ctx context.Context, onboardID, approver string) error {
	d.section("4. Support approves, proving who they are")
	fmt.Fprintf(d.out, "\n  A signal that only names an approver proves nothing: whoever can signal the workflow could send it.\n")
	bare, err := json.Marshal(workflows.ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-1042"})
	if err != nil {
		return err
	}
	if err := d.temporal(ctx, "workflow", "signal", "--workflow-id", onboardID, "--name", contract.SignalSupportApproval,
		"--input", string(bare)); err != nil {
		return err
	}
	status, err := d.watch(ctx, workflows.OnboardWorkflowName, onboardID, func(s workflows.Status) bool {
		return s.Approval != nil && len(s.Approval.Ignored) > 0
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\n  Recorded and ignored: %s\n", status.Approval.Ignored[0].Reason)

	// The sandbox's emulator plays Google's sign-in: it issues the ID token
	// `gcloud auth print-identity-token --audiences=WORKFLOW_ID --include-email`
	// prints for the approver, and the worker trusts it as its issuer.
	token, err := d.sb.Emulator().MintIDToken(d.sb.IDTokenIssuer(), gcpemu.IDTokenClaims{Email: approver, Audience: onboardID, EmailVerified: true})
	if err != nil {
		return err
	}
	// The decision names the run support reviewed, as the email's command does.
	desc, err := d.sb.TemporalClient().DescribeWorkflowExecution(ctx, onboardID, "")
	if err != nil {
		return err
	}
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	args := []string{"approve", "--endpoint", d.sb.ApprovalURL(), "--workflow-id", onboardID, "--run-id", runID, "--id-token-file", "-",
		"--ticket", "SUP-1042", "--comment", "sandbox demo"}
	line := "gkewi " + strings.Join(quoteAll(args), " ") + "   # stdin: " + approver + "'s ID token for this workflow"
	d.report.Commands = append(d.report.Commands, line)
	fmt.Fprintf(d.out, "\n  $ %s\n\n", line)
	var out strings.Builder
	app := starter.New()
	app.Stdin, app.Stdout, app.Stderr = strings.NewReader(token), &out, &out
	code := app.Run(ctx, args)
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		fmt.Fprintln(d.out, "    "+l)
	}
	if code != 0 {
		return fmt.Errorf("gkewi approve exited %d", code)
	}
	return nil
}

func quoteAll(args []string) []string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = text.ShellWord(a)
	}
	return quoted
}

// watch shows the run's progress until done says so.
func (d *demo) watch(ctx context.Context, title, id string, done func(workflows.Status) bool) (workflows.Status, error) {
	view := d.views[id]
	if view == nil {
		view = newProgressView(d.out, d.tty, d.width, d.height)
		d.views[id] = view
	}
	defer view.finish()
	started := time.Now()
	interval := 250 * time.Millisecond
	if !d.tty {
		interval = 500 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last workflows.Status
	failures := 0
	for {
		s, err := d.status(ctx, id)
		switch {
		case err == nil:
			failures = 0
			last = s
			if len(s.Steps) > 0 && !s.Steps[0].StartedAt.IsZero() && started.After(s.Steps[0].StartedAt) {
				started = s.Steps[0].StartedAt
			}
			view.show(title, s, started)
			if done(s) {
				return s, nil
			}
		case ctx.Err() != nil:
			return last, ctx.Err()
		default:
			// The first queries may come before the worker picked the run up.
			if failures++; failures > 120 {
				return last, fmt.Errorf("querying %s: %w", id, err)
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C:
		}
	}
}

func (d *demo) status(ctx context.Context, id string) (workflows.Status, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	val, err := d.sb.TemporalClient().QueryWorkflow(qctx, id, "", contract.QueryStatus)
	if err != nil {
		return workflows.Status{}, err
	}
	var s workflows.Status
	if err := val.Get(&s); err != nil {
		return workflows.Status{}, err
	}
	if len(s.Steps) == 0 && !terminal(s.State) {
		return s, errors.New("no steps yet")
	}
	return s, nil
}

// recordWorkflow waits for a run that reached its final state to close, and adds
// it to the report with its final status.
func (d *demo) recordWorkflow(ctx context.Context, typ, id string, s workflows.Status) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	_ = d.sb.TemporalClient().GetWorkflow(wctx, id, "").Get(wctx, nil) // its error is the run's failure, already in s
	cancel()
	if final, err := d.status(ctx, id); err == nil {
		s = final
	}
	w := workflowReport{Type: typ, WorkflowID: id, State: string(s.State), Error: s.Error}
	if desc, err := d.sb.TemporalClient().DescribeWorkflowExecution(ctx, id, ""); err == nil {
		info := desc.WorkflowExecutionInfo
		w.RunID = info.Execution.RunId
		if info.CloseTime != nil && info.StartTime != nil {
			w.Seconds = info.CloseTime.AsTime().Sub(info.StartTime.AsTime()).Seconds()
		}
	}
	for _, st := range s.Steps {
		w.Steps = append(w.Steps, stepReport{Name: st.Name, State: string(st.State), Attempts: st.Attempts, Changed: st.Changed,
			DurationMS: stepElapsed(st, s.UpdatedAt).Milliseconds()})
	}
	d.report.Workflows = append(d.report.Workflows, w)
}

// showMail prints the newest message the sink received for support.
func (d *demo) showMail(ctx context.Context, support workflows.SupportSpec) {
	targets := support.Notify
	if len(targets) == 0 {
		targets = support.Approvers
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs := d.sb.Mail()
		for i := len(msgs) - 1; i >= 0; i-- {
			if containsFold(msgs[i].To, targets) {
				d.printMail(msgs[i].Data, msgs[i].File)
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Fprintf(d.out, "  ✘ no message for %s reached the SMTP sink (%d message(s) in all)\n", strings.Join(targets, ", "), len(msgs))
			d.report.Failures = append(d.report.Failures, "no approval email reached the SMTP sink")
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func containsFold(list, want []string) bool {
	for _, a := range list {
		for _, b := range want {
			if strings.EqualFold(a, b) {
				return true
			}
		}
	}
	return false
}

func (d *demo) printMail(raw []byte, file string) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		fmt.Fprintf(d.out, "  (unreadable message: %v)\n", err)
		return
	}
	dec := new(mime.WordDecoder)
	for _, h := range []string{"From", "To", "Subject", "Date"} {
		v := msg.Header.Get(h)
		if decoded, err := dec.DecodeHeader(v); err == nil {
			v = decoded
		}
		fmt.Fprintf(d.out, "  %-8s %s\n", h+":", v)
	}
	body, _ := io.ReadAll(msg.Body)
	fmt.Fprintln(d.out)
	lines := strings.Split(strings.ReplaceAll(strings.TrimRight(string(body), "\r\n"), "\r\n", "\n"), "\n")
	const maxLines = 40
	for i, l := range lines {
		if i == maxLines {
			fmt.Fprintf(d.out, "  │ … (%d more lines in %s)\n", len(lines)-maxLines, relPath(file))
			break
		}
		fmt.Fprintln(d.out, "  │ "+l)
	}
}

// clusterWorkDone tells whether the API, workload pool and node pool steps,
// which run while support decides, have ended.
func clusterWorkDone(s workflows.Status) bool {
	for _, st := range s.Steps {
		cluster := st.Name == "enable-iamcredentials" || st.Name == "workload-pool" || st.Name == "list-node-pools" ||
			strings.HasPrefix(st.Name, "node-pool/")
		if cluster && st.State != workflows.StepDone && st.State != workflows.StepSkipped {
			return false
		}
	}
	return true
}

// provePending shows that the preparation is done and nothing is granted yet.
func (d *demo) provePending(ctx context.Context, req workflows.OnboardRequest, gsaEmail string) error {
	fmt.Fprintf(d.out, "  Prepared, but nothing granted before the approval:\n\n")
	member := "serviceAccount:" + req.Project + ".svc.id.goog[" + req.Namespace + "/" + req.KSA + "]"
	cl, err := d.insp.cluster(ctx)
	if err != nil {
		return err
	}
	d.proof("GKE cluster (container API)", "workload pool "+orDash(cl.WorkloadPool), cl.WorkloadPool == req.Project+".svc.id.goog")
	gsa, err := d.insp.gsa(ctx, gsaEmail)
	if err != nil {
		return err
	}
	d.proof("GSA (IAM API)", gsaEmail+" exists", gsa.Exists)
	d.proof("  workloadIdentityUser", member+" not bound yet", !contains(gsa.Bindings["roles/iam.workloadIdentityUser"], member))
	_, found, err := d.insp.ksaAnnotation(ctx, req.Namespace, req.KSA)
	if err != nil {
		return err
	}
	d.proof("KSA (Kubernetes API)", req.Namespace+"/"+req.KSA+" not created yet", !found)
	return nil
}

// proveOnboarding reads the grant back from each system and walks the token chain.
func (d *demo) proveOnboarding(ctx context.Context, req workflows.OnboardRequest, gsaEmail string, vi activities.VerifyInput) (bool, error) {
	member := "serviceAccount:" + req.Project + ".svc.id.goog[" + req.Namespace + "/" + req.KSA + "]"
	cl, err := d.insp.cluster(ctx)
	if err != nil {
		return false, err
	}
	d.proof("GKE cluster (container API)", fmt.Sprintf("workload pool %s", orDash(cl.WorkloadPool)), cl.WorkloadPool == req.Project+".svc.id.goog")
	for _, pool := range sortedKeys(cl.NodePoolModes) {
		d.proof("  node pool "+pool, fmt.Sprintf("metadata mode %s; nodes labelled for the GKE metadata server: %s",
			cl.NodePoolModes[pool], cl.MetadataNodes[pool]), cl.NodePoolModes[pool] == "GKE_METADATA")
	}
	d.report.Proofs["cluster"] = cl

	gsa, err := d.insp.gsa(ctx, gsaEmail)
	if err != nil {
		return false, err
	}
	d.proof("GSA (IAM API)", fmt.Sprintf("%s, unique id %s", gsa.Email, gsa.UniqueID), gsa.Exists)
	for _, role := range sortedKeys(gsa.Bindings) {
		fmt.Fprintf(d.out, "      %s: %s\n", role, strings.Join(gsa.Bindings[role], ", "))
	}
	d.proof("  workloadIdentityUser", member, contains(gsa.Bindings["roles/iam.workloadIdentityUser"], member))
	d.report.Proofs["gsaAfterOnboarding"] = gsa

	if bq := req.BigQuery; bq != nil {
		for _, p := range uniq(bq.DataProject, bq.BillingProject) {
			roles, err := d.insp.projectRoles(ctx, p, "serviceAccount:"+gsaEmail)
			if err != nil {
				return false, err
			}
			d.proof("  project "+p+" (Resource Manager API)", "roles "+strings.Join(roles, ", "), len(roles) > 0)
		}
	}

	ann, found, err := d.insp.ksaAnnotation(ctx, req.Namespace, req.KSA)
	if err != nil {
		return false, err
	}
	d.proof("KSA (Kubernetes API)", fmt.Sprintf("%s/%s %s=%s", req.Namespace, req.KSA, activities.GSAAnnotation, orDash(ann)), found && ann == gsaEmail)

	rel, err := d.insp.helmRelease(ctx, req.Namespace, req.Helm.Release)
	if err != nil {
		return false, err
	}
	d.proof("Helm release (release Secret)", fmt.Sprintf("%s revision %d, %s, chart %s", rel.Release, rel.Revision, rel.Status, rel.Chart), rel.Status == "deployed")
	d.report.Proofs["helm"] = rel

	wls, err := d.insp.workloads(ctx, req.Namespace, req.Helm.Release)
	if err != nil {
		return false, err
	}
	granted := 0
	for _, w := range wls {
		if w.KSA != req.KSA {
			fmt.Fprintf(d.out, "    deployment %s: ready %s, service account %s (no Google identity)\n", w.Deployment, w.Ready, w.KSA)
			continue
		}
		granted++
		d.proof("  deployment "+w.Deployment, fmt.Sprintf("ready %s, service account %s", w.Ready, w.KSA), true)
		for _, k := range sortedKeys(w.Env) {
			fmt.Fprintf(d.out, "      %s=%s\n", k, w.Env[k])
		}
	}
	d.proof("  workloads on the granted KSA", fmt.Sprintf("%d deployment(s) run as %s", granted, req.KSA), granted > 0)
	d.report.Proofs["workloads"] = wls

	res, err := d.insp.verify(ctx, vi)
	if err != nil {
		return false, fmt.Errorf("verifying the token chain: %w", err)
	}
	d.report.Verification["onboard"] = res
	d.showChain(res, true)
	return res.Allowed, nil
}

// proveRevocation shows the binding gone, the GSA kept, and the chain denied.
func (d *demo) proveRevocation(ctx context.Context, req workflows.OnboardRequest, gsaEmail string, vi activities.VerifyInput) (bool, error) {
	member := "serviceAccount:" + req.Project + ".svc.id.goog[" + req.Namespace + "/" + req.KSA + "]"
	gsa, err := d.insp.gsa(ctx, gsaEmail)
	if err != nil {
		return false, err
	}
	d.proof("GSA (IAM API)", gsa.Email+" still exists; only this grant was removed", gsa.Exists)
	for _, role := range sortedKeys(gsa.Bindings) {
		fmt.Fprintf(d.out, "      %s: %s\n", role, strings.Join(gsa.Bindings[role], ", "))
	}
	d.proof("  workloadIdentityUser", member+" removed", !contains(gsa.Bindings["roles/iam.workloadIdentityUser"], member))
	d.report.Proofs["gsaAfterRevocation"] = gsa

	res, err := d.insp.verify(ctx, vi)
	if err != nil {
		return false, fmt.Errorf("verifying the token chain: %w", err)
	}
	d.report.Verification["revoke"] = res
	d.showChain(res, false)
	return !res.Allowed, nil
}

// showChain prints each link of the token chain.
func (d *demo) showChain(res activities.VerifyResult, wantAllowed bool) {
	fmt.Fprintf(d.out, "\n  Token chain of a pod of the release (walked from here, not by the worker):\n")
	for _, s := range res.Stages {
		mark := "✔"
		if !s.OK {
			mark = "✘"
		}
		fmt.Fprintf(d.out, "    %s %-22s %s\n", mark, s.Name, s.Detail)
	}
	verdict := "ALLOWED"
	if !res.Allowed {
		verdict = "DENIED"
	}
	ok := res.Allowed == wantAllowed
	d.proof("verification", verdict, ok)
}

// proof prints one checked fact; a wrong one is recorded as a failure.
func (d *demo) proof(what, detail string, ok bool) {
	mark := "✔"
	if !ok {
		mark = "✘"
		d.report.Failures = append(d.report.Failures, what+": "+detail)
	}
	fmt.Fprintf(d.out, "  %s %-34s %s\n", mark, what, detail)
}

func (d *demo) section(title string) {
	fmt.Fprintf(d.out, "\n== %s [%s]\n", title, fmtDuration(time.Since(d.started)))
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func uniq(items ...string) []string {
	var out []string
	for _, s := range items {
		if s != "" && !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// prefixWriter indents every line written through it.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+l); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
