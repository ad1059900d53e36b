package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gkewi/gkewi/contract"
)

// Policy is an IAM policy in the JSON shape shared by every Google API with
// getIamPolicy/setIamPolicy. Each API's Go type converts to and from it through
// that JSON, so one read-modify-write cycle serves them all.
type Policy struct {
	Version  int64      `json:"version,omitempty"`
	Etag     string     `json:"etag,omitempty"`
	Bindings []*Binding `json:"bindings,omitempty"`
	// AuditConfigs are carried through untouched.
	AuditConfigs json.RawMessage `json:"auditConfigs,omitempty"`
}

// Binding grants a role to members, optionally under a condition.
type Binding struct {
	Role      string     `json:"role"`
	Members   []string   `json:"members,omitempty"`
	Condition *Condition `json:"condition,omitempty"`
}

// Condition is an IAM condition (a CEL expression).
type Condition struct {
	Expression  string `json:"expression,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	Location    string `json:"location,omitempty"`
}

// conditionalPolicyVersion is required as soon as one binding has a condition;
// writing an older version would drop or reject them.
const conditionalPolicyVersion = 3

func sameMember(a, b string) bool { return strings.EqualFold(a, b) }

// HasMember reports whether member holds role through an unconditional binding.
func (p *Policy) HasMember(role, member string) bool {
	for _, b := range p.Bindings {
		if b.Role != role || b.Condition != nil {
			continue
		}
		for _, m := range b.Members {
			if sameMember(m, member) {
				return true
			}
		}
	}
	return false
}

// AddMember grants role to member unconditionally, leaving every other binding
// (conditional ones included) as it is. It reports whether the policy changed.
func (p *Policy) AddMember(role, member string) bool {
	if p.HasMember(role, member) {
		return false
	}
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			b.Members = append(b.Members, member)
			return true
		}
	}
	p.Bindings = append(p.Bindings, &Binding{Role: role, Members: []string{member}})
	return true
}

// RemoveMember takes member out of role's unconditional bindings, dropping a
// binding it leaves empty. Conditional bindings are left alone: they are not
// what AddMember grants. It reports whether the policy changed.
func (p *Policy) RemoveMember(role, member string) bool {
	changed := false
	kept := p.Bindings[:0]
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			members := b.Members[:0]
			for _, m := range b.Members {
				if sameMember(m, member) {
					changed = true
					continue
				}
				members = append(members, m)
			}
			b.Members = members
			if len(b.Members) == 0 {
				continue
			}
		}
		kept = append(kept, b)
	}
	p.Bindings = kept
	return changed
}

// prepareWrite sets the version a write needs: 3 when any binding is conditional.
func (p *Policy) prepareWrite() {
	for _, b := range p.Bindings {
		if b.Condition != nil {
			p.Version = conditionalPolicyVersion
			return
		}
	}
	if p.Version == 0 {
		p.Version = 1
	}
}

// convertPolicy turns one API's policy type into another's (or into Policy)
// through their common JSON form.
func convertPolicy[T any](from any) (*T, error) {
	data, err := json.Marshal(from)
	if err != nil {
		return nil, fmt.Errorf("encode IAM policy: %w", err)
	}
	out := new(T)
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("decode IAM policy: %w", err)
	}
	return out, nil
}

// policyAccess reads and writes the IAM policy of one resource. get asks for
// version 3 so conditions come back intact; set sends the etag of get. Both return
// classified errors.
type policyAccess struct {
	// resource names the resource in messages and keys the per-resource lock,
	// e.g. "projects/p" or "projects/-/serviceAccounts/x@p.iam.gserviceaccount.com".
	resource string
	get      func(ctx context.Context) (*Policy, error)
	set      func(ctx context.Context, p *Policy) error
}

// ConflictRetry bounds the retries of a read-modify-write cycle that lost a race
// with another writer (409 ABORTED or 412).
type ConflictRetry struct {
	// Attempts is the number of cycles before giving up; default 8.
	Attempts int
	// InitialBackoff doubles after each lost race, with jitter; default 500ms.
	InitialBackoff time.Duration
	// MaxBackoff caps one wait; default 16s.
	MaxBackoff time.Duration
}

func (r ConflictRetry) withDefaults() ConflictRetry {
	if r.Attempts <= 0 {
		r.Attempts = 8
	}
	if r.InitialBackoff <= 0 {
		r.InitialBackoff = 500 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 16 * time.Second
	}
	return r
}

// delays returns the waits between cycles: InitialBackoff doubling after each
// lost race up to MaxBackoff, each drawn from [d/2, d] so concurrent writers do
// not retry in lockstep (wait's jitter adds up to Jitter times the half).
func (r ConflictRetry) delays() wait.DelayFunc {
	half := min(r.InitialBackoff, r.MaxBackoff) / 2
	return wait.Backoff{Duration: half, Factor: 2, Jitter: 1, Steps: math.MaxInt, Cap: r.MaxBackoff / 2}.DelayFunc()
}

// resourceLocks serializes read-modify-write cycles on one resource within the
// process, so this worker's own concurrent changes do not race each other.
type resourceLocks struct {
	mu    sync.Mutex
	locks map[string]*resourceLock
}

type resourceLock struct {
	held chan struct{}
	refs int
}

func newResourceLocks() *resourceLocks {
	return &resourceLocks{locks: map[string]*resourceLock{}}
}

// lock waits for the resource's lock or for ctx to end.
func (l *resourceLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	rl, ok := l.locks[key]
	if !ok {
		rl = &resourceLock{held: make(chan struct{}, 1)}
		l.locks[key] = rl
	}
	rl.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		rl.refs--
		if rl.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
	select {
	case rl.held <- struct{}{}:
		return func() { <-rl.held; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// readModifyWrite runs cycle under the resource's lock until it completes, with
// retryOnConflict.
func (g *GCP) readModifyWrite(ctx context.Context, resource string, cycle func(ctx context.Context) (bool, error)) (bool, error) {
	unlock, err := g.locks.lock(ctx, resource)
	if err != nil {
		return false, fmt.Errorf("wait for other changes to %s: %w", resource, err)
	}
	defer unlock()
	var changed bool
	err = g.retryOnConflict(ctx, resource, func(ctx context.Context) error {
		var err error
		changed, err = cycle(ctx)
		return err
	})
	if err != nil {
		return false, err
	}
	return changed, nil
}

// retryOnConflict runs cycle again, from the read, while it loses races (its
// write fails with IsConcurrentChange), with exponential backoff. After the last
// attempt the error is retryable, so Temporal tries again later.
func (g *GCP) retryOnConflict(ctx context.Context, resource string, cycle func(ctx context.Context) error) error {
	retry := g.conflictRetry
	attempts := 0
	return retry.delays().Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		attempts++
		err := cycle(ctx)
		if err == nil || !IsConcurrentChange(err) {
			return true, err
		}
		if attempts >= retry.Attempts {
			return true, temporal.NewApplicationErrorWithCause(
				fmt.Sprintf("change to %s kept conflicting with concurrent writers after %d attempts; will retry", resource, retry.Attempts),
				contract.ErrTypeConcurrentChange, err)
		}
		heartbeat(ctx)
		return false, nil
	})
}

// modifyPolicy applies mutate to the resource's IAM policy with read-modify-write,
// writing only when mutate reports a change. Concurrent calls for one resource
// within the process are coalesced: they share one read and one write (see
// policyBatcher), and each learns whether its own mutate changed the policy.
//
// When ctx ends while the change waits, the call returns ctx's error at once and
// the change is dropped from cycles that have not started yet; a cycle already
// under way may still write it. Either way a retry of the (idempotent) activity
// finds the policy as it is and reports Changed accordingly.
func (g *GCP) modifyPolicy(ctx context.Context, pa policyAccess, mutate func(*Policy) bool) (bool, error) {
	c := &policyChange{ctx: ctx, mutate: mutate, done: make(chan policyOutcome, 1)}
	g.policies.submit(pa, c)

	tick := time.NewTicker(policyWaitHeartbeat)
	defer tick.Stop()
	for {
		select {
		case out := <-c.done:
			return out.changed, out.err
		case <-tick.C:
			heartbeat(ctx)
		case <-ctx.Done():
			select {
			case out := <-c.done: // finished meanwhile: report what happened
				return out.changed, out.err
			default:
			}
			return false, fmt.Errorf("wait for changes to %s: %w", pa.resource, ctx.Err())
		}
	}
}

// policyWaitHeartbeat is how often a change waiting for its batch heartbeats, so
// a long queue of conflicts does not look like a stuck activity.
const policyWaitHeartbeat = 5 * time.Second

// DefaultPolicyBatchWindow is how long the first change to an idle resource waits
// for others to join its write, unless GCPConfig.PolicyBatchWindow says otherwise.
const DefaultPolicyBatchWindow = 5 * time.Millisecond

// policyChange is one caller's change to a policy, waiting for its batch.
type policyChange struct {
	// ctx is the caller's: once it ends, later cycles leave the change out.
	ctx    context.Context
	mutate func(*Policy) bool
	// done receives exactly one outcome; buffered so the leader never blocks on a
	// caller that left.
	done chan policyOutcome
}

type policyOutcome struct {
	changed bool
	err     error
}

// policyBatcher coalesces concurrent changes to one IAM policy. The first change
// for an idle resource starts a leader goroutine; changes arriving while the
// leader gathers (for window) or writes join the resource's queue. The leader
// takes the whole queue as one batch, applies every change in arrival order to a
// single read and writes once, then takes whatever queued meanwhile, and exits
// when the queue is empty. So one resource has at most one leader and one
// read-modify-write in flight within the process, and N concurrent changes cost
// about one getIamPolicy+setIamPolicy pair per batch instead of N racing pairs.
type policyBatcher struct {
	g      *GCP
	window time.Duration

	mu     sync.Mutex
	queues map[string][]*policyChange // by resource; present while a leader runs
}

func newPolicyBatcher(g *GCP, window time.Duration) *policyBatcher {
	return &policyBatcher{g: g, window: window, queues: map[string][]*policyChange{}}
}

// submit queues c for pa's resource, starting a leader when none runs.
func (b *policyBatcher) submit(pa policyAccess, c *policyChange) {
	b.mu.Lock()
	defer b.mu.Unlock()
	queue, leading := b.queues[pa.resource]
	b.queues[pa.resource] = append(queue, c)
	if !leading {
		go b.lead(pa)
	}
}

// lead runs batches for one resource until its queue is empty.
func (b *policyBatcher) lead(pa policyAccess) {
	if b.window > 0 {
		time.Sleep(b.window)
	}
	for {
		b.mu.Lock()
		batch := b.queues[pa.resource]
		if len(batch) == 0 {
			delete(b.queues, pa.resource)
			b.mu.Unlock()
			return
		}
		b.queues[pa.resource] = batch[:0:0]
		b.mu.Unlock()
		b.run(pa, batch)
	}
}

// run writes one batch and tells every change its outcome. The calls run under a
// context of their own, cancelled once every caller in the batch has left.
func (b *policyBatcher) run(pa policyAccess, batch []*policyChange) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	left := 0
	stops := make([]func() bool, 0, len(batch))
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for _, c := range batch {
		stops = append(stops, context.AfterFunc(c.ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if left++; left == len(batch) {
				cancel()
			}
		}))
	}

	changed, writeFailed, err := b.apply(ctx, pa, batch)
	if writeFailed && apiCode(err) == http.StatusBadRequest && live(batch) > 1 {
		// The write was refused as invalid, maybe for one change alone (a member
		// that does not exist yet): let each change meet its own fate rather than
		// fail the others with it.
		for _, c := range batch {
			if c.ctx.Err() != nil {
				continue
			}
			one, _, err := b.apply(ctx, pa, []*policyChange{c})
			c.done <- policyOutcome{changed: one[0], err: err}
		}
		return
	}
	for i, c := range batch {
		if err != nil {
			c.done <- policyOutcome{err: err}
		} else {
			c.done <- policyOutcome{changed: changed[i]}
		}
	}
}

// apply is one read-modify-write of batch, retried while it loses races. It
// reports per change whether it changed the policy written, and whether the
// error, if any, came from the write.
func (b *policyBatcher) apply(ctx context.Context, pa policyAccess, batch []*policyChange) (changed []bool, writeFailed bool, err error) {
	changed = make([]bool, len(batch))
	err = b.g.retryOnConflict(ctx, pa.resource, func(ctx context.Context) error {
		clear(changed)
		writeFailed = false
		p, err := pa.get(ctx)
		if err != nil {
			return err
		}
		anyChange := false
		for i, c := range batch {
			if c.ctx.Err() != nil {
				continue // its caller left; a retry will apply it if still wanted
			}
			if c.mutate(p) {
				changed[i] = true
				anyChange = true
			}
		}
		if !anyChange {
			return nil
		}
		p.prepareWrite()
		if err := pa.set(ctx, p); err != nil {
			writeFailed = true
			return err
		}
		if b.g.onPolicyWrite != nil {
			b.g.onPolicyWrite(countTrue(changed))
		}
		return nil
	})
	if err != nil {
		clear(changed)
	}
	return changed, writeFailed, err
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// live counts the changes whose callers still wait.
func live(batch []*policyChange) int {
	n := 0
	for _, c := range batch {
		if c.ctx.Err() == nil {
			n++
		}
	}
	return n
}
