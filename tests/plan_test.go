package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/workflows"
)

// `gkewi plan` read against the sandbox, its commands run with gcloud and
// kubectl (and helm), then Onboard for the same request: Onboard must find
// everything in place, so it makes no mutating call to Google and leaves the
// KSA as the plan's commands left it. The same for a revocation.

// planEnv is the environment gkewi plan reads the sandbox with: gcloud's (the
// worker's identity through the emulator's metadata server, for Application
// Default Credentials) and the worker's Google endpoints.
func planEnv(g *gcloudEnv) []string {
	var eps []string
	for api, u := range sandbox.GCPEndpoints() {
		eps = append(eps, api+"="+u)
	}
	return append(g.env,
		"GOOGLE_APPLICATION_CREDENTIALS=",
		"GCE_METADATA_HOST="+strings.TrimPrefix(sandbox.EmulatorURL(), "http://"),
		"GKEWI_GCP_ENDPOINTS="+strings.Join(eps, ","),
	)
}

// gkewiPlan runs `gkewi plan` and returns what it printed.
func gkewiPlan(t *testing.T, g *gcloudEnv, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gkewiBin, append([]string{"plan"}, args...)...)
	cmd.Env = planEnv(g)
	cmd.Dir = sandbox.RepoDir()
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "gkewi plan %s\n%s%s", strings.Join(args, " "), out, stderr)
	t.Logf("gkewi plan %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// planBlock is one step of a printed plan: its comment lines and its script.
type planBlock struct {
	comments []string
	script   string
}

// planBlocks splits a printed plan into its steps (blank-line separated, a
// here-document kept whole), the header left out.
func planBlocks(out string) []planBlock {
	var blocks []planBlock
	var cur *planBlock
	heredoc := ""
	var script []string
	flush := func() {
		if cur != nil && len(script) > 0 {
			cur.script = strings.Join(script, "\n") + "\n"
			blocks = append(blocks, *cur)
		}
		cur, script = nil, nil
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case heredoc != "":
			script = append(script, line)
			if line == heredoc {
				heredoc = ""
			}
		case line == "":
			flush()
			cur = &planBlock{}
		case strings.HasPrefix(line, "#") && len(script) == 0:
			if cur != nil {
				cur.comments = append(cur.comments, line)
			}
		default:
			script = append(script, line)
			if i := strings.Index(line, "<<'"); i >= 0 {
				heredoc = strings.TrimSuffix(line[i+3:], "'")
			}
		}
	}
	flush()
	return blocks
}

// runPlanBlock runs one step's commands with bash, as an operator would paste
// them. Without a helm binary, a helm step runs its printed command through
// the Helm SDK (gkewi's Helm activity) with the printed release, chart,
// namespace and values.
func runPlanBlock(t *testing.T, g *gcloudEnv, b planBlock) {
	t.Helper()
	if strings.HasPrefix(b.script, "helm ") {
		if _, err := exec.LookPath("helm"); err != nil {
			t.Logf("helm is not on PATH: running the printed helm command through the Helm SDK:\n%s", b.script)
			runHelmThroughSDK(t, b.script)
			return
		}
	}
	g.run(t, "bash", "-euo", "pipefail", "-c", b.script)
}

// runHelmThroughSDK does what `helm upgrade --install REL CHART --namespace NS
// ... -f - <<'EOF' values EOF` does, with gkewi's Helm activity.
func runHelmThroughSDK(t *testing.T, script string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(script), "\n")
	args := strings.Fields(lines[0])
	require.GreaterOrEqual(t, len(args), 5, "helm command: %s", lines[0])
	require.Equal(t, []string{"helm", "upgrade", "--install"}, args[:3])
	in := activities.HelmInput{Release: args[3], Chart: args[4]}
	for i := 5; i < len(args); i++ {
		switch args[i] {
		case "--namespace":
			in.Namespace = args[i+1]
		case "--version":
			in.Version = args[i+1]
		case "--repo":
			in.RepoURL = args[i+1]
		}
	}
	body := strings.Join(lines[1:len(lines)-1], "\n")
	require.NoError(t, yaml.Unmarshal([]byte(body), &in.Values))
	h := activities.NewHelm(activities.HelmConfig{RESTConfig: sandbox.RESTConfig(), CacheDir: filepath.Join(t.TempDir(), "helm"), Timeout: 3 * time.Minute})
	res, err := h.HelmUpgradeInstall(context.Background(), in)
	require.NoError(t, err)
	require.True(t, res.Changed)
}

// mutatingCallsSince lists the emulator's mutating calls since then.
func mutatingCallsSince(since time.Time) []string {
	var out []string
	for _, r := range callsSince(since) {
		if isMutating(r.Method) {
			out = append(out, fmt.Sprintf("%s by %s: %d", r.Method, r.Principal, r.Status))
		}
	}
	return out
}

func TestPlanCommandsLeaveOnboardNothingToDo(t *testing.T) {
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Skip("skipping: gcloud is not on PATH; this test runs gkewi plan's commands with Google's gcloud " +
			"(Debian/Ubuntu package google-cloud-cli) against the sandbox")
	}
	requireSandbox(t)
	ctx := context.Background()
	owner := newOwnerClients(t)
	g := newGcloudEnv(t)
	t.Cleanup(func() {
		if t.Failed() {
			owner.restoreOnboarded(t)
		}
	})
	owner.resetToNotOnboarded(t)

	// The release runs as a KSA the operator made (the chart does not create
	// it), named after nothing gkewi could guess.
	suffix := fmt.Sprintf("%05d", time.Now().UnixNano()/1e6%100000)
	const ksa = "carto-backend"
	req := onboardRequest(t, "plan-"+suffix)
	req.BigQuery = nil // the manual procedure has no BigQuery connection (bq grants are unit-tested)
	req.Helm.Values = map[string]any{"commonBackendServiceAccount": map[string]any{"create": false, "name": ksa}}
	kubectl(t, "create", "namespace", req.Namespace)
	kubectl(t, "create", "serviceaccount", ksa, "-n", req.Namespace)
	dir := t.TempDir()
	reqFile := filepath.Join(dir, "request.json")
	b, err := json.Marshal(req)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(reqFile, b, 0o644))
	gsa := req.GSA.AccountID + "@" + req.Project + ".iam.gserviceaccount.com"

	// The plan from a project nobody onboarded: every step, in Onboard's order.
	before := time.Now()
	out := gkewiPlan(t, g, "-f", reqFile)
	assert.Empty(t, mutatingCallsSince(before), "gkewi plan changed Google Cloud")
	blocks := planBlocks(out)
	var names []string
	for _, bl := range blocks {
		require.NotEmpty(t, bl.comments, "a step without its comment:\n%s", bl.script)
		head := bl.comments[len(bl.comments)-1]
		name, _, _ := strings.Cut(strings.TrimPrefix(head, "# "), ":")
		names = append(names, name)
		approval := bl.comments[0] == "# after support's approval"
		assert.Equal(t, name == "workload-identity-user" || name == "annotate-ksa" || name == "helm", approval,
			"step %s marked after the approval: %v", name, approval)
	}
	want := []string{"enable-iamcredentials", "workload-pool"}
	for _, np := range sandbox.Cluster().NodePools {
		want = append(want, "node-pool/"+np)
	}
	want = append(want, "service-account", "token-creator", "workload-identity-user", "annotate-ksa", "helm")
	require.Equal(t, want, names)
	assert.Contains(t, out, "kubectl annotate serviceaccount "+ksa+" -n "+req.Namespace+" iam.gke.io/gcp-service-account="+gsa)
	assert.NotContains(t, out, "prod-common-backend", "the KSA is the release's, not one named after it")

	// The operator runs them.
	for _, bl := range blocks {
		runPlanBlock(t, g, bl)
	}
	sa, err := sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, ksa, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, gsa, sa.Annotations[activities.GSAAnnotation])
	ksaVersion := sa.ResourceVersion

	// Nothing left to plan.
	out = gkewiPlan(t, g, "-f", reqFile)
	assert.Empty(t, planBlocks(out), "a second plan after its commands ran")
	assert.Contains(t, out, "Nothing to do")

	// Onboard for the same request finds everything in place.
	since := time.Now()
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	s = approveAndComplete(t, id)
	assert.Equal(t, ksa, s.KSA)
	assert.Equal(t, gsa, s.GSAEmail)
	assert.NotEmpty(t, callsSince(since), "Onboard did read Google Cloud")
	assert.Empty(t, mutatingCallsSince(since), "Onboard changed Google Cloud after the plan's commands")
	for _, st := range s.Steps {
		assert.False(t, st.Changed, "step %s changed something: %s", st.Name, st.Detail)
	}
	sa, err = sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, ksa, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, ksaVersion, sa.ResourceVersion, "Onboard changed the KSA")
	secrets := strings.Fields(kubectl(t, "get", "secrets", "-n", req.Namespace, "-l", "owner=helm,name="+req.Helm.Release, "-o", "name"))
	assert.Len(t, secrets, 1, "no second Helm revision")

	// The revocation: the plan's commands, then Revoke finds nothing to remove.
	var result struct {
		Result workflows.OnboardResult `json:"result"`
	}
	temporalJSON(t, &result, "workflow", "result", "--workflow-id", id)
	rev := result.Result.Revoke
	rev.RemoveAnnotation = true
	rev.TokenExpiryWait = "1s"
	revFile := filepath.Join(dir, "revoke.json")
	b, err = json.Marshal(rev)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(revFile, b, 0o644))
	out = gkewiPlan(t, g, "--revoke", "-f", revFile)
	assert.NotContains(t, out, "after support's approval", "a revocation waits for nobody")
	names = nil
	for _, bl := range planBlocks(out) {
		name, _, _ := strings.Cut(strings.TrimPrefix(bl.comments[len(bl.comments)-1], "# "), ":")
		names = append(names, name)
		runPlanBlock(t, g, bl)
	}
	require.Equal(t, []string{"remove-workload-identity-user", "remove-annotation"}, names)
	assert.NotContains(t, gsaMembers(t, gsa)["roles/iam.workloadIdentityUser"], "serviceAccount:"+req.Project+".svc.id.goog["+req.Namespace+"/"+ksa+"]", "the binding is gone")
	sa, err = sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, ksa, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, sa.Annotations, activities.GSAAnnotation)
	ksaVersion = sa.ResourceVersion

	since = time.Now()
	res := gkewi(t, "revoke", "-f", revFile, "--wait")
	require.Equal(t, 0, res.code, "%s", res)
	rs := queryStatus(t, workflows.RevokeWorkflowID(rev))
	require.Equal(t, workflows.StateRevoked, rs.State, "error: %s", rs.Error)
	assert.Empty(t, mutatingCallsSince(since), "Revoke changed Google Cloud after the plan's commands")
	for _, st := range rs.Steps {
		assert.False(t, st.Changed, "step %s changed something: %s", st.Name, st.Detail)
	}
	sa, err = sandbox.KubeClient().CoreV1().ServiceAccounts(req.Namespace).Get(ctx, ksa, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, ksaVersion, sa.ResourceVersion, "Revoke changed the KSA")
}
