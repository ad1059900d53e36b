package gcpemu

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
)

// FaultRule injects failures or latency into calls of one method (or several).
type FaultRule struct {
	// Method is a method id ("iam.projects.serviceAccounts.setIamPolicy"), a
	// prefix ending in "*" ("container.*"), or "*" for every method.
	Method string `json:"method"`
	// Sequence scripts the first calls: the Nth matching call fails with
	// Sequence[N] (0 lets it through). After the sequence, ErrorRate applies.
	Sequence []int `json:"sequence,omitempty"`
	// ErrorRate is the probability (0..1) that a call fails with Code.
	ErrorRate float64 `json:"errorRate,omitempty"`
	// Code is the HTTP status of random failures; default 503.
	Code int `json:"code,omitempty"`
	// Status overrides the canonical status name (e.g. "FAILED_PRECONDITION").
	Status string `json:"status,omitempty"`
	// Message overrides the error message.
	Message string `json:"message,omitempty"`
	// OperationError, for calls that start a GKE operation, lets the call
	// succeed and makes its operation end DONE with this error message (and
	// Status's code, default INTERNAL) without applying its change, as a node
	// pool update that runs out of quota or capacity does. Sequence (non-zero
	// entries) or ErrorRate choose the calls; with neither, every matching call.
	OperationError string `json:"operationError,omitempty"`
	// LatencyMin and LatencyMax delay matching calls by a uniform random time.
	LatencyMin Duration `json:"latencyMin,omitempty"`
	LatencyMax Duration `json:"latencyMax,omitempty"`
}

// Duration is a time.Duration written as "1.5s" in JSON and YAML.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "250ms" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\" or nanoseconds: %s", b)
	}
	*d = Duration(n)
	return nil
}

func (r FaultRule) matches(method string) bool {
	switch {
	case r.Method == "" || r.Method == "*":
		return true
	case strings.HasSuffix(r.Method, "*"):
		return strings.HasPrefix(method, strings.TrimSuffix(r.Method, "*"))
	default:
		return r.Method == method
	}
}

type faultInjector struct {
	mu    sync.Mutex
	rnd   *rand.Rand
	rules []FaultRule
	calls []int // matching calls seen per rule
}

func newFaultInjector(rnd *rand.Rand, rules []FaultRule) *faultInjector {
	f := &faultInjector{rnd: rnd}
	f.set(rules)
	return f
}

func (f *faultInjector) set(rules []FaultRule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append([]FaultRule(nil), rules...)
	f.calls = make([]int, len(rules))
}

func (f *faultInjector) get() []FaultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FaultRule(nil), f.rules...)
}

// operationFault is how an operation started by a call is to fail.
type operationFault struct {
	message string
	code    int
}

// decide returns the latency to add, the error to return and how the call's
// operation is to fail, if at all.
func (f *faultInjector) decide(method string) (time.Duration, *apiError, *operationFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var (
		delay  time.Duration
		fail   *apiError
		opFail *operationFault
	)
	for i, r := range f.rules {
		if !r.matches(method) {
			continue
		}
		n := f.calls[i]
		f.calls[i]++
		if r.LatencyMax > 0 || r.LatencyMin > 0 {
			d := time.Duration(r.LatencyMin)
			if span := time.Duration(r.LatencyMax - r.LatencyMin); span > 0 {
				d += time.Duration(f.rnd.Int64N(int64(span) + 1))
			}
			delay = max(delay, d)
		}
		if fail != nil {
			continue
		}
		if r.OperationError != "" {
			if opFail == nil && (len(r.Sequence) == 0 && r.ErrorRate == 0 ||
				n < len(r.Sequence) && r.Sequence[n] != 0 ||
				n >= len(r.Sequence) && r.ErrorRate > 0 && f.rnd.Float64() < r.ErrorRate) {
				opFail = &operationFault{message: r.OperationError, code: rpcCode(r.Status)}
			}
			continue
		}
		code := 0
		if n < len(r.Sequence) {
			code = r.Sequence[n]
		} else if r.ErrorRate > 0 && f.rnd.Float64() < r.ErrorRate {
			code = r.Code
			if code == 0 {
				code = 503
			}
		}
		if code != 0 {
			fail = injectedError(code, r)
		}
	}
	return delay, fail, opFail
}

// rpcCode is the google.rpc.Code of a canonical status name; INTERNAL when
// the name is empty or unknown.
func rpcCode(status string) int {
	if c, ok := rpccode.Code_value[status]; ok && c != 0 {
		return int(c)
	}
	return int(rpccode.Code_INTERNAL)
}

func injectedError(code int, r FaultRule) *apiError {
	status := r.Status
	if status == "" {
		status = statusForHTTP(code)
	}
	msg := r.Message
	if msg == "" {
		switch code {
		case 503:
			msg = "The service is currently unavailable."
		case 429:
			msg = "Resource has been exhausted (e.g. check quota)."
		case 500:
			msg = "Internal error encountered."
		case 504:
			msg = "Deadline expired before operation could complete."
		case 409:
			msg = "The operation was aborted."
		case 403:
			msg = "The caller does not have permission"
		case 404:
			msg = "Requested entity was not found."
		case 400:
			msg = "Request contains an invalid argument."
		default:
			msg = fmt.Sprintf("Injected error %d.", code)
		}
	}
	e := newAPIError(code, status, "%s", msg)
	if code == 503 || code == 429 {
		e.OAuthError = "temporarily_unavailable"
	}
	return e
}

// SetFaults replaces the fault rules and restarts their scripted sequences.
func (e *Emulator) SetFaults(rules []FaultRule) { e.faults.set(rules) }
