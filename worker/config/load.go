package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// kind says how a flag or environment value is parsed.
type kind int

const (
	kindString kind = iota
	kindDuration
	kindInt
	kindBool
	kindEndpoints
)

// typeName is how the usage shows a flag of this kind.
func (k kind) typeName() string {
	return [...]string{kindString: "string", kindDuration: "duration", kindInt: "int", kindBool: "bool", kindEndpoints: "stringArray"}[k]
}

// setting is one configurable value: its key in the YAML file (JSON names
// joined by dots), its flag and its environment variable.
type setting struct {
	key, flag, env, usage string
	kind                  kind
}

func settings() []setting {
	return []setting{
		{"taskQueue", "task-queue", "GKEWI_TASK_QUEUE", "Temporal task queue to poll", kindString},
		{"kubeconfig", "kubeconfig", "GKEWI_KUBECONFIG", "kubeconfig of the workload cluster (empty: in-cluster)", kindString},
		{"kubeContext", "kube-context", "GKEWI_KUBE_CONTEXT", "kubeconfig context (empty: current)", kindString},
		{"gcpEndpoints", "gcp-endpoint", "GKEWI_GCP_ENDPOINTS", "Google API base URL as API=URL, repeatable (env: comma-separated); APIs: " + strings.Join(gcpAPIs, ", "), kindEndpoints},
		{"gcpAccessTokenFile", "gcp-access-token-file", "GKEWI_GCP_ACCESS_TOKEN_FILE", "send the bearer token in this file instead of Application Default Credentials (emulators only)", kindString},
		{"operationPollInterval", "operation-poll-interval", "GKEWI_OPERATION_POLL_INTERVAL", "poll interval of long-running Google operations", kindDuration},
		{"verifyPollInterval", "verify-poll-interval", "GKEWI_VERIFY_POLL_INTERVAL", "how often verification asks again while a binding propagates", kindDuration},
		{"helm.artifactsDir", "helm-artifacts-dir", "GKEWI_HELM_ARTIFACTS_DIR", "directory for each release's rendered customizations.yaml", kindString},
		{"helm.cacheDir", "helm-cache-dir", "GKEWI_HELM_CACHE_DIR", "directory for downloaded charts (empty: user cache)", kindString},
		{"helm.timeout", "helm-timeout", "GKEWI_HELM_TIMEOUT", "bound of one install or upgrade", kindDuration},
		{"helm.registryCredentialsFile", "helm-registry-credentials-file", "GKEWI_HELM_REGISTRY_CREDENTIALS_FILE", "Docker-style config.json with registry logins", kindString},
		{"helm.registryPlainHTTP", "helm-registry-plain-http", "GKEWI_HELM_REGISTRY_PLAIN_HTTP", "plain HTTP to OCI registries (local registries only)", kindBool},
		{"helm.insecureSkipTLSVerify", "helm-insecure-skip-tls-verify", "GKEWI_HELM_INSECURE_SKIP_TLS_VERIFY", "skip certificate checks of chart sources (test setups only)", kindBool},
		{"smtp.addr", "smtp-addr", "GKEWI_SMTP_ADDR", "mail relay host:port (empty: no email)", kindString},
		{"smtp.from", "smtp-from", "GKEWI_SMTP_FROM", "sender address of notifications", kindString},
		{"smtp.username", "smtp-username", "GKEWI_SMTP_USERNAME", "AUTH PLAIN user (empty: no AUTH)", kindString},
		{"smtp.passwordFile", "smtp-password-file", "GKEWI_SMTP_PASSWORD_FILE", "file holding the SMTP password", kindString},
		{"smtp.startTLS", "smtp-starttls", "GKEWI_SMTP_STARTTLS", "require STARTTLS with the relay", kindBool},
		{"smtp.caFile", "smtp-ca-file", "GKEWI_SMTP_CA_FILE", "PEM bundle to trust for the relay (empty: system roots)", kindString},
		{"policy.file", "policy-file", "GKEWI_POLICY_FILE", "the grant policy (YAML): who approves which grants, with what proof, for how long (empty: no new grant)", kindString},
		{"policy.reloadInterval", "policy-reload-interval", "GKEWI_POLICY_RELOAD_INTERVAL", "how often the policy file is read again (new runs follow it)", kindDuration},
		{"approval.addr", "approval-addr", "GKEWI_APPROVAL_ADDR", "host:port of the approval endpoint, POST /v1/decisions (empty: none)", kindString},
		{"approval.secretFile", "approval-secret-file", "GKEWI_APPROVAL_SECRET_FILE", "file holding the key of approval attestations (the same for every worker)", kindString},
		{"approval.publicURL", "approval-public-url", "GKEWI_APPROVAL_PUBLIC_URL", "the approval endpoint's URL as support reaches it, written into approval requests", kindString},
		{"approval.issuer", "approval-issuer", "GKEWI_APPROVAL_ISSUER", "OpenID Connect issuer of approvers' ID tokens (default https://accounts.google.com)", kindString},
		{"webhookTimeout", "webhook-timeout", "GKEWI_WEBHOOK_TIMEOUT", "timeout of each webhook notification", kindDuration},
		{"temporalUIURL", "temporal-ui-url", "GKEWI_TEMPORAL_UI_URL", "Temporal Web UI base URL linked from notifications", kindString},
		{"concurrency.maxConcurrentActivityExecutionSize", "max-concurrent-activities", "GKEWI_MAX_CONCURRENT_ACTIVITIES", "MaxConcurrentActivityExecutionSize", kindInt},
		{"concurrency.maxConcurrentWorkflowTaskExecutionSize", "max-concurrent-workflow-tasks", "GKEWI_MAX_CONCURRENT_WORKFLOW_TASKS", "MaxConcurrentWorkflowTaskExecutionSize", kindInt},
		{"concurrency.maxConcurrentActivityTaskPollers", "activity-pollers", "GKEWI_ACTIVITY_POLLERS", "MaxConcurrentActivityTaskPollers", kindInt},
		{"concurrency.maxConcurrentWorkflowTaskPollers", "workflow-pollers", "GKEWI_WORKFLOW_POLLERS", "MaxConcurrentWorkflowTaskPollers", kindInt},
		{"sweepInterval", "sweep-interval", "GKEWI_SWEEP_INTERVAL", "interval of the gkewi-sweep schedule, created at start if missing (0: do not create it)", kindDuration},
		{"stopTimeout", "stop-timeout", "GKEWI_STOP_TIMEOUT", "time in-flight activities get on shutdown", kindDuration},
		{"httpAddr", "http-addr", "GKEWI_HTTP_ADDR", "host:port of /healthz, /readyz and /metrics (empty: none)", kindString},
		{"metrics", "metrics", "GKEWI_METRICS", "serve /metrics with the Temporal SDK's and gkewi's metrics (--metrics=false: probes only)", kindBool},
		{"logLevel", "log-level", "GKEWI_LOG_LEVEL", "debug, info, warn or error", kindString},
		{"logFormat", "log-format", "GKEWI_LOG_FORMAT", "text or json", kindString},
	}
}

// parse turns a flag's or variable's text into the value its key holds.
func (s setting) parse(v string) (any, error) {
	switch s.kind {
	case kindDuration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("want a duration such as 30s: %w", err)
		}
		return Duration(d), nil
	case kindInt:
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("want a whole number: %w", err)
		}
		return n, nil
	case kindBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("want true or false: %w", err)
		}
		return b, nil
	case kindEndpoints:
		return parseEndpoints(v)
	default:
		return v, nil
	}
}

// parseEndpoints reads comma-separated "api=url" pairs. Each layer's map is
// merged per API over the layers below it.
func parseEndpoints(v string) (map[string]any, error) {
	m := map[string]any{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		api, u, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want API=URL", pair)
		}
		m[strings.TrimSpace(api)] = strings.TrimSpace(u)
	}
	return m, nil
}

// Env looks up an environment variable; os.LookupEnv in production.
type Env func(key string) (string, bool)

// ErrHelp is returned when -h or --help was asked for; the usage was printed.
var ErrHelp = pflag.ErrHelp

// Load builds the configuration from args (without the program name) and env.
// Usage and flag errors go to out.
func Load(args []string, env Env, out io.Writer) (Config, error) {
	all := settings()
	fs := newFlagSet(all, out)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	configFile, _ := fs.GetString("config")
	if configFile == "" {
		configFile, _ = env("GKEWI_CONFIG")
	}

	k := koanf.New(".")
	if err := k.Load(structs.Provider(Defaults(), "json"), nil); err != nil {
		return Config{}, fmt.Errorf("defaults: %w", err)
	}
	if configFile != "" {
		if err := loadFile(k, configFile); err != nil {
			return Config{}, err
		}
	}
	// The providers cannot fail by themselves; a bad value is collected here
	// so that its error names the variable or flag that carried it.
	var bad []error
	if err := k.Load(envProvider(all, env, &bad), nil); err != nil {
		return Config{}, fmt.Errorf("environment: %w", err)
	}
	if err := k.Load(flagProvider(all, fs, &bad), nil); err != nil {
		return Config{}, fmt.Errorf("flags: %w", err)
	}
	if err := errors.Join(bad...); err != nil {
		return Config{}, err
	}
	var cfg Config
	if err := decode(k, &cfg, nil); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func newFlagSet(all []setting, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("gkewi-worker", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.String("config", "", "YAML configuration file (env GKEWI_CONFIG)")
	for _, s := range all {
		usage := fmt.Sprintf("%s (env %s)", s.usage, s.env)
		switch s.kind {
		case kindEndpoints:
			fs.StringArray(s.flag, nil, usage)
		case kindBool:
			fs.VarPF(&rawValue{typ: "bool"}, s.flag, "", usage).NoOptDefVal = "true"
		default:
			fs.Var(&rawValue{typ: s.kind.typeName()}, s.flag, usage)
		}
	}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: gkewi-worker [flags]\n\nRuns the gkewi Temporal worker. Precedence: flags > GKEWI_* environment > --config file > defaults.\nThe Temporal connection comes from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE.\n\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// rawValue keeps a flag's text for setting.parse, so that a bad flag is
// reported like a bad environment variable.
type rawValue struct{ text, typ string }

func (v *rawValue) String() string     { return v.text }
func (v *rawValue) Set(s string) error { v.text = s; return nil }
func (v *rawValue) Type() string       { return v.typ }

// loadFile layers the YAML file over k; unknown keys are errors, so a typo
// does not silently fall back to a default.
func loadFile(k *koanf.Koanf, path string) error {
	f := koanf.New(".")
	if err := f.Load(file.Provider(path), yaml.Parser()); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var md mapstructure.Metadata
	if err := decode(f, &Config{}, &md); err != nil {
		return fmt.Errorf("config file %s: %w", path, oneLine(err))
	}
	if len(md.Unused) > 0 {
		return fmt.Errorf("config file %s: unknown field %q", path, md.Unused[0])
	}
	return k.Merge(f)
}

// envProvider reads the settings' variables through env; an empty one counts
// as unset.
func envProvider(all []setting, lookup Env, bad *[]error) *env.Env {
	byName := map[string]setting{}
	var environ []string
	for _, s := range all {
		byName[s.env] = s
		if v, ok := lookup(s.env); ok && v != "" {
			environ = append(environ, s.env+"="+v)
		}
	}
	return env.Provider(".", env.Opt{
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) {
			s := byName[name]
			val, err := s.parse(v)
			if err != nil {
				*bad = append(*bad, fmt.Errorf("environment %s=%q: %w", name, v, err))
				return "", nil
			}
			return s.key, val
		},
	})
}

// flagProvider reads the flags given on the command line; the values of a
// repeated --gcp-endpoint add up in command-line order.
func flagProvider(all []setting, fs *pflag.FlagSet, bad *[]error) *posflag.Posflag {
	byFlag := map[string]setting{}
	for _, s := range all {
		byFlag[s.flag] = s
	}
	return posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		s, ok := byFlag[f.Name]
		if !ok || !f.Changed {
			return "", nil
		}
		text := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			text = strings.Join(sv.GetSlice(), ",")
		}
		v, err := s.parse(text)
		if err != nil {
			*bad = append(*bad, fmt.Errorf("flag --%s=%q: %w", f.Name, text, err))
			return "", nil
		}
		return s.key, v
	})
}

// decode fills o from k by the JSON names. With md, keys that match no field
// are listed in md.Unused; without, they are errors.
func decode(k *koanf.Koanf, o any, md *mapstructure.Metadata) error {
	return k.UnmarshalWithConf("", o, koanf.UnmarshalConf{
		Tag: "json",
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook:  durationHook,
			ErrorUnused: md == nil,
			Metadata:    md,
			// YAML keys are case-sensitive: "TaskQueue" is a typo, not taskQueue.
			MatchName: func(key, field string) bool { return key == field },
		},
	})
}

// oneLine drops mapstructure's multi-line preamble and keeps its
// "'key' problem" lines, joined by "; ".
func oneLine(err error) error {
	joined, ok := errors.Unwrap(err).(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var msgs []string
	for _, e := range joined.Unwrap() {
		msgs = append(msgs, e.Error())
	}
	slices.Sort(msgs)
	return errors.New(strings.Join(msgs, "; "))
}

// durationHook reads the YAML file's duration strings ("30s"); the defaults,
// flags and environment already hold Durations.
func durationHook(_, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[Duration]() {
		return data, nil
	}
	switch v := data.(type) {
	case Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, err
		}
		return Duration(d), nil
	default:
		return nil, fmt.Errorf("want a duration string such as \"30s\", not %v", data)
	}
}
