package main

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/sandbox/kubecluster"
	"github.com/gkewi/gkewi/sandbox/stack"
	"github.com/gkewi/gkewi/workflows"
)

// targetCriticalPathRatio: an onboarding may take at most 10% longer than the
// longest chain of steps that truly depend on each other.
const targetCriticalPathRatio = 1.10

// benchCriticalPath is one onboarding under the latency profile.
type benchCriticalPath struct {
	TimeScale float64              `json:"timeScale"`
	Profile   stack.LatencyProfile `json:"profile"`
	NodePools int                  `json:"nodePools"`
	// Onboarding is start to verified access; Approval is the approval to
	// verified access.
	Onboarding benchPath `json:"onboarding"`
	Approval   benchPath `json:"approvalToAccess"`
	// RolloutAfterPropagation is the lower bound had the rollout waited for
	// the binding to count (computed from the profile, not run).
	RolloutAfterPropagation float64 `json:"rolloutAfterPropagationLowerBoundSeconds"`
	// Steps are the run's steps, seconds from the start.
	Steps []benchSpan `json:"steps"`
}

// benchPath compares a measured wall time with what the profile allows.
type benchPath struct {
	WallSeconds       float64 `json:"wallSeconds"`
	LowerBoundSeconds float64 `json:"lowerBoundSeconds"`
	Ratio             float64 `json:"ratio"`
	// SequentialSeconds is the lower bound of the earlier sequence (cluster
	// work, then support, then the grants one after another) under the same
	// profile.
	SequentialSeconds float64 `json:"sequentialLowerBoundSeconds"`
}

type benchSpan struct {
	Name  string  `json:"name"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

// criticalPath runs one onboarding on the fresh cluster c with the emulator,
// support and the rollout as slow as the profile says, divided by scale, and
// reports its wall time against the profile's lower bound.
func (b *bench) criticalPath(ctx context.Context, c stack.ClusterSpec, profile stack.LatencyProfile, scale float64) {
	p := profile.Scaled(scale)
	fmt.Fprintf(b.out, "\nOne onboarding under the latency profile, time scale %g (1 min takes %s)\n", scale, time.Duration(float64(time.Minute)/scale))
	fmt.Fprintf(b.out, "  profile: cluster update %s, node pool update %s x%d pools, service enable %s, IAM propagation %s, support answer %s, rollout %s\n",
		time.Duration(profile.ClusterUpdate), time.Duration(profile.NodePoolUpdate), len(c.NodePools), time.Duration(profile.ServiceEnable),
		time.Duration(profile.IAMPropagation), time.Duration(profile.SupportAnswer), time.Duration(profile.Rollout))
	emu := b.sb.Emulator()
	emu.SetLatency(p.Operations(), time.Duration(p.IAMPropagation))
	defer emu.SetLatency(gcpemu.OperationLatency{}, 0)

	req := b.requestOn(c, "bench-critical", "bench-critical")
	delay := map[string]any{"podAnnotations": map[string]any{kubecluster.PodReadyDelayAnnotation: time.Duration(p.Rollout).String()}}
	req.Helm.Values = map[string]any{"workspaceApi": delay, "workspaceSubscriber": delay, "workspaceWww": delay}
	id := workflows.OnboardWorkflowID(req)
	begin := time.Now()
	run, err := b.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.OnboardWorkflowName, req)
	if err != nil {
		b.fail("critical path: starting " + id + ": " + err.Error())
		return
	}
	// Support answers SupportAnswer after the request went out.
	asked, err := b.awaitStep(ctx, req, "approval-request")
	if err != nil {
		b.fail("critical path: " + err.Error())
		return
	}
	select {
	case <-time.After(time.Until(asked.Add(time.Duration(p.SupportAnswer)))):
	case <-ctx.Done():
		return
	}
	if err := b.c.SignalWorkflow(ctx, id, "", contract.SignalSupportApproval,
		workflows.ApprovalDecision{Approved: true, Approver: benchApprover, Ticket: "BENCH-CRITICAL"}); err != nil {
		b.fail("critical path: approving: " + err.Error())
		return
	}
	if err := run.Get(ctx, nil); err != nil {
		b.fail("critical path: " + err.Error())
		return
	}
	s, err := b.status(ctx, req)
	if err != nil {
		b.fail("critical path status: " + err.Error())
		return
	}
	b.reportCriticalPath(s, begin, c, profile, p, scale)
}

// awaitStep waits until the named step of req's onboarding is done and returns
// when it ended.
func (b *bench) awaitStep(ctx context.Context, req workflows.OnboardRequest, name string) (time.Time, error) {
	for {
		if s, err := b.status(ctx, req); err == nil {
			if st, ok := s.Step(name); ok && st.State == workflows.StepDone {
				return st.EndedAt, nil
			}
			if s.State.Terminal() {
				return time.Time{}, fmt.Errorf("onboarding ended %s before step %s: %s", s.State, name, s.Error)
			}
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (b *bench) reportCriticalPath(s workflows.Status, begin time.Time, c stack.ClusterSpec, profile, p stack.LatencyProfile, scale float64) {
	changed := func(name string) bool { st, ok := s.Step(name); return ok && st.Changed }
	pools := 0
	for _, np := range c.NodePools {
		if changed("node-pool/" + np) {
			pools++
		}
	}
	lb := criticalPathBounds(p, changed("workload-pool"), changed("enable-iamcredentials"), pools)
	verify, _ := s.Step("verify")
	res := &benchCriticalPath{TimeScale: scale, Profile: profile, NodePools: pools, RolloutAfterPropagation: lb.rolloutAfterPropagation.Seconds()}
	res.Onboarding = newBenchPath(verify.EndedAt.Sub(begin), lb.onboarding, lb.sequential)
	res.Approval = newBenchPath(verify.EndedAt.Sub(s.Approval.DecidedAt), lb.onboarding-lb.support, lb.sequentialAfterApproval)
	for _, st := range s.Steps {
		if st.StartedAt.IsZero() {
			continue
		}
		res.Steps = append(res.Steps, benchSpan{Name: st.Name, Start: st.StartedAt.Sub(begin).Seconds(), End: st.EndedAt.Sub(begin).Seconds()})
		fmt.Fprintf(b.out, "  %-28s %7.2fs .. %7.2fs\n", st.Name, st.StartedAt.Sub(begin).Seconds(), st.EndedAt.Sub(begin).Seconds())
	}
	b.rep.CriticalPath = res
	for _, row := range []struct {
		name string
		path benchPath
	}{{"start to verified access", res.Onboarding}, {"approval to verified access", res.Approval}} {
		fmt.Fprintf(b.out, "  %-28s wall %6.2fs  lower bound %6.2fs  ratio %.3f  (sequence before: lower bound %6.2fs)\n",
			row.name, row.path.WallSeconds, row.path.LowerBoundSeconds, row.path.Ratio, row.path.SequentialSeconds)
	}
	fmt.Fprintf(b.out, "  had the rollout waited for the binding to count: lower bound %.2fs\n", res.RolloutAfterPropagation)
	b.target(fmt.Sprintf("start to access <= %.2f x critical path", targetCriticalPathRatio), fmt.Sprintf("%.3f", res.Onboarding.Ratio),
		res.Onboarding.Ratio <= targetCriticalPathRatio)
	b.target(fmt.Sprintf("approval to access <= %.2f x critical path", targetCriticalPathRatio), fmt.Sprintf("%.3f", res.Approval.Ratio),
		res.Approval.Ratio <= targetCriticalPathRatio)
}

func newBenchPath(wall, bound, sequential time.Duration) benchPath {
	bp := benchPath{WallSeconds: wall.Seconds(), LowerBoundSeconds: bound.Seconds(), SequentialSeconds: sequential.Seconds()}
	if bound > 0 {
		bp.Ratio = wall.Seconds() / bound.Seconds()
	}
	return bp
}

// pathBounds are lower bounds an onboarding's time can reach under a profile.
type pathBounds struct {
	onboarding, support                 time.Duration
	sequential, sequentialAfterApproval time.Duration
	rolloutAfterPropagation             time.Duration
}

// criticalPathBounds computes, from the profile (support asked at the start,
// gkewi's own work counted as nothing), the longest chain of steps that truly
// depend on each other:
//   - the binding needs the approval and the workload pool (IAM refuses
//     members of a pool that does not exist), and counts IAMPropagation later;
//   - the rollout needs the approval and every node pool on the GKE metadata
//     server (pods on other nodes would run as the nodes' identity);
//   - verified access needs the binding counted, the rollout and the API.
//
// Steps that changed nothing (workloadPool, enable false) take no time. The
// sequential bounds are the earlier order: API, workload pool and node pools,
// then support, then the grants (the rollout while the binding propagates).
func criticalPathBounds(p stack.LatencyProfile, workloadPool, enable bool, nodePools int) pathBounds {
	d := func(x gcpemu.Duration) time.Duration { return time.Duration(x) }
	var pool, api time.Duration
	if workloadPool {
		pool = d(p.ClusterUpdate)
	}
	if enable {
		api = d(p.ServiceEnable)
	}
	support := d(p.SupportAnswer)
	nodes := pool + time.Duration(nodePools)*d(p.NodePoolUpdate)
	counted := max(support, pool) + d(p.IAMPropagation)
	rolled := max(support, nodes) + d(p.Rollout)
	after := max(d(p.IAMPropagation), d(p.Rollout))
	return pathBounds{
		onboarding:              max(counted, rolled, api),
		support:                 support,
		sequential:              api + nodes + support + after,
		sequentialAfterApproval: after,
		rolloutAfterPropagation: max(counted, max(support, nodes)) + d(p.Rollout),
	}
}
