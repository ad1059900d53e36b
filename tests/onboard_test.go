package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/workflows"
)

// Wait bounds: generous for a loaded 2-core CI machine, far above what a run takes.
const (
	toApproval  = 2 * time.Minute
	toCompleted = 4 * time.Minute
)

// Method ids of the token chain in the emulator's request log.
const (
	callSTS           = "sts.token"
	callGenerateToken = "iamcredentials.projects.serviceAccounts.generateAccessToken"
	callBigQueryQuery = "bigquery.jobs.query"
)

// Workflow execution statuses as `temporal workflow describe -o json` prints them.
const (
	statusCompleted = "WORKFLOW_EXECUTION_STATUS_COMPLETED"
	statusFailed    = "WORKFLOW_EXECUTION_STATUS_FAILED"
)

// approveAndComplete approves a waiting onboarding and waits for its end.
func approveAndComplete(t *testing.T, id string) workflows.Status {
	t.Helper()
	signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: approver, Ticket: "SUP-1"})
	s := waitStatus(t, id, toCompleted, "the end of the onboarding",
		inState(workflows.StateCompleted, workflows.StateFailed, workflows.StateRejected, workflows.StateCanceled))
	require.Equal(t, workflows.StateCompleted, s.State, "error: %s", s.Error)
	return s
}

func TestOnboardingApprovedThenRevoked(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-full").WithDefaults()
	start := time.Now()
	id := startOnboard(t, req)

	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	require.NotEmpty(t, s.GSAEmail)
	gsa := s.GSAEmail

	t.Run("support is asked by email", func(t *testing.T) {
		var found bool
		for _, m := range sandbox.Mail() {
			if slices.Contains(m.To, approver) && strings.Contains(string(m.Data), id) {
				found = true
				assert.Contains(t, string(m.Data), "support-approval", "the email says how to approve")
			}
		}
		assert.True(t, found, "no email to %s mentions %s", approver, id)
	})

	t.Run("nothing is granted before the approval", func(t *testing.T) {
		assert.True(t, gsaExists(t, gsa), "the GSA is prepared before the approval")
		assert.NotContains(t, gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"], workloadMember(req))
	})

	t.Run("an unlisted approver is ignored", func(t *testing.T) {
		signalDecision(t, id, workflows.ApprovalDecision{Approved: true, Approver: unlistedEmail})
		s := waitStatus(t, id, time.Minute, "the ignored decision", func(s workflows.Status) bool {
			return s.Approval != nil && len(s.Approval.Ignored) > 0
		})
		assert.Equal(t, workflows.StateAwaitingApproval, s.State)
		assert.Equal(t, unlistedEmail, s.Approval.Ignored[0].Approver)
		assert.Contains(t, s.Approval.Ignored[0].Reason, "is not an approver of grant policy rule \"sandbox-tests\"")

		// The update refuses it at once, with the reason.
		input, err := json.Marshal(workflows.ApprovalDecision{Approved: true, Approver: unlistedEmail})
		require.NoError(t, err)
		res := run(t, sandbox.TemporalCLIPath(), "workflow", "update", "execute", "--workflow-id", id,
			"--name", contract.UpdateSupportDecision, "--input", string(input))
		assert.NotEqual(t, 0, res.code, "%s", res)
		assert.Contains(t, res.stdout+res.stderr, "is not an approver of grant policy rule")
		assert.NotContains(t, gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"], workloadMember(req))
	})

	s = approveAndComplete(t, id)
	require.Equal(t, statusCompleted, waitClosed(t, id, time.Minute).WorkflowExecutionInfo.Status)

	t.Run("Google Cloud holds the grant", func(t *testing.T) {
		members := gsaMembers(t, gsa)
		assert.Contains(t, members["roles/iam.workloadIdentityUser"], workloadMember(req))
		assert.Contains(t, members["roles/iam.serviceAccountTokenCreator"], "serviceAccount:"+gsa)
	})

	t.Run("Kubernetes holds the annotation and the release", func(t *testing.T) {
		assert.Equal(t, demoChartKSA, s.KSA, "the KSA the chart's backends run as, not one named after the release")
		ann := kubectl(t, "get", "serviceaccount", "-n", req.Namespace, s.KSA,
			"-o", `jsonpath={.metadata.annotations.iam\.gke\.io/gcp-service-account}`)
		assert.Equal(t, gsa, ann)
		secrets := strings.Fields(kubectl(t, "get", "secrets", "-n", req.Namespace, "-l", "owner=helm,name="+req.Helm.Release+",status=deployed", "-o", "name"))
		assert.Len(t, secrets, 1, "one deployed Helm revision")
		// The pods that exist, read from the cluster: the backends run as the
		// granted KSA, and no KSA is left that no pod uses.
		pods := kubectl(t, "get", "pods", "-n", req.Namespace, "-l", "app.kubernetes.io/instance="+req.Helm.Release,
			"-o", `jsonpath={range .items[*]}{.metadata.labels.app\.kubernetes\.io/component}={.spec.serviceAccountName}{"\n"}{end}`)
		assert.Contains(t, pods, "workspace-api="+s.KSA)
		assert.Contains(t, pods, "workspace-subscriber="+s.KSA)
		assert.Equal(t, "", kubectl(t, "get", "serviceaccount", "-n", req.Namespace, req.Helm.Release+"-common-backend", "--ignore-not-found", "-o", "name"),
			"no KSA named after the release")
		conn := kubectl(t, "get", "configmap", "-n", req.Namespace, req.Helm.Release+"-carto-demo-workspace-api", "-o", "jsonpath={.data}")
		assert.Contains(t, conn, `"WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL":"`+gsa+`"`)
		assert.Contains(t, conn, `"WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT":"carto-billing"`)
		assert.Contains(t, mustStep(t, s, "verify-release").Detail, "run as "+req.Namespace+"/"+s.KSA)
	})

	t.Run("the workflow verified the chain for real", func(t *testing.T) {
		federated := workloadMember(req)
		ok := map[string]bool{}
		for _, r := range callsSince(start) {
			switch {
			case r.Method == callGenerateToken && r.Principal == federated && r.Status == 200:
				ok[callGenerateToken] = true
			case r.Method == callBigQueryQuery && r.Principal == "serviceAccount:"+gsa && r.Status == 200:
				ok[callBigQueryQuery] = true
			case r.Method == callSTS && r.Status == 200:
				ok[callSTS] = true
			}
		}
		assert.Equal(t, map[string]bool{callSTS: true, callGenerateToken: true, callBigQueryQuery: true}, ok)
	})

	t.Run("the grant is listed by its search attributes", func(t *testing.T) {
		var list []struct {
			Execution struct {
				WorkflowID string `json:"workflowId"`
			} `json:"execution"`
		}
		temporalJSON(t, &list, "workflow", "list", "--query",
			fmt.Sprintf(`WorkflowType=%q AND GkewiNamespace=%q AND GkewiState="completed"`, workflows.OnboardWorkflowName, req.Namespace))
		require.Len(t, list, 1)
		assert.Equal(t, id, list[0].Execution.WorkflowID)
	})

	// Revoke with the gkewi CLI, from the completed onboarding.
	revokeStart := time.Now()
	res := gkewi(t, "revoke", "--workflow-id", id, "--token-expiry-wait", "2s", "--reason", "e2e", "--wait")
	require.Equal(t, 0, res.code, "%s", res)
	revokeID := workflows.RevokeWorkflowID(workflows.RevokeRequest{Project: req.Project, Location: req.Location,
		Cluster: req.Cluster, Namespace: req.Namespace, Release: req.Helm.Release, KSA: s.KSA})
	rs := queryStatus(t, revokeID)
	require.Equal(t, workflows.StateRevoked, rs.State, "error: %s", rs.Error)
	var result struct {
		Result workflows.RevokeResult `json:"result"`
	}
	temporalJSON(t, &result, "workflow", "result", "--workflow-id", revokeID)

	t.Run("the revocation removed only this grant", func(t *testing.T) {
		assert.True(t, gsaExists(t, gsa), "the GSA stays")
		members := gsaMembers(t, gsa)
		assert.NotContains(t, members["roles/iam.workloadIdentityUser"], workloadMember(req))
		assert.Contains(t, members["roles/iam.serviceAccountTokenCreator"], "serviceAccount:"+gsa)
	})

	t.Run("the access was proved gone after the token expiry wait", func(t *testing.T) {
		assert.Equal(t, workflows.StateRevoked, result.Result.State)
		assert.Equal(t, "generate-access-token", result.Result.DeniedStage)
		assert.False(t, result.Result.AccessEndedAt.Before(revokeStart.Add(2*time.Second)),
			"access ended at %s, before the 2s wait from %s was over", result.Result.AccessEndedAt, revokeStart)
		denied := false
		for _, r := range callsSince(revokeStart) {
			if r.Method == callGenerateToken && r.Principal == workloadMember(req) {
				assert.Equal(t, 403, r.Status, "after the revocation IAM refuses the workload")
				denied = true
			}
		}
		assert.True(t, denied, "the revocation walked the chain up to generateAccessToken")
	})
}

func TestRejectionDeletesTheServiceAccount(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-reject")
	file := filepath.Join(t.TempDir(), "request.json")
	b, err := json.Marshal(req)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, b, 0o600))

	res := gkewi(t, "onboard", "-f", file)
	require.Equal(t, 0, res.code, "%s", res)
	id := workflows.OnboardWorkflowID(req)
	assert.Contains(t, res.stdout, id)

	s := waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval, workflows.StateFailed))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	gsa := s.GSAEmail
	require.True(t, gsaExists(t, gsa))

	res = gkewi(t, "reject", "--workflow-id", id, "--approver", approver, "--ticket", "SUP-2", "--comment", "not this quarter")
	require.Equal(t, 0, res.code, "%s", res)
	s = waitStatus(t, id, toCompleted, "the rejection", inState(workflows.StateRejected, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateRejected, s.State, "error: %s", s.Error)

	d := waitClosed(t, id, time.Minute)
	assert.Equal(t, statusFailed, d.WorkflowExecutionInfo.Status)
	require.NotNil(t, d.CloseEvent)
	require.NotNil(t, d.CloseEvent.Failed)
	assert.Equal(t, workflows.ErrTypeRejected, d.CloseEvent.Failed.Failure.Info.Type)
	assert.Contains(t, d.CloseEvent.Failed.Failure.Message, "not this quarter")

	assert.False(t, gsaExists(t, gsa), "the GSA this run created was deleted")
	// Nothing reached the cluster: Kubernetes changes come after the approval.
	out := run(t, sandbox.KubectlPath(), "get", "namespace", req.Namespace)
	assert.NotEqual(t, 0, out.code, "namespace %s should not exist: %s", req.Namespace, out)
}

func TestSecondOnboardingOfTheSameGrantChangesNothing(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-again")
	id := startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval", inState(workflows.StateAwaitingApproval))
	approveAndComplete(t, id)
	waitClosed(t, id, time.Minute)

	since := time.Now()
	again := startOnboard(t, req)
	require.Equal(t, id, again, "the same grant has the same workflow ID")
	waitStatus(t, id, toApproval, "awaiting approval again", inState(workflows.StateAwaitingApproval))
	s := approveAndComplete(t, id)
	waitClosed(t, id, time.Minute)

	var mutating []string
	calls := callsSince(since)
	for _, r := range calls {
		if isMutating(r.Method) {
			mutating = append(mutating, fmt.Sprintf("%s by %s: %d", r.Method, r.Principal, r.Status))
		}
	}
	assert.NotEmpty(t, calls, "the second run did call Google Cloud (reads)")
	assert.Empty(t, mutating, "the second run changed Google Cloud")
	for _, st := range s.Steps {
		assert.False(t, st.Changed, "step %s changed something: %s", st.Name, st.Detail)
	}
	secrets := strings.Fields(kubectl(t, "get", "secrets", "-n", req.Namespace, "-l", "owner=helm,name="+req.Helm.Release, "-o", "name"))
	assert.Len(t, secrets, 1, "no second Helm revision")

	// A re-run that support rejects must leave the standing grant alone: the
	// GSA was not created by that run.
	gsa := s.GSAEmail
	startOnboard(t, req)
	waitStatus(t, id, toApproval, "awaiting approval a third time", inState(workflows.StateAwaitingApproval))
	signalDecision(t, id, workflows.ApprovalDecision{Approved: false, Approver: approver, Comment: "duplicate"})
	waitStatus(t, id, toCompleted, "the rejection", inState(workflows.StateRejected, workflows.StateFailed))
	waitClosed(t, id, time.Minute)
	require.True(t, gsaExists(t, gsa), "the rejected re-run deleted the GSA of the completed grant")
	assert.Contains(t, gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"], workloadMember(req.WithDefaults()))
}

func TestMalformedInputIsRefusedNamingTheField(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "e2e-bad")
	req.Project = "Bad_Project"
	req.Support.ReminderInterval = "every day"

	t.Run("started with the temporal CLI, the run fails at once", func(t *testing.T) {
		since := time.Now()
		id := "e2e-malformed-" + fmt.Sprint(time.Now().UnixNano())
		input, err := json.Marshal(req)
		require.NoError(t, err)
		temporal(t, "workflow", "start", "--type", workflows.OnboardWorkflowName, "--task-queue", workflows.TaskQueue,
			"--workflow-id", id, "--input", string(input))
		d := waitClosed(t, id, time.Minute)
		assert.Equal(t, statusFailed, d.WorkflowExecutionInfo.Status)
		require.NotNil(t, d.CloseEvent)
		require.NotNil(t, d.CloseEvent.Failed)
		msg := d.CloseEvent.Failed.Failure.Message
		assert.Equal(t, workflows.ErrTypeInvalidRequest, d.CloseEvent.Failed.Failure.Info.Type)
		assert.Contains(t, msg, `project "Bad_Project"`)
		assert.Contains(t, msg, "support.reminderInterval")
		for _, r := range callsSince(since) {
			assert.False(t, isMutating(r.Method), "a refused request changed Google Cloud: %s", r.Method)
		}
	})

	t.Run("the gkewi CLI refuses it before starting anything", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bad.json")
		b, err := json.Marshal(req)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(file, b, 0o600))
		res := gkewi(t, "onboard", "-f", file)
		assert.Equal(t, 2, res.code, "%s", res)
		assert.Contains(t, res.stderr, "project")
		assert.Contains(t, res.stderr, "support.reminderInterval")
		var list []json.RawMessage
		temporalJSON(t, &list, "workflow", "list", "--query", fmt.Sprintf(`WorkflowId=%q`, workflows.OnboardWorkflowID(req)))
		assert.Empty(t, list, "no workflow was started")

		// A wrong JSON type is named too.
		require.NoError(t, os.WriteFile(file, []byte(`{"project": "carto-sandbox", "nodePools": "default-pool"}`), 0o600))
		res = gkewi(t, "onboard", "-f", file)
		assert.Equal(t, 2, res.code, "%s", res)
		assert.Contains(t, res.stderr, "nodePools")
	})
}
