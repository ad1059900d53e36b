package gcpemu

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	crmv1 "google.golang.org/api/cloudresourcemanager/v1"
	crm "google.golang.org/api/cloudresourcemanager/v3"
	iam "google.golang.org/api/iam/v1"
)

func TestServiceAccountLifecycle(t *testing.T) {
	e := newEnv(t)
	svc := e.iam(e.opTok)

	sa := e.createSA("gkewi-carto")
	assert.Equal(t, "gkewi-carto@proj-a.iam.gserviceaccount.com", sa.Email)
	assert.Equal(t, "projects/proj-a/serviceAccounts/gkewi-carto@proj-a.iam.gserviceaccount.com", sa.Name)
	assert.Len(t, sa.UniqueId, 21)
	assert.NotEmpty(t, sa.Etag)

	_, err := svc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "gkewi-carto"}).Do()
	ge := apiErr(t, err, http.StatusConflict)
	assert.Equal(t, "ALREADY_EXISTS", status(t, ge))
	assert.Equal(t, "Service account gkewi-carto already exists within project projects/proj-a.", ge.Message)

	got, err := svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.Email).Do()
	require.NoError(t, err)
	assert.Equal(t, sa.UniqueId, got.UniqueId)
	got, err = svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.UniqueId).Do()
	require.NoError(t, err, "lookup by unique id")
	assert.Equal(t, sa.Email, got.Email)

	list, err := svc.Projects.ServiceAccounts.List("projects/" + testProject).Do()
	require.NoError(t, err)
	var emails []string
	for _, a := range list.Accounts {
		emails = append(emails, a.Email)
	}
	assert.ElementsMatch(t, []string{testOperator, sa.Email}, emails)

	_, err = svc.Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + sa.Email).Do()
	require.NoError(t, err)
	_, err = svc.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + sa.Email).Do()
	ge = apiErr(t, err, http.StatusNotFound)
	assert.Equal(t, "NOT_FOUND", status(t, ge))

	again := e.createSA("gkewi-carto")
	assert.NotEqual(t, sa.UniqueId, again.UniqueId, "a recreated account gets a new unique id")
}

func TestServiceAccountIDValidation(t *testing.T) {
	e := newEnv(t)
	svc := e.iam(e.opTok)
	for _, id := range []string{"short", "Has_Upper", "1starts-with-digit", "ends-with-hyphen-", strings.Repeat("a", 31)} {
		_, err := svc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: id}).Do()
		ge := apiErr(t, err, http.StatusBadRequest)
		assert.Equal(t, "INVALID_ARGUMENT", status(t, ge), id)
		assert.Contains(t, ge.Message, "Invalid value for field 'accountId': '"+id+"'")
	}
	_, err := svc.Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "a-valid-id-30-characters-long0"}).Do()
	require.NoError(t, err)
}

func TestPermissionDeniedAndUnauthenticated(t *testing.T) {
	e := newEnv(t)
	nobody := e.emu.MintAccessToken("user:nobody@example.com")

	_, err := e.iam(nobody).Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "not-allowed"}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).", ge.Message)
	assert.Equal(t, "PERMISSION_DENIED", status(t, ge))
	assert.Contains(t, ge.Body, `"IAM_PERMISSION_DENIED"`)

	_, err = e.gke(nobody).Projects.Locations.Clusters.Get(clusterName()).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, `Required "container.clusters.get" permission(s) for "projects/proj-a/locations/us-central1/clusters/c1".`, ge.Message)

	_, err = e.crm(nobody).Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "The caller does not have permission", ge.Message)

	_, err = e.su(nobody).Services.Enable("projects/"+testProject+"/services/iamcredentials.googleapis.com", nil).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Permission denied to enable service [iamcredentials.googleapis.com]", ge.Message)

	_, err = e.bq(nobody).Datasets.Get(testProject, "analytics").Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Access Denied: Dataset proj-a:analytics: Permission bigquery.datasets.get denied on dataset proj-a:analytics (or it may not exist).", ge.Message)

	_, err = e.iam("ya29.not-a-token").Projects.ServiceAccounts.List("projects/" + testProject).Do()
	ge = apiErr(t, err, http.StatusUnauthorized)
	assert.Equal(t, "UNAUTHENTICATED", status(t, ge))
	assert.Contains(t, ge.Message, "Request had invalid authentication credentials.")

	_, err = e.iam("").Projects.ServiceAccounts.List("projects/" + testProject).Do()
	ge = apiErr(t, err, http.StatusUnauthorized)
	assert.Contains(t, ge.Message, "Request is missing required authentication credential.")
}

func TestExpiredTokenIsRejected(t *testing.T) {
	e := newEnv(t)
	tok := e.emu.MintAccessTokenWithLifetime("serviceAccount:"+testOperator, 10*time.Minute)
	_, err := e.iam(tok).Projects.ServiceAccounts.List("projects/" + testProject).Do()
	require.NoError(t, err)
	e.clock.Advance(10 * time.Minute)
	_, err = e.iam(tok).Projects.ServiceAccounts.List("projects/" + testProject).Do()
	ge := apiErr(t, err, http.StatusUnauthorized)
	assert.Contains(t, ge.Body, "ACCESS_TOKEN_EXPIRED")
}

func TestSetIamPolicyStaleEtagIsAborted(t *testing.T) {
	e := newEnv(t)
	sa := e.createSA("gkewi-carto")
	svc := e.iam(e.opTok)
	resource := "projects/-/serviceAccounts/" + sa.Email

	first, err := svc.Projects.ServiceAccounts.GetIamPolicy(resource).Do()
	require.NoError(t, err)
	require.NotEmpty(t, first.Etag)

	member := "serviceAccount:" + sa.Email
	first.Bindings = append(first.Bindings, &iam.Binding{Role: "roles/iam.serviceAccountTokenCreator", Members: []string{member}})
	written, err := svc.Projects.ServiceAccounts.SetIamPolicy(resource, &iam.SetIamPolicyRequest{Policy: first}).Do()
	require.NoError(t, err)
	assert.NotEqual(t, first.Etag, written.Etag)

	// A second writer still holding the old etag loses.
	stale := &iam.Policy{Etag: first.Etag, Bindings: []*iam.Binding{{Role: "roles/iam.serviceAccountUser", Members: []string{member}}}}
	_, err = svc.Projects.ServiceAccounts.SetIamPolicy(resource, &iam.SetIamPolicyRequest{Policy: stale}).Do()
	ge := apiErr(t, err, http.StatusConflict)
	assert.Equal(t, "ABORTED", status(t, ge))
	assert.Equal(t, "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.", ge.Message)

	// Without an etag the write is blind and overwrites.
	stale.Etag = ""
	over, err := svc.Projects.ServiceAccounts.SetIamPolicy(resource, &iam.SetIamPolicyRequest{Policy: stale}).Do()
	require.NoError(t, err)
	require.Len(t, over.Bindings, 1)
	assert.Equal(t, "roles/iam.serviceAccountUser", over.Bindings[0].Role)

	// The same on the project policy, through Resource Manager.
	c := e.crm(e.opTok)
	pp, err := c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	pp.Bindings = append(pp.Bindings, &crm.Binding{Role: "roles/bigquery.jobUser", Members: []string{member}})
	_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: pp}).Do()
	require.NoError(t, err)
	_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: pp}).Do()
	ge = apiErr(t, err, http.StatusConflict)
	assert.Equal(t, "ABORTED", status(t, ge))
}

func TestConditionalPolicyVersions(t *testing.T) {
	e := newEnv(t)
	c := e.crm(e.opTok)
	res := "projects/" + testProject
	cond := &crm.Expr{Title: "until 2030", Expression: `request.time < timestamp("2030-01-01T00:00:00Z")`}

	p, err := c.Projects.GetIamPolicy(res, &crm.GetIamPolicyRequest{Options: &crm.GetPolicyOptions{RequestedPolicyVersion: 3}}).Do()
	require.NoError(t, err)
	p.Bindings = append(p.Bindings, &crm.Binding{Role: "roles/bigquery.dataViewer", Members: []string{"user:analyst@example.com"}, Condition: cond})

	// Conditions need version 3.
	p.Version = 1
	_, err = c.Projects.SetIamPolicy(res, &crm.SetIamPolicyRequest{Policy: p}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "INVALID_ARGUMENT", status(t, ge))

	p.Version = 3
	_, err = c.Projects.SetIamPolicy(res, &crm.SetIamPolicyRequest{Policy: p}).Do()
	require.NoError(t, err)

	v3, err := c.Projects.GetIamPolicy(res, &crm.GetIamPolicyRequest{Options: &crm.GetPolicyOptions{RequestedPolicyVersion: 3}}).Do()
	require.NoError(t, err)
	assert.EqualValues(t, 3, v3.Version)
	var found *crm.Binding
	for _, b := range v3.Bindings {
		if b.Role == "roles/bigquery.dataViewer" {
			found = b
		}
	}
	require.NotNil(t, found, "conditional binding kept")
	require.NotNil(t, found.Condition)
	assert.Equal(t, cond.Expression, found.Condition.Expression)
	assert.Equal(t, cond.Title, found.Condition.Title)

	// A version 1 reader sees the binding renamed and without its condition.
	v1, err := c.Projects.GetIamPolicy(res, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	assert.EqualValues(t, 1, v1.Version)
	var renamed bool
	for _, b := range v1.Bindings {
		assert.Nil(t, b.Condition)
		renamed = renamed || strings.HasPrefix(b.Role, "roles/bigquery.dataViewer_withcond_")
	}
	assert.True(t, renamed)

	// Writing that version 1 view back with its etag is refused, so the
	// condition cannot be dropped by accident...
	v1.Bindings = append(v1.Bindings, &crm.Binding{Role: "roles/browser", Members: []string{"user:analyst@example.com"}})
	_, err = c.Projects.SetIamPolicy(res, &crm.SetIamPolicyRequest{Policy: v1}).Do()
	ge = apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Message, "Specified policy version (1) cannot be less than the existing policy version (3).")

	// ...and a read-modify-write at version 3 keeps it.
	v3.Bindings = append(v3.Bindings, &crm.Binding{Role: "roles/browser", Members: []string{"user:analyst@example.com"}})
	after, err := c.Projects.SetIamPolicy(res, &crm.SetIamPolicyRequest{Policy: v3}).Do()
	require.NoError(t, err)
	assert.EqualValues(t, 3, after.Version)
	conditions := 0
	for _, b := range after.Bindings {
		if b.Condition != nil {
			conditions++
		}
	}
	assert.Equal(t, 1, conditions)
}

func TestPolicyMemberAndRoleValidation(t *testing.T) {
	e := newEnv(t)
	sa := e.createSA("gkewi-carto")
	svc := e.iam(e.opTok)
	resource := "projects/-/serviceAccounts/" + sa.Email
	set := func(role, member string) error {
		_, err := svc.Projects.ServiceAccounts.SetIamPolicy(resource, &iam.SetIamPolicyRequest{Policy: &iam.Policy{
			Bindings: []*iam.Binding{{Role: role, Members: []string{member}}},
		}}).Do()
		return err
	}

	// The workload pool does not exist until a cluster of the project has it.
	wi := "serviceAccount:proj-a.svc.id.goog[carto/carto-common-backend]"
	ge := apiErr(t, set("roles/iam.workloadIdentityUser", wi), http.StatusBadRequest)
	assert.Equal(t, "Identity Pool does not exist (proj-a.svc.id.goog). Please check that you specified a valid resource name as returned in the `name` attribute in the configuration API.", ge.Message)
	e.enableWorkloadPool()
	require.NoError(t, set("roles/iam.workloadIdentityUser", wi))

	ge = apiErr(t, set("roles/iam.workloadIdentityUser", "carto-backend"), http.StatusBadRequest)
	assert.Equal(t, `Policy members must be of the form "<type>:<value>".`, ge.Message)

	ge = apiErr(t, set("roles/bigquery.dataEditor", "serviceAccount:"+sa.Email), http.StatusBadRequest)
	assert.Equal(t, "Role roles/bigquery.dataEditor is not supported for this resource.", ge.Message)

	ge = apiErr(t, set("roles/does.notExist", "serviceAccount:"+sa.Email), http.StatusBadRequest)
	assert.Contains(t, ge.Message, "roles/does.notExist")

	ge = apiErr(t, set("roles/iam.serviceAccountUser", "serviceAccount:ghost@proj-a.iam.gserviceaccount.com"), http.StatusBadRequest)
	assert.Equal(t, "Service account ghost@proj-a.iam.gserviceaccount.com does not exist.", ge.Message)
}

func TestDeletedAccountBindingsAreMarkedDeleted(t *testing.T) {
	e := newEnv(t)
	sa := e.createSA("gkewi-carto")
	c := e.crm(e.opTok)
	p, err := c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	p.Bindings = append(p.Bindings, &crm.Binding{Role: "roles/bigquery.jobUser", Members: []string{"serviceAccount:" + sa.Email}})
	_, err = c.Projects.SetIamPolicy("projects/"+testProject, &crm.SetIamPolicyRequest{Policy: p}).Do()
	require.NoError(t, err)

	_, err = e.iam(e.opTok).Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + sa.Email).Do()
	require.NoError(t, err)
	p, err = c.Projects.GetIamPolicy("projects/"+testProject, &crm.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	for _, b := range p.Bindings {
		if b.Role == "roles/bigquery.jobUser" {
			assert.Equal(t, []string{"deleted:serviceAccount:" + sa.Email + "?uid=" + sa.UniqueId}, b.Members)
		}
	}
}

func TestProjectGet(t *testing.T) {
	e := newEnv(t)
	p, err := e.crm(e.opTok).Projects.Get("projects/" + testProject).Do()
	require.NoError(t, err)
	assert.Equal(t, "projects/314159265358", p.Name)
	assert.Equal(t, testProject, p.ProjectId)
	assert.Equal(t, "ACTIVE", p.State)

	byNumber, err := e.crm(e.opTok).Projects.Get("projects/314159265358").Do()
	require.NoError(t, err)
	assert.Equal(t, testProject, byNumber.ProjectId)

	_, err = e.crm(e.opTok).Projects.Get("projects/no-such-project").Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "Permission 'resourcemanager.projects.get' denied on resource '//cloudresourcemanager.googleapis.com/projects/no-such-project' (or it may not exist).")
}

func TestResourceManagerV1(t *testing.T) {
	e := newEnv(t)
	svc, err := crmv1.NewService(e.ctx, e.opts(CloudResourceManager, e.opTok)...)
	require.NoError(t, err)
	p, err := svc.Projects.Get(testProject).Do()
	require.NoError(t, err)
	assert.EqualValues(t, testNumber, p.ProjectNumber)
	pol, err := svc.Projects.GetIamPolicy(testProject, &crmv1.GetIamPolicyRequest{}).Do()
	require.NoError(t, err)
	assert.NotEmpty(t, pol.Etag)
	pol.Bindings = append(pol.Bindings, &crmv1.Binding{Role: "roles/browser", Members: []string{"user:ops@example.com"}})
	_, err = svc.Projects.SetIamPolicy(testProject, &crmv1.SetIamPolicyRequest{Policy: pol}).Do()
	require.NoError(t, err)
	_, err = svc.Projects.SetIamPolicy(testProject, &crmv1.SetIamPolicyRequest{Policy: pol}).Do()
	requireAPIError(t, err, http.StatusConflict)
}
