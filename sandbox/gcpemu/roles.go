package gcpemu

import "strings"

// roleTable lists the predefined roles the emulator knows and the permissions
// that matter to the APIs it serves. Basic roles (owner, editor, viewer) are
// computed in roleHasPermission.
var roleTable = map[string][]string{
	"roles/owner":  nil,
	"roles/editor": nil,
	"roles/viewer": nil,
	"roles/browser": {
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},

	"roles/resourcemanager.projectIamAdmin": {
		"resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
		"resourcemanager.projects.setIamPolicy",
	},
	"roles/iam.securityAdmin": {
		"resourcemanager.projects.get", "resourcemanager.projects.list",
		"resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy",
		"iam.serviceAccounts.get", "iam.serviceAccounts.list",
		"iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy",
		"bigquery.datasets.get", "bigquery.datasets.getIamPolicy", "bigquery.datasets.setIamPolicy",
	},
	"roles/iam.securityReviewer": {
		"resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
		"iam.serviceAccounts.get", "iam.serviceAccounts.list", "iam.serviceAccounts.getIamPolicy",
		"bigquery.datasets.getIamPolicy",
	},

	"roles/serviceusage.serviceUsageAdmin": {
		"serviceusage.services.get", "serviceusage.services.list", "serviceusage.services.enable",
		"serviceusage.services.disable", "serviceusage.services.use", "serviceusage.operations.get",
		"serviceusage.operations.list", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/serviceusage.serviceUsageViewer": {
		"serviceusage.services.get", "serviceusage.services.list", "serviceusage.operations.get",
		"serviceusage.operations.list", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/serviceusage.serviceUsageConsumer": {
		"serviceusage.services.use",
	},

	"roles/container.admin": {
		"container.clusters.get", "container.clusters.list", "container.clusters.update",
		"container.clusters.create", "container.clusters.delete", "container.clusters.getCredentials",
		"container.operations.get", "container.operations.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/container.clusterAdmin": {
		"container.clusters.get", "container.clusters.list", "container.clusters.update",
		"container.clusters.create", "container.clusters.delete", "container.clusters.getCredentials",
		"container.operations.get", "container.operations.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/container.clusterViewer": {
		"container.clusters.get", "container.clusters.list", "container.clusters.getCredentials",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/container.viewer": {
		"container.clusters.get", "container.clusters.list", "container.clusters.getCredentials",
		"container.operations.get", "container.operations.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/container.developer": {
		"container.clusters.get", "container.clusters.list", "container.clusters.getCredentials",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},

	"roles/iam.serviceAccountAdmin": {
		"iam.serviceAccounts.create", "iam.serviceAccounts.delete", "iam.serviceAccounts.get",
		"iam.serviceAccounts.list", "iam.serviceAccounts.update", "iam.serviceAccounts.disable",
		"iam.serviceAccounts.enable", "iam.serviceAccounts.undelete",
		"iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/iam.serviceAccountViewer": {
		"iam.serviceAccounts.get", "iam.serviceAccounts.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/iam.serviceAccountUser": {
		"iam.serviceAccounts.actAs", "iam.serviceAccounts.get", "iam.serviceAccounts.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/iam.serviceAccountTokenCreator": {
		"iam.serviceAccounts.get", "iam.serviceAccounts.list", "iam.serviceAccounts.getAccessToken",
		"iam.serviceAccounts.getOpenIdToken", "iam.serviceAccounts.implicitDelegation",
		"iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/iam.serviceAccountOpenIdTokenCreator": {
		"iam.serviceAccounts.getOpenIdToken",
	},
	"roles/iam.workloadIdentityUser": {
		"iam.serviceAccounts.get", "iam.serviceAccounts.list", "iam.serviceAccounts.getAccessToken",
		"iam.serviceAccounts.getOpenIdToken",
	},

	"roles/bigquery.admin": {
		"bigquery.datasets.create", "bigquery.datasets.get", "bigquery.datasets.update",
		"bigquery.datasets.delete", "bigquery.datasets.getIamPolicy", "bigquery.datasets.setIamPolicy",
		"bigquery.tables.list", "bigquery.tables.get", "bigquery.tables.getData",
		"bigquery.tables.create", "bigquery.tables.update", "bigquery.tables.updateData",
		"bigquery.tables.delete", "bigquery.jobs.create", "bigquery.jobs.get", "bigquery.jobs.list",
		"bigquery.jobs.listAll", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.dataOwner": {
		"bigquery.datasets.create", "bigquery.datasets.get", "bigquery.datasets.update",
		"bigquery.datasets.delete", "bigquery.datasets.getIamPolicy", "bigquery.datasets.setIamPolicy",
		"bigquery.tables.list", "bigquery.tables.get", "bigquery.tables.getData",
		"bigquery.tables.create", "bigquery.tables.update", "bigquery.tables.updateData",
		"bigquery.tables.delete", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.dataEditor": {
		"bigquery.datasets.create", "bigquery.datasets.get", "bigquery.datasets.getIamPolicy",
		"bigquery.tables.list", "bigquery.tables.get", "bigquery.tables.getData",
		"bigquery.tables.create", "bigquery.tables.update", "bigquery.tables.updateData",
		"bigquery.tables.delete", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.dataViewer": {
		"bigquery.datasets.get", "bigquery.datasets.getIamPolicy",
		"bigquery.tables.list", "bigquery.tables.get", "bigquery.tables.getData",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.metadataViewer": {
		"bigquery.datasets.get", "bigquery.datasets.getIamPolicy",
		"bigquery.tables.list", "bigquery.tables.get",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.jobUser": {
		"bigquery.jobs.create", "resourcemanager.projects.get", "resourcemanager.projects.list",
	},
	"roles/bigquery.user": {
		"bigquery.datasets.create", "bigquery.datasets.get", "bigquery.datasets.getIamPolicy",
		"bigquery.jobs.create", "bigquery.jobs.list", "bigquery.tables.list",
		"resourcemanager.projects.get", "resourcemanager.projects.list",
	},

	// Roles commonly granted to node and workload accounts; they carry no
	// permission on the APIs served here but must be accepted in policies.
	"roles/logging.logWriter":                    {},
	"roles/monitoring.metricWriter":              {},
	"roles/monitoring.viewer":                    {},
	"roles/stackdriver.resourceMetadata.writer":  {},
	"roles/artifactregistry.reader":              {},
	"roles/storage.objectViewer":                 {},
	"roles/storage.objectAdmin":                  {},
	"roles/autoscaling.metricsWriter":            {},
	"roles/container.defaultNodeServiceAccount":  {},
	"roles/cloudsql.client":                      {},
	"roles/secretmanager.secretAccessor":         {},
	"roles/iam.serviceAccountKeyAdmin":           {"iam.serviceAccounts.get", "iam.serviceAccounts.list"},
	"roles/iam.roleViewer":                       {},
	"roles/resourcemanager.projectMover":         {},
	"roles/cloudsupport.techSupportEditor":       {},
	"roles/bigquery.readSessionUser":             {},
	"roles/bigquery.connectionUser":              {},
	"roles/bigquery.filteredDataViewer":          {},
	"roles/bigquery.resourceViewer":              {},
	"roles/serviceusage.apiKeysViewer":           {},
	"roles/compute.viewer":                       {},
	"roles/iam.workloadIdentityPoolViewer":       {},
	"roles/iam.workloadIdentityPoolAdmin":        {},
	"roles/container.hostServiceAgentUser":       {},
	"roles/iam.serviceAccountCredentialsCreator": {},
}

// Permissions basic roles do not carry: editors cannot change IAM policies or
// mint tokens, viewers only read.
func basicRoleHas(role, perm string) bool {
	switch role {
	case "roles/owner":
		return true
	case "roles/editor":
		switch {
		case strings.HasSuffix(perm, ".setIamPolicy"),
			strings.HasPrefix(perm, "iam.serviceAccounts.getAccessToken"),
			strings.HasPrefix(perm, "iam.serviceAccounts.getOpenIdToken"),
			strings.HasPrefix(perm, "iam.serviceAccounts.signBlob"),
			strings.HasPrefix(perm, "iam.serviceAccounts.signJwt"),
			strings.HasPrefix(perm, "iam.serviceAccounts.implicitDelegation"):
			return false
		}
		return true
	case "roles/viewer":
		return strings.HasSuffix(perm, ".get") || strings.HasSuffix(perm, ".list") ||
			perm == "resourcemanager.projects.getIamPolicy" || perm == "bigquery.datasets.getIamPolicy"
	}
	return false
}

func roleHasPermission(role, perm string) bool {
	if basicRoleHas(role, perm) {
		return true
	}
	for _, p := range roleTable[role] {
		if p == perm {
			return true
		}
	}
	return false
}

func roleKnown(role string) bool {
	_, ok := roleTable[role]
	return ok
}

// roleSupportedOn says whether a role may be granted on a resource kind: a
// resource accepts basic roles and roles holding permissions of its own kind.
func roleSupportedOn(role, permPrefix string) bool {
	switch role {
	case "roles/owner", "roles/editor", "roles/viewer":
		return true
	}
	for _, p := range roleTable[role] {
		if strings.HasPrefix(p, permPrefix) {
			return true
		}
	}
	return false
}
