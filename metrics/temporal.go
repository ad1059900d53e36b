package metrics

import (
	"io"
	"maps"
	"time"

	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"

	"github.com/gkewi/gkewi/workflows"
)

// sdkReportInterval is how often tally hands the SDK's metrics to the
// Prometheus reporter; gkewi's own metrics are immediate.
const sdkReportInterval = time.Second

// sdkTimerBuckets are the histogram buckets of the SDK's latencies (task
// schedule-to-start, execution, long polls), in seconds.
var sdkTimerBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// TemporalHandler is the metrics handler for the Temporal client and worker:
// the SDK's metrics go through tally into the registry with Prometheus names
// (temporal_workflow_task_execution_latency_seconds, temporal_request_total, ...),
// while gkewi's, emitted by workflows through workflow.GetMetricsHandler (which
// drops them on replay), land in gkewi's collectors. onError reports metrics
// the reporter could not register. Close the returned closer to flush on stop.
func (m *Metrics) TemporalHandler(onError func(error)) (client.MetricsHandler, io.Closer) {
	reporter := tallyprom.NewReporter(tallyprom.Options{
		Registerer:              m.registry,
		Gatherer:                m.registry,
		DefaultTimerType:        tallyprom.HistogramTimerType,
		DefaultHistogramBuckets: sdkTimerBuckets,
		OnRegisterError:         onError,
	})
	scope, closer := tally.NewRootScope(tally.ScopeOptions{
		CachedReporter:  reporter,
		Separator:       tallyprom.DefaultSeparator,
		SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
	}, sdkReportInterval)
	scope = sdktally.NewPrometheusNamingScope(scope)
	return &routingHandler{next: sdktally.NewMetricsHandler(scope), m: m}, closer
}

// routingHandler sends gkewi's workflow metrics to gkewi's collectors and every
// other metric to next.
type routingHandler struct {
	next client.MetricsHandler
	m    *Metrics
	tags map[string]string
}

func (h *routingHandler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(h.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return &routingHandler{next: h.next.WithTags(tags), m: h.m, tags: merged}
}

func (h *routingHandler) Counter(name string) client.MetricsCounter {
	if name == workflows.MetricStateTransitions {
		c := h.m.grantTransitions.WithLabelValues(h.tag("workflow_type"), h.tag("state"))
		return counterFunc(func(n int64) { c.Add(float64(n)) })
	}
	return h.next.Counter(name)
}

func (h *routingHandler) Gauge(name string) client.MetricsGauge { return h.next.Gauge(name) }

func (h *routingHandler) Timer(name string) client.MetricsTimer {
	if name == workflows.MetricApprovalWait {
		o := h.m.approvalWait.WithLabelValues(h.tag("decision"))
		return timerFunc(func(d time.Duration) { o.Observe(d.Seconds()) })
	}
	return h.next.Timer(name)
}

func (h *routingHandler) tag(name string) string {
	if v, ok := h.tags[name]; ok && v != "" {
		return v
	}
	return "unknown"
}

type counterFunc func(int64)

func (f counterFunc) Inc(n int64) { f(n) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }
