package activities

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/bigquery/v2"
)

// datasetAccessV3 reads a dataset's access list with its conditions.
func (e *gcpEmu) datasetAccessV3(project, dataset string) []*bigquery.DatasetAccess {
	e.t.Helper()
	ds, err := e.bigQueryClient().Datasets.Get(project, dataset).AccessPolicyVersion(3).Do()
	require.NoError(e.t, err)
	return ds.Access
}

// addDatasetEntries appends entries to a dataset's access list as an operator
// with a version 3 client would.
func (e *gcpEmu) addDatasetEntries(project, dataset string, entries ...*bigquery.DatasetAccess) {
	e.t.Helper()
	access := append(e.datasetAccessV3(project, dataset), entries...)
	_, err := e.bigQueryClient().Datasets.Patch(project, dataset, &bigquery.Dataset{Access: access}).AccessPolicyVersion(3).Do()
	require.NoError(e.t, err)
}

func TestGCPBigQueryGrantKeepsConditionalEntry(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	cond := &bigquery.Expr{Title: "until 2030", Description: "contractor", Expression: `request.time < timestamp("2030-01-01T00:00:00Z")`}
	conditional := &bigquery.DatasetAccess{Role: "READER", UserByEmail: "contractor@example.com", Condition: cond}
	e.addDatasetEntries("data-proj", "sales", conditional)
	sa := e.createServiceAccount("carto-backend")
	member := "serviceAccount:" + sa.Email
	in := BigQueryAccessInput{Member: member, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp", Datasets: []string{"sales"}}

	res := e.runStep(e.gcp.GrantBigQueryAccess, in)
	assert.True(t, res.Changed)
	assert.Empty(t, res.Warnings)
	access := e.datasetAccessV3("data-proj", "sales")
	assert.Contains(t, access, conditional, "the conditional entry is written back as it was")
	assert.True(t, slices.ContainsFunc(access, func(a *bigquery.DatasetAccess) bool {
		return accessEntryMatches(a, roleBigQueryDataEditor, member)
	}))

	assert.True(t, e.runStep(e.gcp.RevokeBigQueryAccess, in).Changed)
	assert.Contains(t, e.datasetAccessV3("data-proj", "sales"), conditional, "revoking keeps it too")
}

func TestGCPBigQueryGrantDropsDeletedMembers(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	gone := e.createServiceAccount("former-reader")
	e.addDatasetEntries("data-proj", "sales", &bigquery.DatasetAccess{Role: "READER", UserByEmail: gone.Email})
	_, err := e.iamClient().Projects.ServiceAccounts.Delete(serviceAccountResource(gone.Email)).Do()
	require.NoError(t, err)
	isDeleted := func(a *bigquery.DatasetAccess) bool { return isDeletedMember(a.IamMember) }
	before := e.datasetAccessV3("data-proj", "sales")
	require.True(t, slices.ContainsFunc(before, isDeleted), "the dataset holds a deleted principal: %+v", before)

	sa := e.createServiceAccount("carto-backend")
	member := "serviceAccount:" + sa.Email
	in := BigQueryAccessInput{Member: member, DataProject: "data-proj", BillingProject: "bill-proj", TempDataset: "carto_temp", Datasets: []string{"sales"}}
	res := e.runStep(e.gcp.GrantBigQueryAccess, in)
	assert.True(t, res.Changed)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], "dataset data-proj.sales")
	assert.Contains(t, res.Warnings[0], "deleted:serviceaccount:"+gone.Email+"?uid=")
	after := e.datasetAccessV3("data-proj", "sales")
	assert.False(t, slices.ContainsFunc(after, isDeleted))
	assert.True(t, slices.ContainsFunc(after, func(a *bigquery.DatasetAccess) bool {
		return accessEntryMatches(a, roleBigQueryDataEditor, member)
	}))
	assert.Len(t, after, len(before), "one entry dropped, one added, the rest kept")

	// A grant already in place writes nothing, so it drops nothing either.
	again := e.runStep(e.gcp.GrantBigQueryAccess, in)
	assert.False(t, again.Changed)
	assert.Empty(t, again.Warnings)

	// Revoking from a dataset that holds one works too.
	other := e.createServiceAccount("other-reader")
	e.addDatasetEntries("data-proj", "sales", &bigquery.DatasetAccess{Role: "READER", IamMember: "serviceAccount:" + other.Email})
	_, err = e.iamClient().Projects.ServiceAccounts.Delete(serviceAccountResource(other.Email)).Do()
	require.NoError(t, err)
	res = e.runStep(e.gcp.RevokeBigQueryAccess, in)
	assert.True(t, res.Changed)
	require.Len(t, res.Warnings, 1)
	assert.Contains(t, res.Warnings[0], other.Email)
	assert.False(t, slices.ContainsFunc(e.datasetAccessV3("data-proj", "sales"), isDeleted))
}

func TestGCPDropDeletedMembers(t *testing.T) {
	kept := &bigquery.DatasetAccess{Role: "WRITER", IamMember: "serviceAccount:a@p.iam.gserviceaccount.com"}
	entries := []*bigquery.DatasetAccess{
		{Role: "READER", IamMember: "deleted:serviceaccount:b@p.iam.gserviceaccount.com?uid=1"},
		kept,
		{Role: "READER", IamMember: "DELETED:user:c@example.com?uid=2"},
	}
	got, dropped := dropDeletedMembers(entries)
	assert.Equal(t, []*bigquery.DatasetAccess{kept}, got)
	assert.Equal(t, []string{"deleted:serviceaccount:b@p.iam.gserviceaccount.com?uid=1", "DELETED:user:c@example.com?uid=2"}, dropped)
	got, dropped = dropDeletedMembers([]*bigquery.DatasetAccess{kept})
	assert.Equal(t, []*bigquery.DatasetAccess{kept}, got)
	assert.Nil(t, dropped)
}
