package worker

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/gkewi/gkewi/worker/config"
)

// NewRESTConfig reads the kubeconfig, or the in-cluster service account when none
// is configured.
func NewRESTConfig(cfg config.Config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no kubeconfig configured (--kubeconfig, GKEWI_KUBECONFIG) and not running in a cluster: %w", err)
		}
	} else {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.KubeContext}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
		}
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "gkewi-worker"
	// client-go's defaults (5 QPS) throttle a worker running several onboardings.
	rc.QPS, rc.Burst = 20, 40
	return rc, nil
}

// NewKubernetesClient is the typed clientset of the workload cluster.
func NewKubernetesClient(rc *rest.Config) (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
