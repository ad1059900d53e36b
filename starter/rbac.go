package starter

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gkewi/gkewi/activities"
)

// defaultWorkerUser is the worker's identity as the shipped RBAC names it.
const defaultWorkerUser = "system:serviceaccount:gkewi-system:gkewi-worker"

type rbacOptions struct {
	file, user, cacheDir string
}

func (a *App) rbacCommand() *cobra.Command {
	var o rbacOptions
	cmd := newCommand("rbac -f request.yaml [--user "+defaultWorkerUser+"]",
		"Print the RBAC the worker needs to onboard a request's release",
		`Print the Role, ClusterRole and bindings that let the worker onboard the
request's release: the chart rendered locally as the worker will install it
(Helm's default capabilities, no cluster), every kind it renders with Helm's
verbs, and the worker's own needs. Apply with: kubectl apply -f -`,
		func(ctx context.Context) error { return a.rbac(ctx, o) })
	fileFlag(cmd, &o.file, "onboarding request, YAML or JSON (- for stdin)")
	cmd.Flags().StringVar(&o.user, "user", defaultWorkerUser, "the worker's Kubernetes user name, bound by the printed bindings")
	cmd.Flags().StringVar(&o.cacheDir, "cache-dir", "", "where downloaded charts are kept (default: the user cache)")
	_ = cmd.MarkFlagDirname("cache-dir")
	noFileFlag(cmd, "user")
	return cmd
}

// rbac prints the Role, ClusterRole and bindings that let the worker onboard the
// request's release: the chart rendered locally as the worker will install it,
// every kind it renders with Helm's verbs, and the worker's own needs.
func (a *App) rbac(ctx context.Context, o rbacOptions) error {
	req, err := a.loadOnboardRequest(o.file)
	if err != nil {
		return err
	}
	h := activities.NewHelm(activities.HelmConfig{CacheDir: o.cacheDir})
	res, err := h.RenderOffline(ctx, activities.RenderInput{Helm: req.HelmInput(req.GSAEmail()), KSA: req.KSA})
	if err != nil {
		return err
	}
	manifest, err := activities.AccessManifests(res.Access, req.Namespace, req.Helm.Release, activities.SubjectOf(o.user))
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "# What gkewi's worker (%s) needs to onboard release %s/%s\n", o.user, req.Namespace, req.Helm.Release)
	fmt.Fprintf(a.Stdout, "# %s. Rendered without a cluster (Helm's default capabilities).\n", res.Detail)
	fmt.Fprintf(a.Stdout, "# Apply with: kubectl apply -f -\n")
	fmt.Fprint(a.Stdout, manifest)
	return nil
}
