package gcpemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// BigQuery query jobs, as the bq tool runs them: jobs.insert of a query job,
// jobs.get until it is DONE, jobs.getQueryResults (or tabledata.list of the
// job's anonymous destination table) for the rows. Also projects.list.

// maxJobs bounds the jobs kept; the oldest are forgotten first.
const maxJobs = 1000

// bqJob is a finished query job.
type bqJob struct {
	Project   string `json:"project"`
	ID        string `json:"id"`
	Location  string `json:"location"`
	Principal string `json:"principal"`
	Created   int64  `json:"created"` // ms since the epoch
	Query     string `json:"query"`
	Legacy    bool   `json:"legacy"`
	Etag      string `json:"etag"`
	// DestDataset and DestTable are the anonymous table holding the result.
	DestDataset string       `json:"destDataset"`
	DestTable   string       `json:"destTable"`
	Result      *queryResult `json:"result,omitempty"`
	Error       *bqJobError  `json:"error,omitempty"`
}

// bqJobError is a failed job's errorResult, and the HTTP error
// getQueryResults answers with.
type bqJobError struct {
	HTTP    int    `json:"http"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func jobKey(project, id string) string { return project + ":" + id }

var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// jobBody is the part of a Job resource jobs.insert reads.
type jobBody struct {
	JobReference *struct {
		ProjectID string `json:"projectId"`
		JobID     string `json:"jobId"`
		Location  string `json:"location"`
	} `json:"jobReference"`
	Configuration struct {
		Query *struct {
			queryInput
			DestinationTable *struct {
				ProjectID string `json:"projectId"`
				DatasetID string `json:"datasetId"`
				TableID   string `json:"tableId"`
			} `json:"destinationTable"`
		} `json:"query"`
		DryRun  bool            `json:"dryRun"`
		Load    json.RawMessage `json:"load"`
		Copy    json.RawMessage `json:"copy"`
		Extract json.RawMessage `json:"extract"`
	} `json:"configuration"`
}

func (e *Emulator) bqInsertJob(c *call) (any, error) {
	p, err := e.bqProjectAllowed(c, "bigquery.jobs.create")
	if err != nil {
		return nil, err
	}
	var body jobBody
	if err := decodeBody(c, &body); err != nil {
		return nil, err
	}
	conf := body.Configuration
	if conf.Load != nil || conf.Copy != nil || conf.Extract != nil {
		return nil, errInvalid("Only query jobs are supported by this emulator.")
	}
	if conf.Query == nil {
		return nil, errInvalid("Required parameter is missing: configuration.query")
	}
	if conf.Query.DestinationTable != nil {
		return nil, errInvalid("Query jobs with a destinationTable are not supported by this emulator.")
	}
	q := conf.Query.queryInput
	q.DryRun = q.DryRun || conf.DryRun
	ref := body.JobReference
	if ref != nil && ref.ProjectID != "" && ref.ProjectID != p.ID {
		return nil, errInvalid("Invalid project ID '%s' in jobReference; the request is for project '%s'.", ref.ProjectID, p.ID)
	}
	if ref != nil && ref.Location != "" && q.Location == "" {
		q.Location = ref.Location
	}
	if q.DryRun {
		res, err := e.runQueryLocked(c, p, q)
		if err != nil {
			return nil, err
		}
		j := &bqJob{Project: p.ID, Location: res.Location, Principal: c.tok.Principal, Created: c.now.UnixMilli(),
			Query: q.Query, Legacy: q.legacy(), Result: res}
		return e.bqJobJSON(j, true), nil
	}
	id := ""
	if ref != nil {
		id = ref.JobID
	}
	if id == "" {
		id = "job_" + randomString(24)
	}
	if !jobIDPattern.MatchString(id) || len(id) > 1024 {
		return nil, errInvalid("Invalid job ID \"%s\". Job IDs must be alphanumeric (plus underscores and dashes) and must be at most 1024 characters long.", id)
	}
	if e.st.Jobs[jobKey(p.ID, id)] != nil {
		loc := e.st.Jobs[jobKey(p.ID, id)].Location
		return nil, errAlreadyExists("Already Exists: Job %s:%s.%s", p.ID, loc, id)
	}
	// The anonymous result table is named from a counter, not from the
	// (possibly random) job id, so the same request to the same state gets
	// the same answer.
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", p.ID, e.nextSeq()))
	j := &bqJob{
		Project: p.ID, ID: id, Principal: c.tok.Principal, Created: c.now.UnixMilli(),
		Query: q.Query, Legacy: q.legacy(), Etag: e.newEtag(),
		DestDataset: "_" + hex.EncodeToString(sum[:20]), DestTable: "anon" + hex.EncodeToString(sum[20:]),
	}
	res, qerr := e.runQueryLocked(c, p, q)
	if qerr != nil {
		// The job is created and fails, as BigQuery's do: the error is its errorResult.
		var ae *apiError
		if !errors.As(qerr, &ae) {
			return nil, qerr
		}
		j.Error = &bqJobError{HTTP: ae.HTTP, Reason: bigQueryReason(ae), Message: ae.Message}
		j.Location = q.Location
		if j.Location == "" {
			j.Location = "US"
		}
	} else {
		j.Result = res
		j.Location = res.Location
	}
	e.storeJobLocked(j)
	return e.bqJobJSON(j, false), nil
}

func (e *Emulator) storeJobLocked(j *bqJob) {
	if e.st.Jobs == nil {
		e.st.Jobs = map[string]*bqJob{}
	}
	e.st.Jobs[jobKey(j.Project, j.ID)] = j
	if len(e.st.Jobs) > maxJobs {
		oldest := ""
		for k, other := range e.st.Jobs {
			if oldest == "" || other.Created < e.st.Jobs[oldest].Created {
				oldest = k
			}
		}
		delete(e.st.Jobs, oldest)
	}
	e.dirty = true
}

// userEmail is the email of a principal, as BigQuery shows a job's user.
func userEmail(principal string) string {
	if i := strings.Index(principal, ":"); i >= 0 && !strings.HasSuffix(principal, "]") {
		return principal[i+1:]
	}
	return ""
}

func (e *Emulator) bqJobJSON(j *bqJob, dryRun bool) map[string]any {
	ref := map[string]any{"projectId": j.Project, "location": j.Location}
	if !dryRun {
		ref["jobId"] = j.ID
	}
	query := map[string]any{
		"query":        j.Query,
		"useLegacySql": j.Legacy,
		"priority":     "INTERACTIVE",
	}
	if !dryRun {
		query["destinationTable"] = map[string]any{"projectId": j.Project, "datasetId": j.DestDataset, "tableId": j.DestTable}
		query["writeDisposition"] = "WRITE_TRUNCATE"
	}
	created := strconv.FormatInt(j.Created, 10)
	queryStats := map[string]any{
		"totalBytesProcessed": "0",
		"totalBytesBilled":    "0",
		"cacheHit":            false,
		"statementType":       statementType(j.Query),
	}
	stats := map[string]any{
		"creationTime":        created,
		"totalBytesProcessed": "0",
		"query":               queryStats,
	}
	status := map[string]any{"state": "DONE"}
	if j.Error != nil {
		e := map[string]any{"reason": j.Error.Reason, "message": j.Error.Message}
		status["errorResult"] = e
		status["errors"] = []any{e}
	}
	if !dryRun {
		stats["startTime"] = created
		stats["endTime"] = created
		queryStats["totalSlotMs"] = "0"
		if j.Result != nil {
			queryStats["schema"] = j.Result.schemaJSON()
		}
	}
	out := map[string]any{
		"kind":          "bigquery#job",
		"jobReference":  ref,
		"configuration": map[string]any{"query": query, "jobType": "QUERY", "dryRun": dryRun},
		"statistics":    stats,
		"status":        status,
	}
	if !dryRun {
		out["etag"] = j.Etag
		out["id"] = fmt.Sprintf("%s:%s.%s", j.Project, j.Location, j.ID)
		out["selfLink"] = fmt.Sprintf("https://bigquery.googleapis.com/bigquery/v2/projects/%s/jobs/%s?location=%s", j.Project, j.ID, j.Location)
		out["principal_subject"] = j.Principal
		if email := userEmail(j.Principal); email != "" {
			out["user_email"] = email
		}
	}
	return out
}

// statementType is BigQuery's statistics.query.statementType for a query.
func statementType(query string) string {
	fields := strings.Fields(strings.ToUpper(query))
	if len(fields) == 0 {
		return "SELECT"
	}
	switch fields[0] {
	case "INSERT", "UPDATE", "DELETE", "MERGE":
		return fields[0]
	case "CREATE", "DROP", "ALTER":
		if len(fields) > 1 {
			return fields[0] + "_" + fields[1]
		}
	}
	return "SELECT"
}

// bqJobFor finds a job and checks the caller may read it: its creator, or
// anyone with bigquery.jobs.get on the project.
func (e *Emulator) bqJobFor(c *call) (*bqJob, error) {
	p, err := e.bqProject(c)
	if err != nil {
		return nil, err
	}
	id := c.param("job")
	j := e.st.Jobs[jobKey(p.ID, id)]
	if j != nil && j.Principal == c.tok.Principal {
		return j, nil
	}
	if !e.allowedLocked(c, p, nil, "bigquery.jobs.get") {
		return nil, bqProjectDenied(p.ID, "bigquery.jobs.get")
	}
	if j == nil {
		loc := c.r.URL.Query().Get("location")
		if loc != "" {
			return nil, errNotFound("Not found: Job %s:%s.%s", p.ID, loc, id)
		}
		return nil, errNotFound("Not found: Job %s:%s", p.ID, id)
	}
	return j, nil
}

func (e *Emulator) bqGetJob(c *call) (any, error) {
	j, err := e.bqJobFor(c)
	if err != nil {
		return nil, err
	}
	return e.bqJobJSON(j, false), nil
}

// rowPage reads startIndex, pageToken and maxResults and returns the rows of
// one page and the next page's token.
func rowPage(c *call, rows [][]string) ([][]string, string, error) {
	q := c.r.URL.Query()
	start := 0
	if v := q.Get("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, "", errInvalid("Invalid value for startIndex: %s", v)
		}
		start = n
	}
	page, next, err := paginate(max(len(rows)-start, 0), q.Get("maxResults"), q.Get("pageToken"), 100000, 100000)
	if err != nil {
		return nil, "", err
	}
	if start > len(rows) {
		return nil, "", nil
	}
	return rows[start+page[0] : start+page[1]], next, nil
}

func (e *Emulator) bqGetQueryResults(c *call) (any, error) {
	j, err := e.bqJobFor(c)
	if err != nil {
		return nil, err
	}
	if j.Error != nil {
		return nil, &apiError{HTTP: j.Error.HTTP, Message: j.Error.Message, Reason: j.Error.Reason}
	}
	rows, next, err := rowPage(c, j.Result.Rows)
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"kind":                "bigquery#getQueryResultsResponse",
		"etag":                j.Etag,
		"schema":              j.Result.schemaJSON(),
		"jobReference":        map[string]any{"projectId": j.Project, "jobId": j.ID, "location": j.Location},
		"totalRows":           fmt.Sprint(len(j.Result.Rows)),
		"totalBytesProcessed": "0",
		"jobComplete":         true,
		"cacheHit":            false,
	}
	if len(rows) > 0 {
		out["rows"] = rowsJSON(rows)
	}
	if next != "" {
		out["pageToken"] = next
	}
	return out, nil
}

// bqListTableData lists a table's rows: a query job's anonymous result table,
// or a dataset's table (the emulator's tables hold no rows).
func (e *Emulator) bqListTableData(c *call) (any, error) {
	p, err := e.bqProject(c)
	if err != nil {
		return nil, err
	}
	dsID, table := c.param("dataset"), c.param("table")
	var rows [][]string
	var etag string
	if strings.HasPrefix(dsID, "_") {
		var job *bqJob
		for _, j := range e.st.Jobs {
			if j.Project == p.ID && j.DestDataset == dsID && j.DestTable == table && j.Result != nil {
				job = j
			}
		}
		if job == nil || (job.Principal != c.tok.Principal && !e.allowedLocked(c, p, nil, "bigquery.tables.getData")) {
			return nil, errNotFound("Not found: Table %s:%s.%s", p.ID, dsID, table)
		}
		rows, etag = job.Result.Rows, job.DestTable
	} else {
		_, d, err := e.bqDataset(c, "bigquery.tables.getData")
		if err != nil {
			return nil, err
		}
		found := false
		for _, t := range d.Tables {
			found = found || t == table
		}
		if !found {
			return nil, errNotFound("Not found: Table %s:%s.%s", p.ID, dsID, table)
		}
		etag = d.Etag
	}
	page, next, err := rowPage(c, rows)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"kind": "bigquery#tableDataList", "etag": etag, "totalRows": fmt.Sprint(len(rows))}
	if len(page) > 0 {
		out["rows"] = rowsJSON(page)
	}
	if next != "" {
		out["pageToken"] = next
	}
	return out, nil
}

// bqListProjects lists the projects the caller holds a role in.
func (e *Emulator) bqListProjects(c *call) (any, error) {
	var ids []string
	for id, p := range e.st.Projects {
		if e.allowedLocked(c, p, nil, "resourcemanager.projects.get") || e.allowedLocked(c, p, nil, "bigquery.jobs.create") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	q := c.r.URL.Query()
	page, next, err := paginate(len(ids), q.Get("maxResults"), q.Get("pageToken"), 50, 1000)
	if err != nil {
		return nil, err
	}
	projects := []any{}
	for _, id := range ids[page[0]:page[1]] {
		p := e.st.Projects[id]
		projects = append(projects, map[string]any{
			"kind":             "bigquery#project",
			"id":               p.ID,
			"numericId":        fmt.Sprint(p.Number),
			"projectReference": map[string]string{"projectId": p.ID},
			"friendlyName":     p.ID,
		})
	}
	sum := sha256.Sum256([]byte(strings.Join(ids, ",")))
	out := map[string]any{"kind": "bigquery#projectList", "etag": hex.EncodeToString(sum[:8]), "totalItems": len(ids)}
	if len(projects) > 0 {
		out["projects"] = projects
	}
	if next != "" {
		out["nextPageToken"] = next
	}
	return out, nil
}
