package gcpemu

import (
	"encoding/json"
	"maps"
	"net/http"
	"time"
)

// RequestEntry is one logged API call.
type RequestEntry struct {
	Time      time.Time `json:"time"`
	Method    string    `json:"method"`
	Principal string    `json:"principal,omitempty"`
	Status    int       `json:"status"`
}

// requestLog counts calls per method and keeps the most recent ones.
type requestLog struct {
	size    int
	counts  map[string]int
	entries []RequestEntry // ring buffer
	next    int
	full    bool
}

func newRequestLog(size int) *requestLog {
	return &requestLog{size: size, counts: map[string]int{}, entries: make([]RequestEntry, size)}
}

func (l *requestLog) add(t time.Time, method, principal string, status int) {
	l.counts[method]++
	l.entries[l.next] = RequestEntry{Time: t, Method: method, Principal: principal, Status: status}
	l.next = (l.next + 1) % l.size
	if l.next == 0 {
		l.full = true
	}
}

func (l *requestLog) recent() []RequestEntry {
	if !l.full {
		return append([]RequestEntry(nil), l.entries[:l.next]...)
	}
	return append(append([]RequestEntry(nil), l.entries[l.next:]...), l.entries[:l.next]...)
}

func (l *requestLog) reset() {
	*l = *newRequestLog(l.size)
}

// RequestCounts is the number of calls per method id since start or the last reset.
func (e *Emulator) RequestCounts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.log.counts)
}

// RecentRequests is the bounded log of recent calls, oldest first.
func (e *Emulator) RecentRequests() []RequestEntry {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.recent()
}

// ResetRequestLog clears the counts and the recent calls.
func (e *Emulator) ResetRequestLog() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log.reset()
}

// serveAdmin answers /_emulator/: GET state, GET requests, GET/POST faults,
// POST tokens (mint a token for a principal), POST id-tokens (an ID token of a
// person, oidc.go), POST reset-log.
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_emulator/state":
		if r.Method != http.MethodGet {
			break
		}
		writeJSON(w, http.StatusOK, e.stateSnapshot())
		return
	case "/_emulator/requests":
		if r.Method != http.MethodGet {
			break
		}
		e.mu.Lock()
		body := map[string]any{"counts": maps.Clone(e.log.counts), "recent": e.log.recent()}
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
		return
	case "/_emulator/faults":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, map[string]any{"faults": e.faults.get()})
			return
		case http.MethodPost, http.MethodPut:
			var req struct {
				Faults []FaultRule `json:"faults"`
			}
			body, err := readBody(r)
			if err == nil {
				err = json.Unmarshal(body, &req)
			}
			if err != nil {
				writeError(w, flavorGoogle, errInvalid("faults: %v", err))
				return
			}
			e.SetFaults(req.Faults)
			writeJSON(w, http.StatusOK, map[string]any{"faults": e.faults.get()})
			return
		}
	case "/_emulator/tokens":
		if r.Method != http.MethodPost {
			break
		}
		var req struct {
			Principal string   `json:"principal"`
			Lifetime  Duration `json:"lifetime"`
		}
		body, err := readBody(r)
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil || req.Principal == "" {
			writeError(w, flavorGoogle, errInvalid("tokens: want {\"principal\": \"user:ops@example.com\", \"lifetime\": \"1h\"}"))
			return
		}
		tok := e.MintAccessTokenWithLifetime(req.Principal, time.Duration(req.Lifetime))
		e.mu.Lock()
		expiry := e.st.Tokens[tok].Expiry
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"accessToken": tok, "expireTime": expiry.UTC().Format(time.RFC3339)})
		return
	case "/_emulator/id-tokens":
		if r.Method != http.MethodPost {
			break
		}
		e.serveAdminIDToken(w, r)
		return
	case "/_emulator/reset-log":
		if r.Method != http.MethodPost {
			break
		}
		e.ResetRequestLog()
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	default:
		writeNotFoundPage(w, r.URL.Path)
		return
	}
	w.Header().Set("Allow", "GET, POST")
	writeError(w, flavorGoogle, newAPIError(http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "method %s not allowed on %s", r.Method, r.URL.Path))
}
