package stack

import (
	"fmt"
	"time"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

// LatencyProfile is how long the slow parts of an onboarding take on real
// systems: GKE operations, enabling an API, IAM propagation, support's answer
// and the rollout. The bench's critical-path round runs one onboarding under it,
// divided by a time scale so minutes pass in seconds.
type LatencyProfile struct {
	// ClusterUpdate is a clusters.update setting the workload pool.
	ClusterUpdate gcpemu.Duration `json:"clusterUpdate"`
	// NodePoolUpdate is a nodePools.update to GKE_METADATA, per pool: GKE
	// recreates the pool's nodes.
	NodePoolUpdate gcpemu.Duration `json:"nodePoolUpdate"`
	// ServiceEnable is enabling the IAM Credentials API.
	ServiceEnable gcpemu.Duration `json:"serviceEnable"`
	// IAMPropagation is how long an IAM policy change takes to count.
	IAMPropagation gcpemu.Duration `json:"iamPropagation"`
	// SupportAnswer is how long after the request support decides.
	SupportAnswer gcpemu.Duration `json:"supportAnswer"`
	// Rollout is how long the release's pods take to become ready.
	Rollout gcpemu.Duration `json:"rollout"`
}

// Scaled divides every latency by scale (60 turns minutes into seconds).
func (p LatencyProfile) Scaled(scale float64) LatencyProfile {
	div := func(d gcpemu.Duration) gcpemu.Duration { return gcpemu.Duration(float64(d) / scale) }
	return LatencyProfile{
		ClusterUpdate: div(p.ClusterUpdate), NodePoolUpdate: div(p.NodePoolUpdate), ServiceEnable: div(p.ServiceEnable),
		IAMPropagation: div(p.IAMPropagation), SupportAnswer: div(p.SupportAnswer), Rollout: div(p.Rollout),
	}
}

// Operations is the profile's operation latency for the emulator.
func (p LatencyProfile) Operations() gcpemu.OperationLatency {
	return gcpemu.OperationLatency{
		ClusterUpdate:  time.Duration(p.ClusterUpdate),
		NodePoolUpdate: time.Duration(p.NodePoolUpdate),
		ServiceEnable:  time.Duration(p.ServiceEnable),
	}
}

// Validate requires every latency to be set and positive.
func (p LatencyProfile) Validate() error {
	for name, d := range map[string]gcpemu.Duration{
		"clusterUpdate": p.ClusterUpdate, "nodePoolUpdate": p.NodePoolUpdate, "serviceEnable": p.ServiceEnable,
		"iamPropagation": p.IAMPropagation, "supportAnswer": p.SupportAnswer, "rollout": p.Rollout,
	} {
		if d <= 0 {
			return fmt.Errorf("latencyProfile.%s: must be a positive duration, got %s", name, time.Duration(d))
		}
	}
	return nil
}
