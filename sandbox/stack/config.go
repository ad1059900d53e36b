package stack

import (
	"errors"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// Config is the world the sandbox emulates: the Google Cloud projects, the one
// GKE cluster (which the local Kubernetes control plane stands in for) and the
// worker's Google identity with its roles. deploy/sandbox/sandbox.yaml holds the
// default one.
type Config struct {
	// Operator is the email of the worker's Google service account; the
	// emulator's metadata server hands out its tokens.
	Operator string `json:"operator"`
	// Projects are the emulated projects. Exactly one cluster must be configured
	// among them. The operator's roles are granted with each project's bindings,
	// so every grant is visible (and minimal) in the file.
	Projects []gcpemu.ProjectConfig `json:"projects"`
	// OperationDuration is how long GKE and Service Usage operations run.
	OperationDuration gcpemu.Duration `json:"operationDuration"`
	// PropagationDelay is how long IAM policy changes take to count.
	PropagationDelay gcpemu.Duration `json:"propagationDelay"`
	// TokenLifetime of the access tokens the emulator issues; default 1h.
	TokenLifetime gcpemu.Duration `json:"tokenLifetime,omitempty"`
	// IAMConsistency models IAM's eventual consistency for new and deleted
	// service accounts (gcpemu.IAMConsistency); off when absent.
	IAMConsistency gcpemu.IAMConsistency `json:"iamConsistency,omitempty"`
	// ServiceEnableLag is how long an API enabled through Service Usage keeps
	// answering SERVICE_DISABLED, as Google's do for a few minutes.
	ServiceEnableLag gcpemu.Duration `json:"serviceEnableLag,omitempty"`
	// NodesPerPool is the number of fake nodes per node pool; default 1.
	NodesPerPool int `json:"nodesPerPool,omitempty"`
	// Faults are fault-injection rules active from the start.
	Faults []gcpemu.FaultRule `json:"faults,omitempty"`
	// LatencyProfile is how long Google Cloud, support and the rollout take
	// for real; the bench's critical-path round runs under it, time-scaled.
	LatencyProfile LatencyProfile `json:"latencyProfile,omitempty"`
}

// ClusterSpec names the emulated cluster and its node pools.
type ClusterSpec struct {
	Project   string
	Location  string
	Name      string
	NodePools []string
}

// LoadConfig reads a sandbox configuration file; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("sandbox config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("sandbox config %s: %w", path, err)
	}
	if _, err := c.Cluster(); err != nil {
		return Config{}, fmt.Errorf("sandbox config %s: %w", path, err)
	}
	return c, nil
}

// Clusters are the configuration's clusters, in order. The local control plane
// plays all of them: the first is the primary (its node pools are the kwok
// nodes, its issuer signs the KSA tokens); more clusters share that control
// plane, which is how the benchmark spreads onboardings over many clusters.
func (c Config) Clusters() ([]ClusterSpec, error) {
	var found []ClusterSpec
	for _, p := range c.Projects {
		for _, cl := range p.Clusters {
			if len(cl.NodePools) == 0 {
				return nil, fmt.Errorf("cluster %s has no node pools", cl.Name)
			}
			found = append(found, ClusterSpec{Project: p.ID, Location: cl.Location, Name: cl.Name, NodePools: cl.NodePools})
		}
	}
	if len(found) == 0 {
		return nil, errors.New("no cluster among the projects (the local control plane stands in for it)")
	}
	return found, nil
}

// Cluster is the primary cluster of the configuration.
func (c Config) Cluster() (ClusterSpec, error) {
	all, err := c.Clusters()
	if err != nil {
		return ClusterSpec{}, err
	}
	return all[0], nil
}

// GKEContext is the kubeconfig context gcloud names for the cluster.
func (c ClusterSpec) GKEContext() string {
	return "gke_" + c.Project + "_" + c.Location + "_" + c.Name
}

// emulatorConfig is the emulator's configuration, with the clusters played by
// the local control plane (kube is called with each cluster, and whether it is
// the primary one).
func (c Config) emulatorConfig(kube func(c gcpemu.ClusterConfig, primary bool) gcpemu.ClusterConfig, logf func(string, ...any)) gcpemu.Config {
	cfg := gcpemu.Config{
		Operator:          c.Operator,
		OperationDuration: time.Duration(c.OperationDuration),
		PropagationDelay:  time.Duration(c.PropagationDelay),
		TokenLifetime:     time.Duration(c.TokenLifetime),
		IAMConsistency:    c.IAMConsistency,
		ServiceEnableLag:  time.Duration(c.ServiceEnableLag),
		Faults:            c.Faults,
		Logf:              logf,
		RequestLogSize:    20000,
	}
	first := true
	for _, p := range c.Projects {
		p.Clusters = append([]gcpemu.ClusterConfig(nil), p.Clusters...)
		for i := range p.Clusters {
			p.Clusters[i] = kube(p.Clusters[i], first)
			first = false
		}
		cfg.Projects = append(cfg.Projects, p)
	}
	return cfg
}
