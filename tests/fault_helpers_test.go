package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

const callSACreate = "iam.projects.serviceAccounts.create"

// withFaults installs fault rules in the emulator for the rest of the test.
func withFaults(t *testing.T, rules ...gcpemu.FaultRule) {
	t.Helper()
	sandbox.Emulator().SetFaults(rules)
	t.Cleanup(func() { sandbox.Emulator().SetFaults(nil) })
}

// startApproved starts an onboarding with the approval sent along (signal-with-
// start): the workflow takes it when it reaches the gate.
func startApproved(t *testing.T, req workflows.OnboardRequest) client.WorkflowRun {
	t.Helper()
	id := workflows.OnboardWorkflowID(req)
	run, err := sandbox.TemporalClient().SignalWithStartWorkflow(context.Background(), id, contract.SignalSupportApproval,
		workflows.ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-F"},
		client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.OnboardWorkflowName, req)
	require.NoError(t, err)
	return run
}

// sdkStatus queries the status through the Temporal SDK (cheaper than the CLI
// when many runs are polled); ok is false while the query cannot be answered.
func sdkStatus(id string) (workflows.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := sandbox.TemporalClient().QueryWorkflow(ctx, id, "", contract.QueryStatus)
	var s workflows.Status
	if err != nil || v.Get(&s) != nil {
		return s, false
	}
	return s, true
}

// pollStatus polls the status every 25ms until cond holds.
func pollStatus(t *testing.T, id string, timeout time.Duration, what string, cond func(workflows.Status) bool) workflows.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last workflows.Status
	for time.Now().Before(deadline) {
		if s, ok := sdkStatus(id); ok {
			last = s
			if cond(s) {
				return s
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s: %s not reached within %s; last state %q, steps %s", id, what, timeout, last.State, stepSummary(last))
	return last
}

func stepSummary(s workflows.Status) string {
	var parts []string
	for _, st := range s.Steps {
		parts = append(parts, fmt.Sprintf("%s=%s(%d)", st.Name, st.State, st.Attempts))
	}
	return strings.Join(parts, " ")
}

func stepIn(name string, states ...workflows.StepState) func(workflows.Status) bool {
	return func(s workflows.Status) bool {
		st, ok := s.Step(name)
		for _, want := range states {
			if ok && st.State == want {
				return true
			}
		}
		return false
	}
}

// awaitRuns waits for every run's result, all at once, within timeout; it
// returns the error of each run (nil: completed).
func awaitRuns(runs []client.WorkflowRun, timeout time.Duration) []error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res workflows.OnboardResult
			errs[i] = r.Get(ctx, &res)
		}()
	}
	wg.Wait()
	return errs
}

// countCalls counts logged calls of method from since with the given status (0: any).
func countCalls(since time.Time, method string, status int) int {
	n := 0
	for _, r := range callsSince(since) {
		if r.Method == method && (status == 0 || r.Status == status) {
			n++
		}
	}
	return n
}

// assertGrantOnce checks the grant in the systems themselves: one GSA created,
// the workload's member once on it, the KSA annotated with it, one deployed
// Helm release at the revision the status reports.
func assertGrantOnce(t *testing.T, since time.Time, req workflows.OnboardRequest, s workflows.Status, wantRevision int) {
	t.Helper()
	req = req.WithDefaults()
	gsa := s.GSAEmail
	require.NotEmpty(t, gsa)
	assert.Equal(t, 1, countCalls(since, callSACreate, 200), "successful GSA creations")
	assert.True(t, gsaExists(t, gsa))
	member := workloadMember(req)
	n := 0
	for _, m := range gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"] {
		if m == member {
			n++
		}
	}
	assert.Equal(t, 1, n, "workloadIdentityUser members %s", member)

	ctx := context.Background()
	ksa, err := sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, ksaOf(req), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, gsa, ksa.Annotations["iam.gke.io/gcp-service-account"])

	secrets, err := sandbox.KubeClient().CoreV1().Secrets(req.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + req.Helm.Release})
	require.NoError(t, err)
	var deployed []string
	for _, sec := range secrets.Items {
		if sec.Labels["status"] == "deployed" {
			deployed = append(deployed, sec.Labels["version"])
		}
	}
	assert.Equal(t, []string{fmt.Sprint(wantRevision)}, deployed, "deployed Helm revisions")
	assert.Len(t, secrets.Items, wantRevision, "Helm revisions in all")
	assert.Equal(t, wantRevision, s.HelmRevision, "the status' Helm revision")
}
