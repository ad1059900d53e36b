// Package starter is the gkewi command line: it starts and steers the Onboard and
// Revoke workflows with the Temporal Go client, and prints the equivalent plain
// `temporal` command for every change it makes, so either tool can be used.
package starter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	tlog "go.temporal.io/sdk/log"

	"github.com/gkewi/gkewi/internal/text"
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

// rootLong heads `gkewi --help`; cobra appends the commands and flags.
const rootLong = `gkewi starts and steers gkewi's Temporal workflows (GKE Workload Identity onboarding).

Every command that talks to Temporal takes --address and --namespace; without
them the connection comes from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE (as for the temporal CLI).
Request files are YAML or JSON; "-f -" reads standard input.

Exit status: 0 success, 1 failure, 2 invalid usage or request.`

// rootExample is the synopsis of every command.
const rootExample = `  gkewi onboard -f request.yaml [--endpoint URL [--id-token-file F]] [--wait] [--dry-run]
  gkewi approve --workflow-id ID --approver EMAIL [--ticket T] [--comment C] [--update]
  gkewi approve --workflow-id ID --endpoint URL --run-id RUN [--id-token-file F] [--ticket T] [--comment C]
  gkewi reject  --workflow-id ID --approver EMAIL [--ticket T] [--comment C] [--update]
  gkewi status  --workflow-id ID [-o table|json]
  gkewi revoke  (--workflow-id ONBOARD_ID | -f revoke.yaml) [--at RFC3339] [--token-expiry-wait 30m] [--reason R] [--remove-annotation] [--wait] [--dry-run]
  gkewi extend  --workflow-id ONBOARD_ID (--at RFC3339 | --ttl DURATION) [--token-expiry-wait 30m] [--dry-run]
  gkewi list    [--query QUERY | --pending [--expiring-within 72h]] [--limit N] [-o table|json]
  gkewi id      -f request.yaml
  gkewi rbac    -f request.yaml [--user system:serviceaccount:NS:NAME]
  gkewi plan    (-f request.yaml | --revoke -f revoke.yaml [--remove-annotation]) [--kubeconfig F] [--context C]
  source <(gkewi completion bash)`

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
	root := a.rootCommand()
	if len(args) == 0 {
		// The help, but as the usage mistake it is: on stderr, exit 2.
		root.SetOut(a.Stderr)
		root.SetArgs([]string{"--help"})
		_ = root.ExecuteContext(ctx)
		return ExitUsage
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(a.Stderr, "%s: %v\n", cmd.CommandPath(), err)
	var failed *failure
	if errors.As(err, &failed) {
		return ExitFailure
	}
	if !errors.As(err, new(*usageError)) {
		// cobra refused the command line itself: an unknown command or flag.
		fmt.Fprintf(a.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return ExitUsage
}

// rootCommand builds the command tree; each command's flags are bound to
// variables of its own constructor, so every Run starts from fresh defaults.
func (a *App) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "gkewi",
		Short:         "Start and steer gkewi's Temporal workflows",
		Long:          rootLong,
		Example:       rootExample,
		SilenceErrors: true, // Run prints them, prefixed with the command
		SilenceUsage:  true, // a failed run is not a usage mistake
	}
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.AddGroup(
		&cobra.Group{ID: groupGrant, Title: "Grant and revoke (Temporal workflows):"},
		&cobra.Group{ID: groupRead, Title: "Follow grants (Temporal queries and visibility):"},
		&cobra.Group{ID: groupLocal, Title: "Prepare (no Temporal):"},
	)
	groups := []struct {
		id   string
		cmds []*cobra.Command
	}{
		{groupGrant, []*cobra.Command{a.onboardCommand(), a.decideCommand("approve"), a.decideCommand("reject"), a.revokeCommand(), a.extendCommand()}},
		{groupRead, []*cobra.Command{a.statusCommand(), a.listCommand()}},
		{groupLocal, []*cobra.Command{a.idCommand(), a.rbacCommand(), a.planCommand()}},
	}
	for _, g := range groups {
		for _, cmd := range g.cmds {
			cmd.GroupID = g.id
			root.AddCommand(cmd)
		}
	}
	return root
}

// Command groups of gkewi --help.
const (
	groupGrant = "grant"
	groupRead  = "read"
	groupLocal = "local"
)

// usageError is a mistake in the command line or the request file: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// failure is an error of a command that ran: exit code 1.
type failure struct{ err error }

func (e *failure) Error() string { return e.err.Error() }

func (e *failure) Unwrap() error { return e.err }

// action adapts a command's body to cobra. It marks the body's errors, but for
// usage errors, as failures (exit 1); that sets them apart from cobra's own
// errors (an unknown command or flag, a stray argument), usage errors all.
func action(body func(ctx context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		err := body(cmd.Context())
		if err != nil && !errors.As(err, new(*usageError)) {
			return &failure{err: err}
		}
		return err
	}
}

// noArgs refuses positional arguments: every gkewi input is a flag.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(args, " "))
	}
	return nil
}

// newCommand is a gkewi subcommand without positional arguments or their completion.
func newCommand(use, short, long string, body func(ctx context.Context) error) *cobra.Command {
	return &cobra.Command{
		Use:               use,
		Short:             short,
		Long:              long,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              action(body),
	}
}

// fileFlag adds -f/--file, completed with request files.
func fileFlag(cmd *cobra.Command, p *string, usage string) {
	cmd.Flags().StringVarP(p, "file", "f", "", usage)
	_ = cmd.MarkFlagFilename("file", "yaml", "yml", "json")
}

// outputFlag adds -o/--output, table or json.
func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", "table", "output: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]cobra.Completion{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

// noFileFlag marks a flag whose value is no file, so the shell offers none.
func noFileFlag(cmd *cobra.Command, names ...string) {
	for _, name := range names {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
}

// connFlags override the TEMPORAL_* connection settings.
type connFlags struct {
	address   string
	namespace string
}

func (c *connFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.address, "address", "", "Temporal frontend host:port (default TEMPORAL_ADDRESS, else localhost:7233)")
	cmd.Flags().StringVar(&c.namespace, "namespace", "", "Temporal namespace (default TEMPORAL_NAMESPACE, else default)")
	noFileFlag(cmd, "address", "namespace")
}

// cliFlags are the same overrides for the printed temporal/gkewi commands.
func (c connFlags) cliFlags() string {
	var b strings.Builder
	if c.address != "" {
		b.WriteString(" --address " + text.ShellQuote(c.address))
	}
	if c.namespace != "" {
		b.WriteString(" --namespace " + text.ShellQuote(c.namespace))
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
