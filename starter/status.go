package starter

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

func queryStatus(ctx context.Context, c client.Client, workflowID, runID string) (workflows.Status, error) {
	v, err := c.QueryWorkflow(ctx, workflowID, runID, contract.QueryStatus)
	if err != nil {
		return workflows.Status{}, err
	}
	var st workflows.Status
	if err := v.Get(&st); err != nil {
		return workflows.Status{}, fmt.Errorf("decode status: %w", err)
	}
	return st, nil
}

type statusOptions struct {
	conn                      connFlags
	workflowID, runID, output string
}

func (a *App) statusCommand() *cobra.Command {
	var o statusOptions
	cmd := newCommand("status --workflow-id ID [-o table|json]",
		"Show the state and steps of an Onboard or Revoke workflow",
		`Show the state and steps of an Onboard or Revoke workflow, as its status query
reports them: the grant, the approval, each step's attempts, duration and
last error.`,
		func(ctx context.Context) error { return a.status(ctx, o) })
	o.conn.register(cmd)
	cmd.Flags().StringVar(&o.workflowID, "workflow-id", "", "the Onboard or Revoke workflow ID (required)")
	cmd.Flags().StringVar(&o.runID, "run-id", "", "a specific run (default: the latest)")
	outputFlag(cmd, &o.output)
	noFileFlag(cmd, "workflow-id", "run-id")
	return cmd
}

func (a *App) status(ctx context.Context, o statusOptions) error {
	if o.workflowID == "" {
		return usagef("--workflow-id is required")
	}
	if o.output != "table" && o.output != "json" {
		return usagef("-o %q: want table or json", o.output)
	}
	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := queryStatus(ctx, c, o.workflowID, o.runID)
	if err != nil {
		return fmt.Errorf("query %s (%s): %w", o.workflowID, temporalQueryCommand(o.conn, o.workflowID), err)
	}
	if o.output == "json" {
		return a.printJSON(st)
	}
	writeStatus(a.Stdout, o.workflowID, st, a.Now())
	return nil
}

// formatTime is a short UTC timestamp, "-" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// writeStatus prints a header and one line per step.
func writeStatus(w io.Writer, workflowID string, st workflows.Status, now time.Time) {
	ended := ""
	if st.State.Terminal() {
		ended = " (ended)"
	}
	fmt.Fprintf(w, "%s %s: %s%s\n", st.Workflow, workflowID, st.State, ended)
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(kv, "  %s:\t%s\n", k, v)
		}
	}
	field("Cluster", strings.Trim(strings.Join([]string{st.Project, st.Location, st.Cluster}, "/"), "/"))
	if st.Namespace != "" || st.KSA != "" {
		field("KSA", st.Namespace+"/"+st.KSA)
	}
	gsa := st.GSAEmail
	if gsa != "" && st.GSACreated {
		gsa += " (created by this run)"
	}
	field("GSA", gsa)
	if st.HelmRevision > 0 {
		field("Helm revision", fmt.Sprint(st.HelmRevision))
	}
	if ap := st.Approval; ap != nil {
		line := string(ap.Decision)
		if ap.Approver != "" {
			line += " by " + ap.Approver
		}
		if ap.Ticket != "" {
			line += ", ticket " + ap.Ticket
		}
		if ap.Via != "" {
			line += " (" + ap.Via + ")"
		}
		if ap.Decision == workflows.DecisionPending && !ap.Deadline.IsZero() {
			line += fmt.Sprintf(", deadline %s, %d reminder(s) sent", formatTime(ap.Deadline), ap.RemindersSent)
		}
		field("Approval", line)
		for _, ig := range ap.Ignored {
			field("Ignored decision", fmt.Sprintf("%s via %s: %s", ig.Approver, ig.Via, ig.Reason))
		}
	}
	if !st.ExpiresAt.IsZero() {
		field("Expires", formatTime(st.ExpiresAt))
	}
	field("Revocation schedule", st.RevocationSchedule)
	if !st.RefusedAt.IsZero() {
		field("Refused since", formatTime(st.RefusedAt))
	}
	if !st.WaitUntil.IsZero() {
		field("Token wait until", formatTime(st.WaitUntil))
	}
	if !st.TokensValidUntil.IsZero() {
		field("Tokens valid until", formatTime(st.TokensValidUntil))
	}
	if !st.AccessEndedAt.IsZero() {
		field("Access ended", formatTime(st.AccessEndedAt))
	}
	if st.State == workflows.StateOnboardingCanceled {
		field("Outcome", "nothing was granted: the onboarding was canceled before the approval")
	}
	var running []string
	for _, s := range st.Steps {
		if s.State == workflows.StepRunning {
			running = append(running, s.Name)
		}
	}
	// Several steps run side by side (support's answer, GKE operations, the rollout).
	field("Running now", strings.Join(running, ", "))
	field("Error", st.Error)
	field("Updated", formatTime(st.UpdatedAt))
	_ = kv.Flush()

	fmt.Fprintln(w)
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tSTATE\tATTEMPTS\tTOOK\tDETAIL")
	for _, s := range st.Steps {
		detail := s.Detail
		if s.LastError != "" {
			if detail != "" {
				detail += "; "
			}
			detail += "last error: " + s.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.State, attempts(s.Attempts), took(s, now), oneLine(detail, 100))
	}
	_ = tw.Flush()
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		// Padding after the last non-empty cell is noise for copy and paste.
		if trimmed := strings.TrimRight(line, " \n"); trimmed != "" {
			fmt.Fprintln(w, trimmed)
		}
	}
	if len(st.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, warn := range st.Warnings {
			fmt.Fprintf(w, "  - %s\n", warn)
		}
	}
}

func attempts(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// took is the step's duration, counting up while it runs.
func took(s workflows.Step, now time.Time) string {
	switch {
	case s.StartedAt.IsZero():
		return "-"
	case s.EndedAt.IsZero():
		return now.Sub(s.StartedAt).Round(time.Second).String() + "…"
	default:
		d := s.EndedAt.Sub(s.StartedAt)
		switch {
		case d < time.Second:
			return d.Round(time.Millisecond).String()
		case d < time.Minute:
			return d.Round(100 * time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	}
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		return string(r[:limit-1]) + "…"
	}
	return s
}

// grant is one row of `gkewi list`.
type grant struct {
	WorkflowID string    `json:"workflowId"`
	RunID      string    `json:"runId"`
	Type       string    `json:"type"`
	Status     string    `json:"status"`
	State      string    `json:"state,omitempty"`
	Project    string    `json:"project,omitempty"`
	Cluster    string    `json:"cluster,omitempty"`
	Namespace  string    `json:"namespace,omitempty"`
	KSA        string    `json:"ksa,omitempty"`
	GSA        string    `json:"gsa,omitempty"`
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	// Decision, Approver and Ticket come from the memo Onboard writes once
	// support decided.
	Decision  string    `json:"decision,omitempty"`
	Approver  string    `json:"approver,omitempty"`
	Ticket    string    `json:"ticket,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	// ApprovalTimeout is from the start memo `gkewi onboard` writes; Deadline
	// counts it from the start (the wait itself begins after the steps before
	// the request, so the real deadline is that much later).
	ApprovalTimeout string    `json:"approvalTimeout,omitempty"`
	Deadline        time.Time `json:"deadline,omitzero"`
}

// defaultListQuery lists onboardings, the grants.
const defaultListQuery = "WorkflowType='" + workflows.OnboardWorkflowName + "'"

type listOptions struct {
	conn           connFlags
	query, output  string
	limit          int
	pending        bool
	expiringWithin time.Duration
}

func (a *App) listCommand() *cobra.Command {
	var o listOptions
	cmd := newCommand("list [--query QUERY | --pending [--expiring-within 72h]] [--limit N] [-o table|json]",
		"List grants from Temporal visibility, or what needs attention",
		`List onboardings (the grants) from Temporal visibility with their state, GSA,
approver and expiry; --query takes any visibility query. With --pending, list
what needs someone: grants awaiting approval (oldest first, with their
deadline) and grants expiring soon.`,
		func(ctx context.Context) error { return a.list(ctx, o) })
	f := cmd.Flags()
	o.conn.register(cmd)
	f.StringVar(&o.query, "query", defaultListQuery, "visibility query, e.g. \"WorkflowType='Onboard' AND GkewiState='awaiting-approval'\"")
	f.IntVar(&o.limit, "limit", 100, "at most this many rows")
	outputFlag(cmd, &o.output)
	f.BoolVar(&o.pending, "pending", false, "what needs attention: grants awaiting approval (age, deadline) and grants expiring soon")
	f.DurationVar(&o.expiringWithin, "expiring-within", 72*time.Hour, "with --pending: how soon an expiry counts as soon")
	noFileFlag(cmd, "query", "limit", "expiring-within")
	return cmd
}

func (a *App) list(ctx context.Context, o listOptions) error {
	if o.output != "table" && o.output != "json" {
		return usagef("-o %q: want table or json", o.output)
	}
	if o.limit <= 0 {
		return usagef("--limit must be positive")
	}
	if o.pending && o.query != defaultListQuery {
		return usagef("--pending makes its own queries; leave out --query")
	}
	if o.expiringWithin <= 0 {
		return usagef("--expiring-within must be positive")
	}
	c, _, err := a.dial(ctx, o.conn)
	if err != nil {
		return err
	}
	defer c.Close()
	if o.pending {
		return a.listPending(ctx, c, o.conn, o.expiringWithin, o.limit, o.output)
	}
	rows, err := listGrants(ctx, c, o.conn, o.query, o.limit)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if rows == nil {
			rows = []grant{}
		}
		return a.printJSON(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.Stdout, "No workflows match %s\n", o.query)
		return nil
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW ID\tSTATUS\tSTATE\tGSA\tAPPROVER\tEXPIRES\tSTARTED")
	for _, g := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.WorkflowID, g.Status, dash(g.State), dash(g.GSA), dash(g.Approver),
			formatTime(g.ExpiresAt), formatTime(g.StartedAt))
	}
	return tw.Flush()
}

// listGrants pages through visibility for up to limit runs matching query.
func listGrants(ctx context.Context, c client.Client, conn connFlags, query string, limit int) ([]grant, error) {
	var rows []grant
	var token []byte
	for len(rows) < limit {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:         query,
			PageSize:      int32(min(limit-len(rows), 1000)),
			NextPageToken: token,
		})
		if err != nil {
			return nil, fmt.Errorf("list workflows (temporal workflow list%s --query %s): %w", conn.cliFlags(), text.ShellQuote(query), err)
		}
		for _, info := range resp.GetExecutions() {
			rows = append(rows, grantFromInfo(info))
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			break
		}
	}
	if len(rows) > limit {
		rows = rows[:limit]
	}
	return rows, nil
}

// pendingQueries are the visibility queries of `gkewi list --pending`: running
// onboardings waiting for support, and completed grants whose expiry falls
// between now and now+within.
func pendingQueries(now time.Time, within time.Duration) (awaiting, expiring string) {
	awaiting = defaultListQuery + " AND " + workflows.SearchAttrState + "='" + string(workflows.StateAwaitingApproval) +
		"' AND ExecutionStatus='Running'"
	expiring = fmt.Sprintf("%s AND %s='%s' AND %s > '%s' AND %s <= '%s'", defaultListQuery,
		workflows.SearchAttrState, workflows.StateCompleted,
		workflows.SearchAttrExpiry, now.UTC().Format(time.RFC3339),
		workflows.SearchAttrExpiry, now.Add(within).UTC().Format(time.RFC3339))
	return awaiting, expiring
}

// pendingView is `gkewi list --pending -o json`.
type pendingView struct {
	AwaitingApproval []grant `json:"awaitingApproval"`
	ExpiringSoon     []grant `json:"expiringSoon"`
}

// listPending shows what needs someone: approvals oldest first, expiries
// soonest first, from two visibility queries (no query per workflow).
func (a *App) listPending(ctx context.Context, c client.Client, conn connFlags, within time.Duration, limit int, output string) error {
	now := a.Now()
	awaitingQ, expiringQ := pendingQueries(now, within)
	awaiting, err := listGrants(ctx, c, conn, awaitingQ, limit)
	if err != nil {
		return err
	}
	expiring, err := listGrants(ctx, c, conn, expiringQ, limit)
	if err != nil {
		return err
	}
	view := pendingView{AwaitingApproval: orEmpty(awaiting), ExpiringSoon: orEmpty(expiring)}
	slices.SortStableFunc(view.AwaitingApproval, func(x, y grant) int { return x.StartedAt.Compare(y.StartedAt) })
	slices.SortStableFunc(view.ExpiringSoon, func(x, y grant) int { return x.ExpiresAt.Compare(y.ExpiresAt) })
	if output == "json" {
		return a.printJSON(view)
	}
	writePending(a.Stdout, view, within, now)
	return nil
}

func orEmpty(rows []grant) []grant {
	if rows == nil {
		return []grant{}
	}
	return rows
}

func writePending(w io.Writer, v pendingView, within time.Duration, now time.Time) {
	fmt.Fprintf(w, "Awaiting approval (%d):\n", len(v.AwaitingApproval))
	if len(v.AwaitingApproval) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  WORKFLOW ID\tKSA\tGSA\tAGE\tDEADLINE")
		for _, g := range v.AwaitingApproval {
			deadline := "-"
			if !g.Deadline.IsZero() {
				deadline = formatTime(g.Deadline) + " (in " + roundAge(g.Deadline.Sub(now)) + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", g.WorkflowID, ksaName(g), dash(g.GSA), roundAge(now.Sub(g.StartedAt)), deadline)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "  (deadlines count the approval timeout from the start; '-': not started by gkewi onboard)")
	}
	fmt.Fprintf(w, "\nExpiring within %s (%d):\n", within, len(v.ExpiringSoon))
	if len(v.ExpiringSoon) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  WORKFLOW ID\tKSA\tGSA\tEXPIRES\tIN")
		for _, g := range v.ExpiringSoon {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", g.WorkflowID, ksaName(g), dash(g.GSA), formatTime(g.ExpiresAt), roundAge(g.ExpiresAt.Sub(now)))
		}
		_ = tw.Flush()
	}
}

func ksaName(g grant) string {
	if g.Namespace == "" && g.KSA == "" {
		return "-"
	}
	return g.Namespace + "/" + g.KSA
}

// roundAge is a duration to the unit that matters at its size.
func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Minute).String()
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", int(d.Hours()), m)
		}
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// grantFromInfo reads gkewi's search attributes and memo off a visibility record.
func grantFromInfo(info *workflowpb.WorkflowExecutionInfo) grant {
	g := grant{
		WorkflowID: info.GetExecution().GetWorkflowId(),
		RunID:      info.GetExecution().GetRunId(),
		Type:       info.GetType().GetName(),
		Status:     executionStatus(info.GetStatus()),
		StartedAt:  info.GetStartTime().AsTime(),
	}
	str := func(fields map[string]*commonpb.Payload, name string) string {
		var s string
		if p, ok := fields[name]; ok {
			_ = converter.GetDefaultDataConverter().FromPayload(p, &s)
		}
		return s
	}
	fields := info.GetSearchAttributes().GetIndexedFields()
	g.State = str(fields, workflows.SearchAttrState)
	g.Project = str(fields, workflows.SearchAttrProject)
	g.Cluster = str(fields, workflows.SearchAttrCluster)
	g.Namespace = str(fields, workflows.SearchAttrNamespace)
	g.KSA = str(fields, workflows.SearchAttrKSA)
	g.GSA = str(fields, workflows.SearchAttrGSA)
	memo := info.GetMemo().GetFields()
	g.Decision = str(memo, workflows.MemoDecision)
	g.Approver = str(memo, workflows.MemoApprover)
	g.Ticket = str(memo, workflows.MemoTicket)
	g.ApprovalTimeout = str(memo, worker.MemoApprovalTimeout)
	if d, err := time.ParseDuration(g.ApprovalTimeout); err == nil && d > 0 {
		g.Deadline = g.StartedAt.Add(d)
	}
	if p, ok := fields[workflows.SearchAttrExpiry]; ok {
		var t time.Time
		if err := converter.GetDefaultDataConverter().FromPayload(p, &t); err == nil {
			g.ExpiresAt = t
		}
	}
	return g
}

// executionStatus is "Running", "Completed", ... as the temporal CLI shows it.
func executionStatus(s enumspb.WorkflowExecutionStatus) string {
	name := strings.TrimPrefix(s.String(), "WORKFLOW_EXECUTION_STATUS_")
	name = strings.ReplaceAll(strings.ToLower(name), "_", "")
	switch name {
	case "continuedasnew":
		return "ContinuedAsNew"
	case "timedout":
		return "TimedOut"
	}
	if name == "" {
		return "-"
	}
	return strings.ToUpper(name[:1]) + name[1:]
}
