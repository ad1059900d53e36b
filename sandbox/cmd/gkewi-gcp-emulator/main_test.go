package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

func TestExampleConfigLoads(t *testing.T) {
	fc, err := loadFileConfig("example.yaml")
	require.NoError(t, err)
	cfg, err := fc.toConfig()
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, cfg.OperationDuration)
	assert.Equal(t, 10*time.Second, cfg.PropagationDelay)
	require.Len(t, cfg.Projects, 1)
	emu, err := gcpemu.New(cfg)
	require.NoError(t, err)
	require.NoError(t, emu.Close())
}

func TestUnknownConfigFieldIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("operater: x@y.iam.gserviceaccount.com\n"), 0o600))
	_, err := loadFileConfig(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "operater")
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	err = run([]string{"-listen", ln.Addr().String(), "-config", "example.yaml", "-quiet"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already in use")
}

func TestServesAndSavesStateOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	endpoints := filepath.Join(dir, "endpoints.json")
	state := filepath.Join(dir, "state.json")
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-listen", "127.0.0.1:0", "-config", "example.yaml", "-state", state,
			"-endpoints-file", endpoints, "-quiet"})
	}()
	var info struct {
		Endpoints       map[string]string `json:"endpoints"`
		Root            string            `json:"root"`
		GCEMetadataHost string            `json:"gceMetadataHost"`
	}
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(endpoints)
		return err == nil && json.Unmarshal(b, &info) == nil
	}, 10*time.Second, 20*time.Millisecond)
	assert.Len(t, info.Endpoints, 7)

	req, err := http.NewRequest(http.MethodGet, "http://"+info.GCEMetadataHost+"/computeMetadata/v1/instance/service-accounts/default/email", nil)
	require.NoError(t, err)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// Google's own paths answer at the root: bq's first request.
	assert.Equal(t, "http://"+info.GCEMetadataHost+"/", info.Root)
	resp, err = http.Get(info.Root + "$discovery/rest?version=v2")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("the emulator did not stop on SIGTERM")
	}
	_, err = os.Stat(state)
	require.NoError(t, err, "state saved on shutdown")
}
