package activities

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
)

func coalescingGCP(window time.Duration) *GCP {
	g := testPolicyGCP()
	g.policies = newPolicyBatcher(g, window)
	return g
}

// setCalls counts every setIamPolicy call, refused ones included.
func (s *fakePolicyStore) setCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes + s.conflicts
}

func (s *fakePolicyStore) members(role string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range s.policy.Bindings {
		if b.Role == role && b.Condition == nil {
			out = append(out, b.Members...)
		}
	}
	return out
}

// requireIdle waits for the resource's leader to finish and checks it left no
// state behind.
func requireIdle(t *testing.T, g *GCP) {
	t.Helper()
	require.Eventually(t, func() bool {
		g.policies.mu.Lock()
		defer g.policies.mu.Unlock()
		return len(g.policies.queues) == 0
	}, 2*time.Second, time.Millisecond, "leader exits once its queue is empty")
}

func addMember(role, member string) func(*Policy) bool {
	return func(p *Policy) bool { return p.AddMember(role, member) }
}

func removeMember(role, member string) func(*Policy) bool {
	return func(p *Policy) bool { return p.RemoveMember(role, member) }
}

func TestCoalesceConcurrentAddsShareWrites(t *testing.T) {
	for _, window := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond} {
		t.Run(window.String(), func(t *testing.T) {
			// Without a round trip to wait on, nothing would ever queue behind a write.
			store := &fakePolicyStore{latency: 2 * time.Millisecond}
			g := coalescingGCP(window)
			baseline := runtime.NumGoroutine()
			const n = 100
			changed := make([]bool, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					var err error
					changed[i], err = g.modifyPolicy(context.Background(), store.access("r"), addMember("roles/iam.workloadIdentityUser", fmt.Sprintf("serviceAccount:p.svc.id.goog[ns%d/ksa]", i)))
					assert.NoError(t, err)
				})
			}
			wg.Wait()
			requireIdle(t, g)

			members := store.members("roles/iam.workloadIdentityUser")
			assert.Len(t, members, n)
			for i := range n {
				assert.Contains(t, members, fmt.Sprintf("serviceAccount:p.svc.id.goog[ns%d/ksa]", i))
				assert.True(t, changed[i], "caller %d added its member", i)
			}
			assert.Zero(t, store.conflicts, "one writer per resource in the process")
			assert.LessOrEqual(t, store.setCalls(), 10, "setIamPolicy calls for %d adds", n)
			assert.Equal(t, store.reads, store.setCalls(), "one read per write")
			t.Logf("window %v: %d adds took %d getIamPolicy and %d setIamPolicy calls", window, n, store.reads, store.setCalls())
			// Polled by hand: assert.Eventually runs its condition on a goroutine of its own.
			deadline := time.Now().Add(2 * time.Second)
			for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			assert.LessOrEqual(t, runtime.NumGoroutine(), baseline, "no goroutine left behind")
		})
	}
}

func TestCoalesceDuplicateMemberChangesOnce(t *testing.T) {
	store := &fakePolicyStore{}
	g := coalescingGCP(50 * time.Millisecond)
	var wg sync.WaitGroup
	changed := make([]bool, 2)
	for i := range 2 {
		wg.Go(func() {
			var err error
			changed[i], err = g.modifyPolicy(context.Background(), store.access("r"), addMember("roles/viewer", "user:same@x.com"))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	requireIdle(t, g)
	assert.ElementsMatch(t, []bool{true, false}, changed, "exactly one caller changed the policy")
	assert.Equal(t, []string{"user:same@x.com"}, store.members("roles/viewer"))
	assert.Equal(t, 1, store.writes, "both shared one write")

	// Nothing to change: no write at all.
	c, err := g.modifyPolicy(context.Background(), store.access("r"), addMember("roles/viewer", "user:same@x.com"))
	require.NoError(t, err)
	assert.False(t, c)
	assert.Equal(t, 1, store.writes)
}

func TestCoalesceConflictReappliesWholeBatch(t *testing.T) {
	store := &fakePolicyStore{}
	raced := false
	store.beforeWrite = func() {
		if raced {
			return
		}
		raced = true
		// Another process writes between our read and our write.
		store.mu.Lock()
		store.policy.Bindings = append(store.policy.Bindings, &Binding{Role: "roles/viewer", Members: []string{"user:other@x.com"}})
		store.gen++
		store.mu.Unlock()
	}
	g := coalescingGCP(20 * time.Millisecond)
	const n = 20
	changed := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			changed[i], err = g.modifyPolicy(context.Background(), store.access("r"), addMember("roles/viewer", fmt.Sprintf("user:u%d@x.com", i)))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	requireIdle(t, g)
	assert.Equal(t, 1, store.conflicts)
	members := store.members("roles/viewer")
	assert.Len(t, members, n+1)
	assert.Contains(t, members, "user:other@x.com", "the other writer's change survives")
	for i := range n {
		assert.Contains(t, members, fmt.Sprintf("user:u%d@x.com", i))
		assert.True(t, changed[i], "caller %d", i)
	}
	t.Logf("%d adds with an injected conflict: %d setIamPolicy calls (%d refused)", n, store.setCalls(), store.conflicts)
}

func TestCoalesceConflictsExhaustedReachEveryCaller(t *testing.T) {
	store := &fakePolicyStore{alwaysConflict: true}
	g := coalescingGCP(20 * time.Millisecond)
	g.conflictRetry.Attempts = 3
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			_, err := g.modifyPolicy(context.Background(), store.access("r"), addMember("roles/viewer", fmt.Sprintf("user:u%d@x.com", i)))
			appErr := requireAppError(t, err)
			assert.False(t, appErr.NonRetryable())
			assert.Equal(t, contract.ErrTypeConcurrentChange, appErr.Type())
		})
	}
	wg.Wait()
	requireIdle(t, g)
	assert.Equal(t, 3, store.conflicts, "the five callers shared one batch of three attempts")
}

func TestCoalesceCancelledWaiterDoesNotBlockOthers(t *testing.T) {
	store := &fakePolicyStore{}
	release := make(chan struct{})
	var once sync.Once
	writing := make(chan struct{})
	store.beforeWrite = func() {
		once.Do(func() {
			close(writing)
			<-release // the first write hangs until the test lets it go
		})
	}
	g := coalescingGCP(0)
	ctx := context.Background()

	firstDone := make(chan error, 1)
	go func() {
		_, err := g.modifyPolicy(ctx, store.access("r"), addMember("roles/viewer", "user:first@x.com"))
		firstDone <- err
	}()
	<-writing

	// Two changes queue behind the write in flight; one caller gives up.
	cancelCtx, cancel := context.WithCancel(ctx)
	leftDone := make(chan error, 1)
	go func() {
		_, err := g.modifyPolicy(cancelCtx, store.access("r"), addMember("roles/viewer", "user:left@x.com"))
		leftDone <- err
	}()
	stayedDone := make(chan bool, 1)
	go func() {
		changed, err := g.modifyPolicy(ctx, store.access("r"), addMember("roles/viewer", "user:stayed@x.com"))
		assert.NoError(t, err)
		stayedDone <- changed
	}()
	require.Eventually(t, func() bool {
		g.policies.mu.Lock()
		defer g.policies.mu.Unlock()
		return len(g.policies.queues["r"]) == 2
	}, time.Second, time.Millisecond)

	cancel()
	select {
	case err := <-leftDone:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Second):
		t.Fatal("a cancelled caller must not wait for the batch ahead of it")
	}

	close(release)
	require.NoError(t, <-firstDone)
	assert.True(t, <-stayedDone)
	requireIdle(t, g)
	assert.ElementsMatch(t, []string{"user:first@x.com", "user:stayed@x.com"}, store.members("roles/viewer"),
		"the change of a caller that left before its cycle started is not written")
	assert.Equal(t, 2, store.writes)
}

func TestCoalesceLeaderStopsWhenEveryCallerLeft(t *testing.T) {
	store := &fakePolicyStore{}
	reading := make(chan struct{})
	g := coalescingGCP(0)
	pa := store.access("r")
	pa.get = func(ctx context.Context) (*Policy, error) {
		close(reading)
		<-ctx.Done() // a read that hangs until the batch is called off
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := g.modifyPolicy(ctx, pa, addMember("roles/viewer", "user:a@x.com"))
		done <- err
	}()
	<-reading
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	requireIdle(t, g)
	assert.Zero(t, store.setCalls())
}

// submitInOrder queues changes on one resource in the given order and returns
// their outcomes.
func submitInOrder(t *testing.T, g *GCP, pa policyAccess, mutations ...func(*Policy) bool) []policyOutcome {
	t.Helper()
	changes := make([]*policyChange, len(mutations))
	for i, m := range mutations {
		changes[i] = &policyChange{ctx: context.Background(), mutate: m, done: make(chan policyOutcome, 1)}
		g.policies.submit(pa, changes[i])
	}
	out := make([]policyOutcome, len(changes))
	for i, c := range changes {
		select {
		case out[i] = <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("change %d got no outcome", i)
		}
	}
	return out
}

func TestCoalesceMixedChangesApplyInArrivalOrder(t *testing.T) {
	const role = "roles/iam.workloadIdentityUser"
	store := &fakePolicyStore{policy: Policy{Bindings: []*Binding{{Role: role, Members: []string{"user:old@x.com"}}}}}
	g := coalescingGCP(50 * time.Millisecond)
	out := submitInOrder(t, g, store.access("r"),
		addMember(role, "user:x@x.com"),    // adds
		removeMember(role, "user:x@x.com"), // takes it out again
		removeMember(role, "user:old@x.com"),
		addMember(role, "user:old@x.com"), // puts it back
		removeMember(role, "user:never@x.com"),
		addMember(role, "user:y@x.com"),
		addMember(role, "user:Y@x.com"), // the same member, already added
	)
	requireIdle(t, g)
	var changed []bool
	for i, o := range out {
		require.NoError(t, o.err, "change %d", i)
		changed = append(changed, o.changed)
	}
	assert.Equal(t, []bool{true, true, true, true, false, true, false}, changed, "each caller sees its own effect, as if run one after another")
	assert.ElementsMatch(t, []string{"user:old@x.com", "user:y@x.com"}, store.members(role))
	assert.Equal(t, 1, store.writes)
	assert.Equal(t, 1, store.reads)
}

func TestCoalesceRefusedWriteIsolatesTheBadChange(t *testing.T) {
	store := &fakePolicyStore{}
	pa := store.access("r")
	set := pa.set
	var mu sync.Mutex
	var refused int
	pa.set = func(ctx context.Context, p *Policy) error {
		for _, b := range p.Bindings {
			if slices.ContainsFunc(b.Members, func(m string) bool { return strings.Contains(m, "ghost") }) {
				mu.Lock()
				refused++
				mu.Unlock()
				return ClassifyGoogleError(googleErr(400, "INVALID_ARGUMENT", "Service account ghost@p.iam.gserviceaccount.com does not exist."),
					"write IAM policy", "")
			}
		}
		return set(ctx, p)
	}
	g := coalescingGCP(50 * time.Millisecond)
	out := submitInOrder(t, g, pa,
		addMember("roles/viewer", "user:a@x.com"),
		addMember("roles/viewer", "serviceAccount:ghost@p.iam.gserviceaccount.com"),
		addMember("roles/viewer", "user:b@x.com"),
	)
	requireIdle(t, g)
	assert.NoError(t, out[0].err)
	assert.True(t, out[0].changed)
	assert.True(t, IsMemberMissing(out[1].err), "the bad change gets its own error: %v", out[1].err)
	assert.False(t, out[1].changed)
	assert.NoError(t, out[2].err)
	assert.True(t, out[2].changed)
	assert.ElementsMatch(t, []string{"user:a@x.com", "user:b@x.com"}, store.members("roles/viewer"))
	assert.Equal(t, 2, refused, "the batch's write, then the bad change alone")
}

func TestCoalesceReadErrorReachesEveryCaller(t *testing.T) {
	store := &fakePolicyStore{}
	pa := store.access("r")
	pa.get = func(ctx context.Context) (*Policy, error) {
		return nil, ClassifyGoogleError(googleErr(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getIamPolicy' denied"),
			"read IAM policy", "iam.serviceAccounts.getIamPolicy")
	}
	g := coalescingGCP(20 * time.Millisecond)
	out := submitInOrder(t, g, pa, addMember("roles/viewer", "user:a@x.com"), addMember("roles/viewer", "user:b@x.com"))
	requireIdle(t, g)
	for _, o := range out {
		appErr := requireAppError(t, o.err)
		assert.True(t, appErr.NonRetryable())
		assert.Equal(t, contract.ErrTypePermissionDenied, appErr.Type())
	}
	assert.Zero(t, store.setCalls())
}

func TestCoalesceResourcesAreIndependent(t *testing.T) {
	a, b := &fakePolicyStore{}, &fakePolicyStore{}
	g := coalescingGCP(5 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range 20 {
		store, name := a, "a"
		if i%2 == 1 {
			store, name = b, "b"
		}
		wg.Go(func() {
			_, err := g.modifyPolicy(context.Background(), store.access(name), addMember("roles/viewer", fmt.Sprintf("user:u%d@x.com", i)))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	requireIdle(t, g)
	assert.Len(t, a.members("roles/viewer"), 10)
	assert.Len(t, b.members("roles/viewer"), 10)
	for i := range 20 {
		want := a
		if i%2 == 1 {
			want = b
		}
		assert.Contains(t, want.members("roles/viewer"), fmt.Sprintf("user:u%d@x.com", i), "each change lands on its own resource")
	}
}

func TestGCPCoalescedServiceAccountBindings(t *testing.T) {
	e := newGCPEmu(t, defaultEmuConfig())
	sa := e.createServiceAccount("shared-gsa")
	e.runStep(e.gcp.SetWorkloadPool, emuClusterRef)
	e.emu.ResetRequestLog()

	// Fifty onboardings bind their KSAs to one shared GSA through one worker.
	const n = 50
	member := func(i int) string {
		return fmt.Sprintf("serviceAccount:%s.svc.id.goog[tenant-%d/carto-common-backend]", emuProject, i)
	}
	results := make([]StepResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			val, err := activityEnv(e.gcp).ExecuteActivity(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
				ServiceAccountEmail: sa.Email, Role: "roles/iam.workloadIdentityUser", Member: member(i),
			})
			if assert.NoError(t, err, "onboarding %d", i) {
				assert.NoError(t, val.Get(&results[i]))
			}
		})
	}
	wg.Wait()
	sets, gets := e.count("iam.projects.serviceAccounts.setIamPolicy"), e.count("iam.projects.serviceAccounts.getIamPolicy")
	t.Logf("%d concurrent bindings: %d getIamPolicy, %d setIamPolicy calls", n, gets, sets)
	assert.LessOrEqual(t, float64(sets), 1.2*n)
	assert.Less(t, sets, n/2, "bindings share writes")

	p := e.saPolicy(sa.Email)
	for i := range n {
		assert.True(t, p.HasMember("roles/iam.workloadIdentityUser", member(i)), "member %d", i)
		assert.True(t, results[i].Changed, "onboarding %d reports its own grant", i)
	}

	// Again: nothing to change, nothing written, every caller told so.
	e.emu.ResetRequestLog()
	for i := range n {
		wg.Go(func() {
			val, err := activityEnv(e.gcp).ExecuteActivity(e.gcp.AddServiceAccountIAMMember, ServiceAccountIAMInput{
				ServiceAccountEmail: sa.Email, Role: "roles/iam.workloadIdentityUser", Member: member(i),
			})
			var res StepResult
			if assert.NoError(t, err) && assert.NoError(t, val.Get(&res)) {
				assert.False(t, res.Changed, "onboarding %d", i)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, e.count("iam.projects.serviceAccounts.setIamPolicy"))
}
