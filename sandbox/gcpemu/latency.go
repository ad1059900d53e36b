package gcpemu

import "time"

// OperationLatency is how long long-running operations of each kind take. On
// Google Cloud a cluster update that sets the workload pool takes minutes, a
// node pool update that switches the metadata server recreates the pool's
// nodes (many minutes per pool), and enabling an API takes about a minute.
type OperationLatency struct {
	// ClusterUpdate is clusters.update (UPDATE_CLUSTER operations).
	ClusterUpdate time.Duration `json:"clusterUpdate,omitempty"`
	// NodePoolUpdate is nodePools.update (UPGRADE_NODES operations).
	NodePoolUpdate time.Duration `json:"nodePoolUpdate,omitempty"`
	// ServiceEnable is services.enable and services.batchEnable.
	ServiceEnable time.Duration `json:"serviceEnable,omitempty"`
}

// SetLatency changes, from now on, how long new operations run and how long IAM
// policy changes take to count. Operations already started keep their end.
func (e *Emulator) SetLatency(l OperationLatency, propagation time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg.Latency = l
	e.cfg.PropagationDelay = propagation
}

// containerOpDuration is how long a GKE operation of type opType runs.
func (e *Emulator) containerOpDuration(opType string) time.Duration {
	d := e.cfg.Latency.ClusterUpdate
	if opType == "UPGRADE_NODES" {
		d = e.cfg.Latency.NodePoolUpdate
	}
	if d > 0 {
		return d
	}
	return e.cfg.OperationDuration
}

// serviceOpDuration is how long a Service Usage operation of action runs.
func (e *Emulator) serviceOpDuration(action string) time.Duration {
	if d := e.cfg.Latency.ServiceEnable; d > 0 && (action == suEnable || action == suBatchEnable) {
		return d
	}
	return e.cfg.OperationDuration
}
