package metrics

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/workflows"
)

// GrantStates are the states gkewi_grants reports, each with the visibility
// query that counts it.
func GrantStates() map[string]string {
	onboard := "WorkflowType='" + workflows.OnboardWorkflowName + "'"
	revoke := "WorkflowType='" + workflows.RevokeWorkflowName + "'"
	state := func(s workflows.State) string { return "GkewiState='" + string(s) + "'" }
	return map[string]string{
		string(workflows.StateAwaitingApproval): onboard + " AND " + state(workflows.StateAwaitingApproval) + " AND ExecutionStatus='Running'",
		string(workflows.StateCompleted):        onboard + " AND " + state(workflows.StateCompleted),
		string(workflows.StateRevoked):          revoke + " AND " + state(workflows.StateRevoked),
		string(workflows.StateFailed):           onboard + " AND " + state(workflows.StateFailed),
	}
}

// grantsCollector reports the number of runs in each state from Temporal's
// visibility store: one count query per state, at most once per ttl, so
// scrapes cost the store little whatever their rate. Every replica reports the
// same numbers (aggregate with max, not sum).
type grantsCollector struct {
	count   func(ctx context.Context, query string) (int64, error)
	ttl     time.Duration
	timeout time.Duration
	desc    *prometheus.Desc
	errors  prometheus.Counter

	mu     sync.Mutex
	at     time.Time
	counts map[string]int64
}

// RegisterGrants adds gkewi_grants, counted through c, to the registry.
func (m *Metrics) RegisterGrants(c client.Client, ttl time.Duration) error {
	g := &grantsCollector{
		count: func(ctx context.Context, query string) (int64, error) {
			resp, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: query})
			if err != nil {
				return 0, err
			}
			return resp.GetCount(), nil
		},
		ttl:     ttl,
		timeout: 5 * time.Second,
		desc: prometheus.NewDesc(Grants,
			"gkewi runs by state, from Temporal visibility: Onboard runs awaiting approval (running), completed or failed, and Revoke runs that revoked; refreshed at most every 30s.",
			[]string{"state"}, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: GrantsRefreshErrors,
			Help: "Failed refreshes of gkewi_grants from Temporal visibility (the last values are kept).",
		}),
	}
	if err := m.registry.Register(g.errors); err != nil {
		return fmt.Errorf("register %s: %w", GrantsRefreshErrors, err)
	}
	if err := m.registry.Register(g); err != nil {
		return fmt.Errorf("register %s: %w", Grants, err)
	}
	return nil
}

func (g *grantsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *grantsCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range g.snapshot() {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// snapshot returns the counts, refreshing them when older than ttl. A failed
// refresh keeps the last counts (none before the first success).
func (g *grantsCollector) snapshot() map[string]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.at.IsZero() && time.Since(g.at) < g.ttl {
		return g.counts
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	counts := map[string]int64{}
	for state, query := range GrantStates() {
		n, err := g.count(ctx, query)
		if err != nil {
			g.errors.Inc()
			return g.counts
		}
		counts[state] = n
	}
	g.at, g.counts = time.Now(), counts
	return counts
}
