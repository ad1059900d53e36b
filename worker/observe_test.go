package worker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx/fxtest"

	"github.com/gkewi/gkewi/metrics"
	"github.com/gkewi/gkewi/worker/workertest"
)

func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestProbesFollowTheWorkerThroughStartAndStop(t *testing.T) {
	srv := workertest.StartDevServer(t, workertest.Options{})
	isolateTemporalEnv(t, srv.FrontendHostPort())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cfg := nowhereConfig(t)
	cfg.TaskQueue = "gkewi-probes-test"
	cfg.SweepInterval = 0
	cfg.HTTPAddr = addr
	base := "http://" + addr

	code, _ := probe(t, base+"/healthz")
	assert.Equal(t, 0, code, "nothing listens before the start")

	app := fxtest.New(t, Module(cfg, io.Discard))
	app.RequireStart()
	code, body := probe(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code, body)
	code, body = probe(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, "google: ok\nkubernetes: ok\ntemporal: ok\nworker: polling", strings.TrimSpace(sortedLines(body)))
	code, body = probe(t, base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "gkewi_grants{state=\"awaiting-approval\"} 0")
	assert.Contains(t, body, "go_goroutines")

	app.RequireStop()
	code, _ = probe(t, base+"/healthz")
	assert.Equal(t, 0, code, "the endpoint closes with the worker")
}

func TestReadinessNeedsPollingAndEveryCheck(t *testing.T) {
	h := metrics.NewHealth()
	h.AddCheck("temporal", func(context.Context) error { return nil })
	lines, ok := h.Ready(context.Background())
	assert.False(t, ok, "not ready before the worker polls")
	assert.Contains(t, lines, "worker: not polling")

	h.SetPolling(true)
	_, ok = h.Ready(context.Background())
	assert.True(t, ok)

	h.AddCheck("temporal", func(context.Context) error { return errors.New("connection refused") })
	lines, ok = h.Ready(context.Background())
	assert.False(t, ok)
	assert.Contains(t, lines, "temporal: connection refused")

	h.AddCheck("temporal", func(context.Context) error { return nil })
	h.SetPolling(false) // a graceful stop began
	_, ok = h.Ready(context.Background())
	assert.False(t, ok)
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		for j := i + 1; j < len(lines); j++ {
			if lines[j] < lines[i] {
				lines[i], lines[j] = lines[j], lines[i]
			}
		}
	}
	return strings.Join(lines, "\n")
}
