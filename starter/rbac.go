package starter

import (
	"context"
	"fmt"

	"github.com/gkewi/gkewi/activities"
)

// defaultWorkerUser is the worker's identity as the shipped RBAC names it.
const defaultWorkerUser = "system:serviceaccount:gkewi-system:gkewi-worker"

// rbac prints the Role, ClusterRole and bindings that let the worker onboard the
// request's release: the chart rendered locally as the worker will install it,
// every kind it renders with Helm's verbs, and the worker's own needs.
func (a *App) rbac(ctx context.Context, args []string) error {
	fs := a.flagSet("rbac", "-f request.yaml [--user "+defaultWorkerUser+"]")
	var file, user, cacheDir string
	fs.StringVar(&file, "f", "", "onboarding request, YAML or JSON (- for stdin)")
	fs.StringVar(&file, "file", "", "same as -f")
	fs.StringVar(&user, "user", defaultWorkerUser, "the worker's Kubernetes user name, bound by the printed bindings")
	fs.StringVar(&cacheDir, "cache-dir", "", "where downloaded charts are kept (default: the user cache)")
	if err := parse(fs, args); err != nil {
		return err
	}
	req, err := a.loadOnboardRequest(file)
	if err != nil {
		return err
	}
	h := activities.NewHelm(activities.HelmConfig{CacheDir: cacheDir})
	res, err := h.RenderOffline(ctx, activities.RenderInput{Helm: req.HelmInput(req.GSAEmail()), KSA: req.KSA})
	if err != nil {
		return err
	}
	manifest, err := activities.AccessManifests(res.Access, req.Namespace, req.Helm.Release, activities.SubjectOf(user))
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "# What gkewi's worker (%s) needs to onboard release %s/%s\n", user, req.Namespace, req.Helm.Release)
	fmt.Fprintf(a.Stdout, "# %s. Rendered without a cluster (Helm's default capabilities).\n", res.Detail)
	fmt.Fprintf(a.Stdout, "# Apply with: kubectl apply -f -\n")
	fmt.Fprint(a.Stdout, manifest)
	return nil
}
