// Package config loads the gkewi worker's settings from, in increasing precedence,
// built-in defaults, an optional YAML file (--config or GKEWI_CONFIG), GKEWI_*
// environment variables and command-line flags.
//
// The Temporal connection is not configured here: the worker reads the SDK's
// standard TEMPORAL_* variables and TOML profiles (TEMPORAL_ADDRESS,
// TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE,
// TEMPORAL_CONFIG_FILE), like the temporal CLI does.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

// Config is the worker's configuration. Its JSON names are the YAML file's keys.
// It holds paths to secrets, never secrets.
type Config struct {
	// TaskQueue is the Temporal task queue the worker polls.
	TaskQueue string `json:"taskQueue,omitempty"`
	// Kubeconfig is the workload cluster's kubeconfig; empty means in-cluster.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// KubeContext picks a context of Kubeconfig; empty means its current context.
	KubeContext string `json:"kubeContext,omitempty"`
	// GCPEndpoints overrides Google API base URLs by API name (serviceusage,
	// container, iam, cloudresourcemanager, bigquery, sts, iamcredentials); a
	// missing entry means the real Google endpoint.
	GCPEndpoints map[string]string `json:"gcpEndpoints,omitempty"`
	// GCPAccessTokenFile makes the Google clients send the bearer token in this file
	// (re-read at every call) instead of Application Default Credentials: for
	// emulators only.
	GCPAccessTokenFile string `json:"gcpAccessTokenFile,omitempty"`
	// OperationPollInterval is how often long-running Google operations are polled.
	OperationPollInterval Duration `json:"operationPollInterval,omitempty"`
	// VerifyPollInterval is how often verification walks the token chain again
	// while a new binding propagates (about 2 minutes on Google Cloud).
	VerifyPollInterval Duration `json:"verifyPollInterval,omitempty"`
	// Helm configures chart installs.
	Helm Helm `json:"helm"`
	// SMTP is the mail relay for email notifications.
	SMTP SMTP `json:"smtp"`
	// Approval is the endpoint where approvers prove who they are.
	Approval Approval `json:"approval"`
	// Policy is the grant policy: who approves which grants, with what proof,
	// for how long. Without one the worker makes no new grant.
	Policy Policy `json:"policy"`
	// WebhookTimeout bounds each webhook notification.
	WebhookTimeout Duration `json:"webhookTimeout,omitempty"`
	// TemporalUIURL is linked from notifications, e.g. "http://localhost:8233".
	TemporalUIURL string `json:"temporalUIURL,omitempty"`
	// Concurrency limits the worker's slots and pollers; zero keeps the SDK default.
	Concurrency Concurrency `json:"concurrency"`
	// SweepInterval is how often the sweep schedule (gkewi-sweep) revokes expired
	// grants that nothing revoked; the worker creates the schedule at start when
	// it is missing. 0 leaves the schedule alone (none is created).
	SweepInterval Duration `json:"sweepInterval,omitempty"`
	// StopTimeout is how long in-flight activities get to finish on shutdown.
	StopTimeout Duration `json:"stopTimeout,omitempty"`
	// HTTPAddr is where /healthz, /readyz and /metrics are served (host:port);
	// empty serves nothing (and the chart's probes need it).
	HTTPAddr string `json:"httpAddr,omitempty"`
	// Metrics serves /metrics and collects the Temporal SDK's and gkewi's metrics.
	Metrics *bool `json:"metrics,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is text or json.
	LogFormat string `json:"logFormat,omitempty"`
}

// Approval configures the approval endpoint: it verifies an approver's ID
// token and hands the workflow the decision with the worker's attestation of
// the token's claims, which the workflow has a worker check before it counts.
type Approval struct {
	// Addr is where the endpoint listens (POST /v1/decisions); empty: no endpoint.
	Addr string `json:"addr,omitempty"`
	// SecretFile holds the key of the attestations. Every worker of the task
	// queue needs the same key; without one, proven decisions cannot be made
	// or checked.
	SecretFile string `json:"secretFile,omitempty"`
	// Issuer is the OpenID Connect issuer of approvers' ID tokens; default
	// https://accounts.google.com.
	Issuer string `json:"issuer,omitempty"`
	// PublicURL is the endpoint as support reaches it, written into approval
	// requests (e.g. https://gkewi.example.com).
	PublicURL string `json:"publicURL,omitempty"`
}

// Policy locates the grant policy file (in the chart, a ConfigMap).
type Policy struct {
	// File is the policy's YAML; read at start (a bad one stops the start)
	// and again every ReloadInterval: new runs follow the new text.
	File           string   `json:"file,omitempty"`
	ReloadInterval Duration `json:"reloadInterval,omitempty"`
}

// SMTP says how to reach the mail relay.
type SMTP struct {
	Addr         string `json:"addr,omitempty"`
	From         string `json:"from,omitempty"`
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	StartTLS     bool   `json:"startTLS,omitempty"`
	CAFile       string `json:"caFile,omitempty"`
}

// Helm configures the Helm activities.
type Helm struct {
	// ArtifactsDir keeps each release's rendered customizations.yaml; empty keeps none.
	ArtifactsDir string `json:"artifactsDir,omitempty"`
	// CacheDir holds downloaded charts and repository indexes; empty uses the user cache.
	CacheDir string `json:"cacheDir,omitempty"`
	// Timeout bounds one install or upgrade, rollout wait included.
	Timeout Duration `json:"timeout,omitempty"`
	// RegistryCredentialsFile is a Docker-style config.json with registry logins.
	RegistryCredentialsFile string `json:"registryCredentialsFile,omitempty"`
	// RegistryPlainHTTP talks plain HTTP to OCI registries (local registries only).
	RegistryPlainHTTP bool `json:"registryPlainHTTP,omitempty"`
	// InsecureSkipTLSVerify skips certificate checks of chart sources (test setups only).
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify,omitempty"`
}

// Concurrency maps onto the Temporal worker options of the same names.
type Concurrency struct {
	MaxConcurrentActivityExecutionSize     int `json:"maxConcurrentActivityExecutionSize,omitempty"`
	MaxConcurrentWorkflowTaskExecutionSize int `json:"maxConcurrentWorkflowTaskExecutionSize,omitempty"`
	MaxConcurrentActivityTaskPollers       int `json:"maxConcurrentActivityTaskPollers,omitempty"`
	MaxConcurrentWorkflowTaskPollers       int `json:"maxConcurrentWorkflowTaskPollers,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s") in YAML.
type Duration time.Duration

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	return Config{
		TaskQueue:             workflows.TaskQueue,
		OperationPollInterval: Duration(2 * time.Second),
		VerifyPollInterval:    Duration(5 * time.Second),
		WebhookTimeout:        Duration(10 * time.Second),
		Concurrency:           Concurrency{MaxConcurrentActivityExecutionSize: 16},
		SweepInterval:         Duration(workflows.DefaultSweepInterval),
		Policy:                Policy{ReloadInterval: Duration(10 * time.Second)},
		// Helm installs and operation waits can take a while; Kubernetes' grace
		// period must exceed this.
		StopTimeout: Duration(60 * time.Second),
		HTTPAddr:    ":9090",
		LogLevel:    "info",
		LogFormat:   "text",
	}
}

// MetricsEnabled says whether /metrics is served: unless turned off, it is
// whenever the HTTP endpoint is.
func (c Config) MetricsEnabled() bool {
	return c.HTTPAddr != "" && (c.Metrics == nil || *c.Metrics)
}

// gcpAPIs are the keys GCPEndpoints accepts.
var gcpAPIs = []string{
	activities.APIServiceUsage, activities.APIContainer, activities.APIIAM, activities.APIResourceManager,
	activities.APIBigQuery, activities.APISTS, activities.APIIAMCredentials,
}

// Validate checks the merged configuration and names the setting to fix.
func (c Config) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if c.TaskQueue == "" {
		bad("taskQueue (--task-queue, GKEWI_TASK_QUEUE) must not be empty")
	}
	for api, u := range c.GCPEndpoints {
		if !slices.Contains(gcpAPIs, api) {
			bad("gcpEndpoints: unknown API %q (want one of %s)", api, strings.Join(gcpAPIs, ", "))
			continue
		}
		if !text.IsHTTPURL(u) {
			bad("gcpEndpoints.%s %q: want an http(s) URL", api, u)
		}
	}
	if c.OperationPollInterval <= 0 {
		bad("operationPollInterval (--operation-poll-interval) must be positive")
	}
	if c.VerifyPollInterval <= 0 {
		bad("verifyPollInterval (--verify-poll-interval) must be positive")
	}
	if c.WebhookTimeout <= 0 {
		bad("webhookTimeout (--webhook-timeout) must be positive")
	}
	if c.Helm.Timeout < 0 {
		bad("helm.timeout (--helm-timeout) must not be negative")
	}
	if c.Policy.ReloadInterval.D() < time.Second {
		bad("policy.reloadInterval (--policy-reload-interval, GKEWI_POLICY_RELOAD_INTERVAL) %s: want at least 1s", c.Policy.ReloadInterval.D())
	}
	if c.SweepInterval < 0 || (c.SweepInterval > 0 && c.SweepInterval.D() < time.Minute) {
		bad("sweepInterval (--sweep-interval, GKEWI_SWEEP_INTERVAL) %s: want 0 (no sweep schedule) or at least 1m", c.SweepInterval.D())
	}
	if c.StopTimeout < 0 {
		bad("stopTimeout (--stop-timeout) must not be negative")
	}
	if c.SMTP.Addr != "" {
		if !strings.Contains(c.SMTP.Addr, ":") {
			bad("smtp.addr (--smtp-addr) %q: want host:port", c.SMTP.Addr)
		}
		if _, err := mail.ParseAddress(c.SMTP.From); err != nil {
			bad("smtp.from (--smtp-from, GKEWI_SMTP_FROM) %q: want the sender's email address when smtp.addr is set", c.SMTP.From)
		}
	}
	if c.SMTP.Username != "" && c.SMTP.PasswordFile == "" {
		bad("smtp.passwordFile (--smtp-password-file, GKEWI_SMTP_PASSWORD_FILE) is required with smtp.username")
	}
	if c.Approval.Addr != "" {
		if _, port, err := net.SplitHostPort(c.Approval.Addr); err != nil || port == "" {
			bad("approval.addr (--approval-addr, GKEWI_APPROVAL_ADDR) %q: want host:port, e.g. :8443", c.Approval.Addr)
		}
		if c.Approval.SecretFile == "" {
			bad("approval.secretFile (--approval-secret-file, GKEWI_APPROVAL_SECRET_FILE) is required with approval.addr: attestations need a key")
		}
	}
	if c.Approval.PublicURL != "" && !text.IsHTTPURL(c.Approval.PublicURL) {
		bad("approval.publicURL (--approval-public-url) %q: want an http(s) URL", c.Approval.PublicURL)
	}
	if c.Approval.Issuer != "" && !text.IsHTTPURL(c.Approval.Issuer) {
		bad("approval.issuer (--approval-issuer) %q: want an http(s) URL", c.Approval.Issuer)
	}
	if c.TemporalUIURL != "" && !text.IsHTTPURL(c.TemporalUIURL) {
		bad("temporalUIURL (--temporal-ui-url) %q: want an http(s) URL", c.TemporalUIURL)
	}
	for name, n := range map[string]int{
		"maxConcurrentActivityExecutionSize":     c.Concurrency.MaxConcurrentActivityExecutionSize,
		"maxConcurrentWorkflowTaskExecutionSize": c.Concurrency.MaxConcurrentWorkflowTaskExecutionSize,
		"maxConcurrentActivityTaskPollers":       c.Concurrency.MaxConcurrentActivityTaskPollers,
		"maxConcurrentWorkflowTaskPollers":       c.Concurrency.MaxConcurrentWorkflowTaskPollers,
	} {
		if n < 0 {
			bad("concurrency.%s must not be negative", name)
		}
	}
	if c.HTTPAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil || port == "" {
			bad("httpAddr (--http-addr, GKEWI_HTTP_ADDR) %q: want host:port, e.g. :9090", c.HTTPAddr)
		}
	}
	if _, err := c.SlogLevel(); err != nil {
		bad("logLevel (--log-level): %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("logFormat (--log-format) %q: want text or json", c.LogFormat)
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	return errors.New("invalid worker configuration: " + strings.Join(problems, "; "))
}

// SlogLevel parses LogLevel.
func (c Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
