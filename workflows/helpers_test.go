package workflows

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/gkewi/gkewi/contract"
)

// testStart is the workflow start time in tests.
var testStart = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)

const (
	alice   = "alice@example.com"
	mallory = "mallory@example.com"
	// wantWIMember is the Workload Identity principal of validRequest.
	wantWIMember = "serviceAccount:my-project.svc.id.goog[carto/carto-common-backend]"
	wantGSA      = "carto-backend@my-project.iam.gserviceaccount.com"
)

// validRequest is a complete onboarding request, BigQuery included.
func validRequest() OnboardRequest {
	return OnboardRequest{
		Project:   "my-project",
		Location:  "europe-west1",
		Cluster:   "prod-cluster",
		GSA:       GSASpec{AccountID: "carto-backend"},
		Namespace: "carto",
		Helm: HelmSpec{
			Release: "carto", Chart: "carto", RepoURL: "https://helm.carto.com",
			Values: map[string]any{"appConfigValues": map[string]any{"selfHostedDomain": "carto.example.com"}},
		},
		BigQuery: &BigQuerySpec{
			DataProject: "my-data-project", BillingProject: "my-billing-project",
			TempDataset: "carto_temp", ConnectionOwnerID: "auth0|owner",
		},
		Support: SupportSpec{
			// Decisions in these tests name their approver; proofs have their own tests.
			Proof:     ProofNone,
			Approvers: []string{alice, "Bob@Example.com"},
			Notify:    []string{"support@example.com", "https://hooks.example.com/gkewi"},
		},
	}
}

func newEnv(t *testing.T, fake *fakeCloud, workflowID string) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	env := suite.NewTestWorkflowEnvironment()
	fake.mockAll(env)
	env.SetStartTime(testStart)
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: workflowID, TaskQueue: TaskQueue})
	return env
}

// newOnboardEnv is a test environment for req under its proper workflow ID.
func newOnboardEnv(t *testing.T, fake *fakeCloud, req OnboardRequest) *testsuite.TestWorkflowEnvironment {
	return newEnv(t, fake, OnboardWorkflowID(req))
}

// signalAt sends d on the approval signal after delay of workflow time.
func signalAt(env *testsuite.TestWorkflowEnvironment, delay time.Duration, d any) {
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(contract.SignalSupportApproval, d) }, delay)
}

func approve(approver string) ApprovalDecision {
	return ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-42"}
}

func queryStatus(t *testing.T, env *testsuite.TestWorkflowEnvironment) Status {
	t.Helper()
	v, err := env.QueryWorkflow(contract.QueryStatus)
	require.NoError(t, err)
	var s Status
	require.NoError(t, v.Get(&s))
	return s
}

func mustStep(t *testing.T, s Status, name string) Step {
	t.Helper()
	st, ok := s.Step(name)
	require.Truef(t, ok, "no step %q in %+v", name, s.Steps)
	return st
}

// workflowAppError is the ApplicationError the workflow failed with.
func workflowAppError(t *testing.T, env *testsuite.TestWorkflowEnvironment) *temporal.ApplicationError {
	t.Helper()
	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.Truef(t, errors.As(err, &appErr), "not an ApplicationError: %v", err)
	return appErr
}

// assertPhases checks that calls is the phases one after another, each phase's
// calls in any order (they run side by side).
func assertPhases(t *testing.T, calls []string, phases ...[]string) {
	t.Helper()
	rest := calls
	for i, phase := range phases {
		if len(rest) < len(phase) {
			t.Fatalf("phase %d %v: only %v left of %v", i, phase, rest, calls)
		}
		got := slices.Sorted(slices.Values(rest[:len(phase)]))
		want := slices.Sorted(slices.Values(phase))
		require.Equal(t, want, got, "phase %d of %v", i, calls)
		rest = rest[len(phase):]
	}
	require.Empty(t, rest, "calls after the last phase in %v", calls)
}
