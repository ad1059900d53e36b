package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/fx"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/metrics"
	"github.com/gkewi/gkewi/worker/config"
)

// activityProviders builds one struct per activity group from the configuration.
func activityProviders() fx.Option {
	return fx.Provide(
		NewGCPClientOptions,
		NewGCPActivities,
		activities.NewKubeFor,
		NewHelmActivities,
		NewNotifier,
		NewVerifier,
		activities.NewSchedules,
		activities.NewGrants,
		NewAttestor,
		activities.NewApprovals,
		NewPolicyStore,
		activities.NewPolicies,
	)
}

// Activities are the activity structs the worker registers. Their method names are
// the activity names, unique across the structs.
type Activities struct {
	fx.In

	GCP      *activities.GCP
	Kube     *activities.Kube
	Helm     *activities.Helm
	Notifier *activities.Notifier
	Verifier *activities.Verifier
	// Schedules and Grants act on the Temporal service itself.
	Schedules *activities.Schedules
	Grants    *activities.Grants
	// Approvals checks the proofs of approvers' identities.
	Approvals *activities.Approvals
	// Policies decides requests against the grant policy.
	Policies *activities.Policies
}

// Register registers every method of every struct.
func (a Activities) Register(r worker.ActivityRegistry) {
	r.RegisterActivity(a.GCP)
	r.RegisterActivity(a.Kube)
	r.RegisterActivity(a.Helm)
	r.RegisterActivity(a.Notifier)
	r.RegisterActivity(a.Verifier)
	r.RegisterActivity(a.Schedules)
	r.RegisterActivity(a.Grants)
	r.RegisterActivity(a.Approvals)
	r.RegisterActivity(a.Policies)
}

// GCPClientOptions are added to every Google API client.
type GCPClientOptions []option.ClientOption

// NewGCPClientOptions uses Application Default Credentials unless a token file is
// configured for an emulator.
func NewGCPClientOptions(cfg config.Config, logger *slog.Logger) GCPClientOptions {
	if cfg.GCPAccessTokenFile == "" {
		return nil
	}
	logger.Warn("Google clients send the token from a file instead of Application Default Credentials (emulators only)",
		"file", cfg.GCPAccessTokenFile)
	return GCPClientOptions{option.WithTokenSource(fileTokenSource{path: cfg.GCPAccessTokenFile})}
}

// fileTokenSource re-reads the token at every call, so the file can be refreshed
// under a running worker.
type fileTokenSource struct{ path string }

func (f fileTokenSource) Token() (*oauth2.Token, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("access token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("access token file %s is empty", f.path)
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer"}, nil
}

// NewGCPActivities builds the Google API clients. Building them makes no call.
// With metrics on, the clients share one HTTP client that counts their calls.
func NewGCPActivities(cfg config.Config, opts GCPClientOptions, m *metrics.Metrics) (*activities.GCP, error) {
	gcfg := activities.GCPConfig{
		Endpoints:             activities.GCPEndpointsFromMap(cfg.GCPEndpoints),
		Options:               opts,
		OperationPollInterval: cfg.OperationPollInterval.D(),
	}
	if cfg.MetricsEnabled() {
		hc, err := instrumentedGoogleClient(cfg, m, opts)
		if err != nil {
			return nil, err
		}
		gcfg.Options = []option.ClientOption{hc}
		gcfg.OnPolicyWrite = m.ObservePolicyWrite
	}
	g, err := activities.NewGCP(context.Background(), gcfg)
	if err != nil {
		return nil, fmt.Errorf("google clients (set GOOGLE_APPLICATION_CREDENTIALS or run with Workload Identity): %w", err)
	}
	return g, nil
}

// NewHelmActivities installs charts into the cluster of rc.
func NewHelmActivities(cfg config.Config, clusters *activities.Clusters, logger *slog.Logger) *activities.Helm {
	return activities.NewHelm(activities.HelmConfig{
		Clusters:                clusters,
		ArtifactsDir:            cfg.Helm.ArtifactsDir,
		CacheDir:                cfg.Helm.CacheDir,
		Timeout:                 cfg.Helm.Timeout.D(),
		RegistryCredentialsFile: cfg.Helm.RegistryCredentialsFile,
		RegistryPlainHTTP:       cfg.Helm.RegistryPlainHTTP,
		InsecureSkipTLSVerify:   cfg.Helm.InsecureSkipTLSVerify,
		Logger:                  logger.With("component", "helm"),
	})
}

// NewNotifier sends support notifications; the namespace comes from the Temporal
// connection so the commands and links it writes point at the right place.
func NewNotifier(cfg config.Config, topts client.Options, links *activities.Attestor) *activities.Notifier {
	return activities.NewNotifier(activities.NotifierConfig{
		SMTP: activities.SMTPConfig{
			Addr:         cfg.SMTP.Addr,
			From:         cfg.SMTP.From,
			Username:     cfg.SMTP.Username,
			PasswordFile: cfg.SMTP.PasswordFile,
			StartTLS:     cfg.SMTP.StartTLS,
			CAFile:       cfg.SMTP.CAFile,
		},
		WebhookTimeout:    cfg.WebhookTimeout.D(),
		TemporalUIURL:     cfg.TemporalUIURL,
		TemporalNamespace: topts.Namespace,
		TaskQueue:         cfg.TaskQueue,
		ApprovalURL:       cfg.Approval.PublicURL,
		Links:             links,
	})
}

// NewVerifier walks the token chain against the cluster and the Google endpoints.
// It gets no Google credentials of the worker's: each link of the chain calls with
// the token the previous link produced.
func NewVerifier(cfg config.Config, clusters *activities.Clusters) *activities.Verifier {
	v := activities.NewVerifierFor(clusters, activities.GCPEndpointsFromMap(cfg.GCPEndpoints))
	return activities.VerifierPollingEvery(v, cfg.VerifyPollInterval.D())
}
