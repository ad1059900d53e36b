package gcpemu

import (
	"encoding/json"
	"strings"
)

// The BigQuery v2 discovery document, as discovery-based clients (the bq tool,
// google-api-python-client) fetch it before their first call: bq reads it from
// $discovery/rest?version=v2 at the root of its --api URL. It describes only the
// methods the emulator serves, with the parameters and request/response
// schemas of Google's document (trimmed to the fields the emulator uses), and
// points rootUrl at the emulator itself.

// discoveryParam is one method or global parameter.
type discoveryParam struct {
	Type        string   `json:"type"`
	Location    string   `json:"location"`
	Required    bool     `json:"required,omitempty"`
	Format      string   `json:"format,omitempty"`
	Default     string   `json:"default,omitempty"`
	Enum        []string `json:"enum,omitempty"`
	Description string   `json:"description,omitempty"`
}

type discoveryMethod struct {
	resource, name, httpMethod, path string
	params                           []string // "name:location:type[:format]", path params first, in order
	request, response                string
	media                            bool
}

// bqDiscoveryMethods are the BigQuery methods the emulator serves.
var bqDiscoveryMethods = []discoveryMethod{
	{resource: "datasets", name: "get", httpMethod: "GET", path: "projects/{+projectId}/datasets/{+datasetId}",
		params:   []string{"projectId:path:string", "datasetId:path:string", "datasetView:query:string", "accessPolicyVersion:query:integer:int32"},
		response: "Dataset"},
	{resource: "datasets", name: "list", httpMethod: "GET", path: "projects/{+projectId}/datasets",
		params:   []string{"projectId:path:string", "all:query:boolean", "filter:query:string", "maxResults:query:integer:uint32", "pageToken:query:string"},
		response: "DatasetList"},
	{resource: "datasets", name: "insert", httpMethod: "POST", path: "projects/{+projectId}/datasets",
		params:  []string{"projectId:path:string", "accessPolicyVersion:query:integer:int32"},
		request: "Dataset", response: "Dataset"},
	{resource: "datasets", name: "patch", httpMethod: "PATCH", path: "projects/{+projectId}/datasets/{+datasetId}",
		params:  []string{"projectId:path:string", "datasetId:path:string", "accessPolicyVersion:query:integer:int32", "updateMode:query:string"},
		request: "Dataset", response: "Dataset"},
	{resource: "datasets", name: "update", httpMethod: "PUT", path: "projects/{+projectId}/datasets/{+datasetId}",
		params:  []string{"projectId:path:string", "datasetId:path:string", "accessPolicyVersion:query:integer:int32", "updateMode:query:string"},
		request: "Dataset", response: "Dataset"},
	{resource: "tables", name: "list", httpMethod: "GET", path: "projects/{+projectId}/datasets/{+datasetId}/tables",
		params:   []string{"projectId:path:string", "datasetId:path:string", "maxResults:query:integer:uint32", "pageToken:query:string"},
		response: "TableList"},
	{resource: "tabledata", name: "list", httpMethod: "GET", path: "projects/{+projectId}/datasets/{+datasetId}/tables/{+tableId}/data",
		params: []string{"projectId:path:string", "datasetId:path:string", "tableId:path:string", "maxResults:query:integer:uint32",
			"pageToken:query:string", "selectedFields:query:string", "startIndex:query:string:uint64", "formatOptions.useInt64Timestamp:query:boolean"},
		response: "TableDataList"},
	{resource: "jobs", name: "insert", httpMethod: "POST", path: "projects/{+projectId}/jobs",
		params:  []string{"projectId:path:string"},
		request: "Job", response: "Job", media: true},
	{resource: "jobs", name: "get", httpMethod: "GET", path: "projects/{+projectId}/jobs/{+jobId}",
		params:   []string{"projectId:path:string", "jobId:path:string", "location:query:string"},
		response: "Job"},
	{resource: "jobs", name: "getQueryResults", httpMethod: "GET", path: "projects/{+projectId}/queries/{+jobId}",
		params: []string{"projectId:path:string", "jobId:path:string", "location:query:string", "maxResults:query:integer:uint32",
			"pageToken:query:string", "startIndex:query:string:uint64", "timeoutMs:query:integer:uint32", "formatOptions.useInt64Timestamp:query:boolean"},
		response: "GetQueryResultsResponse"},
	{resource: "jobs", name: "query", httpMethod: "POST", path: "projects/{+projectId}/queries",
		params:  []string{"projectId:path:string"},
		request: "QueryRequest", response: "QueryResponse"},
	{resource: "projects", name: "list", httpMethod: "GET", path: "projects",
		params:   []string{"maxResults:query:integer:uint32", "pageToken:query:string"},
		response: "ProjectList"},
}

// bqDiscoverySchemas are the schemas the methods name, each with the
// properties the emulator reads or writes; "$Name" refers to another schema,
// "[]T" is an array of T, "{}" a free-form object.
var bqDiscoverySchemas = map[string]map[string]string{
	"Dataset": {"kind": "string", "etag": "string", "id": "string", "selfLink": "string",
		"datasetReference": "$DatasetReference", "friendlyName": "string", "description": "string",
		"labels": "{}", "location": "string", "access": "[]{}", "creationTime": "string:int64",
		"lastModifiedTime": "string:int64", "defaultTableExpirationMs": "string:int64", "type": "string"},
	"DatasetReference": {"datasetId": "string", "projectId": "string"},
	"DatasetList":      {"kind": "string", "etag": "string", "nextPageToken": "string", "datasets": "[]{}", "unreachable": "[]string"},
	"TableReference":   {"projectId": "string", "datasetId": "string", "tableId": "string"},
	"TableList": {"kind": "string", "etag": "string", "nextPageToken": "string", "tables": "[]{}",
		"totalItems": "integer:int32"},
	"TableDataList": {"kind": "string", "etag": "string", "pageToken": "string", "rows": "[]$TableRow",
		"totalRows": "string:int64"},
	"TableRow":         {"f": "[]$TableCell"},
	"TableCell":        {"v": "any"},
	"TableSchema":      {"fields": "[]$TableFieldSchema"},
	"TableFieldSchema": {"name": "string", "type": "string", "mode": "string", "description": "string"},
	"JobReference":     {"projectId": "string", "jobId": "string", "location": "string"},
	"Job": {"kind": "string", "etag": "string", "id": "string", "selfLink": "string", "user_email": "string",
		"principal_subject": "string", "jobReference": "$JobReference", "configuration": "$JobConfiguration",
		"statistics": "{}", "status": "$JobStatus"},
	"JobConfiguration": {"jobType": "string", "dryRun": "boolean", "query": "$JobConfigurationQuery",
		"labels": "{}", "jobTimeoutMs": "string:int64"},
	"JobConfigurationQuery": {"query": "string", "useLegacySql": "boolean", "destinationTable": "$TableReference",
		"defaultDataset": "$DatasetReference", "priority": "string", "writeDisposition": "string",
		"createDisposition": "string", "useQueryCache": "boolean", "maximumBytesBilled": "string:int64"},
	"JobStatus":  {"state": "string", "errorResult": "$ErrorProto", "errors": "[]$ErrorProto"},
	"ErrorProto": {"reason": "string", "message": "string", "location": "string", "debugInfo": "string"},
	"GetQueryResultsResponse": {"kind": "string", "etag": "string", "schema": "$TableSchema", "jobReference": "$JobReference",
		"totalRows": "string:uint64", "pageToken": "string", "rows": "[]$TableRow", "totalBytesProcessed": "string:int64",
		"jobComplete": "boolean", "errors": "[]$ErrorProto", "cacheHit": "boolean"},
	"QueryRequest": {"kind": "string", "query": "string", "useLegacySql": "boolean", "dryRun": "boolean",
		"location": "string", "defaultDataset": "$DatasetReference", "maxResults": "integer:uint32",
		"timeoutMs": "integer:uint32", "useQueryCache": "boolean", "requestId": "string", "labels": "{}"},
	"QueryResponse": {"kind": "string", "schema": "$TableSchema", "jobReference": "$JobReference",
		"totalRows": "string:uint64", "pageToken": "string", "rows": "[]$TableRow", "totalBytesProcessed": "string:int64",
		"jobComplete": "boolean", "errors": "[]$ErrorProto", "cacheHit": "boolean"},
	"ProjectList": {"kind": "string", "etag": "string", "nextPageToken": "string", "projects": "[]{}",
		"totalItems": "integer:int32"},
}

// schemaType turns the shorthand of bqDiscoverySchemas into a JSON schema.
func schemaType(t string) map[string]any {
	switch {
	case strings.HasPrefix(t, "$"):
		return map[string]any{"$ref": t[1:]}
	case strings.HasPrefix(t, "[]"):
		return map[string]any{"type": "array", "items": schemaType(t[2:])}
	case t == "{}":
		return map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "any"}}
	}
	typ, format, _ := strings.Cut(t, ":")
	out := map[string]any{"type": typ}
	if format != "" {
		out["format"] = format
	}
	return out
}

// bqDiscoveryDoc is the discovery document with its URLs rooted at root
// (ending in a slash).
func bqDiscoveryDoc(root string) map[string]any {
	resources := map[string]any{}
	for _, m := range bqDiscoveryMethods {
		params := map[string]any{}
		var order []string
		for _, spec := range m.params {
			parts := strings.Split(spec, ":")
			p := discoveryParam{Location: parts[1], Type: parts[2]}
			if len(parts) > 3 {
				p.Format = parts[3]
			}
			if p.Location == "path" {
				p.Required = true
				p.Description = "Required. " + parts[0] + " of the resource."
				order = append(order, parts[0])
			}
			params[parts[0]] = p
		}
		id := "bigquery." + m.resource + "." + m.name
		method := map[string]any{
			"id":             id,
			"path":           m.path,
			"flatPath":       strings.ReplaceAll(m.path, "{+", "{"),
			"httpMethod":     m.httpMethod,
			"parameters":     params,
			"parameterOrder": order,
			"scopes":         []string{"https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/cloud-platform"},
		}
		if m.request != "" {
			method["request"] = map[string]string{"$ref": m.request}
		}
		if m.response != "" {
			method["response"] = map[string]string{"$ref": m.response}
		}
		if m.media {
			method["supportsMediaUpload"] = true
			method["mediaUpload"] = map[string]any{
				"accept": []string{"*/*"},
				"protocols": map[string]any{
					"simple":    map[string]any{"multipart": true, "path": "/upload/bigquery/v2/" + m.path},
					"resumable": map[string]any{"multipart": true, "path": "/resumable/upload/bigquery/v2/" + m.path},
				},
			}
		}
		r, _ := resources[m.resource].(map[string]any)
		if r == nil {
			r = map[string]any{"methods": map[string]any{}}
			resources[m.resource] = r
		}
		r["methods"].(map[string]any)[m.name] = method
	}
	schemas := map[string]any{}
	for name, props := range bqDiscoverySchemas {
		properties := map[string]any{}
		for prop, t := range props {
			properties[prop] = schemaType(t)
		}
		schemas[name] = map[string]any{"id": name, "type": "object", "properties": properties}
	}
	str := func(desc string) discoveryParam {
		return discoveryParam{Type: "string", Location: "query", Description: desc}
	}
	return map[string]any{
		"kind":              "discovery#restDescription",
		"discoveryVersion":  "v1",
		"id":                "bigquery:v2",
		"name":              "bigquery",
		"version":           "v2",
		"revision":          "20261101",
		"title":             "BigQuery API",
		"description":       "A data platform for customers to create, manage, share and query data (gkewi emulator subset).",
		"ownerDomain":       "google.com",
		"ownerName":         "Google",
		"protocol":          "rest",
		"documentationLink": "https://cloud.google.com/bigquery/",
		"rootUrl":           root,
		"mtlsRootUrl":       root,
		"servicePath":       "bigquery/v2/",
		"basePath":          "/bigquery/v2/",
		"baseUrl":           root + "bigquery/v2/",
		"batchPath":         "batch/bigquery/v2",
		"parameters": map[string]any{
			"$.xgafv":         discoveryParam{Type: "string", Location: "query", Enum: []string{"1", "2"}, Description: "V1 error format."},
			"access_token":    str("OAuth access token."),
			"alt":             discoveryParam{Type: "string", Location: "query", Default: "json", Enum: []string{"json", "media", "proto"}, Description: "Data format for response."},
			"callback":        str("JSONP"),
			"fields":          str("Selector specifying which fields to include in a partial response."),
			"key":             str("API key."),
			"oauth_token":     str("OAuth 2.0 token for the current user."),
			"prettyPrint":     discoveryParam{Type: "boolean", Location: "query", Default: "true", Description: "Returns response with indentations and line breaks."},
			"quotaUser":       str("Quota user."),
			"upload_protocol": str("Upload protocol for media (e.g. \"raw\", \"multipart\")."),
			"uploadType":      str("Legacy upload protocol for media (e.g. \"media\", \"multipart\")."),
		},
		"auth": map[string]any{"oauth2": map[string]any{"scopes": map[string]any{
			"https://www.googleapis.com/auth/bigquery":       map[string]string{"description": "View and manage your data in Google BigQuery and see the email address for your Google Account"},
			"https://www.googleapis.com/auth/cloud-platform": map[string]string{"description": "See, edit, configure, and delete your Google Cloud data and see the email address for your Google Account."},
		}}},
		"resources": resources,
		"schemas":   schemas,
	}
}

// bqDiscovery serves the discovery document. Its root is where the request
// came: the emulator's root, or its /bigquery/ prefix.
func (e *Emulator) bqDiscovery(c *call) (any, error) {
	if v := c.r.URL.Query().Get("version"); v != "" && v != "v2" {
		return nil, errNotFound("Discovery document not found for API service: bigquery.googleapis.com format: rest version: %s", v)
	}
	scheme := "http"
	if c.r.TLS != nil {
		scheme = "https"
	}
	if p := c.r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	root := scheme + "://" + c.r.Host + "/"
	if strings.HasPrefix(c.r.URL.Path, "/"+BigQuery+"/") && serviceForHost(c.r.Host) == "" {
		root += BigQuery + "/"
	}
	b, err := json.Marshal(bqDiscoveryDoc(root))
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}
