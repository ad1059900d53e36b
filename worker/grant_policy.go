package worker

import (
	"context"
	"log/slog"

	"go.uber.org/fx"

	"github.com/gkewi/gkewi/policy"
	"github.com/gkewi/gkewi/worker/config"
)

// NewPolicyStore loads the grant policy and watches its file. A policy that
// does not load stops the start; without a file the worker runs, refusing every
// new grant (runs started before the policy keep their rules).
func NewPolicyStore(lc fx.Lifecycle, cfg config.Config, logger *slog.Logger) (*policy.Store, error) {
	if cfg.Policy.File == "" {
		logger.Warn("no grant policy (--policy-file): new onboardings are refused before any change, " +
			"since who approves and how must come from the operator, not the request")
		return nil, nil
	}
	store, err := policy.Open(cfg.Policy.File)
	if err != nil {
		return nil, err
	}
	logger.Info("grant policy loaded", "file", store.Path(), "digest", store.Current().Digest(), "rules", len(store.Current().Rules))
	ctx, stop := context.WithCancel(context.Background())
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go store.Watch(ctx, cfg.Policy.ReloadInterval.D(), logger.With("component", "policy"))
			return nil
		},
		OnStop: func(context.Context) error { stop(); return nil },
	})
	return store, nil
}
