package stack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"github.com/gkewi/gkewi/workflows"
)

// temporalNamespace is the namespace the sandbox uses, the dev server's default.
const temporalNamespace = "default"

// startTemporal starts the dev server on a SQLite file in the sandbox directory,
// with gkewi's search attributes, and waits until it serves them.
func (s *Sandbox) startTemporal(ctx context.Context) error {
	begin := time.Now()
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(s.opts.Ports.Temporal),
		"--db-filename", filepath.Join(s.dir, "temporal.db"),
		"--log-level", "warn",
	}
	if s.opts.Headless {
		args = append(args, "--headless")
	} else {
		args = append(args, "--ui-port", strconv.Itoa(s.opts.Ports.TemporalUI))
	}
	for _, f := range workflows.SearchAttributeFlags() {
		args = append(args, "--search-attribute", f)
	}
	s.temporalArgs = args
	if err := s.launchTemporal(ctx); err != nil {
		return err
	}
	s.progress("Temporal dev server ready in %s on %s (UI %s)", time.Since(begin).Round(100*time.Millisecond),
		s.TemporalAddress(), orNone(s.TemporalUIURL()))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func (s *Sandbox) launchTemporal(ctx context.Context) error {
	s.temporal = &child{
		name: "temporal", path: s.opts.TemporalCLI, args: s.temporalArgs, env: os.Environ(), dir: s.dir,
		logPath: filepath.Join(s.logDir, "temporal.log"), runDir: s.runDir,
	}
	if err := s.temporal.start(); err != nil {
		return err
	}
	if s.temporalC == nil {
		// Lazy: it connects on first use, and reconnects after a restart.
		c, err := client.NewLazyClient(client.Options{
			HostPort: s.TemporalAddress(), Namespace: temporalNamespace,
			Logger: log.NewStructuredLogger(slog.New(slog.DiscardHandler)),
		})
		if err != nil {
			return fmt.Errorf("temporal client: %w", err)
		}
		s.temporalC = c
	}
	return s.waitFor(ctx, "the Temporal dev server and its search attributes", 90*time.Second, s.temporal, func(ctx context.Context) error {
		if _, err := s.temporalC.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
			return err
		}
		resp, err := s.temporalC.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: temporalNamespace})
		if err != nil {
			return err
		}
		var missing []string
		for name := range workflows.SearchAttributeTypes() {
			if _, ok := resp.CustomAttributes[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("search attributes not registered yet: %s", strings.Join(missing, ", "))
		}
		return nil
	})
}

// RestartTemporal stops the dev server and starts it again on the same SQLite
// file: running workflows carry on from their histories once it is back.
func (s *Sandbox) RestartTemporal(ctx context.Context) error {
	if err := s.temporal.stop(10 * time.Second); err != nil {
		return fmt.Errorf("stopping Temporal: %w", err)
	}
	if err := s.launchTemporal(ctx); err != nil {
		return err
	}
	s.progress("Temporal dev server restarted")
	return nil
}

// waitFor polls cond until it returns nil, failing early when proc exits.
func (s *Sandbox) waitFor(ctx context.Context, what string, timeout time.Duration, proc *child, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if proc != nil && !proc.running() {
			return fmt.Errorf("waiting for %s: %s exited; see %s:\n%s", what, proc.name, proc.logPath, tail(proc.logPath, 20))
		}
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		last = cond(callCtx)
		callCancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
