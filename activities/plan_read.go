package activities

import (
	"context"
	"errors"
	"fmt"

	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Read-only looks at what the onboarding and revocation steps would find in
// place, for `gkewi plan`. They read exactly what the steps read before they
// decide to change anything, and change nothing themselves.

// ServiceState is a Google API's state in a project (ENABLED, DISABLED).
func (g *GCP) ServiceState(ctx context.Context, project, service string) (string, error) {
	name := fmt.Sprintf("projects/%s/services/%s", project, service)
	svc, err := g.serviceUsage.Services.Get(name).Context(ctx).Do()
	if err != nil {
		return "", ClassifyGoogleError(err, "read state of "+service+" in project "+project, "serviceusage.services.get")
	}
	return svc.State, nil
}

// ClusterIdentity is a cluster's Workload Identity configuration.
type ClusterIdentity struct {
	// WorkloadPool is workloadIdentityConfig.workloadPool, "" when off.
	WorkloadPool string
	// Autopilot: GKE manages the node pools (all on the GKE metadata server)
	// and the workload pool.
	Autopilot bool
	// NodePools are the cluster's node pools with their workload metadata mode,
	// in the order GKE lists them.
	NodePools []NodePoolMode
}

// NodePoolMode is a node pool's config.workloadMetadataConfig.mode ("" unset).
type NodePoolMode struct {
	Name string
	Mode string
}

// WorkloadMetadataGKE is the node pool mode Workload Identity needs.
const WorkloadMetadataGKE = workloadMetadataGKE

// ReadClusterIdentity reads the cluster's workload pool and node pool modes.
func (g *GCP) ReadClusterIdentity(ctx context.Context, in ClusterRef) (ClusterIdentity, error) {
	if err := in.validate(); err != nil {
		return ClusterIdentity{}, err
	}
	c, err := g.container.Projects.Locations.Clusters.Get(in.resourceName()).Context(ctx).Do()
	if err != nil {
		return ClusterIdentity{}, ClassifyGoogleError(err, "read cluster "+in.String(), "container.clusters.get")
	}
	out := ClusterIdentity{Autopilot: c.Autopilot != nil && c.Autopilot.Enabled}
	if c.WorkloadIdentityConfig != nil {
		out.WorkloadPool = c.WorkloadIdentityConfig.WorkloadPool
	}
	for _, np := range c.NodePools {
		m := NodePoolMode{Name: np.Name}
		if np.Config != nil && np.Config.WorkloadMetadataConfig != nil {
			m.Mode = np.Config.WorkloadMetadataConfig.Mode
		}
		out.NodePools = append(out.NodePools, m)
	}
	return out, nil
}

// ServiceAccountState is a GSA as the service-account and IAM steps see it.
type ServiceAccountState struct {
	Exists   bool
	Disabled bool
	// Policy is the GSA's own IAM policy; nil when the account does not exist.
	Policy *Policy
}

// ReadServiceAccount reads a GSA and its IAM policy; a missing account is not
// an error.
func (g *GCP) ReadServiceAccount(ctx context.Context, email string) (ServiceAccountState, error) {
	sa, err := g.iam.Projects.ServiceAccounts.Get(serviceAccountResource(email)).Context(ctx).Do()
	if IsNotFound(err) {
		return ServiceAccountState{}, nil
	}
	if err != nil {
		return ServiceAccountState{}, ClassifyGoogleError(err, "read service account "+email, "iam.serviceAccounts.get")
	}
	pol, err := g.serviceAccountPolicy(email).get(ctx)
	if err != nil {
		return ServiceAccountState{}, err
	}
	return ServiceAccountState{Exists: true, Disabled: sa.Disabled, Policy: pol}, nil
}

// BigQueryGrantState is one grant of a BigQuery connection and whether the
// member holds it.
type BigQueryGrantState struct {
	Role string
	// Project is set for a grant on a project's IAM policy.
	Project string
	// DatasetProject and Dataset are set for a grant on a dataset's access.
	DatasetProject, Dataset string
	// DatasetLocation is the dataset's location, when it exists.
	DatasetLocation string
	Held            bool
}

// BigQueryState is what GrantBigQueryAccess and RevokeBigQueryAccess would find.
type BigQueryState struct {
	// TempDatasetProject and TempDataset name the connection's temp dataset.
	TempDatasetProject, TempDataset string
	TempDatasetExists               bool
	// TempDatasetLocation is where GrantBigQueryAccess creates a missing one.
	TempDatasetLocation string
	// Grants are in the order the steps apply them.
	Grants []BigQueryGrantState
}

// ReadBigQueryAccess reads the connection's grants of in.Member. A dataset that
// does not exist holds no grant.
func (g *GCP) ReadBigQueryAccess(ctx context.Context, in BigQueryAccessInput) (BigQueryState, error) {
	grants, temp, err := bigQueryGrants(in)
	if err != nil {
		return BigQueryState{}, err
	}
	out := BigQueryState{TempDatasetProject: temp.project, TempDataset: temp.dataset, TempDatasetLocation: in.DatasetLocation}
	if out.TempDatasetLocation == "" {
		out.TempDatasetLocation = defaultDatasetLocation
	}
	policies := map[string]*Policy{}
	for _, gr := range grants {
		st := BigQueryGrantState{Role: gr.role, Project: gr.project}
		if gr.dataset == nil {
			pol, ok := policies[gr.project]
			if !ok {
				if pol, err = g.projectPolicy(gr.project).get(ctx); err != nil {
					return BigQueryState{}, err
				}
				policies[gr.project] = pol
			}
			st.Held = pol.HasMember(gr.role, in.Member)
			out.Grants = append(out.Grants, st)
			continue
		}
		st.DatasetProject, st.Dataset = gr.dataset.project, gr.dataset.dataset
		ds, err := g.bigQuery.Datasets.Get(gr.dataset.project, gr.dataset.dataset).Context(ctx).Do()
		switch {
		case IsNotFound(err):
		case err != nil:
			return BigQueryState{}, ClassifyGoogleError(err, "read dataset "+gr.dataset.String(), "bigquery.datasets.get")
		default:
			st.DatasetLocation = ds.Location
			for _, e := range ds.Access {
				if accessEntryMatches(e, gr.role, in.Member) {
					st.Held = true
				}
			}
			if *gr.dataset == temp {
				out.TempDatasetExists = true
				out.TempDatasetLocation = ds.Location
			}
		}
		out.Grants = append(out.Grants, st)
	}
	return out, nil
}

// ReleaseState is the deployed Helm release against the one the Helm step
// installs.
type ReleaseState struct {
	// Deployed: a revision of the release is deployed.
	Deployed bool
	Revision int
	// UpToDate: the deployed revision has the same chart and values, so the Helm
	// step changes nothing.
	UpToDate bool
	// Values are the values the Helm step installs (the operator's and gkewi's,
	// over the chart's defaults).
	Values map[string]any
	// ChartName and ChartVersion are the chart's.
	ChartName, ChartVersion string
	// NamespaceExists: the release's namespace exists.
	NamespaceExists bool
}

// ReadRelease compares the deployed release with the install in describes,
// as HelmUpgradeInstall does before it decides to upgrade.
func (h *Helm) ReadRelease(ctx context.Context, in HelmInput) (ReleaseState, error) {
	if err := validateHelmInput(in); err != nil {
		return ReleaseState{}, err
	}
	conn, err := h.cfg.Clusters.conn(in.Cluster)
	if err != nil {
		return ReleaseState{}, err
	}
	cfg, ch, values, err := h.chartAndValues(conn, in)
	if err != nil {
		return ReleaseState{}, err
	}
	out := ReleaseState{Values: values, ChartName: ch.Metadata.Name, ChartVersion: ch.Metadata.Version}
	if _, err := conn.client.CoreV1().Namespaces().Get(ctx, in.Namespace, metav1.GetOptions{}); err == nil {
		out.NamespaceExists = true
	} else if !apierrors.IsNotFound(err) {
		return ReleaseState{}, classifyKubeError("reading namespace "+in.Namespace, err)
	}
	if !out.NamespaceExists {
		return out, nil
	}
	deployed, err := cfg.Releases.Deployed(in.Release)
	if errors.Is(err, driver.ErrNoDeployedReleases) || errors.Is(err, driver.ErrReleaseNotFound) {
		return out, nil
	}
	if err != nil {
		return ReleaseState{}, classifyHelmError("helm: reading release "+in.Release, err)
	}
	rel, ok := deployed.(*release.Release)
	if !ok {
		return ReleaseState{}, fmt.Errorf("helm: unexpected release type %T", deployed)
	}
	out.Deployed, out.Revision = true, rel.Version
	out.UpToDate = helmReleaseMatches(rel, ch, values)
	return out, nil
}
