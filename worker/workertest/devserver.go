// Package workertest starts a real Temporal dev server for tests, from the Temporal
// CLI that `make tools` builds.
package workertest

import (
	"context"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/gkewi/gkewi/sandbox/toolpath"
	"github.com/gkewi/gkewi/workflows"
)

// TemporalCLIPath is GKEWI_TEMPORAL, or the path `make tools` builds to.
func TemporalCLIPath() string { return toolpath.TemporalCLI() }

// Options adjust the dev server.
type Options struct {
	// WithoutSearchAttributes leaves gkewi's search attributes unregistered.
	WithoutSearchAttributes bool
}

// StartDevServer starts an in-memory dev server with gkewi's search attributes and
// stops it when the test ends. Without the CLI it skips the test, except under
// CI=true, where a missing tool is a failure.
func StartDevServer(t testing.TB, opts Options) *testsuite.DevServer {
	t.Helper()
	path := TemporalCLIPath()
	if _, err := os.Stat(path); err != nil {
		msg := "Temporal CLI not found at " + path + " (run `make tools` or set GKEWI_TEMPORAL)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var args []string
	if !opts.WithoutSearchAttributes {
		for _, f := range workflows.SearchAttributeFlags() {
			args = append(args, "--search-attribute", f)
		}
	}
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  path,
		ClientOptions: &client.Options{Namespace: "default"},
		LogLevel:      "error",
		ExtraArgs:     args,
		Stdout:        testWriter{t},
		Stderr:        testWriter{t},
	})
	if err != nil {
		t.Fatalf("start Temporal dev server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Logf("stop Temporal dev server: %v", err)
		}
	})
	return srv
}

// testWriter sends the server's output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("temporal: %s", p)
	return len(p), nil
}
