// Command gkewi-worker runs the gkewi Temporal worker: the Onboard and Revoke
// workflows and their activities on the "gkewi" task queue. Run with -h for the
// settings; the Temporal connection comes from the standard TEMPORAL_* environment.
package main

import (
	"errors"
	"fmt"
	"os"

	"go.uber.org/fx"

	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/worker/config"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gkewi-worker:", err)
		os.Exit(2)
	}
	// Run blocks until SIGINT or SIGTERM, then stops the worker gracefully; it exits
	// non-zero when the start fails.
	fx.New(worker.Module(cfg, os.Stderr)).Run()
}
