package gcpemu

import (
	"net"
	"strings"
)

// Google's own request paths, served at the root of the emulator, so a client
// with a single root override (gcloud's api_endpoint_overrides, bq --api, the
// Node.js googleapis rootUrl) reaches every API unchanged.
//
// The services' real paths do not collide except where noted, so the root is
// routed by the path's shape:
//
//	/v1/token                                      sts
//	/v1/projects/P/serviceAccounts/A:generateAccessToken (and the other
//	    signing verbs)                             iamcredentials
//	/v1/projects/P/serviceAccounts[/A[:verb]]      iam
//	/v1/roles/R, /v1/projects/P/roles/...          iam
//	/v1/projects/P/locations/L/workloadIdentityPools/...  iam
//	/v1/projects/P/services[/S[:verb]], /v1/projects/P/services:batchEnable
//	                                               serviceusage
//	/v1/operations/..., /v1beta1/operations/...    serviceusage (also the path of
//	                                               Resource Manager v1's operations;
//	                                               a Host header tells them apart)
//	/v1/projects/P/locations/L/{clusters,operations,serverConfig}/...,
//	/v1/projects/P/zones/Z/..., /v1/projects/P/aggregated/...  container
//	/v1/projects/P, /v1/projects/P:verb, /v1/projects, /v3/...  cloudresourcemanager
//	/bigquery/v2/..., /$discovery/rest?version=v2,
//	/discovery/v1/apis/bigquery/v2/rest            bigquery
//
// A request whose Host is <service>.googleapis.com (a proxy, a client that
// resolves Google's names to the emulator) goes to that service whatever its
// path.

// prefixServices are the per-service path prefixes of Endpoints.
var prefixServices = map[string]bool{
	ServiceUsage: true, Container: true, IAM: true, CloudResourceManager: true,
	BigQuery: true, STS: true, IAMCredentials: true,
}

// serviceForHost names the service a Host header asks for, if it is one of
// Google's API hosts the emulator serves ("iam.googleapis.com",
// "bigquery.mtls.googleapis.com:443").
func serviceForHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	name, ok := strings.CutSuffix(host, ".googleapis.com")
	if !ok {
		return ""
	}
	name = strings.TrimSuffix(name, ".mtls")
	if prefixServices[name] {
		return name
	}
	return ""
}

// iamCredentialsVerbs are the service account verbs of the IAM Credentials API;
// every other verb on a service account is IAM's.
var iamCredentialsVerbs = map[string]bool{
	"generateAccessToken": true, "generateIdToken": true, "signBlob": true, "signJwt": true,
}

// gkeLocationCollections are what GKE serves under projects/P/locations/L.
var gkeLocationCollections = map[string]bool{
	"clusters": true, "operations": true, "serverConfig": true,
}

// rootService finds the service a root path (no prefix) belongs to. path has
// no leading slash. It returns "" when no service has such a path.
func rootService(path string) string {
	segs := strings.Split(path, "/")
	switch segs[0] {
	case "bigquery", "$discovery", "discovery":
		return BigQuery
	case "v3":
		return CloudResourceManager
	case "v1", "v1beta", "v1beta1":
	default:
		return ""
	}
	if len(segs) < 2 {
		return ""
	}
	switch {
	case segs[1] == "token" && len(segs) == 2:
		return STS
	case segs[0] == "v1beta1" && segs[1] == "operations":
		return ServiceUsage // the v1beta1 clients poll the same operations
	case segs[0] != "v1":
		return ""
	case segs[1] == "operations":
		return ServiceUsage
	case segs[1] == "roles":
		return IAM
	case segs[1] != "projects":
		return ""
	}
	// v1/projects/...
	if len(segs) <= 3 {
		return CloudResourceManager // projects.list, projects.get, projects.getIamPolicy ...
	}
	collection, _, _ := strings.Cut(segs[3], ":") // services:batchEnable
	switch collection {
	case "serviceAccounts":
		if len(segs) == 5 {
			if _, v, ok := strings.Cut(segs[4], ":"); ok && iamCredentialsVerbs[v] {
				return IAMCredentials
			}
		}
		return IAM
	case "roles":
		return IAM
	case "services":
		return ServiceUsage
	case "zones", "aggregated":
		return Container
	case "locations":
		if len(segs) >= 6 && !gkeLocationCollections[segs[5]] {
			return IAM // workloadIdentityPools, oauthClients ...
		}
		return Container
	}
	return ""
}

// serviceAndPath splits a request into the service it is for and the real
// API path (no leading slash) that service's router reads.
func serviceAndPath(host, path string) (string, string) {
	rel := strings.TrimPrefix(path, "/")
	if svc := serviceForHost(host); svc != "" {
		return svc, rel
	}
	svc, rest, ok := strings.Cut(rel, "/")
	if ok && prefixServices[svc] {
		// BigQuery's real paths begin with its own name: /bigquery/v2/... is
		// the root form, /bigquery/bigquery/v2/... the prefixed one.
		if svc == BigQuery && !strings.HasPrefix(rest, "bigquery/") && !strings.HasPrefix(rest, "$discovery/") &&
			!strings.HasPrefix(rest, "discovery/") {
			return BigQuery, rel
		}
		return svc, rest
	}
	return rootService(rel), rel
}
