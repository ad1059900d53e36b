package workflows

import (
	"cmp"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// On real Google Cloud an onboarding's time is GKE operations (minutes per
// node pool), support's answer (hours) and IAM propagation (minutes), not
// gkewi's own work. Since changeCriticalPath, Onboard asks support as soon as
// the request allows (the request names the GSA, so the GSA comes first) and
// runs the cluster work while support decides:
//
//	checks -> GSA -> token creator -> approval request -> approval --+-> bind -> annotate | BigQuery ---+-> verify
//	                                 \-> workload pool ---------------+                                  |
//	                                                  \-> node pools ----------------------> Helm -------+
//	                                 \-> enable API ------------------------------------------------------+
//
// The binding waits for the approval and the workload pool; the rollout also
// for the node pools (pods must start on nodes with the GKE metadata server,
// or they would run as the nodes' identity); verification for everything.

// askEarly runs the steps before the grant with support asked early. A
// rejection, a timeout, a cancellation or a failure of the cluster work (at
// once, while support still decides) ends the run with what this run created
// undone and support told; the cluster settings stay, as other workloads may
// rely on them.
func (o *onboarding) askEarly(ctx workflow.Context) (State, error) {
	before := func(err error) (State, error) {
		if temporal.IsCanceledError(err) {
			return o.endBeforeGrant(ctx, StateCanceled, err)
		}
		return o.endBeforeGrant(ctx, StateFailed, err)
	}
	if o.rendered {
		if err := o.render(ctx); err != nil {
			return StateFailed, err
		}
	}
	if err := o.checks(ctx); err != nil {
		return before(err)
	}
	if err := o.serviceAccount(ctx); err != nil {
		return before(err)
	}
	clusterCtx, stopClusterWork := workflow.WithCancel(ctx)
	o.clusterFailed = workflow.NewBufferedChannel(ctx, 1)
	poolReady, poolSettled := workflow.NewFuture(ctx)
	o.clusterWork = goFuture(clusterCtx, func(ctx workflow.Context) error {
		err := together(ctx, true, o.enableService, func(ctx workflow.Context) error {
			err := o.workloadPool(ctx)
			poolSettled.Set(nil, err)
			if err != nil {
				return err
			}
			return o.nodePools(ctx)
		})
		if err != nil && !temporal.IsCanceledError(err) {
			o.clusterFailed.SendAsync(true)
		}
		return err
	})
	if state, err := o.approval(ctx); err != nil {
		// The wait ended without a grant: the cluster work has no use now.
		stopClusterWork()
		_ = o.t.wait(ctx, o.clusterWork, nil)
		return state, err
	}
	// The binding needs the workload pool (IAM refuses members of a pool that
	// does not exist); the node pools are waited for by the rollout.
	if err := o.t.wait(ctx, poolReady, nil); err != nil {
		if temporal.IsCanceledError(err) && ctx.Err() == nil {
			// Canceled by a failure beside it (the API): report that one.
			err = o.t.wait(ctx, o.clusterWork, nil)
		}
		return before(err)
	}
	return "", nil
}

// goFuture runs fn in a workflow goroutine and returns the future of its error.
func goFuture(ctx workflow.Context, fn func(workflow.Context) error) workflow.Future {
	f, settle := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(ctx workflow.Context) { settle.Set(nil, fn(ctx)) })
	return f
}

// together runs steps side by side and returns the first error in the order
// given, after all have ended. With failFast, the first failure cancels the
// others (waits on GKE operations, which go on at Google and are picked up by
// the next run); without it they run to their end (a Helm install is not cut
// halfway).
func together(ctx workflow.Context, failFast bool, steps ...func(workflow.Context) error) error {
	stepsCtx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(steps))
	// Buffered so a step's goroutine never blocks on reporting its end.
	ended := workflow.NewBufferedChannel(ctx, len(steps))
	for i, step := range steps {
		workflow.Go(stepsCtx, func(stepCtx workflow.Context) {
			errs[i] = step(stepCtx)
			ended.SendAsync(i)
		})
	}
	for range steps {
		var i int
		ended.Receive(ctx, &i)
		if failFast && errs[i] != nil && !temporal.IsCanceledError(errs[i]) {
			cancel()
		}
	}
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case temporal.IsCanceledError(err):
			canceled = cmp.Or(canceled, err)
		default:
			return err
		}
	}
	return canceled
}
