package policy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Store holds the policy of a file and reloads it when the file changes (a
// ConfigMap volume is updated in place). A changed file that does not parse is
// logged and the policy in force stays: a typo must not open or close every
// grant at once.
type Store struct {
	path string

	mu     sync.RWMutex
	src    []byte
	policy *Policy
}

// Open reads and checks the policy at path: a worker must not start with a
// policy it cannot read.
func Open(path string) (*Store, error) {
	s := &Store{path: path}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Static holds p for good: a policy built in code (tests, embedders).
func Static(p *Policy) *Store { return &Store{policy: p} }

// Path is the policy file.
func (s *Store) Path() string { return s.path }

// Current is the policy in force.
func (s *Store) Current() *Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.policy
}

// Reload reads the file again; it reports whether the policy changed. On an
// error the policy in force stays.
func (s *Store) Reload() (bool, error) {
	src, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("grant policy %s: %w", s.path, err)
	}
	s.mu.RLock()
	same := s.policy != nil && bytes.Equal(src, s.src)
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	p, err := Parse(src)
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	s.mu.Lock()
	s.src, s.policy = src, p
	s.mu.Unlock()
	return true, nil
}

// Watch reloads the file every interval until ctx ends, logging each change
// and each refused version.
func (s *Store) Watch(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := s.Reload()
		switch {
		case err != nil && err.Error() != lastErr:
			lastErr = err.Error()
			logger.Error("grant policy not reloaded; the one in force stays", "error", err, "digest", s.Current().Digest())
		case err == nil:
			// The file is good again: the same typo later is logged again.
			lastErr = ""
			if !changed {
				continue
			}
			logger.Info("grant policy reloaded: new runs follow it, running ones keep theirs", "file", s.path, "digest", s.Current().Digest())
		}
	}
}
