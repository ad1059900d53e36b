// Package starter is the gkewi command line: it starts and steers the Onboard and
// Revoke workflows with the Temporal Go client, and prints the equivalent plain
// `temporal` command for every change it makes, so either tool can be used.
package starter

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	tlog "go.temporal.io/sdk/log"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the operation failed or the workflow ended unsuccessfully
	ExitUsage   = 2 // bad flags or an invalid request file
)

// App runs gkewi commands. The zero value is not usable; see New.
type App struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
	// Env looks up the TEMPORAL_* connection variables.
	Env envconfig.EnvLookup
	// Now is the clock for local validation and durations.
	Now func() time.Time
	// PollInterval is how often --wait re-reads the status; default 2s.
	PollInterval time.Duration
}

// New returns an App on the process's standard streams and environment.
func New() *App {
	return &App{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Stdin:  os.Stdin,
		Env:    envconfig.EnvLookupOS,
		Now:    time.Now,
	}
}

const usage = `gkewi starts and steers gkewi's Temporal workflows (GKE Workload Identity onboarding).

Usage:
  gkewi onboard -f request.yaml [--wait] [--dry-run]
  gkewi approve --workflow-id ID --approver EMAIL [--ticket T] [--comment C] [--update]
  gkewi reject  --workflow-id ID --approver EMAIL [--ticket T] [--comment C] [--update]
  gkewi status  --workflow-id ID [-o table|json]
  gkewi revoke  (--workflow-id ONBOARD_ID | -f revoke.yaml) [--at RFC3339] [--token-expiry-wait 30m] [--reason R] [--remove-annotation] [--wait] [--dry-run]
  gkewi extend  --workflow-id ONBOARD_ID (--at RFC3339 | --ttl DURATION) [--token-expiry-wait 30m] [--dry-run]
  gkewi list    [--query QUERY] [--limit N] [-o table|json]
  gkewi id      -f request.yaml
  gkewi rbac    -f request.yaml [--user system:serviceaccount:NS:NAME]
  gkewi plan    (-f request.yaml | --revoke -f revoke.yaml [--remove-annotation]) [--kubeconfig F] [--context C]

Every command that talks to Temporal takes --address and --namespace; without
them the connection comes from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE (as for the temporal CLI).
Request files are YAML or JSON; "-f -" reads standard input.
Run "gkewi COMMAND -h" for a command's flags.

Exit status: 0 success, 1 failure, 2 invalid usage or request.
`

// Run executes one command line (without the program name) and returns the exit code.
func (a *App) Run(ctx context.Context, args []string) int {
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Env == nil {
		a.Env = envconfig.EnvLookupOS
	}
	if a.PollInterval <= 0 {
		a.PollInterval = 2 * time.Second
	}
	if len(args) == 0 {
		fmt.Fprint(a.Stderr, usage)
		return ExitUsage
	}
	commands := map[string]func(context.Context, []string) error{
		"onboard": a.onboard,
		"approve": func(ctx context.Context, args []string) error { return a.decide(ctx, "approve", args) },
		"reject":  func(ctx context.Context, args []string) error { return a.decide(ctx, "reject", args) },
		"status":  a.status,
		"revoke":  a.revoke,
		"extend":  a.extend,
		"list":    a.list,
		"id":      a.id,
		"rbac":    a.rbac,
		"plan":    a.plan,
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(a.Stdout, usage)
		return ExitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(a.Stderr, "gkewi: unknown command %q\n\n%s", name, usage)
		return ExitUsage
	}
	err := cmd(ctx, args[1:])
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(a.Stderr, "gkewi %s: %v\n", name, err)
		return ExitUsage
	default:
		fmt.Fprintf(a.Stderr, "gkewi %s: %v\n", name, err)
		return ExitFailure
	}
}

// usageError is a mistake in the command line or the request file: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// flagSet is a FlagSet for one command that reports to the App's stderr.
func (a *App) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("gkewi "+name, flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gkewi %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and refuses stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s (flags go before them? see -h)", strings.Join(fs.Args(), " "))
	}
	return nil
}

// connFlags override the TEMPORAL_* connection settings.
type connFlags struct {
	address   string
	namespace string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.address, "address", "", "Temporal frontend host:port (default TEMPORAL_ADDRESS, else localhost:7233)")
	fs.StringVar(&c.namespace, "namespace", "", "Temporal namespace (default TEMPORAL_NAMESPACE, else default)")
}

// cliFlags are the same overrides for the printed temporal/gkewi commands.
func (c connFlags) cliFlags() string {
	var b strings.Builder
	if c.address != "" {
		b.WriteString(" --address " + shellQuote(c.address))
	}
	if c.namespace != "" {
		b.WriteString(" --namespace " + shellQuote(c.namespace))
	}
	return b.String()
}

// clientOptions resolves the connection like the temporal CLI, then applies flags.
func (a *App) clientOptions(c connFlags) (client.Options, error) {
	opts, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{EnvLookup: a.Env})
	if err != nil {
		return client.Options{}, fmt.Errorf("temporal connection settings (TEMPORAL_*): %w", err)
	}
	if c.address != "" {
		opts.HostPort = c.address
	}
	if c.namespace != "" {
		opts.Namespace = c.namespace
	}
	if opts.HostPort == "" {
		opts.HostPort = client.DefaultHostPort
	}
	if opts.Namespace == "" {
		opts.Namespace = client.DefaultNamespace
	}
	// The SDK's own info lines would clutter the command's output.
	opts.Logger = tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if opts.Identity == "" {
		host, _ := os.Hostname()
		opts.Identity = "gkewi-cli@" + host
	}
	return opts, nil
}

// dial connects to Temporal, failing fast with the address it tried.
func (a *App) dial(ctx context.Context, c connFlags) (client.Client, client.Options, error) {
	opts, err := a.clientOptions(c)
	if err != nil {
		return nil, opts, err
	}
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cl, err := client.DialContext(dialCtx, opts)
	if err != nil {
		return nil, opts, fmt.Errorf("cannot reach Temporal at %s (namespace %s; set TEMPORAL_ADDRESS or --address): %w", opts.HostPort, opts.Namespace, err)
	}
	return cl, opts, nil
}
