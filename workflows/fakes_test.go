package workflows

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/policy"
)

// call is one activity execution seen by fakeCloud.
type call struct {
	Name  string
	Input any
}

// fakeCloud stands in for every activity: it records each call with its input
// and answers as configured. Errors queued in failures are returned, one per
// call, before the activity succeeds.
type fakeCloud struct {
	mu sync.Mutex
	// changed is StepResult.Changed for every step; false mimics a re-run.
	changed bool
	// saCreated is ServiceAccount.Created.
	saCreated bool
	nodePools []string
	// verify answers VerifyAccess calls, numbered from 1; nil allows.
	verify func(n int) activities.VerifyResult
	// verifyErr fails VerifyAccess call n when it returns an error.
	verifyErr func(n int) error
	failures  map[string][]error
	warnings  map[string][]string
	calls     []call
	// schedules holds the revocation schedules by ID (Schedules activities).
	schedules map[string]activities.ScheduleStatus
	// onboarding is the grant's onboarding as DescribeWorkflowRun sees it before
	// a cancellation; canceled is how it looks after CancelWorkflowRun.
	onboarding *activities.WorkflowRunDescription
	canceled   *activities.WorkflowRunDescription
	// lists answers ListWorkflowRuns by query; results answers WorkflowRunResult by run ID.
	lists   func(query string) []activities.WorkflowRun
	results map[string]OnboardResult
	// undelivered makes NotifySupport miss these targets, with these errors.
	undelivered map[string]string
	// ksaSource is what RenderRelease says makes the KSA; the KSA it answers is
	// the request's or renderedKSA.
	ksaSource string
	// autopilot makes the cluster an Autopilot cluster.
	autopilot bool
	// policies resolve requests against the grant policy: testPolicy unless a
	// test sets another with withPolicy.
	policies *activities.Policies
}

// testPolicyYAML lets the test approvers decide every grant by naming
// themselves, as runs before the grant policy did.
const testPolicyYAML = `
rules:
  - name: tests
    scope: {projects: ["*"]}
    approval:
      proof: none
      levels: [{approvers: [alice@example.com, Bob@Example.com]}]
    bigquery: {dataProjects: ["*"], billingProjects: ["*"], datasets: ["*"], projectWide: true}
`

// testAttestor makes and checks requester proofs in workflow tests, as a
// worker with the approval secret does.
func testAttestor() *activities.Attestor {
	return activities.NewAttestor(activities.AttestorConfig{Secret: []byte("workflow-tests-approval-secret"),
		Now: func() time.Time { return testStart }})
}

// withPolicy makes f resolve grants against the policy in src.
func (f *fakeCloud) withPolicy(t interface{ Fatalf(string, ...any) }, src string) *fakeCloud {
	p, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatalf("test policy: %v", err)
	}
	f.policies = activities.NewPolicies(policy.Static(p), testAttestor())
	return f
}

// ResolveGrantPolicy is the real activity on f's policy; it is not recorded
// as a call, so the phases of earlier tests stay as they were.
func (f *fakeCloud) ResolveGrantPolicy(ctx context.Context, in activities.GrantPolicyInput) (activities.GrantPolicy, error) {
	return f.policies.ResolveGrantPolicy(ctx, in)
}

// renderedKSA is the KSA the fake chart's workloads run as: named after the
// chart, not the release, as the CARTO chart does.
const renderedKSA = "carto-common-backend"

func newFakeCloud() *fakeCloud {
	f := &fakeCloud{changed: true, saCreated: true, nodePools: []string{"default-pool", "gpu-pool"}, schedules: map[string]activities.ScheduleStatus{}, ksaSource: activities.KSAFromChart}
	p, err := policy.Parse([]byte(testPolicyYAML))
	if err != nil {
		panic(err) // a constant
	}
	f.policies = activities.NewPolicies(policy.Static(p), testAttestor())
	return f
}

// failNext queues errors for the named activity.
func (f *fakeCloud) failNext(name string, errs ...error) *fakeCloud {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures == nil {
		f.failures = map[string][]error{}
	}
	f.failures[name] = append(f.failures[name], errs...)
	return f
}

// setVerify replaces the VerifyAccess answers and restarts their count.
func (f *fakeCloud) setVerify(verify func(n int) activities.VerifyResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verify = verify
	kept := f.calls[:0]
	for _, c := range f.calls {
		if c.Name != "VerifyAccess" {
			kept = append(kept, c)
		}
	}
	f.calls = kept
}

// record logs a call and pops its next queued failure.
func (f *fakeCloud) record(name string, in any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{name, in})
	if q := f.failures[name]; len(q) > 0 {
		f.failures[name] = q[1:]
		return q[0]
	}
	return nil
}

func (f *fakeCloud) step(name string, in any, detail string) (activities.StepResult, error) {
	if err := f.record(name, in); err != nil {
		return activities.StepResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return activities.StepResult{Changed: f.changed, Detail: detail, Warnings: f.warnings[name]}, nil
}

// names lists the activities called, in order.
func (f *fakeCloud) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.Name
	}
	return out
}

// inputs lists the inputs of the named activity's calls.
func (f *fakeCloud) inputs(name string) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []any
	for _, c := range f.calls {
		if c.Name == name {
			out = append(out, c.Input)
		}
	}
	return out
}

func (f *fakeCloud) count(name string) int { return len(f.inputs(name)) }

// notifications lists the kinds of NotifySupport calls, in order.
func (f *fakeCloud) notifications() []string {
	var kinds []string
	for _, in := range f.inputs("NotifySupport") {
		kinds = append(kinds, in.(activities.Notification).Kind)
	}
	return kinds
}

func (f *fakeCloud) RenderRelease(_ context.Context, in activities.RenderInput) (activities.RenderResult, error) {
	if err := f.record("RenderRelease", in); err != nil {
		return activities.RenderResult{}, err
	}
	ksa := in.KSA
	if ksa == "" {
		ksa = renderedKSA
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return activities.RenderResult{
		Chart: "carto 1.0.0", KSA: ksa, KSASource: f.ksaSource,
		Workloads: []activities.Workload{{Kind: "Deployment", Name: in.Helm.Release + "-workspace-api", Namespace: in.Helm.Namespace, KSA: ksa}},
		Access:    []activities.AccessRule{{Namespace: in.Helm.Namespace, Resource: "configmaps", Verbs: []string{"create"}}},
		Detail:    "rendered",
	}, nil
}

func (f *fakeCloud) CheckAccess(_ context.Context, in activities.AccessInput) (activities.StepResult, error) {
	return f.step("CheckAccess", in, "allowed")
}

func (f *fakeCloud) VerifyRelease(_ context.Context, in activities.VerifyReleaseInput) (activities.StepResult, error) {
	return f.step("VerifyRelease", in, "runs as "+in.KSA)
}

func (f *fakeCloud) Preflight(_ context.Context, in activities.PreflightInput) (activities.StepResult, error) {
	return f.step("Preflight", in, "cluster reachable")
}

func (f *fakeCloud) CheckIdentitySameness(_ context.Context, in activities.PreflightInput) (activities.StepResult, error) {
	return f.step("CheckIdentitySameness", in, "")
}

func (f *fakeCloud) EnableService(_ context.Context, in activities.EnableServiceInput) (activities.StepResult, error) {
	return f.step("EnableService", in, "")
}

func (f *fakeCloud) SetWorkloadPool(_ context.Context, in activities.ClusterRef) (activities.StepResult, error) {
	return f.step("SetWorkloadPool", in, "workload pool "+in.WorkloadPool())
}

func (f *fakeCloud) EnsureWorkloadPool(_ context.Context, in activities.ClusterRef) (activities.WorkloadPoolResult, error) {
	f.mu.Lock()
	autopilot := f.autopilot
	f.mu.Unlock()
	if autopilot {
		if err := f.record("EnsureWorkloadPool", in); err != nil {
			return activities.WorkloadPoolResult{}, err
		}
		return activities.WorkloadPoolResult{Autopilot: true, StepResult: activities.StepResult{Detail: "Autopilot cluster"}}, nil
	}
	res, err := f.step("EnsureWorkloadPool", in, "workload pool "+in.WorkloadPool())
	return activities.WorkloadPoolResult{StepResult: res}, err
}

// validMAC is the attestation the fake worker accepts.
const validMAC = "attested"

// CheckDecisionProof accepts a proof with validMAC whose email is the approver,
// as the worker does with a MAC of its own secret.
func (f *fakeCloud) CheckDecisionProof(_ context.Context, in activities.CheckProofInput) (activities.ProofCheck, error) {
	if err := f.record("CheckDecisionProof", in); err != nil {
		return activities.ProofCheck{}, err
	}
	switch {
	case in.Proof.MAC != validMAC:
		return activities.ProofCheck{Reason: "the attestation does not match this decision for this grant"}, nil
	case !strings.EqualFold(in.Approver, in.Proof.Email):
		return activities.ProofCheck{Reason: "the approver is not the ID token's email"}, nil
	}
	return activities.ProofCheck{Valid: true}, nil
}

func (f *fakeCloud) ListNodePools(_ context.Context, in activities.ClusterRef) ([]string, error) {
	if err := f.record("ListNodePools", in); err != nil {
		return nil, err
	}
	return slices.Clone(f.nodePools), nil
}

func (f *fakeCloud) SetNodePoolMetadata(_ context.Context, in activities.NodePoolInput) (activities.StepResult, error) {
	return f.step("SetNodePoolMetadata", in, "")
}

func (f *fakeCloud) EnsureServiceAccount(_ context.Context, in activities.EnsureServiceAccountInput) (activities.ServiceAccount, error) {
	if err := f.record("EnsureServiceAccount", in); err != nil {
		return activities.ServiceAccount{}, err
	}
	email := in.Email
	if email == "" {
		email = in.AccountID + "@" + in.Project + ".iam.gserviceaccount.com"
	}
	return activities.ServiceAccount{Email: email, UniqueID: "1234567890", Created: f.saCreated && in.Email == ""}, nil
}

func (f *fakeCloud) DeleteServiceAccount(_ context.Context, in activities.ServiceAccount) (activities.StepResult, error) {
	return f.step("DeleteServiceAccount", in, "")
}

func (f *fakeCloud) AddServiceAccountIAMMember(_ context.Context, in activities.ServiceAccountIAMInput) (activities.StepResult, error) {
	return f.step("AddServiceAccountIAMMember", in, "")
}

func (f *fakeCloud) RemoveServiceAccountIAMMember(_ context.Context, in activities.ServiceAccountIAMInput) (activities.StepResult, error) {
	return f.step("RemoveServiceAccountIAMMember", in, "")
}

func (f *fakeCloud) GrantBigQueryAccess(_ context.Context, in activities.BigQueryAccessInput) (activities.StepResult, error) {
	return f.step("GrantBigQueryAccess", in, "")
}

func (f *fakeCloud) RevokeBigQueryAccess(_ context.Context, in activities.BigQueryAccessInput) (activities.StepResult, error) {
	return f.step("RevokeBigQueryAccess", in, "")
}

func (f *fakeCloud) AnnotateServiceAccount(_ context.Context, in activities.AnnotateInput) (activities.StepResult, error) {
	return f.step("AnnotateServiceAccount", in, "")
}

func (f *fakeCloud) RemoveServiceAccountAnnotation(_ context.Context, in activities.AnnotateInput) (activities.StepResult, error) {
	return f.step("RemoveServiceAccountAnnotation", in, "")
}

func (f *fakeCloud) HelmUpgradeInstall(_ context.Context, in activities.HelmInput) (activities.HelmResult, error) {
	if err := f.record("HelmUpgradeInstall", in); err != nil {
		return activities.HelmResult{}, err
	}
	return activities.HelmResult{Revision: 3, Status: "deployed", Changed: f.changed}, nil
}

func (f *fakeCloud) NotifySupport(_ context.Context, in activities.Notification) (activities.NotifyResult, error) {
	if err := f.record("NotifySupport", in); err != nil {
		return activities.NotifyResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var res activities.NotifyResult
	for _, target := range in.Targets {
		if why, ok := f.undelivered[target]; ok {
			res.Failed = append(res.Failed, target)
			res.Errors = append(res.Errors, why)
			continue
		}
		res.Delivered = append(res.Delivered, target)
	}
	return res, nil
}

func (f *fakeCloud) VerifyAccess(_ context.Context, in activities.VerifyInput) (activities.VerifyResult, error) {
	if err := f.record("VerifyAccess", in); err != nil {
		return activities.VerifyResult{}, err
	}
	n := f.count("VerifyAccess")
	f.mu.Lock()
	verify, verifyErr := f.verify, f.verifyErr
	f.mu.Unlock()
	if verifyErr != nil {
		if err := verifyErr(n); err != nil {
			return activities.VerifyResult{}, err
		}
	}
	if verify != nil {
		return verify(n), nil
	}
	return allowed(), nil
}

func (f *fakeCloud) SetRevocationTime(_ context.Context, in activities.RevocationScheduleInput) (activities.ScheduleResult, error) {
	if err := f.record("SetRevocationTime", in); err != nil {
		return activities.ScheduleResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, existed := f.schedules[in.ScheduleID]
	at := in.At.UTC().Truncate(time.Second)
	if at.Before(in.At) {
		at = at.Add(time.Second)
	}
	f.schedules[in.ScheduleID] = activities.ScheduleStatus{ScheduleID: in.ScheduleID, Exists: true, NextActionAt: at, Note: in.Note}
	return activities.ScheduleResult{ScheduleID: in.ScheduleID, At: at, Created: !existed}, nil
}

func (f *fakeCloud) DescribeRevocationSchedule(_ context.Context, in activities.ScheduleRef) (activities.ScheduleStatus, error) {
	if err := f.record("DescribeRevocationSchedule", in); err != nil {
		return activities.ScheduleStatus{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.schedules[in.ScheduleID]; ok {
		return st, nil
	}
	return activities.ScheduleStatus{ScheduleID: in.ScheduleID}, nil
}

func (f *fakeCloud) DeleteSchedule(_ context.Context, in activities.ScheduleRef) (activities.StepResult, error) {
	if err := f.record("DeleteSchedule", in); err != nil {
		return activities.StepResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.schedules[in.ScheduleID]; !ok {
		return activities.StepResult{Detail: "no schedule " + in.ScheduleID}, nil
	}
	delete(f.schedules, in.ScheduleID)
	return activities.StepResult{Changed: true, Detail: "deleted schedule " + in.ScheduleID}, nil
}

func (f *fakeCloud) EnsureSweepSchedule(_ context.Context, in activities.RecurringScheduleInput) (activities.StepResult, error) {
	return f.step("EnsureSweepSchedule", in, "")
}

func (f *fakeCloud) DescribeWorkflowRun(_ context.Context, in activities.DescribeWorkflowRunInput) (activities.WorkflowRunDescription, error) {
	if err := f.record("DescribeWorkflowRun", in); err != nil {
		return activities.WorkflowRunDescription{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case in.RunID != "" && f.canceled != nil:
		return *f.canceled, nil
	case f.onboarding != nil:
		return *f.onboarding, nil
	}
	return activities.WorkflowRunDescription{}, nil
}

func (f *fakeCloud) CancelWorkflowRun(_ context.Context, in activities.CancelWorkflowRunInput) (activities.WorkflowRun, error) {
	if err := f.record("CancelWorkflowRun", in); err != nil {
		return activities.WorkflowRun{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.canceled == nil {
		return activities.WorkflowRun{}, fmt.Errorf("fake: no canceled run configured")
	}
	return f.canceled.Run, nil
}

func (f *fakeCloud) ListWorkflowRuns(_ context.Context, in activities.ListWorkflowRunsInput) (activities.ListWorkflowRunsResult, error) {
	if err := f.record("ListWorkflowRuns", in); err != nil {
		return activities.ListWorkflowRunsResult{}, err
	}
	f.mu.Lock()
	lists := f.lists
	f.mu.Unlock()
	res := activities.ListWorkflowRunsResult{Runs: []activities.WorkflowRun{}}
	if lists != nil {
		res.Runs = append(res.Runs, lists(in.Query)...)
	}
	return res, nil
}

func (f *fakeCloud) WorkflowRunResult(_ context.Context, in activities.WorkflowRunRef) (json.RawMessage, error) {
	if err := f.record("WorkflowRunResult", in); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res, ok := f.results[in.RunID]
	if !ok {
		return nil, temporal.NewNonRetryableApplicationError("fake: no result of run "+in.RunID, contract.ErrTypeFailedPrecondition, nil)
	}
	return json.Marshal(res)
}

var chainStages = []string{"ksa-token", "sts-exchange", "generate-access-token", "bigquery-call"}

// allowed is a token chain that went through.
func allowed() activities.VerifyResult {
	res := activities.VerifyResult{Allowed: true}
	for _, s := range chainStages {
		res.Stages = append(res.Stages, activities.VerifyStage{Name: s, OK: true})
	}
	return res
}

// deniedAt is a token chain refused at stage.
func deniedAt(stage string) activities.VerifyResult {
	var res activities.VerifyResult
	for _, s := range chainStages {
		if s == stage {
			res.Stages = append(res.Stages, activities.VerifyStage{Name: s, Detail: "Permission 'iam.serviceAccounts.getAccessToken' denied"})
			return res
		}
		res.Stages = append(res.Stages, activities.VerifyStage{Name: s, OK: true})
	}
	panic(fmt.Sprintf("unknown stage %q", stage))
}

// mockAll routes every activity of the test environment to f.
func (f *fakeCloud) mockAll(env *testsuite.TestWorkflowEnvironment) {
	var (
		gcp       *activities.GCP
		kube      *activities.Kube
		helm      *activities.Helm
		notifier  *activities.Notifier
		verifier  *activities.Verifier
		schedules *activities.Schedules
		grants    *activities.Grants
		approvals *activities.Approvals
		policies  *activities.Policies
	)
	for _, pair := range [][2]any{
		{policies.ResolveGrantPolicy, f.ResolveGrantPolicy},
		{approvals.CheckDecisionProof, f.CheckDecisionProof},
		{schedules.SetRevocationTime, f.SetRevocationTime},
		{schedules.DescribeRevocationSchedule, f.DescribeRevocationSchedule},
		{schedules.DeleteSchedule, f.DeleteSchedule},
		{schedules.EnsureSweepSchedule, f.EnsureSweepSchedule},
		{grants.DescribeWorkflowRun, f.DescribeWorkflowRun},
		{grants.CancelWorkflowRun, f.CancelWorkflowRun},
		{grants.ListWorkflowRuns, f.ListWorkflowRuns},
		{grants.WorkflowRunResult, f.WorkflowRunResult},
		{helm.RenderRelease, f.RenderRelease},
		{kube.CheckAccess, f.CheckAccess},
		{helm.VerifyRelease, f.VerifyRelease},
		{kube.Preflight, f.Preflight},
		{gcp.CheckIdentitySameness, f.CheckIdentitySameness},
		{gcp.EnableService, f.EnableService},
		{gcp.SetWorkloadPool, f.SetWorkloadPool},
		{gcp.EnsureWorkloadPool, f.EnsureWorkloadPool},
		{gcp.ListNodePools, f.ListNodePools},
		{gcp.SetNodePoolMetadata, f.SetNodePoolMetadata},
		{gcp.EnsureServiceAccount, f.EnsureServiceAccount},
		{gcp.DeleteServiceAccount, f.DeleteServiceAccount},
		{gcp.AddServiceAccountIAMMember, f.AddServiceAccountIAMMember},
		{gcp.RemoveServiceAccountIAMMember, f.RemoveServiceAccountIAMMember},
		{gcp.GrantBigQueryAccess, f.GrantBigQueryAccess},
		{gcp.RevokeBigQueryAccess, f.RevokeBigQueryAccess},
		{kube.AnnotateServiceAccount, f.AnnotateServiceAccount},
		{kube.RemoveServiceAccountAnnotation, f.RemoveServiceAccountAnnotation},
		{helm.HelmUpgradeInstall, f.HelmUpgradeInstall},
		{notifier.NotifySupport, f.NotifySupport},
		{verifier.VerifyAccess, f.VerifyAccess},
	} {
		env.OnActivity(pair[0], mock.Anything, mock.Anything).Return(pair[1])
	}
}

// registerAll registers f's methods on a real worker under the activity names
// the workflows use, except those of Schedules and Grants: against a real
// Temporal service, the real ones run.
func (f *fakeCloud) registerAll(w worker.ActivityRegistry) {
	for name, fn := range map[string]any{
		"RenderRelease":                  f.RenderRelease,
		"CheckAccess":                    f.CheckAccess,
		"VerifyRelease":                  f.VerifyRelease,
		"Preflight":                      f.Preflight,
		"CheckIdentitySameness":          f.CheckIdentitySameness,
		"EnableService":                  f.EnableService,
		"SetWorkloadPool":                f.SetWorkloadPool,
		"EnsureWorkloadPool":             f.EnsureWorkloadPool,
		"ListNodePools":                  f.ListNodePools,
		"SetNodePoolMetadata":            f.SetNodePoolMetadata,
		"EnsureServiceAccount":           f.EnsureServiceAccount,
		"DeleteServiceAccount":           f.DeleteServiceAccount,
		"AddServiceAccountIAMMember":     f.AddServiceAccountIAMMember,
		"RemoveServiceAccountIAMMember":  f.RemoveServiceAccountIAMMember,
		"GrantBigQueryAccess":            f.GrantBigQueryAccess,
		"RevokeBigQueryAccess":           f.RevokeBigQueryAccess,
		"AnnotateServiceAccount":         f.AnnotateServiceAccount,
		"RemoveServiceAccountAnnotation": f.RemoveServiceAccountAnnotation,
		"HelmUpgradeInstall":             f.HelmUpgradeInstall,
		"NotifySupport":                  f.NotifySupport,
		"VerifyAccess":                   f.VerifyAccess,
		"CheckDecisionProof":             f.CheckDecisionProof,
		"ResolveGrantPolicy":             f.ResolveGrantPolicy,
	} {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
}
