package gcpemu

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bigquery "google.golang.org/api/bigquery/v2"
	container "google.golang.org/api/container/v1"
	"google.golang.org/api/googleapi"
)

// TestQueryJobsAsBQRunsThem runs `bq query --use_legacy_sql=false 'SELECT 1'`'s
// calls: jobs.insert with a client-made job id, then getQueryResults (and the
// jobs.get and tabledata.list other clients use).
func TestQueryJobsAsBQRunsThem(t *testing.T) {
	e := newEnv(t)
	bq := e.bq(e.opTok)
	job, err := bq.Jobs.Insert(testProject, &bigquery.Job{
		JobReference:  &bigquery.JobReference{ProjectId: testProject, JobId: "bqjob_r1a2b3_0001_1"},
		Configuration: &bigquery.JobConfiguration{Query: &bigquery.JobConfigurationQuery{Query: "SELECT 1", UseLegacySql: googleapi.Bool(false)}},
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", job.Status.State)
	assert.Nil(t, job.Status.ErrorResult)
	assert.Equal(t, "bqjob_r1a2b3_0001_1", job.JobReference.JobId)
	assert.Equal(t, "US", job.JobReference.Location)
	assert.Equal(t, testProject+":US.bqjob_r1a2b3_0001_1", job.Id)
	assert.Equal(t, "SELECT", job.Statistics.Query.StatementType)
	assert.Equal(t, testOperator, job.UserEmail)
	dest := job.Configuration.Query.DestinationTable
	require.NotNil(t, dest)
	assert.True(t, strings.HasPrefix(dest.DatasetId, "_"), dest.DatasetId)

	res, err := bq.Jobs.GetQueryResults(testProject, job.JobReference.JobId).Location("US").MaxResults(100).TimeoutMs(0).StartIndex(0).Do()
	require.NoError(t, err)
	assert.True(t, res.JobComplete)
	assert.EqualValues(t, 1, res.TotalRows)
	require.Len(t, res.Schema.Fields, 1)
	assert.Equal(t, "INTEGER", res.Schema.Fields[0].Type)
	require.Len(t, res.Rows, 1)
	assert.Equal(t, "1", res.Rows[0].F[0].V)

	got, err := bq.Jobs.Get(testProject, job.JobReference.JobId).Location("US").Do()
	require.NoError(t, err)
	assert.Equal(t, job.Etag, got.Etag)
	data, err := bq.Tabledata.List(testProject, dest.DatasetId, dest.TableId).Do()
	require.NoError(t, err)
	assert.EqualValues(t, 1, data.TotalRows)
	require.Len(t, data.Rows, 1)
	data, err = bq.Tabledata.List(testProject, "analytics", "events").Do()
	require.NoError(t, err)
	assert.EqualValues(t, 0, data.TotalRows)

	// A query that cannot run is a job that failed, and its results are the error.
	bad, err := bq.Jobs.Insert(testProject, &bigquery.Job{
		JobReference: &bigquery.JobReference{JobId: "bqjob_bad_1"},
		Configuration: &bigquery.JobConfiguration{Query: &bigquery.JobConfigurationQuery{
			Query: "SELECT * FROM `proj-a.analytics.nope`", UseLegacySql: googleapi.Bool(false)}},
	}).Do()
	require.NoError(t, err)
	require.NotNil(t, bad.Status.ErrorResult)
	assert.Equal(t, "notFound", bad.Status.ErrorResult.Reason)
	assert.Contains(t, bad.Status.ErrorResult.Message, "Not found: Table proj-a:analytics.nope")
	_, err = bq.Jobs.GetQueryResults(testProject, "bqjob_bad_1").Do()
	requireAPIError(t, err, http.StatusNotFound)

	// Job ids are unique; a dry run makes no job.
	_, err = bq.Jobs.Insert(testProject, &bigquery.Job{
		JobReference:  &bigquery.JobReference{JobId: "bqjob_r1a2b3_0001_1"},
		Configuration: &bigquery.JobConfiguration{Query: &bigquery.JobConfigurationQuery{Query: "SELECT 2"}},
	}).Do()
	assert.Equal(t, "ALREADY_EXISTS", status(t, apiErr(t, err, http.StatusConflict)))
	dry, err := bq.Jobs.Insert(testProject, &bigquery.Job{
		Configuration: &bigquery.JobConfiguration{DryRun: true, Query: &bigquery.JobConfigurationQuery{Query: "SELECT 1", UseLegacySql: googleapi.Bool(false)}},
	}).Do()
	require.NoError(t, err)
	assert.Empty(t, dry.JobReference.JobId)
	assert.Equal(t, "DONE", dry.Status.State)
	_, err = bq.Jobs.Insert(testProject, &bigquery.Job{
		Configuration: &bigquery.JobConfiguration{Load: &bigquery.JobConfigurationLoad{SourceUris: []string{"gs://b/o"}}},
	}).Do()
	requireAPIError(t, err, http.StatusBadRequest)

	// Jobs are their creator's: others need bigquery.jobs.get; creating one
	// needs bigquery.jobs.create.
	other := e.bq(e.emu.MintAccessToken("user:nobody@example.com"))
	_, err = other.Jobs.Get(testProject, job.JobReference.JobId).Do()
	requireAPIError(t, err, http.StatusForbidden)
	_, err = other.Jobs.Insert(testProject, &bigquery.Job{
		Configuration: &bigquery.JobConfiguration{Query: &bigquery.JobConfigurationQuery{Query: "SELECT 1"}},
	}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "bigquery.jobs.create")
	_, err = bq.Jobs.Get(testProject, "bqjob_missing").Location("US").Do()
	ge = apiErr(t, err, http.StatusNotFound)
	assert.Contains(t, ge.Message, "Not found: Job proj-a:US.bqjob_missing")

	// projects.list: the projects the caller holds a role in.
	projects, err := bq.Projects.List().Do()
	require.NoError(t, err)
	require.Len(t, projects.Projects, 1)
	assert.Equal(t, testProject, projects.Projects[0].ProjectReference.ProjectId)
	assert.EqualValues(t, testNumber, projects.Projects[0].NumericId)
	none, err := other.Projects.List().Do()
	require.NoError(t, err)
	assert.Empty(t, none.Projects)
}

var (
	discoveryParamRef = regexp.MustCompile(`\{\+?([A-Za-z.]+)\}`)
	schemaRefPattern  = regexp.MustCompile(`"\$ref":\s*"([^"]+)"`)
)

type schemaRef struct {
	Ref string `json:"$ref"`
}

// TestBigQueryDiscoveryDocument checks the document bq builds its client from:
// served without a token at the root and under the prefix, rooted where it
// was asked, and every method it describes reaching that same method here.
func TestBigQueryDiscoveryDocument(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ path, root string }{
		{"/$discovery/rest?version=v2", e.srv.URL + "/"},
		{"/discovery/v1/apis/bigquery/v2/rest", e.srv.URL + "/"},
		{"/bigquery/$discovery/rest?version=v2", e.srv.URL + "/bigquery/"},
	} {
		code, body := e.rawCall(t, "GET", tc.path, "", "", "", nil)
		require.Equal(t, 200, code, "%s: %s", tc.path, body)
		var doc struct {
			ID          string `json:"id"`
			RootURL     string `json:"rootUrl"`
			ServicePath string `json:"servicePath"`
			BaseURL     string `json:"baseUrl"`
			Resources   map[string]struct {
				Methods map[string]struct {
					ID             string                    `json:"id"`
					Path           string                    `json:"path"`
					HTTPMethod     string                    `json:"httpMethod"`
					Parameters     map[string]discoveryParam `json:"parameters"`
					ParameterOrder []string                  `json:"parameterOrder"`
					Request        *schemaRef                `json:"request"`
					Response       *schemaRef                `json:"response"`
					MediaUpload    map[string]any            `json:"mediaUpload"`
				} `json:"methods"`
			} `json:"resources"`
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &doc))
		assert.Equal(t, "bigquery:v2", doc.ID)
		assert.Equal(t, tc.root, doc.RootURL)
		assert.Equal(t, tc.root+doc.ServicePath, doc.BaseURL)
		var ids []string
		for _, r := range doc.Resources {
			for _, m := range r.Methods {
				ids = append(ids, m.ID)
				// Every path parameter is declared, required and in order.
				refs := discoveryParamRef.FindAllStringSubmatch(m.Path, -1)
				require.Len(t, m.ParameterOrder, len(refs), m.ID)
				for i, ref := range refs {
					assert.Equal(t, ref[1], m.ParameterOrder[i], m.ID)
					assert.Equal(t, "path", m.Parameters[ref[1]].Location, m.ID)
					assert.True(t, m.Parameters[ref[1]].Required, m.ID)
				}
				for _, ref := range []*schemaRef{m.Request, m.Response} {
					if ref != nil {
						_, ok := doc.Schemas[ref.Ref]
						assert.True(t, ok, "%s names schema %q", m.ID, ref.Ref)
					}
				}
				// The method's path, filled in, routes to the method it names.
				path := "/" + strings.TrimPrefix(doc.BaseURL, e.srv.URL+"/") +
					discoveryParamRef.ReplaceAllString(m.Path, "x")
				_, rt := routeRequest(m.HTTPMethod, "127.0.0.1", path)
				assert.Equal(t, m.ID, rt.id, "%s %s", m.HTTPMethod, path)
				assert.NotNil(t, rt.handler, m.ID)
			}
		}
		assert.Subset(t, ids, []string{"bigquery.datasets.list", "bigquery.datasets.get", "bigquery.datasets.insert",
			"bigquery.jobs.insert", "bigquery.jobs.get", "bigquery.jobs.getQueryResults", "bigquery.tabledata.list",
			"bigquery.projects.list"})
		assert.NotNil(t, doc.Resources["jobs"].Methods["insert"].MediaUpload, "bq passes media_body to jobs.insert")
		// Every $ref in the schemas resolves.
		for name, s := range doc.Schemas {
			for prop, raw := range s.Properties {
				for _, m := range schemaRefPattern.FindAllStringSubmatch(string(raw), -1) {
					_, ok := doc.Schemas[m[1]]
					assert.True(t, ok, "%s.%s names schema %q", name, prop, m[1])
				}
			}
		}
	}
	code, _ := e.rawCall(t, "GET", "/$discovery/rest?version=v3", "", "", "", nil)
	assert.Equal(t, 404, code)
}

// TestZonalGKEPaths drives a node pool through the older zonal paths
// (projects/P/zones/Z/...), which name the same clusters as locations/L.
func TestZonalGKEPaths(t *testing.T) {
	e := newEnv(t)
	gke := e.gke(e.opTok)
	op, err := gke.Projects.Zones.Clusters.Update(testProject, testLocation, testCluster, &container.UpdateClusterRequest{
		Update: &container.ClusterUpdate{DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: testPool}},
	}).Do()
	require.NoError(t, err)
	op, err = gke.Projects.Zones.Operations.Get(testProject, testLocation, op.Name).Do()
	require.NoError(t, err)
	assert.Equal(t, "DONE", op.Status)
	op, err = gke.Projects.Zones.Clusters.NodePools.Update(testProject, testLocation, testCluster, "pool-b", &container.UpdateNodePoolRequest{
		WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
	}).Do()
	require.NoError(t, err)
	assert.Equal(t, "UPGRADE_NODES", op.OperationType)
	cl, err := gke.Projects.Zones.Clusters.Get(testProject, testLocation, testCluster).Do()
	require.NoError(t, err)
	assert.Equal(t, testPool, cl.WorkloadIdentityConfig.WorkloadPool)
	np, err := gke.Projects.Zones.Clusters.NodePools.Get(testProject, testLocation, testCluster, "pool-b").Do()
	require.NoError(t, err)
	assert.Equal(t, "GKE_METADATA", np.Config.WorkloadMetadataConfig.Mode)
	list, err := gke.Projects.Zones.Operations.List(testProject, "-").Do()
	require.NoError(t, err)
	assert.Len(t, list.Operations, 2)
	require.Len(t, e.nodes.Calls(), 1)
	assert.Equal(t, "pool-b", e.nodes.Calls()[0].Pool)
	_, err = gke.Projects.Zones.Clusters.Get(testProject, testLocation, "nope").Do()
	requireAPIError(t, err, http.StatusNotFound)
}
