package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// fileConfig is the config file: gcpemu.Config with durations as strings and
// each cluster's API server named by a kubeconfig.
type fileConfig struct {
	Operator          string                `json:"operator"`
	OperatorRoles     []string              `json:"operatorRoles"`
	OperationDuration gcpemu.Duration       `json:"operationDuration"`
	PropagationDelay  gcpemu.Duration       `json:"propagationDelay"`
	TokenLifetime     gcpemu.Duration       `json:"tokenLifetime"`
	IAMConsistency    gcpemu.IAMConsistency `json:"iamConsistency"`
	ServiceEnableLag  gcpemu.Duration       `json:"serviceEnableLag"`
	StateFile         string                `json:"stateFile"`
	Seed              uint64                `json:"seed"`
	Faults            []gcpemu.FaultRule    `json:"faults"`
	Projects          []fileProjectConfig   `json:"projects"`
	RequestLogSize    int                   `json:"requestLogSize"`
	dir               string
}

type fileProjectConfig struct {
	ID              string                 `json:"id"`
	Number          int64                  `json:"number"`
	EnabledServices []string               `json:"enabledServices"`
	Datasets        []gcpemu.DatasetConfig `json:"datasets"`
	Bindings        []gcpemu.BindingConfig `json:"bindings"`
	Clusters        []fileClusterConfig    `json:"clusters"`
}

type fileClusterConfig struct {
	Location      string   `json:"location"`
	Name          string   `json:"name"`
	NodePools     []string `json:"nodePools"`
	WorkloadPool  string   `json:"workloadPool"`
	MasterVersion string   `json:"masterVersion"`
	Autopilot     bool     `json:"autopilot"`
	// Kubeconfig (relative to the config file) reaches the API server standing in
	// for the cluster; KubeContext picks a context in it.
	Kubeconfig  string `json:"kubeconfig"`
	KubeContext string `json:"kubeContext"`
}

func loadFileConfig(path string) (*fileConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	fc := &fileConfig{}
	if err := yaml.UnmarshalStrict(raw, fc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	fc.dir = filepath.Dir(path)
	return fc, nil
}

func (fc *fileConfig) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(fc.dir, p)
}

func (fc *fileConfig) toConfig() (gcpemu.Config, error) {
	cfg := gcpemu.Config{
		Operator:          fc.Operator,
		OperatorRoles:     fc.OperatorRoles,
		OperationDuration: time.Duration(fc.OperationDuration),
		PropagationDelay:  time.Duration(fc.PropagationDelay),
		TokenLifetime:     time.Duration(fc.TokenLifetime),
		IAMConsistency:    fc.IAMConsistency,
		ServiceEnableLag:  time.Duration(fc.ServiceEnableLag),
		StateFile:         fc.resolve(fc.StateFile),
		Seed:              fc.Seed,
		Faults:            fc.Faults,
		RequestLogSize:    fc.RequestLogSize,
	}
	for _, p := range fc.Projects {
		pc := gcpemu.ProjectConfig{ID: p.ID, Number: p.Number, EnabledServices: p.EnabledServices,
			Datasets: p.Datasets, Bindings: p.Bindings}
		for _, c := range p.Clusters {
			cc := gcpemu.ClusterConfig{Location: c.Location, Name: c.Name, NodePools: c.NodePools,
				WorkloadPool: c.WorkloadPool, MasterVersion: c.MasterVersion, Autopilot: c.Autopilot}
			if c.Kubeconfig != "" {
				rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: fc.resolve(c.Kubeconfig)}
				overrides := &clientcmd.ConfigOverrides{CurrentContext: c.KubeContext}
				kube, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
				if err != nil {
					return cfg, fmt.Errorf("cluster %s: kubeconfig %s: %w", c.Name, c.Kubeconfig, err)
				}
				cc.Kube = kube
			}
			pc.Clusters = append(pc.Clusters, cc)
		}
		cfg.Projects = append(cfg.Projects, pc)
	}
	return cfg, nil
}
