package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	crm "google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/option"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/workflows"
)

// The sandbox's worker holds exactly the roles the README lists (its onboardings
// in the other tests succeed with them). Taking one away must stop the onboarding
// at the step that needs it, naming the missing permission and the role to grant.
func TestLeastPrivilegeMissingRoleStopsAtItsStep(t *testing.T) {
	requireSandbox(t)
	req := onboardRequest(t, "lp-no-sa-admin")
	operator := "serviceAccount:" + sandbox.Config().Operator
	const role = "roles/iam.serviceAccountAdmin"

	setProjectRole(t, req.Project, role, operator, false)
	t.Cleanup(func() { setProjectRole(t, req.Project, role, operator, true) })

	id := startOnboard(t, req)
	d := waitClosed(t, id, 2*time.Minute)
	require.Equal(t, "WORKFLOW_EXECUTION_STATUS_FAILED", d.WorkflowExecutionInfo.Status)

	s := queryStatus(t, id)
	assert.Equal(t, workflows.StateFailed, s.State)
	for _, done := range []string{"preflight", "identity-sameness"} {
		st, ok := s.Step(done)
		require.Truef(t, ok, "step %s", done)
		assert.Equalf(t, workflows.StepDone, st.State, "step %s ran with the remaining roles", done)
	}
	// The GSA comes first (support is asked as soon as it exists): the cluster
	// was not touched.
	for _, untouched := range []string{"enable-iamcredentials", "workload-pool", "approval-request"} {
		st, ok := s.Step(untouched)
		require.Truef(t, ok, "step %s", untouched)
		assert.Equalf(t, workflows.StepPending, st.State, "step %s", untouched)
	}
	st, ok := s.Step("service-account")
	require.True(t, ok)
	assert.Equal(t, workflows.StepFailed, st.State)
	assert.Contains(t, st.LastError, "iam.serviceAccounts.create", "names the missing permission")
	assert.Contains(t, st.LastError, role, "names the role that grants it")
	assert.False(t, gsaExists(t, "e2e-lp-no-sa-admin@"+req.Project+".iam.gserviceaccount.com"))
}

// setProjectRole adds or removes member in role on the project's IAM policy, as
// the emulated project owner (not as the worker).
func setProjectRole(t *testing.T, project, role, member string, present bool) {
	t.Helper()
	ctx := context.Background()
	tok := sandbox.Emulator().MintAccessToken("user:owner@example.com")
	eps := activities.GCPEndpointsFromMap(sandbox.GCPEndpoints())
	svc, err := crm.NewService(ctx, eps.ClientOptions(activities.APIResourceManager,
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))...)
	require.NoError(t, err)
	resource := "projects/" + project
	policy, err := svc.Projects.GetIamPolicy(resource, &crm.GetIamPolicyRequest{
		Options: &crm.GetPolicyOptions{RequestedPolicyVersion: 3},
	}).Context(ctx).Do()
	require.NoError(t, err)
	var kept []*crm.Binding
	found := false
	for _, b := range policy.Bindings {
		if b.Role == role && b.Condition == nil {
			found = true
			var members []string
			for _, m := range b.Members {
				if m != member {
					members = append(members, m)
				}
			}
			if present {
				members = append(members, member)
			}
			if len(members) == 0 {
				continue
			}
			b.Members = members
		}
		kept = append(kept, b)
	}
	if !found && present {
		kept = append(kept, &crm.Binding{Role: role, Members: []string{member}})
	}
	policy.Bindings = kept
	_, err = svc.Projects.SetIamPolicy(resource, &crm.SetIamPolicyRequest{Policy: policy}).Context(ctx).Do()
	require.NoError(t, err)
}
