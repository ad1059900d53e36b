package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"google.golang.org/api/iam/v1"
	"google.golang.org/api/option"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/workflows"
)

// Approvers of the test requests.
const (
	approver      = "support-lead@carto.example"
	unlistedEmail = "intruder@elsewhere.example"
)

// cmdResult is the outcome of one command line.
type cmdResult struct {
	stdout, stderr string
	code           int
}

func (r cmdResult) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// run runs a binary with the sandbox's environment (TEMPORAL_ADDRESS, KUBECONFIG),
// as an operator who sourced .sandbox/env.sh would.
func run(t *testing.T, bin string, args ...string) cmdResult {
	t.Helper()
	res, err := execute(bin, args...)
	if err != nil {
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	return res
}

// execute is run without a test, for goroutines; err is set only when the
// command could not run at all.
func execute(bin string, args ...string) (cmdResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), sandbox.Env()...)
	cmd.Dir = sandbox.RepoDir()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := cmdResult{stdout: out.String(), stderr: errOut.String()}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		res.code = exitErr.ExitCode()
		err = nil
	}
	return res, err
}

// temporal runs the temporal CLI and requires it to succeed.
func temporal(t *testing.T, args ...string) string {
	t.Helper()
	res := run(t, sandbox.TemporalCLIPath(), args...)
	require.Equal(t, 0, res.code, "temporal %s\n%s", strings.Join(args, " "), res)
	return res.stdout
}

// temporalJSON runs the temporal CLI with -o json and decodes its output.
func temporalJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := temporal(t, append(args, "-o", "json")...)
	require.NoError(t, json.Unmarshal([]byte(out), v), "output of temporal %s:\n%s", strings.Join(args, " "), out)
}

func gkewi(t *testing.T, args ...string) cmdResult {
	t.Helper()
	return run(t, gkewiBin, args...)
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	res := run(t, sandbox.KubectlPath(), args...)
	require.Equal(t, 0, res.code, "kubectl %s\n%s", strings.Join(args, " "), res)
	return res.stdout
}

// startOnboard starts Onboard with the temporal CLI, as the README shows.
func startOnboard(t *testing.T, req workflows.OnboardRequest) string {
	t.Helper()
	id, args := onboardCommand(t, req)
	temporal(t, args...)
	return id
}

// onboardCommand is the temporal command line that starts Onboard for req.
func onboardCommand(t *testing.T, req workflows.OnboardRequest) (string, []string) {
	t.Helper()
	id := workflows.OnboardWorkflowID(req)
	input, err := json.Marshal(req)
	require.NoError(t, err)
	return id, []string{"workflow", "start", "--type", workflows.OnboardWorkflowName, "--task-queue", workflows.TaskQueue,
		"--workflow-id", id, "--input", string(input)}
}

// signalDecision sends the support-approval signal with the temporal CLI.
func signalDecision(t *testing.T, id string, d workflows.ApprovalDecision) {
	t.Helper()
	input, err := json.Marshal(d)
	require.NoError(t, err)
	temporal(t, "workflow", "signal", "--workflow-id", id, "--name", contract.SignalSupportApproval, "--input", string(input))
}

// queryStatus runs the status query with the temporal CLI.
func queryStatus(t *testing.T, id string) workflows.Status {
	t.Helper()
	var out struct {
		QueryResult []workflows.Status `json:"queryResult"`
	}
	temporalJSON(t, &out, "workflow", "query", "--workflow-id", id, "--name", contract.QueryStatus)
	require.Len(t, out.QueryResult, 1)
	return out.QueryResult[0]
}

// waitStatus polls the status query until cond holds.
func waitStatus(t *testing.T, id string, timeout time.Duration, what string, cond func(workflows.Status) bool) workflows.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last workflows.Status
	for {
		res := run(t, sandbox.TemporalCLIPath(), "workflow", "query", "--workflow-id", id, "--name", contract.QueryStatus, "-o", "json")
		if res.code == 0 {
			var out struct {
				QueryResult []workflows.Status `json:"queryResult"`
			}
			if json.Unmarshal([]byte(res.stdout), &out) == nil && len(out.QueryResult) == 1 {
				last = out.QueryResult[0]
				if cond(last) {
					return last
				}
			}
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(last, "", "  ")
			t.Fatalf("%s: %s did not get there within %s; last status:\n%s", id, what, timeout, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func inState(states ...workflows.State) func(workflows.Status) bool {
	return func(s workflows.Status) bool {
		for _, st := range states {
			if s.State == st {
				return true
			}
		}
		return false
	}
}

// describe is the part of `temporal workflow describe -o json` the tests read.
type describeOutput struct {
	WorkflowExecutionInfo struct {
		Status string `json:"status"`
	} `json:"workflowExecutionInfo"`
	CloseEvent *struct {
		Failed *struct {
			Failure struct {
				Message string `json:"message"`
				Info    *struct {
					Type string `json:"type"`
				} `json:"applicationFailureInfo"`
			} `json:"failure"`
		} `json:"workflowExecutionFailedEventAttributes"`
	} `json:"closeEvent"`
}

// waitClosed waits until the workflow closed and returns its description.
func waitClosed(t *testing.T, id string, timeout time.Duration) describeOutput {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var d describeOutput
		temporalJSON(t, &d, "workflow", "describe", "--workflow-id", id)
		if s := d.WorkflowExecutionInfo.Status; s != "" && s != "WORKFLOW_EXECUTION_STATUS_RUNNING" {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not close within %s", id, timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// onboardRequest is a request for a fresh grant in namespace ns.
func onboardRequest(t *testing.T, ns string) workflows.OnboardRequest {
	t.Helper()
	c := sandbox.Cluster()
	return workflows.OnboardRequest{
		Project: c.Project, Location: c.Location, Cluster: c.Name,
		GSA:       workflows.GSASpec{AccountID: "e2e-" + ns},
		Namespace: ns,
		Helm: workflows.HelmSpec{
			// Not the chart's name: the KSA must still be the chart's own.
			Release: "prod",
			Chart:   filepath.Join(sandbox.RepoDir(), "deploy", "charts", "carto-demo"),
		},
		BigQuery: &workflows.BigQuerySpec{
			DataProject: "carto-data", BillingProject: "carto-billing",
			TempDataset: "tmp_" + strings.ReplaceAll(ns, "-", "_"), ConnectionOwnerID: "owner@carto.example",
		},
		// Decisions here name their approver; approval_proof_test.go proves them.
		Support: workflows.SupportSpec{Approvers: []string{approver}, ReminderInterval: "1h", ApprovalTimeout: "1h", Proof: workflows.ProofNone},
	}
}

// iamClient reads IAM as the emulated project owner, independent of the worker.
func iamClient(t *testing.T) *iam.Service {
	t.Helper()
	tok := sandbox.Emulator().MintAccessToken("user:owner@example.com")
	eps := activities.GCPEndpointsFromMap(sandbox.GCPEndpoints())
	svc, err := iam.NewService(context.Background(), eps.ClientOptions(activities.APIIAM,
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))...)
	require.NoError(t, err)
	return svc
}

// gsaExists reports whether the emulator knows the GSA. It asks the project's
// account list: by email IAM may miss a new account for a while and answers a
// deleted one with 403, as the sandbox models.
func gsaExists(t *testing.T, email string) bool {
	t.Helper()
	_, domain, _ := strings.Cut(email, "@")
	project := strings.TrimSuffix(domain, ".iam.gserviceaccount.com")
	found := false
	err := iamClient(t).Projects.ServiceAccounts.List("projects/"+project).Pages(context.Background(), func(r *iam.ListServiceAccountsResponse) error {
		for _, a := range r.Accounts {
			found = found || strings.EqualFold(a.Email, email)
		}
		return nil
	})
	require.NoError(t, err)
	return found
}

// gsaMembers is the GSA's IAM policy: the members of each role.
func gsaMembers(t *testing.T, email string) map[string][]string {
	t.Helper()
	pol, err := iamClient(t).Projects.ServiceAccounts.GetIamPolicy("projects/-/serviceAccounts/" + email).Do()
	require.NoError(t, err)
	out := map[string][]string{}
	for _, b := range pol.Bindings {
		out[b.Role] = append(out[b.Role], b.Members...)
	}
	return out
}

// demoChartKSA is the KSA the demo chart's backends run as: named after the
// chart, whatever the release is called, as the CARTO chart does.
const demoChartKSA = "carto-demo-common-backend"

// ksaOf is the KSA an onboarding of req grants: the request's, or the chart's.
func ksaOf(req workflows.OnboardRequest) string {
	if req.KSA != "" {
		return req.KSA
	}
	return demoChartKSA
}

func workloadMember(req workflows.OnboardRequest) string {
	return "serviceAccount:" + req.Project + ".svc.id.goog[" + req.Namespace + "/" + ksaOf(req) + "]"
}

// isMutating tells the emulator's method ids that change state.
func isMutating(method string) bool {
	verb := method[strings.LastIndex(method, ".")+1:]
	switch verb {
	case "create", "update", "delete", "setIamPolicy", "enable", "disable", "insert", "patch", "undelete":
		return true
	}
	return false
}

// callsSince returns the emulator's logged calls from since on.
func callsSince(since time.Time) []gcpemu.RequestEntry {
	var out []gcpemu.RequestEntry
	for _, r := range sandbox.Emulator().RecentRequests() {
		if !r.Time.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// mustStep returns the named step of s.
func mustStep(t *testing.T, s workflows.Status, name string) workflows.Step {
	t.Helper()
	st, ok := s.Step(name)
	require.Truef(t, ok, "no step %q in %s", name, s.Workflow)
	return st
}
