package worker

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"go.temporal.io/sdk/temporal"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/worker/config"
)

// gkeContextName is the kubeconfig context gcloud writes for a GKE cluster
// (gcloud container clusters get-credentials).
func gkeContextName(c activities.ClusterRef) string {
	return fmt.Sprintf("gke_%s_%s_%s", c.Project, c.Location, c.Cluster)
}

// NewClusters reaches each request's GKE cluster through the kubeconfig context
// gcloud names for it, gke_PROJECT_LOCATION_CLUSTER, so one worker serves many
// clusters. A kubeconfig without any gke_ context (a single local cluster, a
// renamed context) serves every request from its current context (or
// --kube-context). A kubeconfig with gke_ contexts but none for the request's
// cluster is refused: the worker must never change a cluster other than the
// one the request names. Without a kubeconfig the worker serves the cluster it
// runs in.
func NewClusters(cfg config.Config, logger *slog.Logger) (*activities.Clusters, error) {
	if cfg.Kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no kubeconfig configured (--kubeconfig, GKEWI_KUBECONFIG) and not running in a cluster: %w", err)
		}
		logger.Info("Kubernetes: serving the cluster the worker runs in (in-cluster service account)")
		return activities.NewClusters(func(activities.ClusterRef) (*rest.Config, error) { return tuned(rc), nil }), nil
	}
	raw, err := clientcmd.LoadFromFile(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	var gke []string
	for name := range raw.Contexts {
		if strings.HasPrefix(name, "gke_") {
			gke = append(gke, name)
		}
	}
	slices.Sort(gke)
	// The default context must load: a broken kubeconfig stops the worker at start.
	if _, err := contextConfig(raw, cfg.KubeContext); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	if len(gke) == 0 {
		logger.Info("Kubernetes: every cluster served from one kubeconfig context", "kubeconfig", cfg.Kubeconfig, "context", orCurrent(cfg.KubeContext, raw))
	} else {
		logger.Info("Kubernetes: clusters served by their gke_ kubeconfig contexts", "kubeconfig", cfg.Kubeconfig, "contexts", gke)
	}
	return activities.NewClusters(func(c activities.ClusterRef) (*rest.Config, error) {
		name := cfg.KubeContext
		switch {
		case c == (activities.ClusterRef{}):
			// Inputs from before the cluster was named: the default context.
		case raw.Contexts[gkeContextName(c)] != nil:
			name = gkeContextName(c)
		case len(gke) > 0:
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"kubeconfig %s has no context %s for cluster %s (it has %s); add it with `gcloud container clusters get-credentials %s --location %s --project %s` and restart the worker",
				cfg.Kubeconfig, gkeContextName(c), c, strings.Join(gke, ", "), c.Cluster, c.Location, c.Project),
				contract.ErrTypeFailedPrecondition, nil)
		}
		rc, err := contextConfig(raw, name)
		if err != nil {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("kubeconfig %s, context %q: %v", cfg.Kubeconfig, name, err),
				contract.ErrTypeFailedPrecondition, nil)
		}
		return rc, nil
	}), nil
}

// contextConfig is the client configuration of a kubeconfig context ("": current).
func contextConfig(raw *clientcmdapi.Config, name string) (*rest.Config, error) {
	rc, err := clientcmd.NewNonInteractiveClientConfig(*raw, name, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, err
	}
	return tuned(rc), nil
}

func orCurrent(name string, raw *clientcmdapi.Config) string {
	if name != "" {
		return name
	}
	return raw.CurrentContext
}

// tuned sets the worker's client identity and rate limits.
func tuned(rc *rest.Config) *rest.Config {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "gkewi-worker"
	// client-go's defaults (5 QPS) throttle a worker running many onboardings on
	// one cluster.
	rc.QPS, rc.Burst = 50, 100
	return rc
}
