package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Health answers the probes. /healthz says the process serves HTTP; /readyz
// says every readiness check passes: the worker polls (set by the worker's
// start and cleared as it stops) and each registered check, e.g. the Temporal
// frontend answering a health check.
type Health struct {
	mu      sync.Mutex
	polling bool
	checks  map[string]func(context.Context) error
	timeout time.Duration
}

// NewHealth has no checks and does not poll yet.
func NewHealth() *Health {
	return &Health{checks: map[string]func(context.Context) error{}, timeout: 2 * time.Second}
}

// SetPolling records whether the worker polls its task queue.
func (h *Health) SetPolling(polling bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.polling = polling
}

// AddCheck adds a readiness check; it gets a context of a couple of seconds.
func (h *Health) AddCheck(name string, check func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Ready runs the checks, returning one line per check and whether all passed.
func (h *Health) Ready(ctx context.Context) ([]string, bool) {
	h.mu.Lock()
	polling := h.polling
	names := make([]string, 0, len(h.checks))
	for name := range h.checks {
		names = append(names, name)
	}
	slices.Sort(names)
	checks := make([]func(context.Context) error, len(names))
	for i, name := range names {
		checks[i] = h.checks[name]
	}
	h.mu.Unlock()

	ok := polling
	lines := []string{"worker: polling"}
	if !polling {
		lines[0] = "worker: not polling"
	}
	for i, name := range names {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		err := checks[i](cctx)
		cancel()
		if err != nil {
			ok = false
			lines = append(lines, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		lines = append(lines, name+": ok")
	}
	return lines, ok
}

// Mux serves /healthz, /readyz and, when metrics is not nil, /metrics.
func (h *Health) Mux(metrics http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		lines, ok := h.Ready(r.Context())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(w, strings.Join(lines, "\n"))
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

// Server is the worker's HTTP endpoint.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (host:port; port 0 picks one) for handler.
func Listen(addr string, handler http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics and probes on %s: %w", addr, err)
	}
	return &Server{ln: ln, srv: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address bound.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; errors other than the shutdown go to onError.
func (s *Server) Serve(onError func(error)) {
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			onError(err)
		}
	}()
}

// Shutdown stops accepting and waits for the requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
