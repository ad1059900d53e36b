package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"go.temporal.io/sdk/client"
	"go.uber.org/fx"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/metrics"
	"github.com/gkewi/gkewi/worker/config"
)

// grantsRefresh bounds how often gkewi_grants asks Temporal's visibility.
const grantsRefresh = 30 * time.Second

// cloudPlatformScope is the OAuth scope every Google API gkewi calls accepts.
const cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// observability serves the probes and the metrics. Its hook is appended before
// any other, so /healthz answers while the worker connects and until the
// worker stopped; /readyz turns ready once the worker polls.
func observability(cfg config.Config) fx.Option {
	return fx.Options(
		fx.Provide(metrics.New, metrics.NewHealth),
		fx.Invoke(serveHTTP),
		fx.Decorate(withMetricsHandler),
		fx.Invoke(addReadinessChecks),
	)
}

// serveHTTP binds cfg.HTTPAddr at start and stops serving last.
func serveHTTP(lc fx.Lifecycle, cfg config.Config, m *metrics.Metrics, h *metrics.Health, logger *slog.Logger) {
	if cfg.HTTPAddr == "" {
		return
	}
	var handler http.Handler
	if cfg.MetricsEnabled() {
		handler = m.Handler()
	}
	var srv *metrics.Server
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			var err error
			if srv, err = metrics.Listen(cfg.HTTPAddr, h.Mux(handler)); err != nil {
				return fmt.Errorf("%w (set --http-addr, GKEWI_HTTP_ADDR)", err)
			}
			srv.Serve(func(err error) { logger.Error("metrics and probes endpoint stopped", "error", err) })
			logger.Info("serving probes", "address", srv.Addr(), "metrics", cfg.MetricsEnabled())
			return nil
		},
		OnStop: func(ctx context.Context) error {
			return srv.Shutdown(ctx)
		},
	})
}

// withMetricsHandler gives the Temporal client (and so the worker) the handler
// that feeds the registry.
func withMetricsHandler(lc fx.Lifecycle, cfg config.Config, opts client.Options, m *metrics.Metrics, logger *slog.Logger) client.Options {
	if !cfg.MetricsEnabled() {
		return opts
	}
	handler, closer := m.TemporalHandler(func(err error) {
		logger.Warn("a Temporal SDK metric could not be registered", "error", err)
	})
	opts.MetricsHandler = handler
	lc.Append(fx.Hook{OnStop: func(context.Context) error { return closer.Close() }})
	return opts
}

// addReadinessChecks makes /readyz ask Temporal, and counts grants by state
// from visibility for /metrics.
func addReadinessChecks(cfg config.Config, c client.Client, h *metrics.Health, m *metrics.Metrics, _ *activities.Clusters, _ *activities.GCP) error {
	h.AddCheck("temporal", func(ctx context.Context) error {
		_, err := c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	})
	// Built, or the worker would not have started: configuration errors stop it.
	h.AddCheck("kubernetes", func(context.Context) error { return nil })
	h.AddCheck("google", func(context.Context) error { return nil })
	if !cfg.MetricsEnabled() {
		return nil
	}
	return m.RegisterGrants(c, grantsRefresh)
}

// instrumentedGoogleClient is an authenticated HTTP client for the Google APIs
// (credentials from opts, else Application Default Credentials) whose calls are
// counted by API, method and code.
func instrumentedGoogleClient(cfg config.Config, m *metrics.Metrics, opts GCPClientOptions) (option.ClientOption, error) {
	authed, err := htransport.NewTransport(context.Background(), http.DefaultTransport,
		append([]option.ClientOption{option.WithScopes(cloudPlatformScope)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("google credentials (set GOOGLE_APPLICATION_CREDENTIALS or run with Workload Identity): %w", err)
	}
	return option.WithHTTPClient(&http.Client{Transport: m.Transport(cfg.GCPEndpoints, authed)}), nil
}
