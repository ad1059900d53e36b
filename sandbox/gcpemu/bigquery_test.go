package gcpemu

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bigquery "google.golang.org/api/bigquery/v2"
	"google.golang.org/api/serviceusage/v1"
)

func TestDatasets(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)

	ds, err := bq.Datasets.Insert(testProject, &bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{ProjectId: testProject, DatasetId: "carto_temp"},
		Location:         "EU",
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "proj-a:carto_temp", ds.Id)
	assert.Equal(t, "EU", ds.Location)
	assert.NotZero(t, ds.CreationTime)
	// Default access: project groups plus the creator as owner.
	var creatorOwner bool
	for _, a := range ds.Access {
		creatorOwner = creatorOwner || (a.Role == "OWNER" && a.UserByEmail == testOperator)
	}
	assert.True(t, creatorOwner, "access: %+v", ds.Access)

	_, err = bq.Datasets.Insert(testProject, &bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{ProjectId: testProject, DatasetId: "carto_temp"},
	}).Do()
	ge := apiErr(t, err, http.StatusConflict)
	assert.Equal(t, "Already Exists: Dataset proj-a:carto_temp", ge.Message)
	require.Len(t, ge.Errors, 1)
	assert.Equal(t, "duplicate", ge.Errors[0].Reason)

	_, err = bq.Datasets.Get(testProject, "missing").Do()
	ge = apiErr(t, err, http.StatusNotFound)
	assert.Equal(t, "Not found: Dataset proj-a:missing", ge.Message)
	assert.Equal(t, "notFound", ge.Errors[0].Reason)

	list, err := bq.Datasets.List(testProject).Do()
	require.NoError(t, err)
	var ids []string
	for _, d := range list.Datasets {
		ids = append(ids, d.DatasetReference.DatasetId)
	}
	assert.Equal(t, []string{"analytics", "carto_temp"}, ids)
}

func TestDatasetAccessGrantsAndRoleNames(t *testing.T) {
	e := newEnv(t)
	gsa := e.createSA("gkewi-carto")
	bq := e.bq(e.opTok)
	gsaTok := e.emu.MintAccessToken("serviceAccount:" + gsa.Email)

	_, err := e.bq(gsaTok).Tables.List(testProject, "analytics").Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Access Denied: Dataset proj-a:analytics: Permission bigquery.tables.list denied on dataset proj-a:analytics (or it may not exist).", ge.Message)
	assert.Equal(t, "accessDenied", ge.Errors[0].Reason)

	ds, err := bq.Datasets.Get(testProject, "analytics").Do()
	require.NoError(t, err)
	ds.Access = append(ds.Access, &bigquery.DatasetAccess{Role: "roles/bigquery.dataEditor", UserByEmail: gsa.Email})
	patched, err := bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: ds.Access}).Do()
	require.NoError(t, err)
	// BigQuery shows the dataset roles by their basic names.
	var shown string
	for _, a := range patched.Access {
		if a.UserByEmail == gsa.Email {
			shown = a.Role
		}
	}
	assert.Equal(t, "WRITER", shown)
	assert.NotEqual(t, ds.Etag, patched.Etag)

	tables, err := e.bq(gsaTok).Tables.List(testProject, "analytics").Do()
	require.NoError(t, err)
	require.Len(t, tables.Tables, 1)
	assert.Equal(t, "events", tables.Tables[0].TableReference.TableId)

	// Reading data needs jobs.create in the billing project too.
	q := &bigquery.QueryRequest{Query: "SELECT * FROM `proj-a.analytics.events`", DryRun: true, UseLegacySql: new(bool)}
	_, err = e.bq(gsaTok).Jobs.Query(testProject, q).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "bigquery.jobs.create")
	e.grantProjectRole(t, "roles/bigquery.jobUser", "serviceAccount:"+gsa.Email)
	resp, err := e.bq(gsaTok).Jobs.Query(testProject, q).Do()
	require.NoError(t, err)
	assert.True(t, resp.JobComplete)

	// A missing table and legacy SQL are reported as BigQuery does.
	_, err = e.bq(gsaTok).Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT * FROM `proj-a.analytics.nope`", UseLegacySql: new(bool)}).Do()
	ge = apiErr(t, err, http.StatusNotFound)
	assert.Equal(t, "Not found: Table proj-a:analytics.nope was not found in location US", ge.Message)
	_, err = e.bq(gsaTok).Jobs.Query(testProject, &bigquery.QueryRequest{Query: "SELECT * FROM `proj-a.analytics.events`"}).Do()
	ge = apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Message, "Try using standard SQL")

	// Revoking the access entry takes the grant away.
	var kept []*bigquery.DatasetAccess
	for _, a := range patched.Access {
		if a.UserByEmail != gsa.Email {
			kept = append(kept, a)
		}
	}
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: kept}).Do()
	require.NoError(t, err)
	_, err = e.bq(gsaTok).Tables.List(testProject, "analytics").Do()
	requireAPIError(t, err, http.StatusForbidden)
}

func TestDatasetAccessValidation(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)
	_, err := bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: []*bigquery.DatasetAccess{
		{Role: "roles/bigquery.dataEditor", UserByEmail: "ghost@proj-a.iam.gserviceaccount.com"},
	}}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Message, "Service account ghost@proj-a.iam.gserviceaccount.com does not exist.")

	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: []*bigquery.DatasetAccess{
		{Role: "roles/container.admin", UserByEmail: "ops@example.com"},
	}}).Do()
	requireAPIError(t, err, http.StatusBadRequest)

	// Dataset editors may not change the access list.
	editor := "user:editor@example.com"
	e.grantProjectRole(t, "roles/bigquery.dataEditor", editor)
	_, err = e.bq(e.emu.MintAccessToken(editor)).Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Description: "x"}).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "bigquery.datasets.update")
}

func TestServiceEnableOperation(t *testing.T) {
	e := newEnv(t, withOperationDuration(20*time.Second))
	su := e.su(e.opTok)
	name := "projects/" + testProject + "/services/iamcredentials.googleapis.com"

	svc, err := su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "DISABLED", svc.State)
	assert.Equal(t, "projects/314159265358/services/iamcredentials.googleapis.com", svc.Name)

	op, err := su.Services.Enable(name, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	assert.False(t, op.Done)
	assert.Contains(t, op.Name, "operations/acf.p2-314159265358-")

	got, err := su.Operations.Get(op.Name).Do()
	require.NoError(t, err)
	assert.False(t, got.Done)
	svc, err = su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "DISABLED", svc.State)

	e.clock.Advance(20 * time.Second)
	got, err = su.Operations.Get(op.Name).Do()
	require.NoError(t, err)
	assert.True(t, got.Done)
	assert.Contains(t, string(got.Response), "EnableServiceResponse")
	svc, err = su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "ENABLED", svc.State)

	again, err := su.Services.Enable(name, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	assert.True(t, again.Done, "enabling an enabled service is a no-op operation")

	_, err = su.Services.Enable("projects/"+testProject+"/services/nonsense.googleapis.com", &serviceusage.EnableServiceRequest{}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Equal(t, "Not found or permission denied for service(s): nonsense.googleapis.com.", ge.Message)
}

// accessOf is the first entry of an access list that match accepts.
func accessOf(entries []*bigquery.DatasetAccess, match func(*bigquery.DatasetAccess) bool) *bigquery.DatasetAccess {
	for _, a := range entries {
		if match(a) {
			return a
		}
	}
	return nil
}

func TestDatasetConditionalAccessNeedsVersion3(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)
	cond := &bigquery.Expr{Title: "until 2027", Expression: `request.time < timestamp("2027-01-01T00:00:00Z")`}
	isAna := func(a *bigquery.DatasetAccess) bool { return a.UserByEmail == "ana@example.com" }

	// Creating or adding a conditional entry below version 3 is refused.
	_, err := bq.Datasets.Insert(testProject, &bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{DatasetId: "cond"},
		Access:           []*bigquery.DatasetAccess{{Role: "OWNER", SpecialGroup: "projectOwners"}, {Role: "READER", UserByEmail: "ana@example.com", Condition: cond}},
	}).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Contains(t, ge.Message, "IAM setPolicy failed for Dataset proj-a:cond: Conditional role bindings need policy version 3")
	ds, err := bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	withCond := append(ds.Access, &bigquery.DatasetAccess{Role: "roles/bigquery.dataViewer", UserByEmail: "ana@example.com", Condition: cond})
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: withCond}).Do()
	requireAPIError(t, err, http.StatusBadRequest)

	patched, err := bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: withCond}).AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	got := accessOf(patched.Access, isAna)
	require.NotNil(t, got, "%+v", patched.Access)
	assert.Equal(t, "READER", got.Role)
	assert.Equal(t, cond, got.Condition)

	// A version 1 read hides the condition and renames the role.
	v1, err := bq.Datasets.Get(testProject, "analytics").Do()
	require.NoError(t, err)
	got = accessOf(v1.Access, isAna)
	require.NotNil(t, got)
	assert.Nil(t, got.Condition)
	assert.Regexp(t, `^roles/bigquery\.dataViewer_with_conditionalbinding_[0-9a-f]{10}$`, got.Role)
	v3, err := bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	assert.Equal(t, cond, accessOf(v3.Access, isAna).Condition)

	// Writing the access list of a dataset holding conditions below version 3
	// is refused, whatever it sends; other fields may still change.
	v1.Access = append(v1.Access, &bigquery.DatasetAccess{Role: "READER", UserByEmail: "bo@example.com"})
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: v1.Access}).Do()
	ge = apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "IAM setPolicy failed for Dataset proj-a:analytics: Specified policy version (1) cannot be less than the existing policy version (3). "+
		"For more information, please refer to https://cloud.google.com/iam/docs/policies#versions.", ge.Message)
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: v3.Access}).AccessPolicyVersion(1).Do()
	requireAPIError(t, err, http.StatusBadRequest)
	_, err = bq.Datasets.Update(testProject, "analytics", &bigquery.Dataset{Access: v3.Access}).Do()
	requireAPIError(t, err, http.StatusBadRequest)
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Description: "events"}).Do()
	require.NoError(t, err)
	after, err := bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	assert.Equal(t, v3.Access, after.Access, "refused writes changed nothing")

	// Version 3 writes keep the condition.
	v3.Access = append(v3.Access, &bigquery.DatasetAccess{Role: "READER", UserByEmail: "bo@example.com"})
	patched, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: v3.Access}).AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	assert.Equal(t, cond, accessOf(patched.Access, isAna).Condition)

	_, err = bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(2).Do()
	requireAPIError(t, err, http.StatusBadRequest)
}

func TestDatasetAccessDeletedMember(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)
	sa := e.createSA("gone-reader")
	ds, err := bq.Datasets.Get(testProject, "analytics").Do()
	require.NoError(t, err)
	ds.Access = append(ds.Access, &bigquery.DatasetAccess{Role: "WRITER", UserByEmail: sa.Email})
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: ds.Access}).Do()
	require.NoError(t, err)

	_, err = e.iam(e.opTok).Projects.ServiceAccounts.Delete("projects/-/serviceAccounts/" + sa.Email).Do()
	require.NoError(t, err)
	ds, err = bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	deleted := "deleted:serviceaccount:" + sa.Email + "?uid=" + sa.UniqueId
	got := accessOf(ds.Access, func(a *bigquery.DatasetAccess) bool { return a.IamMember == deleted })
	require.NotNil(t, got, "%+v", ds.Access)
	assert.Equal(t, "WRITER", got.Role)
	assert.Nil(t, accessOf(ds.Access, func(a *bigquery.DatasetAccess) bool { return a.UserByEmail == sa.Email }))

	// Resending the list as read is refused, in any casing of the prefix.
	ds.Access = append(ds.Access, &bigquery.DatasetAccess{Role: "READER", UserByEmail: "bo@example.com"})
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: ds.Access}).AccessPolicyVersion(3).Do()
	ge := apiErr(t, err, http.StatusBadRequest)
	assert.Equal(t, "IAM setPolicy failed for Dataset proj-a:analytics: The member "+deleted+
		" is of an unknown type. Please set a valid type prefix for the member.", ge.Message)
	assert.Equal(t, "invalid", ge.Errors[0].Reason)
	got.IamMember = "deleted:serviceAccount:" + sa.Email + "?uid=" + sa.UniqueId
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: ds.Access}).Do()
	requireAPIError(t, err, http.StatusBadRequest)
	_, err = bq.Datasets.Insert(testProject, &bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{DatasetId: "copy"}, Access: ds.Access,
	}).Do()
	requireAPIError(t, err, http.StatusBadRequest)

	// Without it the write goes through.
	var kept []*bigquery.DatasetAccess
	for _, a := range ds.Access {
		if a != got {
			kept = append(kept, a)
		}
	}
	patched, err := bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: kept}).AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	assert.Len(t, patched.Access, len(kept))
}

func TestMarkDatasetMemberDeletedKeepsCondition(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)
	sa := e.createSA("conditional")
	cond := &bigquery.Expr{Title: "until 2027", Expression: `request.time < timestamp("2027-01-01T00:00:00Z")`}
	ds, err := bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	ds.Access = append(ds.Access, &bigquery.DatasetAccess{Role: "READER", IamMember: "serviceAccount:" + sa.Email, Condition: cond})
	_, err = bq.Datasets.Patch(testProject, "analytics", &bigquery.Dataset{Access: ds.Access}).AccessPolicyVersion(3).Do()
	require.NoError(t, err)

	e.emu.mu.Lock()
	e.emu.markDatasetMemberDeletedLocked(sa.Email, sa.UniqueId, e.clock.Now())
	e.emu.mu.Unlock()

	after, err := bq.Datasets.Get(testProject, "analytics").AccessPolicyVersion(3).Do()
	require.NoError(t, err)
	got := accessOf(after.Access, func(a *bigquery.DatasetAccess) bool { return isDeletedMember(a.IamMember) })
	require.NotNil(t, got, "%+v", after.Access)
	assert.Equal(t, "deleted:serviceaccount:"+sa.Email+"?uid="+sa.UniqueId, got.IamMember)
	assert.Equal(t, cond, got.Condition)
	assert.NotEqual(t, ds.Etag, after.Etag)
}
