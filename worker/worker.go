// Package worker assembles the gkewi Temporal worker with fx: configuration, the
// Temporal client, the Kubernetes and Google clients, the activity structs and the
// worker itself, started and stopped as lifecycle hooks.
package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/metrics"
	"github.com/gkewi/gkewi/worker/config"
	"github.com/gkewi/gkewi/workflows"
)

// stopMargin is added to the worker's stop timeout for the hooks after it.
const stopMargin = 15 * time.Second

// Module is the whole worker for cfg. Logs go to out (os.Stderr in the binary).
func Module(cfg config.Config, out io.Writer) fx.Option {
	return fx.Options(
		fx.Supply(cfg),
		observability(cfg),
		fx.Provide(
			func() (*slog.Logger, error) { return NewLogger(cfg, out) },
			NewTemporalClientOptions,
			NewTemporalClient,
			NewClusters,
		),
		activityProviders(),
		fx.Provide(NewWorker),
		// Asking for the worker builds the whole graph.
		fx.Invoke(func(worker.Worker) {}),
		// After the worker's hook, so the sweep schedule appears once a worker polls.
		fx.Invoke(registerSweepSchedule),
		fx.Invoke(serveApprovals),
		fx.WithLogger(func(l *slog.Logger) fxevent.Logger {
			fl := &fxevent.SlogLogger{Logger: l.With("component", "fx")}
			fl.UseLogLevel(slog.LevelDebug) // graph wiring is noise for operators
			return fl
		}),
		fx.StartTimeout(time.Minute),
		fx.StopTimeout(cfg.StopTimeout.D()+stopMargin),
	)
}

// NewLogger is the worker's slog logger, text or JSON on out.
func NewLogger(cfg config.Config, out io.Writer) (*slog.Logger, error) {
	level, err := cfg.SlogLevel()
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return slog.New(slog.NewTextHandler(out, opts)), nil
}

// NewTemporalClientOptions reads the connection from the SDK's standard TEMPORAL_*
// environment variables and TOML profile, like the temporal CLI.
func NewTemporalClientOptions(logger *slog.Logger) (client.Options, error) {
	opts, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{})
	if err != nil {
		return client.Options{}, fmt.Errorf("temporal connection settings (TEMPORAL_* environment, TEMPORAL_PROFILE): %w", err)
	}
	if opts.HostPort == "" {
		opts.HostPort = client.DefaultHostPort
	}
	if opts.Namespace == "" {
		opts.Namespace = client.DefaultNamespace
	}
	opts.Logger = tlog.NewStructuredLogger(logger.With("component", "temporal"))
	if opts.Identity == "" {
		host, _ := os.Hostname()
		opts.Identity = fmt.Sprintf("gkewi-worker@%s/%d", host, os.Getpid())
	}
	return opts, nil
}

// NewTemporalClient makes a client that connects on first use, so the connection is
// made and checked in OnStart, where a failure stops the start with a clear error.
func NewTemporalClient(lc fx.Lifecycle, opts client.Options, logger *slog.Logger) (client.Client, error) {
	c, err := client.NewLazyClient(opts)
	if err != nil {
		return nil, fmt.Errorf("temporal client: %w", err)
	}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
				return fmt.Errorf("cannot reach Temporal at %s (set TEMPORAL_ADDRESS): %w", opts.HostPort, err)
			}
			logger.Info("connected to Temporal", "address", opts.HostPort, "namespace", opts.Namespace)
			warnMissingSearchAttributes(ctx, c, opts.Namespace, logger)
			return nil
		},
		OnStop: func(context.Context) error {
			c.Close()
			return nil
		},
	})
	return c, nil
}

// Params are what the worker needs.
type Params struct {
	fx.In

	Lifecycle  fx.Lifecycle
	Shutdowner fx.Shutdowner
	Client     client.Client
	Options    client.Options
	Config     config.Config
	Activities Activities
	Logger     *slog.Logger
	Metrics    *metrics.Metrics
	Health     *metrics.Health
}

// NewWorker registers the workflows and activities on the task queue. The worker
// polls from OnStart; OnStop stops polling and gives in-flight activities the
// configured stop timeout before their contexts are cancelled.
func NewWorker(p Params) worker.Worker {
	cfg := p.Config
	w := worker.New(p.Client, cfg.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize:     cfg.Concurrency.MaxConcurrentActivityExecutionSize,
		MaxConcurrentWorkflowTaskExecutionSize: cfg.Concurrency.MaxConcurrentWorkflowTaskExecutionSize,
		MaxConcurrentActivityTaskPollers:       cfg.Concurrency.MaxConcurrentActivityTaskPollers,
		MaxConcurrentWorkflowTaskPollers:       cfg.Concurrency.MaxConcurrentWorkflowTaskPollers,
		WorkerStopTimeout:                      cfg.StopTimeout.D(),
		Interceptors:                           workerInterceptors(cfg, p.Metrics),
		OnFatalError: func(err error) {
			p.Logger.Error("worker stopped on a fatal error; shutting down", "error", err)
			_ = p.Shutdowner.Shutdown(fx.ExitCode(1))
		},
	})
	workflows.Register(w)
	p.Activities.Register(w)
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(context.Context) error {
			if err := w.Start(); err != nil {
				return fmt.Errorf("start worker on task queue %q: %w", cfg.TaskQueue, err)
			}
			p.Health.SetPolling(true)
			p.Logger.Info("worker polling", "taskQueue", cfg.TaskQueue, "namespace", p.Options.Namespace,
				"maxConcurrentActivities", cfg.Concurrency.MaxConcurrentActivityExecutionSize)
			return nil
		},
		OnStop: func(context.Context) error {
			// Not ready from now on, so no new traffic is sent our way.
			p.Health.SetPolling(false)
			p.Logger.Info("worker stopping; waiting for in-flight activities", "stopTimeout", cfg.StopTimeout.D().String())
			w.Stop()
			p.Logger.Info("worker stopped")
			return nil
		},
	})
	return w
}

// workerInterceptors heartbeat every step (each has a short heartbeat timeout)
// and, with metrics on, time and count the steps.
func workerInterceptors(cfg config.Config, m *metrics.Metrics) []interceptor.WorkerInterceptor {
	list := []interceptor.WorkerInterceptor{activities.NewKeepAliveInterceptor()}
	if cfg.MetricsEnabled() {
		// First, so a step's time includes the keep-alive's work around it.
		list = append([]interceptor.WorkerInterceptor{m.ActivityInterceptor()}, list...)
	}
	return list
}

// warnMissingSearchAttributes names the gkewi search attributes the namespace
// lacks: without them every upsert fails the workflow task and the runs stall.
// It only warns, since a worker's credentials may not reach the operator API.
func warnMissingSearchAttributes(ctx context.Context, c client.Client, namespace string, logger *slog.Logger) {
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		logger.Warn("cannot list search attributes; make sure gkewi's are registered", "error", err)
		return
	}
	have := resp.GetCustomAttributes()
	types := workflows.SearchAttributeTypes()
	names := make([]string, 0, len(types))
	for name := range types {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if _, ok := have[name]; ok {
			continue
		}
		kind := strings.TrimPrefix(types[name].String(), "INDEXED_VALUE_TYPE_")
		kind = kind[:1] + strings.ToLower(kind[1:])
		logger.Warn("search attribute missing: workflows will stall until it is created",
			"name", name, "create", fmt.Sprintf("temporal operator search-attribute create --namespace %s --name %s --type %s", namespace, name, kind))
	}
}
