package activities

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iam/v1"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// statuses counts the answers of method in the recent-request log, by status.
func (e *gcpEmu) statuses(method string) map[int]int {
	out := map[int]int{}
	for _, r := range e.emu.RecentRequests() {
		if r.Method == method {
			out[r.Status]++
		}
	}
	return out
}

// accountsNamed counts the project's accounts with this email.
func (e *gcpEmu) accountsNamed(email string) int {
	e.t.Helper()
	list, err := e.iamClient().Projects.ServiceAccounts.List("projects/" + emuProject).Do()
	require.NoError(e.t, err)
	n := 0
	for _, a := range list.Accounts {
		if strings.EqualFold(a.Email, email) {
			n++
		}
	}
	return n
}

// Every step that follows a create names the new account while IAM may not
// know it everywhere: each survives without a second account.
func TestGCPStepsAfterCreateSurviveNewAccountWindow(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.IAMConsistency.NewAccountWindow = gcpemu.Duration(time.Minute)
	e := newGCPEmu(t, cfg)
	e.runStep(e.gcp.SetWorkloadPool, emuClusterRef)
	e.emu.ResetRequestLog()

	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "carto-fresh"})
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))
	require.True(t, sa.Created)
	member := "serviceAccount:" + sa.Email

	// The first look after a create always misses: the project grant first
	// meets the member refused, the account's own policy then meets 404s.
	bq := BigQueryAccessInput{Member: member, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp"}
	assert.True(t, e.runStep(e.gcp.GrantBigQueryAccess, bq).Changed)
	self := ServiceAccountIAMInput{ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: member}
	assert.True(t, e.runStep(e.gcp.AddServiceAccountIAMMember, self).Changed)
	wi := ServiceAccountIAMInput{ServiceAccountEmail: sa.Email, Role: "roles/iam.workloadIdentityUser",
		Member: "serviceAccount:" + emuProject + ".svc.id.goog[carto/carto-common-backend]"}
	assert.True(t, e.runStep(e.gcp.AddServiceAccountIAMMember, wi).Changed)

	assert.NotZero(t, e.statuses("iam.projects.serviceAccounts.getIamPolicy")[http.StatusNotFound], "%v", e.emu.RequestCounts())
	assert.NotZero(t, e.statuses("cloudresourcemanager.projects.setIamPolicy")[http.StatusBadRequest])
	assert.Equal(t, 1, e.count("iam.projects.serviceAccounts.create"))
	assert.Equal(t, 1, e.accountsNamed(sa.Email))

	e.emu.SettleServiceAccounts()
	p := e.saPolicy(sa.Email)
	assert.True(t, p.HasMember(self.Role, self.Member))
	assert.True(t, p.HasMember(wi.Role, wi.Member))
	assert.True(t, e.projectPolicy("data-proj").HasMember(roleBigQueryDataEditor, member))
	assert.True(t, e.projectPolicy("bill-proj").HasMember(roleBigQueryJobUser, member))
}

// A retried create within the window meets 409 and adopts the account only
// when it is this run's.
func TestGCPEnsureServiceAccountNewAccountWindow(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.IAMConsistency.NewAccountWindow = gcpemu.Duration(time.Minute)
	e := newGCPEmu(t, cfg)
	in := EnsureServiceAccountInput{Project: emuProject, AccountID: "retried-create"}
	var first, again ServiceAccount
	val, err := e.run(e.gcp.EnsureServiceAccount, in)
	require.NoError(t, err)
	require.NoError(t, val.Get(&first))

	e.emu.ResetRequestLog()
	val, err = e.run(e.gcp.EnsureServiceAccount, in)
	require.NoError(t, err)
	require.NoError(t, val.Get(&again))
	assert.Equal(t, first, again, "the earlier attempt's account, still Created")
	assert.Equal(t, map[int]int{http.StatusConflict: 1}, e.statuses("iam.projects.serviceAccounts.create"))
	assert.NotZero(t, e.statuses("iam.projects.serviceAccounts.get")[http.StatusNotFound])
	assert.Equal(t, 1, e.accountsNamed(first.Email))

	byHand, err := e.iamClient().Projects.ServiceAccounts.Create("projects/"+emuProject, &iam.CreateServiceAccountRequest{AccountId: "made-by-hand"}).Do()
	require.NoError(t, err)
	val, err = e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "made-by-hand"})
	require.NoError(t, err)
	var adopted ServiceAccount
	require.NoError(t, val.Get(&adopted))
	assert.Equal(t, ServiceAccount{Email: byHand.Email, UniqueID: byHand.UniqueId}, adopted, "someone else's: not Created")
}

// When IAM does not catch up within the propagation timeout the step fails
// retryably, for Temporal to try again later.
func TestGCPNewAccountNeverVisibleIsRetryable(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.IAMConsistency = gcpemu.IAMConsistency{NewAccountWindow: gcpemu.Duration(time.Hour), StaleRate: 1}
	e := newGCPEmu(t, cfg)
	in := EnsureServiceAccountInput{Project: emuProject, AccountID: "never-visible"}
	val, err := e.run(e.gcp.EnsureServiceAccount, in)
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))

	begin := time.Now()
	_, err = e.run(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
		ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + sa.Email})
	appErr := requireActivityAppError(t, err)
	assert.False(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypePropagating, appErr.Type())
	// Up to the propagation timeout (1s here), less the last poll interval.
	assert.GreaterOrEqual(t, time.Since(begin), time.Second-50*time.Millisecond, "retried for the propagation timeout first")
	assert.Greater(t, e.count("iam.projects.serviceAccounts.getIamPolicy"), 3)

	_, err = e.run(e.gcp.EnsureServiceAccount, in)
	appErr = requireActivityAppError(t, err)
	assert.False(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypePropagating, appErr.Type())
	assert.Equal(t, 1, e.accountsNamed(sa.Email), "never a second account")
}

func TestGCPDeleteServiceAccountInWindowDeletes(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.IAMConsistency.NewAccountWindow = gcpemu.Duration(time.Minute)
	e := newGCPEmu(t, cfg)
	val, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "rejected-soon"})
	require.NoError(t, err)
	var sa ServiceAccount
	require.NoError(t, val.Get(&sa))

	// By email the account looks missing now; deleted by unique id it is deleted.
	_, err = e.iamClient().Projects.ServiceAccounts.Get(serviceAccountResource(sa.Email)).Do()
	require.True(t, IsNotFound(err), "the window is on: %v", err)
	res := e.runStep(e.gcp.DeleteServiceAccount, sa)
	assert.True(t, res.Changed, res.Detail)
	assert.Equal(t, 0, e.accountsNamed(sa.Email))

	res = e.runStep(e.gcp.DeleteServiceAccount, sa)
	assert.False(t, res.Changed)
	assert.Contains(t, res.Detail, "already deleted")
}

func TestGCPRemoveMemberOfDeletedAccount(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("deleted-later")
	self := ServiceAccountIAMInput{ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + sa.Email}
	e.runStep(e.gcp.AddServiceAccountIAMMember, self)
	_, err := e.iamClient().Projects.ServiceAccounts.Delete(serviceAccountResource(sa.UniqueID)).Do()
	require.NoError(t, err)

	e.emu.ResetRequestLog()
	res := e.runStep(e.gcp.RemoveServiceAccountIAMMember, self)
	assert.False(t, res.Changed)
	assert.Contains(t, res.Detail, "no longer exists")
	assert.Equal(t, map[int]int{http.StatusForbidden: 1}, e.statuses("iam.projects.serviceAccounts.getIamPolicy"), "IAM denied the deleted account")
	assert.Equal(t, 1, e.count("iam.projects.serviceAccounts.list"), "gone confirmed by the account list")

	// A denial for an account that exists stands.
	live := e.createServiceAccount("denied-account")
	e.emu.SetFaults([]gcpemu.FaultRule{{Method: "iam.projects.serviceAccounts.getIamPolicy", Sequence: []int{403}}})
	_, err = e.run(e.gcp.RemoveServiceAccountIAMMember, ServiceAccountIAMInput{
		ServiceAccountEmail: live.Email, Role: self.Role, Member: "serviceAccount:" + live.Email})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
}

func TestGCPServiceAccountQuotaIsNotRetried(t *testing.T) {
	cfg := defaultEmuConfig()
	cfg.ServiceAccountQuota = 1
	e := newGCPEmu(t, cfg)
	e.createServiceAccount("first-account")
	e.emu.ResetRequestLog()

	_, err := e.run(e.gcp.EnsureServiceAccount, EnsureServiceAccountInput{Project: emuProject, AccountID: "second-account"})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeQuotaExceeded, appErr.Type())
	for _, want := range []string{"service account quota", "request an increase", "console.cloud.google.com/iam-admin/quotas",
		"Maximum number of service accounts on project reached."} {
		assert.Contains(t, appErr.Error(), want)
	}
	assert.Equal(t, 1, e.count("iam.projects.serviceAccounts.create"), "failed at once")
}

func TestGCPPolicyMemberLimitIsNotRetried(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("crowded-account")
	members := make([]string, 1500)
	for i := range members {
		members[i] = fmt.Sprintf("user:u%d@example.com", i)
	}
	_, err := e.iamClient().Projects.ServiceAccounts.SetIamPolicy(serviceAccountResource(sa.Email), &iam.SetIamPolicyRequest{
		Policy: &iam.Policy{Bindings: []*iam.Binding{{Role: "roles/iam.serviceAccountUser", Members: members}}}}).Do()
	require.NoError(t, err)

	_, err = e.run(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
		ServiceAccountEmail: sa.Email, Role: "roles/iam.serviceAccountTokenCreator", Member: "serviceAccount:" + sa.Email})
	appErr := requireActivityAppError(t, err)
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeQuotaExceeded, appErr.Type())
	assert.Contains(t, appErr.Error(), "1,500")
	assert.Contains(t, appErr.Error(), "cannot be raised")
	assert.Equal(t, 2, e.count("iam.projects.serviceAccounts.setIamPolicy"), "the fixture's write and one refused write, not retried")
}

func TestClassifyQuotaAgainstRateLimit(t *testing.T) {
	body := func(msg, delay string) string {
		details := ""
		if delay != "" {
			details = `,"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"` + delay + `"}]`
		}
		return `{"error":{"code":429,"message":"` + msg + `","status":"RESOURCE_EXHAUSTED"` + details + `}}`
	}
	for _, tc := range []struct {
		name, msg, delay string
		quota            bool
	}{
		{"account quota", "Maximum number of service accounts on project reached.", "86401s", true},
		{"a day of retry delay", "Quota exceeded for something.", "86400s", true},
		{"known text without delay", "Maximum number of keys on account reached.", "", true},
		{"rate limit", "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute'.", "30s", false},
		{"no details", "Too many requests.", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gerr := &googleapi.Error{Code: 429, Message: tc.msg, Body: body(tc.msg, tc.delay)}
			appErr := requireActivityAppError(t, ClassifyGoogleError(gerr, "create service account x", "iam.serviceAccounts.create"))
			if tc.quota {
				assert.Equal(t, contract.ErrTypeQuotaExceeded, appErr.Type())
				assert.True(t, appErr.NonRetryable())
			} else {
				assert.Equal(t, contract.ErrTypeUnavailable, appErr.Type())
				assert.False(t, appErr.NonRetryable())
			}
		})
	}
}
