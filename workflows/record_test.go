package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/toolpath"
)

// recordEnv turns on TestRecordHistories.
const recordEnv = "GKEWI_RECORD_HISTORIES"

// TestRecordHistories records the histories TestReplayRecordedHistories
// replays, by running the workflows in a Temporal dev server with a worker whose
// cloud activities are fakes. It runs only when asked, and records only the
// histories missing from testdata: an existing one stands for runs recorded by
// an earlier version of the workflows, which must keep replaying. To re-record
// one, delete its file first.
//
//	GKEWI_RECORD_HISTORIES=1 go test -count=1 -run 'TestRecordHistories|OnDevServer' ./workflows/
//
// The timeout scenario waits for real timers (about four minutes). The
// histories of time-bound grants come from TestTimeBoundGrantsOnDevServer.
func TestRecordHistories(t *testing.T) {
	if !recording() {
		t.Skip("set " + recordEnv + "=1 to record the missing histories of workflows/testdata")
	}
	d := startDevWorker(t, 10*time.Minute)
	ctx, c, fake, rec := d.ctx, d.c, d.fake, d.rec

	t.Run("onboard-bigquery-approved", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-bigquery-approved")
		// A flaky preflight (one retry timer), an ignored signal, then the update.
		fake.failNext("Preflight", errors.New("connection reset by peer"))
		fake.setVerify(func(n int) activities.VerifyResult {
			if n == 1 {
				return deniedAt("generate-access-token")
			}
			return allowed()
		})
		req := validRequest()
		req.Expiry = &ExpirySpec{TTL: "720h"}
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(mallory)))
		handle, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: contract.UpdateSupportDecision,
			Args: []any{approve(alice)}, WaitForStage: client.WorkflowUpdateStageCompleted,
		})
		require.NoError(t, err)
		var state State
		require.NoError(t, handle.Get(ctx, &state))
		require.Equal(t, StateApproved, state)
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		rec.save(run, "onboard-bigquery-approved")
	})

	t.Run("onboard-rendered-release", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-rendered-release")
		// The release rendered first, its KSA one the chart only uses (annotated
		// by gkewi before Helm), the access checked, the release verified.
		fake.setVerify(func(int) activities.VerifyResult { return allowed() })
		setSource := func(source string) { fake.mu.Lock(); fake.ksaSource = source; fake.mu.Unlock() }
		setSource(activities.KSAExisting)
		t.Cleanup(func() { setSource(activities.KSAFromChart) })
		req := validRequest()
		req.Namespace = "carto-rendered"
		req.KSA = "carto-backend"
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(alice)))
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		require.Equal(t, "carto", res.Revoke.Release)
		rec.save(run, "onboard-rendered-release")
	})

	t.Run("onboard-critical-path", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-critical-path")
		// Support asked right after the GSA, the cluster work beside the wait
		// (a busy first node pool: one retry timer), then the grants side by
		// side after the binding (BigQuery losing a race: another timer).
		fake.setVerify(func(int) activities.VerifyResult { return allowed() })
		fake.failNext("SetNodePoolMetadata", temporal.NewApplicationError("the cluster is busy", contract.ErrTypeClusterBusy))
		fake.failNext("GrantBigQueryAccess", errors.New("googleapi: Error 412: Precondition check failed"))
		req := validRequest()
		req.Namespace = "carto-critical"
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(alice)))
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		rec.save(run, "onboard-critical-path")
	})

	t.Run("onboard-autopilot-proven", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-autopilot-proven")
		// An Autopilot cluster (no node pool steps), proof required: a bare
		// signal is ignored, a forged proof refused, a proven update counts.
		fake.setVerify(func(int) activities.VerifyResult { return allowed() })
		fake.mu.Lock()
		fake.autopilot = true
		fake.mu.Unlock()
		t.Cleanup(func() { fake.mu.Lock(); fake.autopilot = false; fake.mu.Unlock() })
		req := validRequest()
		req.Namespace = "carto-autopilot"
		req.Support.Proof = ""
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(alice)))
		forged, good := proven(alice, true), proven(alice, true)
		forged.Proof.MAC = "made-up"
		for _, p := range []*activities.DecisionProof{forged.Proof, good.Proof} {
			p.RunID, p.Audience = run.GetRunID(), run.GetID()
		}
		for _, d := range []ApprovalDecision{forged, good} {
			h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
				WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: contract.UpdateSupportDecision,
				Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted,
			})
			if err == nil {
				var st State
				err = h.Get(ctx, &st)
			}
			if d.Proof.MAC != validMAC {
				require.ErrorContains(t, err, "proof refused")
			} else {
				require.NoError(t, err)
			}
		}
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		rec.save(run, "onboard-autopilot-proven")
	})

	t.Run("onboard-rejected", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-rejected")
		req := validRequest()
		req.Namespace = "carto-rejected"
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval,
			ApprovalDecision{Approved: false, Approver: alice, Ticket: "SUP-43", Comment: "not this cluster"}))
		rec.requireFailure(run, ErrTypeRejected)
		rec.save(run, "onboard-rejected")
	})

	t.Run("onboard-timed-out", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-timed-out")
		req := validRequest()
		req.Namespace = "carto-timeout"
		req.GSA = GSASpec{Email: wantGSA}
		req.Support.ReminderInterval = "1m"
		req.Support.ApprovalTimeout = "2m30s"
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.requireFailure(run, ErrTypeApprovalTimedOut)
		rec.save(run, "onboard-timed-out")
	})

	t.Run("onboard-unknown-field-refused", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-unknown-field-refused")
		req := validRequest()
		req.Namespace = "carto-typo"
		input := patchedJSONOf(t, req, func(m map[string]any) { m["expiry"] = map[string]any{"tll": "1h"} })
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), json.RawMessage(input))
		rec.requireFailure(run, ErrTypeInvalidRequest)
		rec.save(run, "onboard-unknown-field-refused")
	})

	t.Run("onboard-approved-memo", func(t *testing.T) {
		rec.skipIfRecorded(t, "onboard-approved-memo")
		fake.setVerify(func(int) activities.VerifyResult { return allowed() })
		req := validRequest()
		req.Namespace = "carto-memo"
		req.BigQuery = nil
		run := rec.start(OnboardWorkflowName, OnboardWorkflowID(req), req)
		rec.waitFor(run, StateAwaitingApproval)
		require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), contract.SignalSupportApproval, approve(alice)))
		var res OnboardResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateCompleted, res.State)
		rec.save(run, "onboard-approved-memo")
	})

	t.Run("revoke", func(t *testing.T) {
		rec.skipIfRecorded(t, "revoke")
		fake.setVerify(func(n int) activities.VerifyResult {
			if n == 1 {
				return allowed()
			}
			return deniedAt("generate-access-token")
		})
		req := revokeRequest()
		req.TokenExpiryWait = "3s"
		run := rec.start(RevokeWorkflowName, RevokeWorkflowID(req), req)
		var res RevokeResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, StateRevoked, res.State)
		rec.save(run, "revoke")
	})
}

// devWorker is a Temporal dev server with a worker running gkewi's workflows:
// fake cloud activities, real Schedules and Grants activities.
type devWorker struct {
	ctx  context.Context
	c    client.Client
	fake *fakeCloud
	rec  recorder
}

// startDevWorker starts the dev server and the worker for the test. Without the
// Temporal CLI the test is skipped, except under CI=true or when recording.
func startDevWorker(t *testing.T, timeout time.Duration) devWorker {
	t.Helper()
	cli := toolpath.TemporalCLI()
	if _, err := os.Stat(cli); err != nil {
		msg := fmt.Sprintf("Temporal CLI not found at %s (run `make tools`, or set GKEWI_TEMPORAL): %v", cli, err)
		if os.Getenv("CI") == "true" || recording() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)

	logger := log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	var extra []string
	for _, f := range SearchAttributeFlags() {
		extra = append(extra, "--search-attribute", f)
	}
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  cli,
		ClientOptions: &client.Options{Namespace: "default", Logger: logger},
		LogLevel:      "error",
		ExtraArgs:     extra,
		Stdout:        io.Discard,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	c := srv.Client()

	fake := newFakeCloud()
	w := worker.New(c, TaskQueue, worker.Options{})
	Register(w)
	fake.registerAll(w)
	w.RegisterActivity(activities.NewSchedules(c))
	w.RegisterActivity(activities.NewGrants(c))
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	return devWorker{ctx: ctx, c: c, fake: fake, rec: recorder{t: t, ctx: ctx, c: c}}
}

func recording() bool { return os.Getenv(recordEnv) != "" }

type recorder struct {
	t   *testing.T
	ctx context.Context
	c   client.Client
}

func historyPath(name string) string { return filepath.Join("testdata", name+".json") }

// skipIfRecorded skips a recording scenario whose history exists.
func (r recorder) skipIfRecorded(t *testing.T, name string) {
	if _, err := os.Stat(historyPath(name)); err == nil {
		t.Skipf("%s exists; delete it to re-record", historyPath(name))
	}
}

// keep saves the history of a run as testdata/NAME.json when recording and the
// file is missing.
func (r recorder) keep(workflowID, runID, name string) {
	if !recording() {
		return
	}
	if _, err := os.Stat(historyPath(name)); err == nil {
		r.t.Logf("%s exists; not re-recorded", historyPath(name))
		return
	}
	r.saveRun(workflowID, runID, name)
}

func (r recorder) start(workflowType, id string, req any) client.WorkflowRun {
	run, err := r.c.ExecuteWorkflow(r.ctx, client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue}, workflowType, req)
	require.NoError(r.t, err)
	return run
}

// waitFor polls the status query until the run reaches state, and returns the status.
func (r recorder) waitFor(run client.WorkflowRun, state State) Status {
	var s Status
	require.Eventually(r.t, func() bool {
		v, err := r.c.QueryWorkflow(r.ctx, run.GetID(), run.GetRunID(), contract.QueryStatus)
		if err != nil {
			return false
		}
		return v.Get(&s) == nil && s.State == state
	}, time.Minute, 200*time.Millisecond, "run %s never reached %s", run.GetID(), state)
	return s
}

func (r recorder) requireFailure(run client.WorkflowRun, errType string) {
	err := run.Get(r.ctx, nil)
	var appErr *temporal.ApplicationError
	require.Truef(r.t, errors.As(err, &appErr), "want an %s failure, got %v", errType, err)
	require.Equal(r.t, errType, appErr.Type())
}

// save writes the run's full history to testdata/NAME.json.
func (r recorder) save(run client.WorkflowRun, name string) {
	r.saveRun(run.GetID(), run.GetRunID(), name)
}

func (r recorder) saveRun(workflowID, runID, name string) {
	it := r.c.GetWorkflowHistory(r.ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(r.t, err)
		hist.Events = append(hist.Events, ev)
	}
	data, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
	require.NoError(r.t, err)
	path := historyPath(name)
	require.NoError(r.t, os.WriteFile(path, append(data, '\n'), 0o644))
	r.t.Logf("recorded %s: %d events", path, len(hist.Events))
}
