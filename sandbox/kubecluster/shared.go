package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

// Shared is one cluster shared by the tests of a package, started by the first
// test that asks for it, so test runs that need no cluster never start one.
//
// Use it from TestMain:
//
//	var cluster = kubecluster.NewShared(kubecluster.Options{NodePools: []string{"pool-a"}})
//
//	func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		c := cluster.Get(t) // starts the cluster once; skips or fails without tools
//		client := c.Client()
//		...
//	}
//
// Tests sharing a cluster should use namespaces of their own. When the binaries
// are missing, Get skips the test, except under CI=true where it fails it: CI
// must run every test. GKEWI_KUBECLUSTER_VERBOSE=1 prints the cluster's
// progress lines (directory, ports, ready time) to stderr.
type Shared struct {
	opts Options

	once    sync.Once
	cluster *Cluster
	err     error
}

// NewShared prepares a shared cluster; nothing starts until Get.
func NewShared(opts Options) *Shared { return &Shared{opts: opts} }

// Get returns the running cluster, starting it on the first call.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	s.once.Do(func() {
		if err := s.opts.Tools.Check(); err != nil {
			s.err = err
			return
		}
		opts := s.opts
		if os.Getenv("GKEWI_KUBECLUSTER_VERBOSE") != "" {
			opts.Log = os.Stderr
		}
		s.cluster, s.err = Start(context.Background(), opts)
	})
	if s.err != nil {
		if errors.Is(s.err, ErrToolMissing) && os.Getenv("CI") != "true" {
			t.Skipf("skipping: %v", s.err)
		}
		t.Fatalf("shared cluster: %v", s.err)
	}
	return s.cluster
}

// Stop stops the cluster if one was started.
func (s *Shared) Stop() error {
	if s.cluster == nil {
		return nil
	}
	return s.cluster.Stop()
}

// Main runs the tests and then stops the cluster, returning the exit code for
// os.Exit. A failure to stop fails the run.
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the shared cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// RequireTools skips the test when the binaries are missing, or fails it under
// CI=true.
func RequireTools(t testing.TB, tools Tools) {
	t.Helper()
	if err := tools.Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}
