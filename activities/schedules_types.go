package activities

import (
	"encoding/json"
	"time"
)

// Inputs and results of the Schedules and Grants activities, which act on the
// Temporal service itself. Workflow names, IDs and search attribute names come
// from the caller, so this package stays independent of the workflows.

// WorkflowAction is the workflow a schedule starts.
type WorkflowAction struct {
	WorkflowType string `json:"workflowType"`
	// WorkflowID is the base ID; the schedule appends "-" and the scheduled time
	// (RFC 3339) to the ID of each run it starts.
	WorkflowID string `json:"workflowId"`
	TaskQueue  string `json:"taskQueue"`
	// Input is the workflow's single argument (nil: none). It is sent as JSON;
	// passed through an activity, an object arrives as a map, which encodes the same.
	Input any `json:"input,omitempty"`
}

// RevocationScheduleInput asks for a schedule that starts Action once, at At.
type RevocationScheduleInput struct {
	ScheduleID string `json:"scheduleId"`
	// At is when the workflow starts, rounded up to the second.
	At     time.Time      `json:"at"`
	Action WorkflowAction `json:"action"`
	// Note is shown with the schedule (`temporal schedule describe`).
	Note string `json:"note,omitempty"`
}

// ScheduleResult says what SetRevocationTime did.
type ScheduleResult struct {
	ScheduleID string `json:"scheduleId"`
	// At is the time the schedule fires, as set (rounded up to the second).
	At time.Time `json:"at"`
	// Created is false when an existing schedule was updated to the new time.
	Created bool `json:"created"`
	// Triggered is true when At was not in the future: the action was started at once.
	Triggered bool `json:"triggered,omitempty"`
}

// ScheduleRef names a schedule.
type ScheduleRef struct {
	ScheduleID string `json:"scheduleId"`
}

// ScheduleStatus describes a schedule as the server has it.
type ScheduleStatus struct {
	ScheduleID string `json:"scheduleId"`
	// Exists is false when there is no such schedule; the other fields are then empty.
	Exists bool `json:"exists"`
	Paused bool `json:"paused,omitempty"`
	// NextActionAt is when the schedule next starts its workflow; zero when it
	// will not start one again (no time left, or no actions left).
	NextActionAt time.Time `json:"nextActionAt,omitzero"`
	// RunningWorkflowIDs are the runs it started that are still running.
	RunningWorkflowIDs []string `json:"runningWorkflowIds,omitempty"`
	// RecentWorkflowIDs are the runs it started most recently, oldest first.
	RecentWorkflowIDs []string `json:"recentWorkflowIds,omitempty"`
	Note              string   `json:"note,omitempty"`
}

// RecurringScheduleInput asks for a schedule that starts Action every Every.
type RecurringScheduleInput struct {
	ScheduleID string         `json:"scheduleId"`
	Every      time.Duration  `json:"every"`
	Action     WorkflowAction `json:"action"`
	Note       string         `json:"note,omitempty"`
}

// ListWorkflowRunsInput is a visibility query.
type ListWorkflowRunsInput struct {
	// Query is a Temporal visibility query, as `temporal workflow list --query` takes.
	Query string `json:"query"`
	// KeywordAttributes and TimeAttributes name the custom search attributes
	// (Keyword and Datetime) to return with each run.
	KeywordAttributes []string `json:"keywordAttributes,omitempty"`
	TimeAttributes    []string `json:"timeAttributes,omitempty"`
	// Limit bounds the runs returned; 0 means 10000.
	Limit int `json:"limit,omitempty"`
}

// ListWorkflowRunsResult lists the runs the query matched.
type ListWorkflowRunsResult struct {
	Runs []WorkflowRun `json:"runs"`
	// Truncated is true when more runs matched than Limit.
	Truncated bool `json:"truncated,omitempty"`
}

// Execution statuses of WorkflowRun.Status, as Temporal names them.
const (
	WorkflowStatusRunning    = "Running"
	WorkflowStatusCompleted  = "Completed"
	WorkflowStatusFailed     = "Failed"
	WorkflowStatusCanceled   = "Canceled"
	WorkflowStatusTerminated = "Terminated"
	WorkflowStatusTimedOut   = "TimedOut"
)

// WorkflowRun is one run of a workflow, as visibility or DescribeWorkflowExecution shows it.
type WorkflowRun struct {
	WorkflowID   string    `json:"workflowId"`
	RunID        string    `json:"runId"`
	WorkflowType string    `json:"workflowType"`
	Status       string    `json:"status"`
	StartTime    time.Time `json:"startTime"`
	CloseTime    time.Time `json:"closeTime,omitzero"`
	// Keywords and Times hold the requested search attributes the run has.
	Keywords map[string]string    `json:"keywords,omitempty"`
	Times    map[string]time.Time `json:"times,omitempty"`
}

// WorkflowRunRef names a run; an empty RunID means the latest run of the ID.
type WorkflowRunRef struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId,omitempty"`
}

// DescribeWorkflowRunInput names a run and, optionally, a query to ask it.
type DescribeWorkflowRunInput struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId,omitempty"`
	// Query is a query type to ask the run (closed runs too: a worker replays them).
	Query string `json:"query,omitempty"`
	// KeywordAttributes name the Keyword search attributes to return.
	KeywordAttributes []string `json:"keywordAttributes,omitempty"`
}

// WorkflowRunDescription describes a run; Found is false when the workflow ID
// has no run at all.
type WorkflowRunDescription struct {
	Found bool        `json:"found"`
	Run   WorkflowRun `json:"run,omitzero"`
	// QueryResult is the query's answer, as JSON.
	QueryResult json.RawMessage `json:"queryResult,omitempty"`
}

// CancelWorkflowRunInput names the run to cancel.
type CancelWorkflowRunInput struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
}
