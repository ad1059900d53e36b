// Command gkewi-sandbox runs gkewi's local sandbox: a Temporal dev server, a local
// Kubernetes control plane standing in for a GKE cluster, an emulator of the
// Google Cloud APIs, an SMTP sink and the gkewi worker.
//
//	gkewi-sandbox demo   start the sandbox, onboard and revoke with the temporal CLI, prove each
//	gkewi-sandbox up     start the sandbox and keep it running (--detach: in the background)
//	gkewi-sandbox down   stop the sandbox started by `up` or `demo --keep`
//	gkewi-sandbox bench  time onboardings against the sandbox
//
// Run it from the repository root (make demo does); everything it writes goes to
// .sandbox/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gkewi/gkewi/sandbox/stack"
)

const usage = `Usage: gkewi-sandbox COMMAND [flags]

Commands:
  demo   start the sandbox, onboard a workload with the temporal CLI, approve it,
         prove the access, revoke it and prove it is gone; writes .sandbox/demo-report.json
  up     start the sandbox and keep it running until Ctrl-C or "gkewi-sandbox down"
  down   stop a running sandbox
  bench  time onboardings against the sandbox (one, N concurrent, a repeat);
         writes .sandbox/bench-results.json and .sandbox/bench-total-time.png

Run "gkewi-sandbox COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "up":
		err = runUp(ctx, args[1:], stdout, stderr)
	case "down":
		err = runDown(args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "gkewi-sandbox: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &exit):
		if exit.msg != "" {
			fmt.Fprintln(stderr, "gkewi-sandbox:", exit.msg)
		}
		return exit.code
	default:
		fmt.Fprintln(stderr, "gkewi-sandbox:", err)
		return 1
	}
}

// exitError ends the command with a given exit code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// sandboxFlags are the flags every command that starts a sandbox takes.
type sandboxFlags struct {
	dir, config, worker string
	ports               stack.Ports
	headless            bool
	verbose             bool
}

func (f *sandboxFlags) register(fs *flag.FlagSet) {
	def := stack.DefaultPorts()
	fs.StringVar(&f.dir, "dir", ".sandbox", "directory for the sandbox's state, logs and kubeconfigs")
	fs.StringVar(&f.config, "config", "deploy/sandbox/sandbox.yaml", "sandbox configuration (emulated projects, cluster, worker roles)")
	fs.StringVar(&f.worker, "worker", "bin/gkewi-worker", "gkewi worker binary (`make build`)")
	fs.IntVar(&f.ports.Temporal, "temporal-port", def.Temporal, "Temporal frontend port")
	fs.IntVar(&f.ports.TemporalUI, "temporal-ui-port", def.TemporalUI, "Temporal Web UI port")
	fs.IntVar(&f.ports.Emulator, "emulator-port", def.Emulator, "Google Cloud emulator port (also the worker's metadata server)")
	fs.IntVar(&f.ports.SMTP, "smtp-port", def.SMTP, "SMTP sink port")
	fs.IntVar(&f.ports.KubeAPIServer, "kube-port", def.KubeAPIServer, "Kubernetes API server port")
	fs.IntVar(&f.ports.WorkerHTTP, "worker-http-port", def.WorkerHTTP, "port of the worker's /metrics, /healthz and /readyz")
	fs.IntVar(&f.ports.Approval, "approval-port", def.Approval, "port of the worker's approval endpoint")
	fs.BoolVar(&f.headless, "headless", false, "run Temporal without its Web UI")
	fs.BoolVar(&f.verbose, "v", false, "print the sandbox's start-up progress")
}

func (f *sandboxFlags) options(log io.Writer) stack.Options {
	return stack.Options{
		Dir: f.dir, ConfigFile: f.config, WorkerBinary: f.worker,
		Ports: f.ports, Headless: f.headless, Log: log,
	}
}
