package stack

import (
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
	// NodesPerPool is the number of fake nodes per node pool; default 1.
	NodesPerPool int `json:"nodesPerPool,omitempty"`
	// Faults are fault-injection rules active from the start.
	Faults []gcpemu.FaultRule `json:"faults,omitempty"`
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

// Cluster is the one cluster of the configuration.
func (c Config) Cluster() (ClusterSpec, error) {
	var found []ClusterSpec
	for _, p := range c.Projects {
		for _, cl := range p.Clusters {
			found = append(found, ClusterSpec{Project: p.ID, Location: cl.Location, Name: cl.Name, NodePools: cl.NodePools})
		}
	}
	if len(found) != 1 {
		return ClusterSpec{}, fmt.Errorf("want exactly one cluster among the projects (the local control plane stands in for it), found %d", len(found))
	}
	if len(found[0].NodePools) == 0 {
		return ClusterSpec{}, fmt.Errorf("cluster %s has no node pools", found[0].Name)
	}
	return found[0], nil
}

// emulatorConfig is the emulator's configuration, with the cluster served by the
// local control plane.
func (c Config) emulatorConfig(kube func(gcpemu.ClusterConfig) gcpemu.ClusterConfig, logf func(string, ...any)) gcpemu.Config {
	cfg := gcpemu.Config{
		Operator:          c.Operator,
		OperationDuration: time.Duration(c.OperationDuration),
		PropagationDelay:  time.Duration(c.PropagationDelay),
		TokenLifetime:     time.Duration(c.TokenLifetime),
		Faults:            c.Faults,
		Logf:              logf,
		RequestLogSize:    20000,
	}
	for _, p := range c.Projects {
		p.Clusters = append([]gcpemu.ClusterConfig(nil), p.Clusters...)
		for i := range p.Clusters {
			p.Clusters[i] = kube(p.Clusters[i])
		}
		cfg.Projects = append(cfg.Projects, p)
	}
	return cfg
}
