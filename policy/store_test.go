package policy

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/internal/testlog"
)

// writePolicy replaces the file in one rename, as a ConfigMap update does, so
// a reader never sees half a file.
func writePolicy(t *testing.T, path, src string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(src), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func newPolicyFile(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, src)
	return path
}

// longerTTL is testPolicy with a longer maxDuration: a valid change.
var longerTTL = strings.Replace(testPolicy, "maxDuration: 72h", "maxDuration: 96h", 1)

// typo is testPolicy with a misspelt key: a change that must not take.
var typo = strings.Replace(testPolicy, "approval:", "aproval:", 1)

func TestOpen(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		// A worker must not start without the policy it was told to follow.
		path := filepath.Join(t.TempDir(), "nowhere.yaml")
		s, err := Open(path)
		require.Error(t, err)
		assert.Nil(t, s)
		assert.Contains(t, err.Error(), path)
	})
	t.Run("invalid file", func(t *testing.T) {
		path := newPolicyFile(t, typo)
		s, err := Open(path)
		require.Error(t, err)
		assert.Nil(t, s)
		assert.Contains(t, err.Error(), path)
		assert.Contains(t, err.Error(), "aproval")
	})
	t.Run("valid file", func(t *testing.T) {
		path := newPolicyFile(t, testPolicy)
		s, err := Open(path)
		require.NoError(t, err)
		assert.Equal(t, path, s.Path())
		assert.Equal(t, mustParse(t, testPolicy).Digest(), s.Current().Digest())
	})
}

func TestReload(t *testing.T) {
	path := newPolicyFile(t, testPolicy)
	s, err := Open(path)
	require.NoError(t, err)
	first := s.Current()

	changed, err := s.Reload()
	require.NoError(t, err)
	assert.False(t, changed, "same bytes")
	assert.Same(t, first, s.Current())

	writePolicy(t, path, longerTTL)
	changed, err = s.Reload()
	require.NoError(t, err)
	assert.True(t, changed)
	assert.NotEqual(t, first.Digest(), s.Current().Digest())
	assert.Equal(t, mustParse(t, longerTTL).Digest(), s.Current().Digest())
	second := s.Current()

	// A typo must not open or close every grant: the policy in force stays.
	writePolicy(t, path, typo)
	for range 2 {
		changed, err = s.Reload()
		require.Error(t, err)
		assert.False(t, changed)
		assert.Contains(t, err.Error(), "aproval")
		assert.Same(t, second, s.Current())
	}

	// Nor does a file that went away.
	require.NoError(t, os.Remove(path))
	changed, err = s.Reload()
	require.Error(t, err)
	assert.False(t, changed)
	assert.Same(t, second, s.Current())

	// The fixed file takes again.
	writePolicy(t, path, testPolicy)
	changed, err = s.Reload()
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, first.Digest(), s.Current().Digest())
}

func TestWatch(t *testing.T) {
	path := newPolicyFile(t, testPolicy)
	s, err := Open(path)
	require.NoError(t, err)
	var logs testlog.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 10*time.Millisecond, logger)
	}()
	// Stop the watcher even when an assertion fails first.
	t.Cleanup(func() {
		cancel()
		<-done
	})

	want := mustParse(t, longerTTL).Digest()
	writePolicy(t, path, longerTTL)
	require.Eventually(t, func() bool { return s.Current().Digest() == want }, 2*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "grant policy reloaded")

	// The refused version is logged, and the policy in force stays.
	writePolicy(t, path, typo)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "aproval") }, 2*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "not reloaded")
	assert.Equal(t, want, s.Current().Digest())

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not return when its context ended")
	}
}

func TestStatic(t *testing.T) {
	p := mustParse(t, testPolicy)
	s := Static(p)
	assert.Same(t, p, s.Current())
	assert.Empty(t, s.Path(), "no file behind it")
}
