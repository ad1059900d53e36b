// Package e2e tests gkewi end to end against the local sandbox: a real Temporal
// dev server, a real Kubernetes control plane, the Google Cloud emulator and the
// gkewi worker running as its own process. The tests drive it only through what
// operators and support use: the temporal CLI, the gkewi CLI and kubectl. They
// check the outcome in the systems themselves: the emulator's state and request
// log, and the Kubernetes API.
//
// One sandbox serves the whole package run. Without the tools (`make tools`) the
// tests are skipped, except under CI=true where that is a failure.
//
// GKEWI_E2E_BIN_DIR, when set, holds prebuilt gkewi-worker and gkewi binaries
// (e.g. bin/ after `make build`); otherwise the tests build them.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/sandbox/kubecluster"
	"github.com/gkewi/gkewi/sandbox/stack"
)

var (
	sandbox  *stack.Sandbox
	gkewiBin string
	// workDir holds the built binaries and the sandbox; kept when a test failed.
	workDir string
	// setupErr is why the sandbox is not there.
	setupErr error
)

// Short durations keep the package within a few minutes: GKE operations are
// still long-running (the workflow waits on them), just short.
const e2eOperationDuration = 400 * time.Millisecond

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	setupErr = setUp()
	code := m.Run()
	if sandbox != nil {
		if err := sandbox.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the sandbox:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if workDir != "" {
		if code == 0 {
			_ = os.RemoveAll(workDir)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: the sandbox's logs and state are kept in", workDir)
		}
	}
	return code
}

func setUp() error {
	repo, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	// Before a minute of building: without the tools nothing can run.
	if err := stack.CheckTools("", "", kubecluster.Tools{}); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "gkewi-e2e-")
	if err != nil {
		return err
	}
	workDir = tmp
	binDir := os.Getenv("GKEWI_E2E_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(tmp, "bin")
		build := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator), "./worker/cmd/gkewi-worker", "./starter/cmd/gkewi")
		build.Dir = repo
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building the gkewi binaries: %v\n%s", err, out)
		}
	}
	gkewiBin = filepath.Join(binDir, "gkewi")

	cfg, err := stack.LoadConfig(filepath.Join(repo, "deploy", "sandbox", "sandbox.yaml"))
	if err != nil {
		return err
	}
	cfg.OperationDuration = gcpemu.Duration(e2eOperationDuration)
	cfg.PropagationDelay = 0
	// An Autopilot cluster beside the primary one, played by the same control plane.
	cfg.Projects[0].Clusters = append(cfg.Projects[0].Clusters, gcpemu.ClusterConfig{
		Location: cfg.Projects[0].Clusters[0].Location, Name: autopilotCluster, NodePools: []string{"pool-1"}, Autopilot: true,
	})
	opts := stack.Options{
		RepoDir: repo, Dir: filepath.Join(tmp, "sandbox"), Config: &cfg,
		WorkerBinary: filepath.Join(binDir, "gkewi-worker"),
		Headless:     true,
	}
	if os.Getenv("GKEWI_E2E_VERBOSE") != "" {
		opts.Log = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	sandbox, err = stack.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "e2e: sandbox started in %s (dir %s)\n", time.Since(begin).Round(100*time.Millisecond), sandbox.Dir())
	return nil
}

// requireSandbox returns the running sandbox. Missing tools skip the test,
// except under CI=true; any other start failure fails it.
func requireSandbox(t *testing.T) *stack.Sandbox {
	t.Helper()
	if setupErr != nil {
		if errors.Is(setupErr, stack.ErrToolMissing) && os.Getenv("CI") != "true" {
			t.Skipf("skipping: %v", setupErr)
		}
		t.Fatalf("the sandbox did not start: %v", setupErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log: %s", sandbox.WorkerLogPath())
		}
	})
	return sandbox
}
