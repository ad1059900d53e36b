package gcpemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	crm "google.golang.org/api/cloudresourcemanager/v3"
	iam "google.golang.org/api/iam/v1"
)

func withConsistency(window time.Duration, seed uint64) envOption {
	return withConfig(func(c *Config) {
		c.IAMConsistency = IAMConsistency{NewAccountWindow: Duration(window)}
		c.Seed = seed
	})
}

// getStatuses looks n times at an account by email and returns the statuses.
func (e *env) getStatuses(email string, n int) []int {
	e.t.Helper()
	var out []int
	for range n {
		_, err := e.iam(e.opTok).Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + email).Do()
		if err == nil {
			out = append(out, http.StatusOK)
			continue
		}
		out = append(out, apiErr(e.t, err, http.StatusNotFound).Code)
	}
	return out
}

func TestNewAccountIsEventuallyVisibleByEmail(t *testing.T) {
	e := newEnv(t, withConsistency(time.Minute, 7))
	svc := e.iam(e.opTok)
	sa := e.createSA("fresh-account")

	seen := e.getStatuses(sa.Email, 20)
	assert.Equal(t, http.StatusNotFound, seen[0], "the first look after the create misses")
	assert.Contains(t, seen[1:], http.StatusOK)
	assert.Contains(t, seen[1:], http.StatusNotFound, "404, 200, then 404 again within the window: %v", seen)

	// The same seed and calls give the same answers.
	other := newEnv(t, withConsistency(time.Minute, 7))
	again := other.createSA("fresh-account")
	assert.Equal(t, seen, other.getStatuses(again.Email, 20))

	for range 5 {
		got, err := svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.UniqueId).Do()
		require.NoError(t, err, "the unique id is always answered exactly")
		assert.Equal(t, sa.Email, got.Email)
	}
	_, err := svc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "fresh-account"}).Do()
	assert.Equal(t, "ALREADY_EXISTS", status(t, apiErr(t, err, http.StatusConflict)), "a second create meets the first")

	e.clock.Advance(time.Minute)
	for _, code := range e.getStatuses(sa.Email, 10) {
		assert.Equal(t, http.StatusOK, code, "visible for good after the window")
	}
}

func TestNewAccountAsPolicyMemberMayNotExistYet(t *testing.T) {
	e := newEnv(t, withConsistency(time.Minute, 3))
	sa := e.createSA("fresh-member")
	member := "serviceAccount:" + sa.Email
	c := e.crm(e.opTok)
	write := func() error {
		p, err := c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
		require.NoError(t, err)
		p.Bindings = append(p.Bindings, &crm.Binding{Role: "roles/bigquery.jobUser", Members: []string{member}})
		_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: p}).Do()
		return err
	}
	ge := apiErr(t, write(), http.StatusBadRequest)
	assert.Equal(t, "INVALID_ARGUMENT", status(t, ge))
	assert.Equal(t, "Service account "+sa.Email+" does not exist.", ge.Message)

	// Retried within the window, the write goes through once a look finds it.
	var err error
	for range 20 {
		if err = write(); err == nil {
			break
		}
		requireAPIError(t, err, http.StatusBadRequest)
	}
	require.NoError(t, err)

	// A member already in the policy is not looked up again: other writers of
	// the policy are not refused because of it.
	e.grantProjectRole(t, "roles/viewer", "user:someone@example.com")

	// On the account's own policy, the account itself may be missing too.
	self := e.createSA("fresh-self")
	_, err = e.iam(e.opTok).Projects.ServiceAccounts.GetIamPolicy("projects/-/serviceAccounts/" + self.Email).Do()
	assert.Equal(t, "NOT_FOUND", status(t, apiErr(t, err, http.StatusNotFound)))
	e.clock.Advance(time.Minute)
	e.setSAPolicyMember(t, self.Email, "roles/iam.serviceAccountTokenCreator", "serviceAccount:"+self.Email, true)
}

func TestDeletedAccountAnswersDeniedByEmail(t *testing.T) {
	e := newEnv(t, withConsistency(time.Second, 1))
	svc := e.iam(e.opTok)
	sa := e.createSA("to-be-deleted")
	e.clock.Advance(time.Second)
	_, err := svc.Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + sa.UniqueId).Do()
	require.NoError(t, err)

	_, err = svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.Email).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "PERMISSION_DENIED", status(t, ge))
	assert.Equal(t, "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist).", ge.Message)
	assert.Contains(t, ge.Body, `"reason": "IAM_PERMISSION_DENIED"`)
	_, err = svc.Projects.ServiceAccounts.GetIamPolicy("projects/-/serviceAccounts/" + sa.Email).Do()
	requireAPIError(t, err, http.StatusForbidden)

	_, err = svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.UniqueId).Do()
	assert.Equal(t, "NOT_FOUND", status(t, apiErr(t, err, http.StatusNotFound)), "by unique id a deleted account is gone")
	_, err = svc.Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + sa.UniqueId).Do()
	requireAPIError(t, err, http.StatusNotFound)

	again := e.createSA("to-be-deleted")
	e.clock.Advance(time.Second)
	got, err := svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.Email).Do()
	require.NoError(t, err, "a new account under the email is found")
	assert.Equal(t, again.UniqueId, got.UniqueId)

	// Without the model a deleted account is a plain 404.
	plain := newEnv(t)
	gone := plain.createSA("to-be-deleted")
	_, err = plain.iam(plain.opTok).Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + gone.Email).Do()
	require.NoError(t, err)
	_, err = plain.iam(plain.opTok).Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + gone.Email).Do()
	requireAPIError(t, err, http.StatusNotFound)
}

func TestServiceAccountQuota(t *testing.T) {
	// The operator's own account counts: two more fit.
	e := newEnv(t, withConfig(func(c *Config) { c.ServiceAccountQuota = 3 }))
	svc := e.iam(e.opTok)
	first := e.createSA("account-one")
	e.createSA("account-two")
	_, err := svc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "account-three"}).Do()
	ge := apiErr(t, err, http.StatusTooManyRequests)
	assert.Equal(t, "Maximum number of service accounts on project reached.", ge.Message)
	var body struct {
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				Type       string `json:"@type"`
				RetryDelay string `json:"retryDelay"`
			} `json:"details"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(ge.Body), &body))
	assert.Equal(t, "RESOURCE_EXHAUSTED", body.Error.Status)
	require.Len(t, body.Error.Details, 1)
	assert.Equal(t, "type.googleapis.com/google.rpc.RetryInfo", body.Error.Details[0].Type)
	assert.Equal(t, "86401s", body.Error.Details[0].RetryDelay)

	_, err = svc.Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + first.UniqueId).Do()
	require.NoError(t, err)
	e.createSA("account-three")

	_, err = New(Config{IAMConsistency: IAMConsistency{StaleRate: 2}})
	assert.Error(t, err, "a rate above 1 is refused")
}

func TestPolicyMemberLimit(t *testing.T) {
	e := newEnv(t)
	sa := e.createSA("many-members")
	svc := e.iam(e.opTok)
	res := "projects/-/serviceAccounts/" + sa.Email
	write := func(n int) error {
		members := make([]string, n)
		for i := range members {
			members[i] = fmt.Sprintf("user:u%d@example.com", i)
		}
		p, err := svc.Projects.ServiceAccounts.GetIamPolicy(res).Do()
		require.NoError(t, err)
		p.Bindings = []*iam.Binding{{Role: "roles/iam.serviceAccountTokenCreator", Members: members}}
		_, err = svc.Projects.ServiceAccounts.SetIamPolicy(res, &iam.SetIamPolicyRequest{Policy: p}).Do()
		return err
	}
	ge := apiErr(t, write(1501), http.StatusBadRequest)
	assert.Equal(t, "INVALID_ARGUMENT", status(t, ge))
	assert.Equal(t, "The number of members in the policy (1,501) is larger than the maximum allowed size 1,500.", ge.Message)
	require.NoError(t, write(1500))
}
