package starter

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/api/option"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/workflows"
)

type planOptions struct {
	file, kubeconfig, kubeContext, endpoints, cacheDir string
	revoke, removeAnnotation                           bool
}

func (a *App) planCommand() *cobra.Command {
	var o planOptions
	cmd := newCommand("plan (-f request.yaml | --revoke -f revoke.yaml [--remove-annotation]) [--kubeconfig F] [--context C] [--gcp-endpoint API=URL,...]",
		"Print the gcloud, kubectl, helm and bq commands a grant (or its revocation) needs now",
		`Print the gcloud, kubectl, helm and bq commands that would bring a grant about
(or, with --revoke, undo it) from the state it reads now: what is in place
prints nothing. It changes nothing and talks to no Temporal service; it reads
Google Cloud with Application Default Credentials and the cluster through the
kubeconfig.`,
		func(ctx context.Context) error { return a.plan(ctx, o) })
	f := cmd.Flags()
	fileFlag(cmd, &o.file, "onboarding request (revoke request with --revoke), YAML or JSON (- for stdin)")
	f.BoolVar(&o.revoke, "revoke", false, "plan the revocation of the grant -f names (a revoke request, as gkewi revoke -f takes)")
	f.BoolVar(&o.removeAnnotation, "remove-annotation", false, "with --revoke: also remove the KSA's iam.gke.io/gcp-service-account annotation")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context (default the cluster's gke_PROJECT_LOCATION_CLUSTER context, else the current one)")
	f.StringVar(&o.endpoints, "gcp-endpoint", "", "Google API base URLs as API=URL,... (default GKEWI_GCP_ENDPOINTS, else Google's); credentials are Application Default Credentials")
	f.StringVar(&o.cacheDir, "cache-dir", "", "where downloaded charts are kept (default: the user cache)")
	_ = cmd.MarkFlagFilename("kubeconfig")
	_ = cmd.MarkFlagDirname("cache-dir")
	noFileFlag(cmd, "context", "gcp-endpoint")
	return cmd
}

// plan prints the gcloud, kubectl, helm and bq commands that would bring a
// grant about (or, with --revoke, undo it) from the state it reads now: what is
// in place prints nothing. It changes nothing and talks to no Temporal service.
func (a *App) plan(ctx context.Context, o planOptions) error {
	if o.file == "" {
		return usagef("-f request.yaml is required")
	}
	if o.removeAnnotation && !o.revoke {
		return usagef("--remove-annotation goes with --revoke")
	}
	if o.endpoints == "" {
		o.endpoints, _ = a.Env.LookupEnv("GKEWI_GCP_ENDPOINTS")
	}
	eps, err := parseEndpoints(o.endpoints)
	if err != nil {
		return err
	}
	// The request is checked before any client is made: a mistake in it is a
	// usage error whatever the credentials.
	var (
		onboardReq workflows.OnboardRequest
		revokeReq  workflows.RevokeRequest
	)
	if o.revoke {
		if revokeReq, err = a.loadRevokeRequest(o.file); err != nil {
			return err
		}
		if o.removeAnnotation {
			revokeReq.RemoveAnnotation = true
		}
		revokeReq = revokeReq.WithDefaults()
		if err := revokeReq.Validate(); err != nil {
			return invalidRequest(o.file, "revoke", err)
		}
	} else if onboardReq, err = a.loadOnboardRequest(o.file); err != nil {
		return err
	}
	gcp, err := activities.NewGCP(ctx, activities.GCPConfig{Endpoints: eps, Options: []option.ClientOption{option.WithUserAgent("gkewi-plan")}})
	if err != nil {
		return err
	}
	k := kubeAccess{kubeconfig: o.kubeconfig, context: o.kubeContext}
	if o.revoke {
		st, err := readRevokeState(ctx, gcp, k, revokeReq)
		if err != nil {
			return err
		}
		writePlan(a.Stdout, revokeHeader(st), revokeSteps(st), "Nothing to revoke: the grant is already gone.")
		return nil
	}
	st, err := readOnboardState(ctx, gcp, k, o.cacheDir, onboardReq)
	if err != nil {
		return err
	}
	steps, err := onboardSteps(st)
	if err != nil {
		return err
	}
	writePlan(a.Stdout, onboardHeader(st), steps, "Nothing to do: everything Onboard sets is in place.")
	return nil
}

// parseEndpoints reads "api=url" pairs, as the worker's GKEWI_GCP_ENDPOINTS.
func parseEndpoints(v string) (activities.GCPEndpoints, error) {
	m := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		api, u, ok := strings.Cut(pair, "=")
		if !ok {
			return activities.GCPEndpoints{}, usagef("--gcp-endpoint %q: want API=URL", pair)
		}
		m[strings.TrimSpace(api)] = strings.TrimSpace(u)
	}
	return activities.GCPEndpointsFromMap(m), nil
}

// kubeAccess reaches the request's cluster as the worker does: through the
// kubeconfig context gcloud names for it, else the current one.
type kubeAccess struct {
	kubeconfig, context string
}

// resolve returns the client configuration of cluster c, and the context to
// name in the printed commands ("" for the current one).
func (k kubeAccess) resolve(c activities.ClusterRef) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	name := k.context
	if name == "" {
		gke := fmt.Sprintf("gke_%s_%s_%s", c.Project, c.Location, c.Cluster)
		var others []string
		for n := range raw.Contexts {
			if strings.HasPrefix(n, "gke_") {
				others = append(others, n)
			}
		}
		switch {
		case raw.Contexts[gke] != nil:
			name = gke
		case len(others) > 0:
			slices.Sort(others)
			return nil, "", fmt.Errorf("the kubeconfig has no context %s for cluster %s (it has %s): add it with `gcloud container clusters get-credentials %s --location %s --project %s`, or name one with --context",
				gke, c, strings.Join(others, ", "), c.Cluster, c.Location, c.Project)
		}
	}
	rc, err := clientcmd.NewNonInteractiveClientConfig(*raw, name, &clientcmd.ConfigOverrides{}, rules).ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig context %q: %w", name, err)
	}
	rc.UserAgent = "gkewi-plan"
	if name == raw.CurrentContext {
		name = ""
	}
	return rc, name, nil
}

// readOnboardState reads what each of Onboard's steps would find. The KSA is the
// one the release runs as, from the chart rendered as Onboard renders it.
func readOnboardState(ctx context.Context, gcp *activities.GCP, k kubeAccess, cacheDir string, req workflows.OnboardRequest) (onboardState, error) {
	cluster := activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}
	rc, kubeContext, err := k.resolve(cluster)
	if err != nil {
		return onboardState{}, err
	}
	clusters := activities.NewClusters(func(activities.ClusterRef) (*rest.Config, error) { return rc, nil })
	helm := activities.NewHelm(activities.HelmConfig{Clusters: clusters, CacheDir: cacheDir})
	st := onboardState{req: req, gsa: req.GSAEmail(), kubeContext: kubeContext}
	st.release, err = helm.RenderRelease(ctx, activities.RenderInput{Helm: req.HelmInput(st.gsa), KSA: req.KSA})
	if err != nil {
		return onboardState{}, err
	}
	st.req.KSA = st.release.KSA

	if st.iamCredentials, err = gcp.ServiceState(ctx, req.Project, iamCredentialsService); err != nil {
		return onboardState{}, err
	}
	ci, err := gcp.ReadClusterIdentity(ctx, cluster)
	if err != nil {
		return onboardState{}, err
	}
	st.workloadPool, st.autopilot = ci.WorkloadPool, ci.Autopilot
	st.nodePools = ci.NodePools
	if ci.Autopilot {
		st.nodePools = nil
	} else if len(req.NodePools) > 0 {
		st.nodePools = nil
		for _, name := range req.NodePools {
			np := activities.NodePoolMode{Name: name}
			if i := slices.IndexFunc(ci.NodePools, func(p activities.NodePoolMode) bool { return p.Name == name }); i >= 0 {
				np = ci.NodePools[i]
			}
			st.nodePools = append(st.nodePools, np)
		}
	}
	if st.sa, err = gcp.ReadServiceAccount(ctx, st.gsa); err != nil {
		return onboardState{}, err
	}
	if st.ksaExists, st.ksaAnnotation, err = readKSA(ctx, clusters, cluster, req.Namespace, st.req.KSA); err != nil {
		return onboardState{}, err
	}
	if bq := req.BigQuery; bq != nil {
		s, err := gcp.ReadBigQueryAccess(ctx, bigQueryInput(st.gsa, bq))
		if err != nil {
			return onboardState{}, err
		}
		st.bigQuery = &s
	}
	if st.helm, err = helm.ReadRelease(ctx, req.HelmInput(st.gsa)); err != nil {
		return onboardState{}, err
	}
	return st, nil
}

// readRevokeState reads what each of Revoke's removals would find.
func readRevokeState(ctx context.Context, gcp *activities.GCP, k kubeAccess, req workflows.RevokeRequest) (revokeState, error) {
	st := revokeState{req: req}
	var err error
	if st.sa, err = gcp.ReadServiceAccount(ctx, req.GSAEmail); err != nil {
		return revokeState{}, err
	}
	if bq := req.BigQuery; bq != nil {
		s, err := gcp.ReadBigQueryAccess(ctx, bigQueryInput(req.GSAEmail, bq))
		if err != nil {
			return revokeState{}, err
		}
		st.bigQuery = &s
	}
	if req.RemoveAnnotation {
		cluster := activities.ClusterRef{Project: req.Project, Location: req.Location, Cluster: req.Cluster}
		rc, kubeContext, err := k.resolve(cluster)
		if err != nil {
			return revokeState{}, err
		}
		st.kubeContext = kubeContext
		clusters := activities.NewClusters(func(activities.ClusterRef) (*rest.Config, error) { return rc, nil })
		if st.ksaExists, st.ksaAnnotation, err = readKSA(ctx, clusters, cluster, req.Namespace, req.KSA); err != nil {
			return revokeState{}, err
		}
	}
	return st, nil
}

// bigQueryInput is the BigQuery step's input for a grant to gsa.
func bigQueryInput(gsa string, bq *workflows.BigQuerySpec) activities.BigQueryAccessInput {
	return activities.BigQueryAccessInput{
		Member:         "serviceAccount:" + gsa,
		DataProject:    bq.DataProject,
		BillingProject: bq.BillingProject,
		TempDataset:    bq.TempDataset,
		Datasets:       bq.Datasets,
	}
}

// readKSA reads whether the KSA exists and its GSA annotation.
func readKSA(ctx context.Context, clusters *activities.Clusters, c activities.ClusterRef, namespace, ksa string) (bool, string, error) {
	client, err := clusters.Client(c)
	if err != nil {
		return false, "", err
	}
	sa, err := client.CoreV1().ServiceAccounts(namespace).Get(ctx, ksa, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("read KSA %s/%s: %w", namespace, ksa, err)
	}
	return true, sa.Annotations[activities.GSAAnnotation], nil
}
