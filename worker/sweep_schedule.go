package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.uber.org/fx"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/worker/config"
	"github.com/gkewi/gkewi/workflows"
)

// sweepEnsureTimeout bounds the schedule call at start; a slow Temporal only
// delays the warning, not the worker.
const sweepEnsureTimeout = 15 * time.Second

// sweepScheduler creates the sweep schedule; *activities.Schedules does.
type sweepScheduler interface {
	EnsureSweepSchedule(ctx context.Context, in activities.RecurringScheduleInput) (activities.StepResult, error)
}

// registerSweepSchedule ensures the sweep schedule when the worker starts.
func registerSweepSchedule(lc fx.Lifecycle, cfg config.Config, s *activities.Schedules, logger *slog.Logger) {
	lc.Append(fx.Hook{OnStart: func(ctx context.Context) error {
		ensureSweepSchedule(ctx, s, cfg, logger)
		return nil
	}})
}

// ensureSweepSchedule creates the recurring schedule that runs Sweep on the
// worker's task queue, unless it exists (an operator's changes to it stay) or
// the sweep interval is 0. A failure is a warning: grants still end by their own
// revocation schedules, and the next worker start tries again.
func ensureSweepSchedule(ctx context.Context, s sweepScheduler, cfg config.Config, logger *slog.Logger) {
	every := cfg.SweepInterval.D()
	if every <= 0 {
		logger.Info("sweep schedule not managed (sweepInterval 0); an existing one keeps running",
			"schedule", workflows.SweepScheduleID, "delete", "temporal schedule delete --schedule-id "+workflows.SweepScheduleID)
		return
	}
	in := workflows.NewSweepSchedule(every)
	in.Action.TaskQueue = cfg.TaskQueue
	ctx, cancel := context.WithTimeout(ctx, sweepEnsureTimeout)
	defer cancel()
	res, err := s.EnsureSweepSchedule(ctx, in)
	if err != nil {
		logger.Warn("cannot ensure the sweep schedule: expired grants whose own revocation schedule is missing stay until it exists",
			"schedule", in.ScheduleID, "error", err,
			"create", fmt.Sprintf("temporal schedule create --schedule-id %s --interval %s --overlap-policy Skip --catchup-window %s --workflow-id %s --type %s --task-queue %s --input '{}'",
				in.ScheduleID, every, every, in.Action.WorkflowID, in.Action.WorkflowType, in.Action.TaskQueue))
		return
	}
	logger.Info("sweep schedule ensured", "detail", res.Detail, "created", res.Changed)
}
