package activities

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/temporal"
	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/registry"
	ri "helm.sh/helm/v4/pkg/release"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/contract"
)

// HelmConfig configures the Helm activities.
type HelmConfig struct {
	// Clusters reaches each request's cluster; when nil, RESTConfig is the only one.
	Clusters *Clusters
	// RESTConfig reaches the workload's cluster when Clusters is nil.
	RESTConfig *rest.Config
	// ArtifactsDir keeps, per release, the customizations.yaml an operator would
	// have written: ArtifactsDir/<namespace>/<release>/customizations.yaml. Empty
	// keeps nothing.
	ArtifactsDir string
	// CacheDir holds downloaded charts and repository indexes; default
	// $XDG_CACHE_HOME/gkewi/helm (or the OS equivalent).
	CacheDir string
	// Timeout bounds an install or upgrade, rollout wait included; default 5 minutes.
	// The activity's StartToClose timeout must be longer.
	Timeout time.Duration
	// HeartbeatInterval is how often a running install or upgrade heartbeats;
	// default 5 seconds.
	HeartbeatInterval time.Duration
	// RegistryPlainHTTP talks plain HTTP to OCI registries (local test registries).
	RegistryPlainHTTP bool
	// InsecureSkipTLSVerify skips certificate checks of chart repositories and
	// registries (test setups only).
	InsecureSkipTLSVerify bool
	// RegistryCredentialsFile is a Docker-style config.json with registry logins.
	RegistryCredentialsFile string
	// MaxHistory bounds the revisions Helm keeps per release; default 10.
	MaxHistory int
	// Logger receives Helm's own logs; nil discards them.
	Logger *slog.Logger
}

// Helm installs and upgrades releases with the Helm Go SDK.
type Helm struct {
	cfg HelmConfig
}

// NewHelm returns the Helm activities.
func NewHelm(cfg HelmConfig) *Helm {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.MaxHistory <= 0 {
		cfg.MaxHistory = 10
	}
	if cfg.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cfg.CacheDir = filepath.Join(base, "gkewi", "helm")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clusters == nil && cfg.RESTConfig != nil {
		cfg.Clusters = OneCluster(cfg.RESTConfig, nil)
	}
	return &Helm{cfg: cfg}
}

// Values gkewi sets on the chart, in the layout of the CARTO self-hosted chart.
const (
	// helmWIKey is the top-level values key of the backend service account.
	helmWIKey = "commonBackendServiceAccount"
	// The connection settings are environment variables of these components, in
	// their extraEnvVars lists ({name, value} entries).
	helmEnvListKey = "extraEnvVars"
	// The connection settings of newer charts: appConfigValues.workloadIdentityConnection.
	helmAppConfigKey  = "appConfigValues"
	helmConnectionKey = "workloadIdentityConnection"
)

// helmConnectionComponents read the WORKSPACE_WORKLOAD_IDENTITY_* variables.
var helmConnectionComponents = []string{"workspaceApi", "workspaceSubscriber"}

// HelmUpgradeInstall installs or upgrades the release with the Workload Identity
// values, waits for its rollout, and rolls a failed upgrade back (a failed first
// install is uninstalled). When the deployed release already has the same chart
// and values, nothing is changed and no revision is made.
func (h *Helm) HelmUpgradeInstall(ctx context.Context, in HelmInput) (HelmResult, error) {
	if err := validateHelmInput(in); err != nil {
		return HelmResult{}, err
	}
	conn, err := h.cfg.Clusters.conn(in.Cluster)
	if err != nil {
		return HelmResult{}, err
	}
	cfg, ch, values, err := h.chartAndValues(conn, in)
	if err != nil {
		return HelmResult{}, err
	}
	// Helm is not asked to create the namespace: that would need patch on
	// namespaces, where get and create suffice here.
	if _, err := ensureNamespace(ctx, conn.client, in.Namespace); err != nil {
		return HelmResult{}, err
	}
	lease := newReleaseLease(ctx, conn.client, in.Namespace, in.Release)
	leased, err := lease.acquire(ctx)
	if err != nil {
		return HelmResult{}, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		lease.release(rctx)
	}()
	if err := h.releaseInterrupted(cfg, in.Release, leased.previousExpired); err != nil {
		return HelmResult{}, err
	}
	history, err := action.NewHistory(cfg).Run(in.Release)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return HelmResult{}, classifyHelmError("helm: reading the history of release "+in.Release, err)
	}
	install := len(history) == 0 || allUninstalled(history)
	if !install {
		if rel, ok := deployedUnchanged(cfg, in.Release, ch, values); ok {
			return h.result(in, ch, values, rel, false)
		}
	}
	verb, run := h.releaseAction(cfg, in, ch, values, install, len(history) > 0)
	rel, err := h.runRelease(ctx, verb, in, ch, run, lease.renew)
	if err != nil {
		return HelmResult{}, err
	}
	// Kept once applied, so the file always matches a deployed revision.
	return h.result(in, ch, values, rel, true)
}

// deployedUnchanged is the deployed revision of the release when it already
// runs ch with values.
func deployedUnchanged(cfg *action.Configuration, name string, ch *chart.Chart, values map[string]any) (*release.Release, bool) {
	deployed, err := cfg.Releases.Deployed(name)
	if err != nil {
		return nil, false
	}
	rel, ok := deployed.(*release.Release)
	return rel, ok && helmReleaseMatches(rel, ch, values)
}

// releaseAction is the Helm install (also of a release uninstalled with its
// history kept) or upgrade that applies ch with values, and its verb.
func (h *Helm) releaseAction(cfg *action.Configuration, in HelmInput, ch *chart.Chart, values map[string]any,
	install, hasHistory bool,
) (string, func(context.Context) (ri.Releaser, error)) {
	if install {
		act := action.NewInstall(cfg)
		act.ReleaseName = in.Release
		act.Namespace = in.Namespace
		act.Timeout = h.cfg.Timeout
		act.WaitStrategy = kube.StatusWatcherStrategy
		act.RollbackOnFailure = true
		act.Replace = hasHistory
		return "install", func(ctx context.Context) (ri.Releaser, error) { return act.RunWithContext(ctx, ch, values) }
	}
	act := action.NewUpgrade(cfg)
	act.Namespace = in.Namespace
	act.Timeout = h.cfg.Timeout
	act.WaitStrategy = kube.StatusWatcherStrategy
	act.RollbackOnFailure = true
	act.MaxHistory = h.cfg.MaxHistory
	return "upgrade", func(ctx context.Context) (ri.Releaser, error) { return act.RunWithContext(ctx, in.Release, ch, values) }
}

// runRelease runs the install or upgrade, heartbeating and renewing the lease
// while Helm waits for the rollout.
func (h *Helm) runRelease(ctx context.Context, verb string, in HelmInput, ch *chart.Chart,
	run func(context.Context) (ri.Releaser, error), renew func(context.Context),
) (*release.Release, error) {
	out, err := h.runWithHeartbeat(ctx, verb+" "+in.Namespace+"/"+in.Release, run, renew)
	if err != nil && ctx.Err() != nil {
		// Cancelled or timed out by Temporal: Helm carries on in the background and
		// a retry finds the release busy or done.
		return nil, fmt.Errorf("helm %s of release %s/%s interrupted: %w", verb, in.Namespace, in.Release, ctx.Err())
	}
	if err != nil {
		return nil, classifyHelmError(fmt.Sprintf("helm %s of release %s/%s (chart %s %s)",
			verb, in.Namespace, in.Release, ch.Metadata.Name, ch.Metadata.Version), err)
	}
	rel, ok := out.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("helm %s: unexpected release type %T", verb, out)
	}
	return rel, nil
}

// result reports rel, with the values file kept for it.
func (h *Helm) result(in HelmInput, ch *chart.Chart, values map[string]any, rel *release.Release, changed bool) (HelmResult, error) {
	valuesFile, err := h.keepValues(in, ch, values)
	if err != nil {
		return HelmResult{}, err
	}
	return HelmResult{
		Revision:   rel.Version,
		Status:     rel.Info.Status.String(),
		Changed:    changed,
		ValuesFile: valuesFile,
	}, nil
}

// chartAndValues prepares Helm for the release's namespace, loads the chart and
// layers the values gkewi installs over it.
func (h *Helm) chartAndValues(conn *clusterConn, in HelmInput) (*action.Configuration, *chart.Chart, map[string]any, error) {
	cfg, settings, err := h.actionConfig(conn, in.Namespace)
	if err != nil {
		return nil, nil, nil, err
	}
	ch, err := h.loadChart(cfg, settings, in)
	if err != nil {
		return nil, nil, nil, err
	}
	values, err := HelmValues(in, ch.Values)
	if err != nil {
		return nil, nil, nil, kubeInvalidInput("helm: values: %v", err)
	}
	return cfg, ch, values, nil
}

func validateHelmInput(in HelmInput) error {
	if in.Namespace == "" || in.Release == "" || in.Chart == "" {
		return kubeInvalidInput("helm: namespace, release and chart are required")
	}
	if errs := validation.IsDNS1123Label(in.Namespace); len(errs) > 0 {
		return kubeInvalidInput("helm: namespace %q: %v", in.Namespace, errs)
	}
	if err := chartutil.ValidateReleaseName(in.Release); err != nil {
		return kubeInvalidInput("helm: release name %q: %v", in.Release, err)
	}
	return nil
}

// actionConfig prepares Helm for one operation in a namespace, releases stored
// as Secrets there (Helm's default).
func (h *Helm) actionConfig(conn *clusterConn, namespace string) (*action.Configuration, *cli.EnvSettings, error) {
	getter := newHelmRESTGetter(conn, namespace)
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(h.cfg.Logger.Handler()))
	if err := cfg.Init(getter, namespace, "secret"); err != nil {
		return nil, nil, kubeInvalidInput("helm: initialising: %v", err)
	}
	settings, err := h.settings(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, settings, nil
}

// settings point Helm's caches at the worker's and give cfg a registry client.
func (h *Helm) settings(cfg *action.Configuration) (*cli.EnvSettings, error) {
	settings := cli.New()
	settings.RepositoryConfig = filepath.Join(h.cfg.CacheDir, "repositories.yaml")
	settings.RepositoryCache = filepath.Join(h.cfg.CacheDir, "repository")
	settings.ContentCache = filepath.Join(h.cfg.CacheDir, "content")
	settings.RegistryConfig = h.cfg.RegistryCredentialsFile
	if settings.RegistryConfig == "" {
		settings.RegistryConfig = filepath.Join(h.cfg.CacheDir, "registry", "config.json")
	}

	opts := []registry.ClientOption{
		registry.ClientOptWriter(io.Discard),
		registry.ClientOptCredentialsFile(settings.RegistryConfig),
	}
	if h.cfg.RegistryPlainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	if h.cfg.InsecureSkipTLSVerify {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in for test registries
		opts = append(opts, registry.ClientOptHTTPClient(&http.Client{Transport: transport}))
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return nil, kubeInvalidInput("helm: registry client: %v", err)
	}
	cfg.RegistryClient = rc
	return settings, nil
}

// loadChart finds the chart (local path, repository, or OCI reference) and loads it.
func (h *Helm) loadChart(cfg *action.Configuration, settings *cli.EnvSettings, in HelmInput) (*chart.Chart, error) {
	locator := action.NewInstall(cfg) // carries the registry client for oci:// references
	locator.RepoURL = in.RepoURL
	locator.Version = in.Version
	locator.PlainHTTP = h.cfg.RegistryPlainHTTP
	locator.InsecureSkipTLSVerify = h.cfg.InsecureSkipTLSVerify
	path, err := locator.LocateChart(in.Chart, settings)
	if err != nil {
		return nil, classifyHelmChartError(in, err)
	}
	ch, err := loader.Load(path)
	if err != nil {
		return nil, classifyHelmChartError(in, fmt.Errorf("loading %s: %w", path, err))
	}
	if ch.Metadata == nil {
		return nil, classifyHelmChartError(in, errors.New("chart has no metadata"))
	}
	return ch, nil
}

// runWithHeartbeat runs a Helm operation, heartbeating while it works.
func (h *Helm) runWithHeartbeat(ctx context.Context, what string, run func(context.Context) (ri.Releaser, error), renew func(context.Context)) (ri.Releaser, error) {
	type outcome struct {
		rel ri.Releaser
		err error
	}
	done := make(chan outcome, 1)
	started := time.Now()
	go func() {
		rel, err := run(ctx)
		done <- outcome{rel, err}
	}()
	tick := time.NewTicker(h.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case o := <-done:
			return o.rel, o.err
		case <-ctx.Done():
			// Helm's own actions return on cancellation too; do not wait for one
			// that does not.
			return nil, ctx.Err()
		case <-tick.C:
			heartbeat(ctx, fmt.Sprintf("helm %s: running for %s", what, time.Since(started).Round(time.Second)))
			renew(ctx)
		}
	}
}

// keepValues writes the customizations.yaml of the release and returns its path.
func (h *Helm) keepValues(in HelmInput, ch *chart.Chart, values map[string]any) (string, error) {
	if h.cfg.ArtifactsDir == "" {
		return "", nil
	}
	body, err := yaml.Marshal(values)
	if err != nil {
		return "", kubeInvalidInput("helm: values cannot be written as YAML: %v", err)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Values of Helm release %q in namespace %q (chart %s %s), over the chart's defaults.\n",
		in.Release, in.Namespace, ch.Metadata.Name, ch.Metadata.Version)
	fmt.Fprintf(&buf, "# Equivalent command: helm upgrade --install %s %s --namespace %s -f customizations.yaml", in.Release, in.Chart, in.Namespace)
	if in.RepoURL != "" {
		fmt.Fprintf(&buf, " --repo %s", in.RepoURL)
	}
	fmt.Fprintf(&buf, " --version %s\n", ch.Metadata.Version)
	buf.Write(body)

	dir := filepath.Join(h.cfg.ArtifactsDir, in.Namespace, in.Release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("helm: keeping values: %w", err)
	}
	path := filepath.Join(dir, "customizations.yaml")
	tmp, err := os.CreateTemp(dir, ".customizations-*.yaml")
	if err != nil {
		return "", fmt.Errorf("helm: keeping values: %w", err)
	}
	// On failure the temporary file is removed as far as possible; the write
	// or close error is the one reported.
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("helm: keeping values: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("helm: keeping values: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("helm: keeping values: %w", err)
	}
	return path, nil
}

// releaseInterrupted marks failed a revision left pending by an operation that
// cannot still be running: a worker that died mid-install leaves the release
// pending, and Helm refuses every later operation on it. abandoned says an
// earlier gkewi operation's lease expired: its pending revision is taken over at
// once. Otherwise (someone else's helm) a pending revision younger than twice
// the Helm timeout may belong to a live operation and is reported as busy.
func (h *Helm) releaseInterrupted(cfg *action.Configuration, name string, abandoned bool) error {
	last, err := cfg.Releases.Last(name)
	if err != nil {
		return nil // no release yet, or unreadable: the history read reports it
	}
	rel, ok := last.(*release.Release)
	if !ok || rel.Info == nil || !rel.Info.Status.IsPending() {
		return nil
	}
	age := time.Since(rel.Info.LastDeployed)
	if !abandoned && age < 2*h.cfg.Timeout {
		return temporal.NewApplicationError(
			fmt.Sprintf("helm: release %s revision %d is %s since %s ago; waiting for that operation to end", name, rel.Version, rel.Info.Status, age.Round(time.Second)),
			contract.ErrTypeHelmBusy)
	}
	was := rel.Info.Status
	rel.Info.Status = rcommon.StatusFailed
	rel.Info.Description = fmt.Sprintf("marked failed by gkewi: left %s by an interrupted operation", was)
	if abandoned {
		rel.Info.Description += " (its gkewi lease expired)"
	}
	if err := cfg.Releases.Update(rel); err != nil {
		return classifyHelmError("helm: marking interrupted revision failed", err)
	}
	return nil
}

func allUninstalled(history []ri.Releaser) bool {
	for _, r := range history {
		rel, ok := r.(*release.Release)
		if !ok || rel.Info == nil || rel.Info.Status != rcommon.StatusUninstalled {
			return false
		}
	}
	return true
}
