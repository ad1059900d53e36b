package gcpemu

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// BigQuery API v2: datasets (whose IAM policy is their access list), table
// listing and queries (jobs.query, and query jobs in bqjobs.go), enough for
// granting access, proving it works, and the bq tool.

func routeBigQuery(method, rest string) route {
	rt := route{flavor: flavorBigQuery, params: map[string]string{}}
	if (rest == "$discovery/rest" || rest == "discovery/v1/apis/bigquery/v2/rest") && method == http.MethodGet {
		rt.id, rt.handler, rt.anonymous = "bigquery.discovery", (*Emulator).bqDiscovery, true
		return rt
	}
	rest, ok := strings.CutPrefix(rest, "bigquery/v2/")
	if !ok {
		return rt
	}
	segs := strings.Split(rest, "/")
	if len(segs) == 1 && segs[0] == "projects" && method == http.MethodGet {
		rt.id, rt.handler = "bigquery.projects.list", (*Emulator).bqListProjects
		return rt
	}
	if len(segs) < 3 || segs[0] != "projects" {
		return rt
	}
	rt.params["project"] = segs[1]
	switch {
	case len(segs) == 3 && segs[2] == "jobs" && method == http.MethodPost:
		rt.id, rt.handler = "bigquery.jobs.insert", (*Emulator).bqInsertJob
	case len(segs) == 4 && segs[2] == "jobs" && method == http.MethodGet:
		rt.params["job"] = segs[3]
		rt.id, rt.handler = "bigquery.jobs.get", (*Emulator).bqGetJob
	case len(segs) == 4 && segs[2] == "queries" && method == http.MethodGet:
		rt.params["job"] = segs[3]
		rt.id, rt.handler = "bigquery.jobs.getQueryResults", (*Emulator).bqGetQueryResults
	case len(segs) == 7 && segs[2] == "datasets" && segs[4] == "tables" && segs[6] == "data" && method == http.MethodGet:
		rt.params["dataset"], rt.params["table"] = segs[3], segs[5]
		rt.id, rt.handler = "bigquery.tabledata.list", (*Emulator).bqListTableData
	case len(segs) == 3 && segs[2] == "datasets":
		switch method {
		case http.MethodGet:
			rt.id, rt.handler = "bigquery.datasets.list", (*Emulator).bqListDatasets
		case http.MethodPost:
			rt.id, rt.handler = "bigquery.datasets.insert", (*Emulator).bqInsertDataset
		}
	case len(segs) == 4 && segs[2] == "datasets":
		rt.params["dataset"] = segs[3]
		switch method {
		case http.MethodGet:
			rt.id, rt.handler = "bigquery.datasets.get", (*Emulator).bqGetDataset
		case http.MethodPatch:
			rt.id, rt.handler = "bigquery.datasets.patch", (*Emulator).bqPatchDataset
		case http.MethodPut:
			rt.id, rt.handler = "bigquery.datasets.update", (*Emulator).bqUpdateDataset
		}
	case len(segs) == 5 && segs[2] == "datasets" && segs[4] == "tables" && method == http.MethodGet:
		rt.params["dataset"] = segs[3]
		rt.id, rt.handler = "bigquery.tables.list", (*Emulator).bqListTables
	case len(segs) == 3 && segs[2] == "queries" && method == http.MethodPost:
		rt.id, rt.handler = "bigquery.jobs.query", (*Emulator).bqQuery
	}
	return rt
}

// accessEntry is one entry of a dataset's access list.
type accessEntry struct {
	Role         string          `json:"role,omitempty"`
	UserByEmail  string          `json:"userByEmail,omitempty"`
	GroupByEmail string          `json:"groupByEmail,omitempty"`
	Domain       string          `json:"domain,omitempty"`
	SpecialGroup string          `json:"specialGroup,omitempty"`
	IAMMember    string          `json:"iamMember,omitempty"`
	View         json.RawMessage `json:"view,omitempty"`
	Routine      json.RawMessage `json:"routine,omitempty"`
	Dataset      json.RawMessage `json:"dataset,omitempty"`
	Condition    *expr           `json:"condition,omitempty"`
}

// BigQuery shows the three dataset roles by their legacy names.
var (
	legacyToIAMRole = map[string]string{
		"READER": "roles/bigquery.dataViewer",
		"WRITER": "roles/bigquery.dataEditor",
		"OWNER":  "roles/bigquery.dataOwner",
	}
	iamToLegacyRole = map[string]string{
		"roles/bigquery.dataViewer": "READER",
		"roles/bigquery.dataEditor": "WRITER",
		"roles/bigquery.dataOwner":  "OWNER",
	}
	specialGroupMembers = map[string]string{
		"projectOwners":  "projectOwner:",
		"projectWriters": "projectEditor:",
		"projectReaders": "projectViewer:",
	}
)

func defaultDatasetAccess(creator string) []accessEntry {
	entries := []accessEntry{
		{Role: "WRITER", SpecialGroup: "projectWriters"},
		{Role: "OWNER", SpecialGroup: "projectOwners"},
	}
	switch {
	case strings.HasPrefix(creator, "user:"):
		entries = append(entries, accessEntry{Role: "OWNER", UserByEmail: strings.TrimPrefix(creator, "user:")})
	case strings.HasPrefix(creator, "serviceAccount:") && !strings.HasSuffix(creator, "]"):
		entries = append(entries, accessEntry{Role: "OWNER", UserByEmail: strings.TrimPrefix(creator, "serviceAccount:")})
	case creator != "":
		entries = append(entries, accessEntry{Role: "OWNER", IAMMember: creator})
	}
	return append(entries, accessEntry{Role: "READER", SpecialGroup: "projectReaders"})
}

// accessToPolicy turns an access list into the IAM policy permission checks read.
func accessToPolicy(project string, entries []accessEntry) *policy {
	p := &policy{Version: 1}
	for _, a := range entries {
		if a.Role == "" {
			continue
		}
		role := a.Role
		if r, ok := legacyToIAMRole[role]; ok {
			role = r
		}
		var member string
		switch {
		case a.UserByEmail != "":
			member = memberForEmail(a.UserByEmail)
		case a.GroupByEmail != "":
			member = "group:" + a.GroupByEmail
		case a.Domain != "":
			member = "domain:" + a.Domain
		case a.SpecialGroup == "allAuthenticatedUsers":
			member = "allAuthenticatedUsers"
		case a.SpecialGroup != "":
			if prefix, ok := specialGroupMembers[a.SpecialGroup]; ok {
				member = prefix + project
			}
		case a.IAMMember != "":
			member = a.IAMMember
		}
		if member == "" {
			continue
		}
		p.Bindings = append(p.Bindings, binding{Role: role, Members: []string{member}, Condition: a.Condition})
	}
	p.normalize()
	return p
}

// accessPolicyVersion reads the accessPolicyVersion query parameter: the
// IAM policy version a dataset's access list is read or written as (0, 1 or 3;
// absent is 0).
func accessPolicyVersion(c *call) (int, error) {
	v := c.r.URL.Query().Get("accessPolicyVersion")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errInvalid("Invalid value for accessPolicyVersion: %q", v)
	}
	switch n {
	case 0, 1, 3:
		return n, nil
	}
	return 0, errInvalid("Invalid access policy version %d. Valid values are 0, 1 and 3. %s", n, policyVersionsHelp)
}

func hasConditionalAccess(entries []accessEntry) bool {
	return slices.ContainsFunc(entries, func(a accessEntry) bool { return a.Condition != nil })
}

// withConditionalBindingRole is how BigQuery names a conditional entry's role
// when the access list is read below version 3: the predefined role, a
// "_with_conditionalbinding_" suffix and a hash of the hidden condition.
func withConditionalBindingRole(role string, c *expr) string {
	if r, ok := legacyToIAMRole[role]; ok {
		role = r
	}
	sum := sha256.Sum256([]byte(condKey(c)))
	return role + "_with_conditionalbinding_" + hex.EncodeToString(sum[:])[:10]
}

// shownIAMMember is an iamMember as BigQuery shows it: a deleted principal's
// type in lower case (deleted:serviceaccount:EMAIL?uid=ID).
func shownIAMMember(m string) string {
	rest, ok := cutPrefixFold(m, "deleted:")
	if !ok {
		return m
	}
	kind, id, ok := strings.Cut(rest, ":")
	if !ok {
		return m
	}
	return "deleted:" + strings.ToLower(kind) + ":" + id
}

func isDeletedMember(m string) bool {
	_, ok := cutPrefixFold(m, "deleted:")
	return ok
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// accessView is a dataset's access list as a read at version sees it: below 3
// a conditional entry loses its condition and its role is renamed.
func accessView(entries []accessEntry, version int) []accessEntry {
	out := make([]accessEntry, 0, len(entries))
	for _, a := range entries {
		a.IAMMember = shownIAMMember(a.IAMMember)
		if a.Condition != nil && version < 3 {
			a.Role = withConditionalBindingRole(a.Role, a.Condition)
			a.Condition = nil
		}
		out = append(out, a)
	}
	return out
}

// checkAccessVersion refuses an access write below version 3 that would add,
// keep or drop conditional entries: BigQuery writes the list as an IAM policy
// of that version.
func checkAccessVersion(project, dataset string, version int, current, next []accessEntry) error {
	if version >= 3 {
		return nil
	}
	if hasConditionalAccess(current) {
		return errInvalid("IAM setPolicy failed for Dataset %s:%s: Specified policy version (%d) cannot be less than the existing policy version (3). %s",
			project, dataset, max(version, 1), policyVersionsHelp)
	}
	if hasConditionalAccess(next) {
		return errInvalid("IAM setPolicy failed for Dataset %s:%s: Conditional role bindings need policy version 3; the policy was sent as version %d. %s",
			project, dataset, max(version, 1), policyVersionsHelp)
	}
	return nil
}

// markDatasetMemberDeletedLocked turns every dataset access entry of a deleted
// service account into the form BigQuery keeps for it
// (iamMember "deleted:serviceaccount:EMAIL?uid=ID", role and condition kept):
// it grants nothing, and a write resending it is refused. Deleting an account
// calls it, as IAM rewrites policies.
func (e *Emulator) markDatasetMemberDeletedLocked(email, uid string, now time.Time) {
	member := "serviceAccount:" + email
	deleted := "deleted:serviceaccount:" + email + "?uid=" + uid
	for _, p := range e.st.Projects {
		for _, d := range p.Datasets {
			changed := false
			for i, a := range d.Access {
				if strings.EqualFold(a.UserByEmail, email) || strings.EqualFold(a.IAMMember, member) {
					d.Access[i] = accessEntry{Role: a.Role, IAMMember: deleted, Condition: a.Condition}
					changed = true
				}
			}
			if changed {
				d.AccessPolicy.write(accessToPolicy(p.ID, d.Access), now, e.cfg.PropagationDelay)
				d.Etag = e.newEtag()
				e.dirty = true
			}
		}
	}
}

func bqDatasetDenied(project, dataset, perm string) *apiError {
	return errDenied("Access Denied: Dataset %s:%s: Permission %s denied on dataset %s:%s (or it may not exist).",
		project, dataset, perm, project, dataset)
}

func bqProjectDenied(project, perm string) *apiError {
	return errDenied("Access Denied: Project %s: User does not have %s permission in project %s.", project, perm, project)
}

func (e *Emulator) bqProject(c *call) (*projectState, error) {
	p := e.projectLocked(c.param("project"))
	if p == nil {
		return nil, errNotFound("Not found: Project %s", c.param("project"))
	}
	if err := e.requireServiceLocked(p, "bigquery.googleapis.com"); err != nil {
		return nil, err
	}
	return p, nil
}

// bqProjectAllowed is bqProject, refused unless the caller has perm on the project.
func (e *Emulator) bqProjectAllowed(c *call, perm string) (*projectState, error) {
	p, err := e.bqProject(c)
	if err != nil {
		return nil, err
	}
	if !e.allowedLocked(c, p, nil, perm) {
		return nil, bqProjectDenied(p.ID, perm)
	}
	return p, nil
}

// bqDataset finds a dataset and checks perm on it (project policy or access list).
func (e *Emulator) bqDataset(c *call, perm string) (*projectState, *dataset, error) {
	p, err := e.bqProject(c)
	if err != nil {
		return nil, nil, err
	}
	id := c.param("dataset")
	d := p.Datasets[id]
	var res *policyHistory
	if d != nil {
		res = d.AccessPolicy
	}
	if !e.allowedLocked(c, p, res, perm) {
		return nil, nil, bqDatasetDenied(p.ID, id, perm)
	}
	if d == nil {
		return nil, nil, errNotFound("Not found: Dataset %s:%s", p.ID, id)
	}
	return p, d, nil
}

// datasetJSON is a dataset with its whole access list (conditions shown).
func (e *Emulator) datasetJSON(d *dataset) map[string]any { return e.datasetView(d, 3) }

// datasetView is a dataset as a read with accessPolicyVersion version shows it.
func (e *Emulator) datasetView(d *dataset, version int) map[string]any {
	out := map[string]any{
		"kind":             "bigquery#dataset",
		"etag":             d.Etag,
		"id":               d.Project + ":" + d.ID,
		"selfLink":         fmt.Sprintf("https://bigquery.googleapis.com/bigquery/v2/projects/%s/datasets/%s", d.Project, d.ID),
		"datasetReference": map[string]string{"datasetId": d.ID, "projectId": d.Project},
		"access":           accessView(d.Access, version),
		"creationTime":     fmt.Sprint(d.CreationTime),
		"lastModifiedTime": fmt.Sprint(d.LastModifiedTime),
		"location":         d.Location,
		"type":             "DEFAULT",
	}
	if d.FriendlyName != "" {
		out["friendlyName"] = d.FriendlyName
	}
	if d.Description != "" {
		out["description"] = d.Description
	}
	if len(d.Labels) > 0 {
		out["labels"] = d.Labels
	}
	if d.DefaultTableExp != "" {
		out["defaultTableExpirationMs"] = d.DefaultTableExp
	}
	return out
}

func (e *Emulator) bqGetDataset(c *call) (any, error) {
	_, d, err := e.bqDataset(c, "bigquery.datasets.get")
	if err != nil {
		return nil, err
	}
	version, err := accessPolicyVersion(c)
	if err != nil {
		return nil, err
	}
	return e.datasetView(d, version), nil
}

func (e *Emulator) bqListDatasets(c *call) (any, error) {
	p, err := e.bqProject(c)
	if err != nil {
		return nil, err
	}
	var ids []string
	for id, d := range p.Datasets {
		if e.allowedLocked(c, p, d.AccessPolicy, "bigquery.datasets.get") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	list := []any{}
	for _, id := range ids {
		d := p.Datasets[id]
		list = append(list, map[string]any{
			"kind":             "bigquery#dataset",
			"id":               d.Project + ":" + d.ID,
			"datasetReference": map[string]string{"datasetId": d.ID, "projectId": d.Project},
			"location":         d.Location,
			"type":             "DEFAULT",
		})
	}
	// The list's etag follows its datasets'; reading must not advance any counter.
	sum := sha256.New()
	for _, id := range ids {
		sum.Write([]byte(id + "\x00" + p.Datasets[id].Etag + "\x00"))
	}
	out := map[string]any{"kind": "bigquery#datasetList", "etag": base64.StdEncoding.EncodeToString(sum.Sum(nil)[:12])}
	if len(list) > 0 {
		out["datasets"] = list
	}
	return out, nil
}

// datasetBody is the writable part of a Dataset resource.
type datasetBody struct {
	DatasetReference *struct {
		DatasetID string `json:"datasetId"`
		ProjectID string `json:"projectId"`
	} `json:"datasetReference"`
	FriendlyName             *string           `json:"friendlyName"`
	Description              *string           `json:"description"`
	Labels                   map[string]string `json:"labels"`
	Location                 string            `json:"location"`
	Access                   *[]accessEntry    `json:"access"`
	DefaultTableExpirationMs *string           `json:"defaultTableExpirationMs"`
	Etag                     string            `json:"etag"`
	Extra                    map[string]any    `json:"-"`
}

var datasetIDPattern = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

func (e *Emulator) bqInsertDataset(c *call) (any, error) {
	p, err := e.bqProjectAllowed(c, "bigquery.datasets.create")
	if err != nil {
		return nil, err
	}
	version, err := accessPolicyVersion(c)
	if err != nil {
		return nil, err
	}
	var body datasetBody
	if err := decodeBody(c, &body); err != nil {
		return nil, err
	}
	if body.DatasetReference == nil || body.DatasetReference.DatasetID == "" {
		return nil, errInvalid("Required parameter is missing: datasetReference.datasetId")
	}
	id := body.DatasetReference.DatasetID
	if !datasetIDPattern.MatchString(id) || len(id) > 1024 {
		return nil, errInvalid("Invalid dataset ID \"%s\". Dataset IDs must be alphanumeric (plus underscores) and must be at most 1024 characters long.", id)
	}
	if ref := body.DatasetReference.ProjectID; ref != "" && ref != p.ID {
		return nil, errInvalid("Invalid project ID '%s' in datasetReference; the request is for project '%s'.", ref, p.ID)
	}
	if p.Datasets[id] != nil {
		return nil, errAlreadyExists("Already Exists: Dataset %s:%s", p.ID, id)
	}
	loc := body.Location
	if loc == "" {
		loc = "US"
	}
	d := &dataset{Project: p.ID, ID: id, Location: loc, CreationTime: c.now.UnixMilli(), LastModifiedTime: c.now.UnixMilli()}
	if body.FriendlyName != nil {
		d.FriendlyName = *body.FriendlyName
	}
	if body.Description != nil {
		d.Description = *body.Description
	}
	if body.DefaultTableExpirationMs != nil {
		d.DefaultTableExp = *body.DefaultTableExpirationMs
	}
	d.Labels = body.Labels
	access := defaultDatasetAccess(c.tok.Principal)
	if body.Access != nil && len(*body.Access) > 0 {
		access = *body.Access
	}
	if err := checkAccessVersion(p.ID, id, version, nil, access); err != nil {
		return nil, err
	}
	access, err = e.canonicalAccess(p.ID, id, access)
	if err != nil {
		return nil, err
	}
	d.Access = access
	// A new dataset's access list holds from its creation.
	d.AccessPolicy = newPolicyHistory(accessToPolicy(p.ID, access), c.now.Add(-e.cfg.PropagationDelay))
	d.Etag = e.newEtag()
	p.Datasets[id] = d
	e.dirty = true
	return e.datasetView(d, version), nil
}

// canonicalAccess validates an access list and stores roles as BigQuery shows them.
func (e *Emulator) canonicalAccess(project, dataset string, in []accessEntry) ([]accessEntry, error) {
	out := make([]accessEntry, 0, len(in))
	seen := map[string]bool{}
	for _, a := range in {
		targets := 0
		for _, s := range []string{a.UserByEmail, a.GroupByEmail, a.Domain, a.SpecialGroup, a.IAMMember} {
			if s != "" {
				targets++
			}
		}
		if len(a.View) > 0 || len(a.Routine) > 0 || len(a.Dataset) > 0 {
			targets++
		}
		if targets != 1 {
			return nil, errInvalid("Invalid access entry for dataset %s:%s: exactly one of userByEmail, groupByEmail, domain, specialGroup, iamMember, view, routine or dataset must be set.", project, dataset)
		}
		if a.View == nil && a.Routine == nil && a.Dataset == nil {
			if a.Role == "" {
				return nil, errInvalid("Access entry for dataset %s:%s is missing a role.", project, dataset)
			}
			if legacy, ok := iamToLegacyRole[a.Role]; ok {
				a.Role = legacy
			}
			if _, legacy := legacyToIAMRole[a.Role]; !legacy && (!roleKnown(a.Role) || !roleSupportedOn(a.Role, "bigquery.")) {
				return nil, errInvalid("Invalid role: %s", a.Role)
			}
		}
		if a.Condition != nil && strings.TrimSpace(a.Condition.Expression) == "" {
			return nil, errInvalid("Condition expression must not be empty (role %s).", a.Role)
		}
		switch {
		case isDeletedMember(a.IAMMember):
			// BigQuery shows deleted principals but never takes them back.
			return nil, errInvalid("IAM setPolicy failed for Dataset %s:%s: The member %s is of an unknown type. Please set a valid type prefix for the member.",
				project, dataset, a.IAMMember)
		case a.UserByEmail != "":
			if !emailPattern.MatchString(a.UserByEmail) {
				return nil, errInvalid("Invalid email address: %s", a.UserByEmail)
			}
			if err := e.validateMemberLocked(memberForEmail(a.UserByEmail)); err != nil {
				return nil, errInvalid("IAM setPolicy failed for Dataset %s:%s: %s", project, dataset, err.(*apiError).Message)
			}
		case a.IAMMember != "":
			if err := e.validateMemberLocked(a.IAMMember); err != nil {
				return nil, errInvalid("IAM setPolicy failed for Dataset %s:%s: %s", project, dataset, err.(*apiError).Message)
			}
		case a.SpecialGroup != "":
			if _, ok := specialGroupMembers[a.SpecialGroup]; !ok && a.SpecialGroup != "allAuthenticatedUsers" {
				return nil, errInvalid("Invalid special group: %s", a.SpecialGroup)
			}
		}
		key, _ := json.Marshal(a)
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		out = append(out, a)
	}
	return out, nil
}

func (e *Emulator) bqPatchDataset(c *call) (any, error)  { return e.bqWriteDataset(c, false) }
func (e *Emulator) bqUpdateDataset(c *call) (any, error) { return e.bqWriteDataset(c, true) }

// bqWriteDataset is patch (only fields sent change) or update (the body
// replaces the writable fields). An If-Match header must carry the current etag.
func (e *Emulator) bqWriteDataset(c *call, replace bool) (any, error) {
	p, d, err := e.bqDataset(c, "bigquery.datasets.update")
	if err != nil {
		return nil, err
	}
	if m := c.r.Header.Get("If-Match"); m != "" && m != d.Etag {
		return nil, newAPIError(http.StatusPreconditionFailed, "FAILED_PRECONDITION", "Precondition check failed.")
	}
	version, err := accessPolicyVersion(c)
	if err != nil {
		return nil, err
	}
	var body datasetBody
	if err := decodeBody(c, &body); err != nil {
		return nil, err
	}
	if ref := body.DatasetReference; ref != nil && ((ref.DatasetID != "" && ref.DatasetID != d.ID) || (ref.ProjectID != "" && ref.ProjectID != p.ID)) {
		return nil, errInvalid("Invalid datasetReference: it does not match dataset %s:%s.", p.ID, d.ID)
	}
	if body.Location != "" && !strings.EqualFold(body.Location, d.Location) {
		return nil, errInvalid("Cannot change dataset location from %s to %s.", d.Location, body.Location)
	}
	// Validate everything before changing anything: a refused write changes nothing.
	var access []accessEntry
	if replace || body.Access != nil {
		if body.Access != nil {
			access = *body.Access
		}
		if err := checkAccessVersion(p.ID, d.ID, version, d.Access, access); err != nil {
			return nil, err
		}
		if access, err = e.canonicalAccess(p.ID, d.ID, access); err != nil {
			return nil, err
		}
	}
	if replace || body.FriendlyName != nil {
		d.FriendlyName = deref(body.FriendlyName)
	}
	if replace || body.Description != nil {
		d.Description = deref(body.Description)
	}
	if replace || body.DefaultTableExpirationMs != nil {
		d.DefaultTableExp = deref(body.DefaultTableExpirationMs)
	}
	if replace || body.Labels != nil {
		d.Labels = body.Labels
	}
	if replace || body.Access != nil {
		d.Access = access
		d.AccessPolicy.write(accessToPolicy(p.ID, access), c.now, e.cfg.PropagationDelay)
	}
	d.LastModifiedTime = c.now.UnixMilli()
	d.Etag = e.newEtag()
	e.dirty = true
	return e.datasetView(d, version), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (e *Emulator) bqListTables(c *call) (any, error) {
	_, d, err := e.bqDataset(c, "bigquery.tables.list")
	if err != nil {
		return nil, err
	}
	tables := []any{}
	for _, t := range d.Tables {
		tables = append(tables, map[string]any{
			"kind":           "bigquery#table",
			"id":             fmt.Sprintf("%s:%s.%s", d.Project, d.ID, t),
			"tableReference": map[string]string{"projectId": d.Project, "datasetId": d.ID, "tableId": t},
			"type":           "TABLE",
			"creationTime":   fmt.Sprint(d.CreationTime),
		})
	}
	out := map[string]any{"kind": "bigquery#tableList", "etag": d.Etag, "totalItems": len(tables)}
	if len(tables) > 0 {
		out["tables"] = tables
	}
	return out, nil
}

var (
	tableRefPattern = regexp.MustCompile("(?i)\\b(?:from|join)\\s+(`[^`]+`|\\[[^\\]]+\\]|[A-Za-z0-9_.\\-]+)")
	selectLiteral   = regexp.MustCompile(`(?i)^\s*select\s+(-?\d+|'[^']*'|true|false)\s*;?\s*$`)
)

type tableRef struct{ project, dataset, table string }

// datasetRef names a dataset in a request.
type datasetRef struct {
	DatasetID string `json:"datasetId"`
	ProjectID string `json:"projectId"`
}

// queryInput is what a query asks, from jobs.query or a query job.
type queryInput struct {
	Query          string      `json:"query"`
	DryRun         bool        `json:"dryRun"`
	UseLegacySQL   *bool       `json:"useLegacySql"`
	Location       string      `json:"location"`
	DefaultDataset *datasetRef `json:"defaultDataset"`
}

func (q queryInput) legacy() bool { return q.UseLegacySQL == nil || *q.UseLegacySQL }

// queryResult is what a query returns: its location, schema and rows.
type queryResult struct {
	Location string     `json:"location"`
	Fields   []bqField  `json:"fields"`
	Rows     [][]string `json:"rows,omitempty"`
}

type bqField struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Mode string `json:"mode"`
}

func (r *queryResult) schemaJSON() map[string]any {
	fields := []any{}
	for _, f := range r.Fields {
		fields = append(fields, map[string]any{"name": f.Name, "type": f.Type, "mode": f.Mode})
	}
	return map[string]any{"fields": fields}
}

func rowsJSON(rows [][]string) []any {
	out := make([]any, 0, len(rows))
	for _, row := range rows {
		cells := make([]any, 0, len(row))
		for _, v := range row {
			cells = append(cells, map[string]any{"v": v})
		}
		out = append(out, map[string]any{"f": cells})
	}
	return out
}

// runQueryLocked checks a query's tables (existence and the caller's access)
// and computes its result: one row for SELECT <literal>, none otherwise. The
// caller has checked bigquery.jobs.create.
func (e *Emulator) runQueryLocked(c *call, p *projectState, q queryInput) (*queryResult, error) {
	if strings.TrimSpace(q.Query) == "" {
		return nil, errInvalid("Required parameter is missing: query")
	}
	refs, err := parseTableRefs(q.Query, q.legacy(), p.ID, q.DefaultDataset)
	if err != nil {
		return nil, err
	}
	location := q.Location
	for _, ref := range refs {
		rp := e.projectLocked(ref.project)
		var d *dataset
		if rp != nil {
			d = rp.Datasets[ref.dataset]
		}
		if d == nil {
			loc := location
			if loc == "" {
				loc = "US"
			}
			return nil, errNotFound("Not found: Dataset %s:%s was not found in location %s", ref.project, ref.dataset, loc)
		}
		if !e.allowedLocked(c, rp, d.AccessPolicy, "bigquery.tables.getData") {
			return nil, errDenied("Access Denied: Table %s:%s.%s: User does not have permission to query table %s:%s.%s, or perhaps it does not exist.",
				ref.project, ref.dataset, ref.table, ref.project, ref.dataset, ref.table)
		}
		if !slices.Contains(d.Tables, ref.table) {
			return nil, errNotFound("Not found: Table %s:%s.%s was not found in location %s", ref.project, ref.dataset, ref.table, d.Location)
		}
		if location == "" {
			location = d.Location
		}
	}
	if location == "" {
		location = "US"
	}
	res := &queryResult{Location: location, Fields: []bqField{}}
	if m := selectLiteral.FindStringSubmatch(q.Query); m != nil {
		typ, v := "INTEGER", strings.Trim(m[1], "'")
		switch {
		case strings.HasPrefix(m[1], "'"):
			typ = "STRING"
		case strings.EqualFold(m[1], "true") || strings.EqualFold(m[1], "false"):
			typ, v = "BOOLEAN", strings.ToLower(m[1])
		}
		res.Fields = []bqField{{Name: "f0_", Type: typ, Mode: "NULLABLE"}}
		res.Rows = [][]string{{v}}
	}
	return res, nil
}

func (e *Emulator) bqQuery(c *call) (any, error) {
	p, err := e.bqProjectAllowed(c, "bigquery.jobs.create")
	if err != nil {
		return nil, err
	}
	var req queryInput
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	res, err := e.runQueryLocked(c, p, req)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{
		"kind":                "bigquery#queryResponse",
		"jobComplete":         true,
		"cacheHit":            false,
		"totalBytesProcessed": "0",
		"schema":              res.schemaJSON(),
	}
	if req.DryRun {
		resp["schema"] = map[string]any{"fields": []any{}}
		resp["jobReference"] = map[string]any{"projectId": p.ID, "location": res.Location}
		return resp, nil
	}
	resp["jobReference"] = map[string]any{"projectId": p.ID, "jobId": "job_" + randomString(24), "location": res.Location}
	resp["totalRows"] = fmt.Sprint(len(res.Rows))
	if len(res.Rows) > 0 {
		resp["rows"] = rowsJSON(res.Rows)
	}
	return resp, nil
}

// parseTableRefs finds the tables a query reads (FROM and JOIN clauses).
func parseTableRefs(query string, legacy bool, project string, def *datasetRef) ([]tableRef, error) {
	var refs []tableRef
	for _, m := range tableRefPattern.FindAllStringSubmatch(query, -1) {
		raw := m[1]
		switch {
		case strings.HasPrefix(raw, "`"):
			if legacy {
				return nil, errInvalid("Invalid table name: %s [Try using standard SQL (https://cloud.google.com/bigquery/docs/reference/standard-sql/enabling-standard-sql)].", raw)
			}
			raw = strings.Trim(raw, "`")
		case strings.HasPrefix(raw, "["):
			if !legacy {
				return nil, errInvalid("Syntax error: Unexpected \"[\" at [1:%d].", strings.Index(query, raw)+1)
			}
			raw = strings.Trim(raw, "[]")
			raw = strings.Replace(raw, ":", ".", 1)
		}
		parts := strings.Split(raw, ".")
		var ref tableRef
		switch len(parts) {
		case 3:
			ref = tableRef{parts[0], parts[1], parts[2]}
		case 2:
			ref = tableRef{project, parts[0], parts[1]}
		case 1:
			if def == nil || def.DatasetID == "" {
				return nil, errInvalid("Table name \"%s\" missing dataset while no default dataset is set in the request.", raw)
			}
			dp := def.ProjectID
			if dp == "" {
				dp = project
			}
			ref = tableRef{dp, def.DatasetID, parts[0]}
		default:
			return nil, errInvalid("Invalid table name: %s", raw)
		}
		if strings.EqualFold(ref.dataset, "INFORMATION_SCHEMA") || strings.HasPrefix(strings.ToLower(ref.project), "region-") {
			continue
		}
		refs = append(refs, ref)
	}
	return refs, nil
}
