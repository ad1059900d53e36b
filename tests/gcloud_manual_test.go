package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	container "google.golang.org/api/container/v1"
	iam "google.golang.org/api/iam/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/serviceusage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/sandbox/kubecluster"
	"github.com/gkewi/gkewi/workflows"
)

// The operator's manual procedure, the one gkewi automates, run with Google's
// own gcloud and bq (and kubectl) against the sandbox: nobody here wrote those
// clients, so they check that the emulator speaks Google's API, not just what
// gkewi's Go clients send. The end state the procedure leaves is compared field
// by field with the one gkewi's Onboard leaves for an equivalent grant, and the
// manual revocation with gkewi's Revoke.
//
// gcloud reaches the emulator with every api_endpoint_overrides/* set to its
// root (Google's own paths), the worker's token from the emulator's metadata
// server, and a throwaway CLOUDSDK_CONFIG; bq takes gcloud's bigquery override
// as its --api. Each gcloud run costs about a second of CPU, so the procedure
// is run once, without describe commands: the end state is read with the Go
// clients as the project owner, and from the Kubernetes API.

const (
	metadataServerLabel = "iam.gke.io/gke-metadata-server-enabled"
	gsaAnnotation       = "iam.gke.io/gcp-service-account"
	iamCredentialsAPI   = "iamcredentials.googleapis.com"
)

// wiEndState is what an onboarding leaves, with the grant's own names (GSA
// email, namespace, KSA) replaced by placeholders so two grants compare.
type wiEndState struct {
	IAMCredentials string            // the API's state in the cluster's project
	WorkloadPool   string            // the cluster's workloadIdentityConfig.workloadPool
	PoolModes      map[string]string // node pool -> config.workloadMetadataConfig.mode
	NodeLabels     map[string]string // node pool -> its nodes' metadata server label
	GSAPolicy      []policyBinding   // the GSA's own IAM policy
	PolicyVersion  int64
	KSAAnnotation  string // iam.gke.io/gcp-service-account
}

type policyBinding struct {
	Role      string
	Members   []string
	Condition string
}

// grantNames are the names one grant uses, for the placeholders.
type grantNames struct {
	gsa, namespace, ksa string
}

// gcloudEnv runs gcloud and bq against the sandbox as the worker's identity.
type gcloudEnv struct {
	env     []string
	project string
}

func newGcloudEnv(t *testing.T) *gcloudEnv {
	t.Helper()
	root := sandbox.EmulatorURL() + "/"
	req, err := http.NewRequest(http.MethodGet, root+"computeMetadata/v1/instance/service-accounts/default/token", nil)
	require.NoError(t, err)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	require.NotEmpty(t, tok.AccessToken)

	home := t.TempDir()
	project := sandbox.Cluster().Project
	env := append(os.Environ(), sandbox.Env()...)
	env = append(env,
		"HOME="+home, // bq and gcloud write nothing outside the test
		"CLOUDSDK_CONFIG="+filepath.Join(home, "gcloud"),
		"CLOUDSDK_CORE_PROJECT="+project,
		"CLOUDSDK_AUTH_ACCESS_TOKEN="+tok.AccessToken,
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true",
		"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true",
	)
	for _, api := range []string{"iam", "container", "serviceusage", "cloudresourcemanager", "bigquery", "iamcredentials"} {
		env = append(env, "CLOUDSDK_API_ENDPOINT_OVERRIDES_"+strings.ToUpper(api)+"="+root)
	}
	return &gcloudEnv{env: env, project: project}
}

// run runs one gcloud or bq command line and requires it to succeed.
func (g *gcloudEnv) run(t *testing.T, bin string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = g.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	begin := time.Now()
	err := cmd.Run()
	res := cmdResult{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else {
		require.NoError(t, err, "%s %s", bin, strings.Join(args, " "))
	}
	t.Logf("%s %s (%s)", bin, strings.Join(args, " "), time.Since(begin).Round(10*time.Millisecond))
	require.Equal(t, 0, res.code, "%s %s\n%s", bin, strings.Join(args, " "), res)
	return res
}

// ownerClients read and reset the emulated project as its owner, through the
// emulator's root paths, independent of gcloud and of the worker.
type ownerClients struct {
	gke *container.Service
	iam *iam.Service
	su  *serviceusage.Service
}

func newOwnerClients(t *testing.T) *ownerClients {
	t.Helper()
	ctx := context.Background()
	eps := gcpemu.RootEndpoints(sandbox.EmulatorURL())
	tok := option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: sandbox.Emulator().MintAccessToken("user:owner@example.com")}))
	gke, err := container.NewService(ctx, option.WithEndpoint(eps[gcpemu.Container]), tok)
	require.NoError(t, err)
	iamSvc, err := iam.NewService(ctx, option.WithEndpoint(eps[gcpemu.IAM]), tok)
	require.NoError(t, err)
	su, err := serviceusage.NewService(ctx, option.WithEndpoint(eps[gcpemu.ServiceUsage]), tok)
	require.NoError(t, err)
	return &ownerClients{gke: gke, iam: iamSvc, su: su}
}

func clusterResource() string {
	c := sandbox.Cluster()
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Name)
}

// waitGKE waits for a GKE operation to be DONE.
func (o *ownerClients) waitGKE(t *testing.T, op *container.Operation) {
	t.Helper()
	c := sandbox.Cluster()
	name := fmt.Sprintf("projects/%s/locations/%s/operations/%s", c.Project, c.Location, op.Name)
	require.Eventually(t, func() bool {
		got, err := o.gke.Projects.Locations.Operations.Get(name).Do()
		require.NoError(t, err)
		return got.Status == "DONE"
	}, time.Minute, 100*time.Millisecond, "operation %s", op.Name)
}

// resetToNotOnboarded puts the cluster's project back as nobody onboarded it
// (the sandbox's starting point): Workload Identity off, every node pool on the
// GCE metadata server, the IAM Credentials API disabled.
func (o *ownerClients) resetToNotOnboarded(t *testing.T) {
	t.Helper()
	c := sandbox.Cluster()
	op, err := o.gke.Projects.Locations.Clusters.Update(clusterResource(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{ForceSendFields: []string{"WorkloadPool"}}},
	}).Do()
	require.NoError(t, err)
	o.waitGKE(t, op)
	for _, pool := range c.NodePools {
		op, err := o.gke.Projects.Locations.Clusters.NodePools.Update(clusterResource()+"/nodePools/"+pool, &container.UpdateNodePoolRequest{
			WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GCE_METADATA"},
		}).Do()
		require.NoError(t, err)
		o.waitGKE(t, op)
	}
	name := "projects/" + c.Project + "/services/" + iamCredentialsAPI
	_, err = o.su.Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := o.su.Services.Get(name).Do()
		require.NoError(t, err)
		return s.State == "DISABLED"
	}, time.Minute, 100*time.Millisecond)
	got := o.endState(t, grantNames{})
	require.Equal(t, "DISABLED", got.IAMCredentials)
	require.Empty(t, got.WorkloadPool)
	for _, pool := range c.NodePools {
		require.Equal(t, "GCE_METADATA", got.PoolModes[pool])
		require.Empty(t, got.NodeLabels[pool])
	}
}

// restoreOnboarded puts back what every onboarding leaves (Workload Identity
// on, GKE_METADATA pools, the IAM Credentials API enabled), so a failure
// between the resets does not leave the shared sandbox changed for later tests.
func (o *ownerClients) restoreOnboarded(t *testing.T) {
	t.Helper()
	c := sandbox.Cluster()
	op, err := o.gke.Projects.Locations.Clusters.Update(clusterResource(), &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: c.Project + ".svc.id.goog"}},
	}).Do()
	require.NoError(t, err)
	o.waitGKE(t, op)
	for _, pool := range c.NodePools {
		op, err := o.gke.Projects.Locations.Clusters.NodePools.Update(clusterResource()+"/nodePools/"+pool, &container.UpdateNodePoolRequest{
			WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
		}).Do()
		require.NoError(t, err)
		o.waitGKE(t, op)
	}
	_, err = o.su.Services.Enable("projects/"+c.Project+"/services/"+iamCredentialsAPI, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
}

// endState reads what a grant left, in Google Cloud and in Kubernetes.
func (o *ownerClients) endState(t *testing.T, g grantNames) wiEndState {
	t.Helper()
	c := sandbox.Cluster()
	var s wiEndState
	svc, err := o.su.Services.Get("projects/" + c.Project + "/services/" + iamCredentialsAPI).Do()
	require.NoError(t, err)
	s.IAMCredentials = svc.State
	cl, err := o.gke.Projects.Locations.Clusters.Get(clusterResource()).Do()
	require.NoError(t, err)
	if cl.WorkloadIdentityConfig != nil {
		s.WorkloadPool = cl.WorkloadIdentityConfig.WorkloadPool
	}
	s.PoolModes = map[string]string{}
	for _, np := range cl.NodePools {
		if np.Config != nil && np.Config.WorkloadMetadataConfig != nil {
			s.PoolModes[np.Name] = np.Config.WorkloadMetadataConfig.Mode
		}
	}
	nodes, err := sandbox.KubeClient().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	s.NodeLabels = map[string]string{}
	for _, n := range nodes.Items {
		if pool := n.Labels[kubecluster.NodePoolLabel]; pool != "" {
			s.NodeLabels[pool] = n.Labels[metadataServerLabel]
		}
	}
	if g.gsa == "" {
		return s
	}
	pol, err := o.iam.Projects.ServiceAccounts.GetIamPolicy("projects/-/serviceAccounts/" + g.gsa).OptionsRequestedPolicyVersion(3).Do()
	require.NoError(t, err)
	s.PolicyVersion = pol.Version
	for _, b := range pol.Bindings {
		pb := policyBinding{Role: b.Role}
		for _, m := range b.Members {
			pb.Members = append(pb.Members, g.placeholders(m))
		}
		sort.Strings(pb.Members)
		if b.Condition != nil {
			pb.Condition = b.Condition.Expression
		}
		s.GSAPolicy = append(s.GSAPolicy, pb)
	}
	sort.Slice(s.GSAPolicy, func(i, j int) bool { return s.GSAPolicy[i].Role < s.GSAPolicy[j].Role })
	ksa, err := sandbox.KubeClient().CoreV1().ServiceAccounts(g.namespace).Get(context.Background(), g.ksa, metav1.GetOptions{})
	require.NoError(t, err)
	s.KSAAnnotation = g.placeholders(ksa.Annotations[gsaAnnotation])
	return s
}

// placeholders replaces the grant's own names in an IAM member or annotation.
func (g grantNames) placeholders(s string) string {
	s = strings.ReplaceAll(s, g.gsa, "GSA")
	return strings.ReplaceAll(s, "["+g.namespace+"/"+g.ksa+"]", "[NAMESPACE/KSA]")
}

func TestGcloudManualProcedureMatchesOnboard(t *testing.T) {
	for _, bin := range []string{"gcloud", "bq"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s is not on PATH; this test runs the operator's manual procedure with Google's gcloud and bq "+
				"(Debian/Ubuntu package google-cloud-cli) against the sandbox", bin)
		}
	}
	requireSandbox(t)
	c := sandbox.Cluster()
	pool := c.Project + ".svc.id.goog"
	owner := newOwnerClients(t)
	g := newGcloudEnv(t)
	suffix := fmt.Sprintf("%05d", time.Now().UnixNano()/1e6%100000)
	t.Cleanup(func() {
		if t.Failed() {
			owner.restoreOnboarded(t)
		}
	})

	// The manual procedure, from a project nobody onboarded.
	owner.resetToNotOnboarded(t)
	manual := grantNames{
		gsa:       "manual-" + suffix + "@" + c.Project + ".iam.gserviceaccount.com",
		namespace: "manual-" + suffix,
		ksa:       "carto-common-backend",
	}
	wiMember := "serviceAccount:" + pool + "[" + manual.namespace + "/" + manual.ksa + "]"
	begin := time.Now()
	g.run(t, "gcloud", "services", "enable", iamCredentialsAPI)
	g.run(t, "gcloud", "container", "clusters", "update", c.Name, "--location", c.Location, "--workload-pool="+pool)
	for _, np := range c.NodePools {
		g.run(t, "gcloud", "container", "node-pools", "update", np, "--cluster", c.Name, "--location", c.Location,
			"--workload-metadata=GKE_METADATA")
	}
	res := g.run(t, "gcloud", "iam", "service-accounts", "create", "manual-"+suffix, "--display-name", "CARTO backend (manual)")
	assert.Contains(t, res.stderr, "Created service account [manual-"+suffix+"]")
	// Google's instructions for the manual procedure: wait (60 s or more) for a
	// new service account to be usable everywhere before granting on it. The
	// emulator's window ends here instead of after a minute.
	sandbox.Emulator().SettleServiceAccounts()
	g.run(t, "gcloud", "iam", "service-accounts", "add-iam-policy-binding", manual.gsa,
		"--role", "roles/iam.serviceAccountTokenCreator", "--member", "serviceAccount:"+manual.gsa)
	res = g.run(t, "gcloud", "iam", "service-accounts", "add-iam-policy-binding", manual.gsa,
		"--role", "roles/iam.workloadIdentityUser", "--member", wiMember)
	assert.Contains(t, res.stdout, wiMember, "gcloud prints the policy it wrote")
	kubectl(t, "create", "namespace", manual.namespace)
	kubectl(t, "create", "serviceaccount", manual.ksa, "-n", manual.namespace)
	kubectl(t, "annotate", "serviceaccount", manual.ksa, "-n", manual.namespace, gsaAnnotation+"="+manual.gsa)
	res = g.run(t, "gcloud", "services", "list", "--enabled", "--format=value(config.name)")
	assert.Contains(t, strings.Fields(res.stdout), iamCredentialsAPI)
	res = g.run(t, "bq", "ls", "--format=json", "carto-data:")
	assert.Contains(t, res.stdout, `"datasetId":"analytics"`)
	t.Logf("the manual procedure took %s", time.Since(begin).Round(100*time.Millisecond))
	manualState := owner.endState(t, manual)

	// gkewi's Onboard for an equivalent grant (no BigQuery connection: the
	// manual procedure makes none), from a project nobody onboarded.
	owner.resetToNotOnboarded(t)
	req := onboardRequest(t, "gcloud-"+suffix)
	req.BigQuery = nil
	id := startOnboard(t, req)
	s := waitStatus(t, id, toApproval, "awaiting approval",
		inState(workflows.StateAwaitingApproval, workflows.StateFailed, workflows.StateCompleted))
	require.Equal(t, workflows.StateAwaitingApproval, s.State, "error: %s", s.Error)
	s = approveAndComplete(t, id)
	require.NotEmpty(t, s.KSA, "the status names the grant's KSA")
	onboarded := grantNames{gsa: s.GSAEmail, namespace: req.Namespace, ksa: s.KSA}
	t.Logf("gkewi's grant: %s for %s/%s (the KSA from the status query)", s.GSAEmail, req.Namespace, s.KSA)
	gkewiState := owner.endState(t, onboarded)

	want := wiEndState{
		IAMCredentials: "ENABLED",
		WorkloadPool:   pool,
		PoolModes:      map[string]string{},
		NodeLabels:     map[string]string{},
		GSAPolicy: []policyBinding{
			{Role: "roles/iam.serviceAccountTokenCreator", Members: []string{"serviceAccount:GSA"}},
			{Role: "roles/iam.workloadIdentityUser", Members: []string{"serviceAccount:" + pool + "[NAMESPACE/KSA]"}},
		},
		PolicyVersion: 1,
		KSAAnnotation: "GSA",
	}
	for _, np := range c.NodePools {
		want.PoolModes[np], want.NodeLabels[np] = "GKE_METADATA", "true"
	}
	assert.Equal(t, want, manualState, "what the manual procedure left")
	assert.Equal(t, manualState, gkewiState, "gkewi's Onboard leaves what the manual procedure leaves")

	// Revocation: the manual command against gkewi's Revoke.
	g.run(t, "gcloud", "iam", "service-accounts", "remove-iam-policy-binding", manual.gsa,
		"--role", "roles/iam.workloadIdentityUser", "--member", wiMember)
	manualRevoked := owner.endState(t, manual)

	var result struct {
		Result workflows.OnboardResult `json:"result"`
	}
	temporalJSON(t, &result, "workflow", "result", "--workflow-id", id)
	require.Equal(t, s.KSA, result.Result.Revoke.KSA, "the result's revoke request names the grant's KSA")
	res = gkewi(t, "revoke", "--workflow-id", id, "--token-expiry-wait", "1s", "--reason", "gcloud comparison", "--wait")
	require.Equal(t, 0, res.code, "%s", res)
	rs := queryStatus(t, workflows.RevokeWorkflowID(result.Result.Revoke))
	require.Equal(t, workflows.StateRevoked, rs.State, "error: %s", rs.Error)
	gkewiRevoked := owner.endState(t, onboarded)

	wantRevoked := want
	wantRevoked.GSAPolicy = slices.DeleteFunc(slices.Clone(want.GSAPolicy), func(b policyBinding) bool {
		return b.Role == "roles/iam.workloadIdentityUser"
	})
	assert.Equal(t, wantRevoked, manualRevoked, "what the manual revocation left")
	assert.Equal(t, manualRevoked, gkewiRevoked, "gkewi's Revoke leaves what the manual revocation leaves")
}
