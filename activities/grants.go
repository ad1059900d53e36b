package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/contract"
)

// Defaults of Grants.
const (
	defaultListLimit    = 10000
	defaultListPageSize = 1000
	// closePollInterval is how often CancelWorkflowRun checks whether the run closed.
	closePollInterval = 2 * time.Second
)

// Grants reads and steers gkewi's own workflow runs through the Temporal
// service: visibility queries (which grants exist, which expired), the status of
// a run, its result, and cancellation.
type Grants struct {
	client   client.Client
	pageSize int
}

// NewGrants returns grant activities that act through c.
func NewGrants(c client.Client) *Grants {
	return &Grants{client: c, pageSize: defaultListPageSize}
}

// ListWorkflowRuns runs a visibility query, page by page, and returns every
// matching run (closed runs of a reused workflow ID included) up to the limit.
// Visibility is eventually consistent: a run started or closed a moment ago may
// not show yet.
func (g *Grants) ListWorkflowRuns(ctx context.Context, in ListWorkflowRunsInput) (ListWorkflowRunsResult, error) {
	if err := g.ready(); err != nil {
		return ListWorkflowRunsResult{}, err
	}
	if in.Query == "" {
		return ListWorkflowRunsResult{}, invalidArgument("list workflow runs: query is required (listing everything is never what a grant needs)")
	}
	limit := in.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	pageSize := g.pageSize
	if pageSize <= 0 {
		pageSize = defaultListPageSize
	}
	out := ListWorkflowRunsResult{Runs: []WorkflowRun{}}
	var token []byte
	for page := 1; ; page++ {
		resp, err := g.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: in.Query, PageSize: int32(min(pageSize, limit+1)), NextPageToken: token,
		})
		if err != nil {
			return ListWorkflowRunsResult{}, classifyTemporalError(err, fmt.Sprintf("list workflows matching %q", in.Query))
		}
		for _, e := range resp.GetExecutions() {
			if len(out.Runs) == limit {
				out.Truncated = true
				return out, nil
			}
			out.Runs = append(out.Runs, runOf(e, in.KeywordAttributes, in.TimeAttributes))
		}
		heartbeat(ctx, page)
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return out, nil
		}
	}
}

// DescribeWorkflowRun describes a run (the latest of the workflow ID when no run
// ID is given) and, when in.Query is set, asks it that query. A workflow ID
// without runs is a result (Found false), not an error.
func (g *Grants) DescribeWorkflowRun(ctx context.Context, in DescribeWorkflowRunInput) (WorkflowRunDescription, error) {
	if err := g.ready(); err != nil {
		return WorkflowRunDescription{}, err
	}
	if in.WorkflowID == "" {
		return WorkflowRunDescription{}, invalidArgument("describe workflow run: workflowId is required")
	}
	desc, err := g.client.DescribeWorkflowExecution(ctx, in.WorkflowID, in.RunID)
	if isNotFound(err) {
		return WorkflowRunDescription{}, nil
	}
	if err != nil {
		return WorkflowRunDescription{}, classifyTemporalError(err, "describe workflow "+in.WorkflowID)
	}
	out := WorkflowRunDescription{Found: true, Run: runOf(desc.GetWorkflowExecutionInfo(), in.KeywordAttributes, nil)}
	if in.Query == "" {
		return out, nil
	}
	v, err := g.client.QueryWorkflow(ctx, in.WorkflowID, out.Run.RunID, in.Query)
	if err != nil {
		return WorkflowRunDescription{}, classifyTemporalError(err, fmt.Sprintf("query %s of workflow %s", in.Query, in.WorkflowID))
	}
	var raw json.RawMessage
	if err := v.Get(&raw); err != nil {
		return WorkflowRunDescription{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("query %s of workflow %s: the answer is not JSON: %v", in.Query, in.WorkflowID, err), contract.ErrTypeFailedPrecondition, nil)
	}
	out.QueryResult = raw
	return out, nil
}

// CancelWorkflowRun asks the run to cancel and waits until it has closed, so its
// own clean-up is over when the activity returns; it returns the run as closed.
// A run that already closed is left alone. It heartbeats while it waits.
func (g *Grants) CancelWorkflowRun(ctx context.Context, in CancelWorkflowRunInput) (WorkflowRun, error) {
	if err := g.ready(); err != nil {
		return WorkflowRun{}, err
	}
	if in.WorkflowID == "" || in.RunID == "" {
		return WorkflowRun{}, invalidArgument("cancel workflow run: workflowId and runId are required")
	}
	requested := false
	var run WorkflowRun
	err := pollEvery(ctx, closePollInterval, true, "wait for "+in.WorkflowID+" to close", func(ctx context.Context) (bool, error) {
		desc, err := g.client.DescribeWorkflowExecution(ctx, in.WorkflowID, in.RunID)
		if err != nil {
			return false, classifyTemporalError(err, "describe workflow "+in.WorkflowID)
		}
		if run = runOf(desc.GetWorkflowExecutionInfo(), nil, nil); run.Status != WorkflowStatusRunning {
			return true, nil
		}
		if !requested {
			if err := g.client.CancelWorkflow(ctx, in.WorkflowID, in.RunID); err != nil && !isNotFound(err) {
				return false, classifyTemporalError(err, "cancel workflow "+in.WorkflowID)
			}
			requested = true
		}
		heartbeat(ctx, "waiting for "+in.WorkflowID+" to close")
		return false, nil
	})
	if err != nil {
		return WorkflowRun{}, err
	}
	return run, nil
}

// WorkflowRunResult returns the result of a completed run, as JSON.
func (g *Grants) WorkflowRunResult(ctx context.Context, in WorkflowRunRef) (json.RawMessage, error) {
	if err := g.ready(); err != nil {
		return nil, err
	}
	if in.WorkflowID == "" {
		return nil, invalidArgument("workflow run result: workflowId is required")
	}
	desc, err := g.client.DescribeWorkflowExecution(ctx, in.WorkflowID, in.RunID)
	if err != nil {
		return nil, classifyTemporalError(err, "describe workflow "+in.WorkflowID)
	}
	info := desc.GetWorkflowExecutionInfo()
	if st := info.GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("workflow %s run %s is %s: only a completed run has a result", in.WorkflowID, info.GetExecution().GetRunId(), st),
			contract.ErrTypeFailedPrecondition, nil)
	}
	var raw json.RawMessage
	if err := g.client.GetWorkflow(ctx, in.WorkflowID, info.GetExecution().GetRunId()).Get(ctx, &raw); err != nil {
		return nil, classifyTemporalError(err, "read the result of workflow "+in.WorkflowID)
	}
	return raw, nil
}

func (g *Grants) ready() error {
	if g == nil || g.client == nil {
		return temporal.NewNonRetryableApplicationError(
			"grants: no Temporal client; build the activities with activities.NewGrants", contract.ErrTypeFailedPrecondition, nil)
	}
	return nil
}

// runOf converts a visibility record, decoding the requested search attributes.
func runOf(e *workflowpb.WorkflowExecutionInfo, keywords, times []string) WorkflowRun {
	run := WorkflowRun{
		WorkflowID:   e.GetExecution().GetWorkflowId(),
		RunID:        e.GetExecution().GetRunId(),
		WorkflowType: e.GetType().GetName(),
		Status:       e.GetStatus().String(),
	}
	if e.GetStartTime() != nil {
		run.StartTime = e.GetStartTime().AsTime().UTC()
	}
	if e.GetCloseTime() != nil {
		run.CloseTime = e.GetCloseTime().AsTime().UTC()
	}
	fields := e.GetSearchAttributes().GetIndexedFields()
	for _, name := range keywords {
		var s string
		if decodeAttribute(fields[name], &s) {
			if run.Keywords == nil {
				run.Keywords = map[string]string{}
			}
			run.Keywords[name] = s
		}
	}
	for _, name := range times {
		var t time.Time
		if decodeAttribute(fields[name], &t) {
			if run.Times == nil {
				run.Times = map[string]time.Time{}
			}
			run.Times[name] = t.UTC()
		}
	}
	return run
}

func decodeAttribute(p *commonpb.Payload, out any) bool {
	if p == nil {
		return false
	}
	return converter.GetDefaultDataConverter().FromPayload(p, out) == nil
}
