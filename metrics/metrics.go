// Package metrics serves the gkewi worker's Prometheus metrics and health
// probes: the Temporal SDK's own metrics (through tally's Prometheus reporter)
// and gkewi's (grants by state, approval waits, steps, verifications, Google API
// calls, IAM write coalescing), all on one registry.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Names of gkewi's metrics, as scraped.
const (
	StepDuration        = "gkewi_step_duration_seconds"
	StepFailures        = "gkewi_step_failures_total"
	Verifications       = "gkewi_verifications_total"
	APIRequests         = "gkewi_google_api_requests_total"
	APIErrors           = "gkewi_google_api_errors_total"
	APIRequestDuration  = "gkewi_google_api_request_duration_seconds"
	PolicyWriteChanges  = "gkewi_iam_policy_write_changes"
	GrantTransitions    = "gkewi_grant_state_transitions_total"
	ApprovalWait        = "gkewi_approval_wait_seconds"
	Grants              = "gkewi_grants"
	GrantsRefreshErrors = "gkewi_grants_refresh_errors_total"
)

// Metrics are gkewi's collectors and the registry that serves them with the
// Temporal SDK's.
type Metrics struct {
	registry *prometheus.Registry

	stepDuration       *prometheus.HistogramVec
	stepFailures       *prometheus.CounterVec
	verifications      *prometheus.CounterVec
	apiRequests        *prometheus.CounterVec
	apiErrors          *prometheus.CounterVec
	apiDuration        *prometheus.HistogramVec
	policyWriteChanges prometheus.Histogram
	grantTransitions   *prometheus.CounterVec
	approvalWait       *prometheus.HistogramVec
}

// New registers gkewi's collectors, with the Go runtime's and the process's, on
// a registry of their own.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: StepDuration,
			Help: "Duration of one attempt of a step (activity), by step and outcome (success or failure).",
			// Steps range from a read of a few ms to cluster operations and Helm
			// rollouts of many minutes.
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}, []string{"step", "outcome"}),
		stepFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: StepFailures,
			Help: "Failed attempts of a step (activity), by step and error type (the application error type, e.g. PermissionDenied).",
		}, []string{"step", "error_type"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: Verifications,
			Help: "Walks of the token chain, by outcome (allowed, denied, error) and the stage that refused (none when allowed).",
		}, []string{"outcome", "stage"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: APIRequests,
			Help: "Google API calls by API, method (e.g. iam.projects.serviceAccounts.setIamPolicy) and HTTP status code.",
		}, []string{"api", "method", "code"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: APIErrors,
			Help: "Google API calls that failed (HTTP 4xx/5xx, or code \"transport\" when no answer came), by API, method and code.",
		}, []string{"api", "method", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    APIRequestDuration,
			Help:    "Latency of Google API calls by API and method.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"api", "method"}),
		policyWriteChanges: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    PolicyWriteChanges,
			Help:    "Changes (binding additions or removals by concurrent steps) coalesced into one setIamPolicy.",
			Buckets: []float64{1, 2, 3, 4, 6, 8, 16, 32},
		}),
		grantTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: GrantTransitions,
			Help: "State changes of Onboard and Revoke runs, by workflow type and the state entered (not counted on replay).",
		}, []string{"workflow_type", "state"}),
		approvalWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: ApprovalWait,
			Help: "Time from the support notification to the decision, by decision (approved, rejected, timed-out).",
			Buckets: []float64{60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
				2 * 24 * 3600, 4 * 24 * 3600, 7 * 24 * 3600},
		}, []string{"decision"}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.stepDuration, m.stepFailures, m.verifications,
		m.apiRequests, m.apiErrors, m.apiDuration,
		m.policyWriteChanges, m.grantTransitions, m.approvalWait,
	)
	return m
}

// Registry is where every metric of the worker is registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// ObservePolicyWrite records one setIamPolicy carrying changes changes.
func (m *Metrics) ObservePolicyWrite(changes int) {
	m.policyWriteChanges.Observe(float64(changes))
}
