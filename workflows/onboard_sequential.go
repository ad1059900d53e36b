package workflows

import "go.temporal.io/sdk/workflow"

// Runs started before changeCriticalPath keep the earlier order: every step
// before the approval one after another, support asked last.

// prepare runs the steps before the approval in the order before
// changeCriticalPath: cluster work first, then the GSA. They make nothing
// reachable by the workload yet.
func (o *onboarding) prepare(ctx workflow.Context) error {
	if o.rendered {
		if err := o.render(ctx); err != nil {
			return err
		}
	}
	if err := o.checks(ctx); err != nil {
		return err
	}
	if err := o.enableService(ctx); err != nil {
		return err
	}
	if err := o.workloadPool(ctx); err != nil {
		return err
	}
	if err := o.nodePools(ctx); err != nil {
		return err
	}
	return o.serviceAccount(ctx)
}
