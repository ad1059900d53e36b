package activities

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/bigquery/v2"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/iam/v1"

	"github.com/gkewi/gkewi/contract"
)

func TestPolicyAddMemberKeepsOtherBindingsAndConditions(t *testing.T) {
	cond := &Condition{Title: "until 2030", Expression: `request.time < timestamp("2030-01-01T00:00:00Z")`}
	p := &Policy{Version: 3, Etag: "e1", Bindings: []*Binding{
		{Role: "roles/iam.workloadIdentityUser", Members: []string{"user:a@x.com"}, Condition: cond},
		{Role: "roles/viewer", Members: []string{"user:b@x.com"}},
	}}

	assert.True(t, p.AddMember("roles/iam.workloadIdentityUser", "serviceAccount:p.svc.id.goog[ns/ksa]"))
	require.Len(t, p.Bindings, 3, "the conditional binding is not reused for an unconditional grant")
	assert.Equal(t, []string{"user:a@x.com"}, p.Bindings[0].Members)
	assert.Same(t, cond, p.Bindings[0].Condition)
	assert.Equal(t, []string{"user:b@x.com"}, p.Bindings[1].Members)
	assert.Equal(t, &Binding{Role: "roles/iam.workloadIdentityUser", Members: []string{"serviceAccount:p.svc.id.goog[ns/ksa]"}}, p.Bindings[2])

	assert.False(t, p.AddMember("roles/iam.workloadIdentityUser", "serviceAccount:p.svc.id.goog[ns/ksa]"), "second add is a no-op")
	assert.True(t, p.AddMember("roles/viewer", "user:c@x.com"))
	assert.Equal(t, []string{"user:b@x.com", "user:c@x.com"}, p.Bindings[1].Members)
}

func TestPolicyHasMemberIgnoresConditionalGrants(t *testing.T) {
	p := &Policy{Bindings: []*Binding{
		{Role: "roles/viewer", Members: []string{"user:a@x.com"}, Condition: &Condition{Expression: "true"}},
	}}
	assert.False(t, p.HasMember("roles/viewer", "user:a@x.com"))
	assert.True(t, p.AddMember("roles/viewer", "user:a@x.com"))
	assert.True(t, p.HasMember("roles/viewer", "user:A@x.com"), "emails compare case-insensitively")
}

func TestPolicyRemoveMember(t *testing.T) {
	cond := &Condition{Expression: "true"}
	p := &Policy{Bindings: []*Binding{
		{Role: "roles/iam.workloadIdentityUser", Members: []string{"serviceAccount:p.svc.id.goog[ns/ksa]"}, Condition: cond},
		{Role: "roles/iam.workloadIdentityUser", Members: []string{"serviceAccount:p.svc.id.goog[ns/ksa]", "serviceAccount:p.svc.id.goog[other/ksa]"}},
		{Role: "roles/iam.serviceAccountTokenCreator", Members: []string{"serviceAccount:gsa@p.iam.gserviceaccount.com"}},
	}}
	assert.True(t, p.RemoveMember("roles/iam.workloadIdentityUser", "serviceAccount:p.svc.id.goog[ns/ksa]"))
	require.Len(t, p.Bindings, 3)
	assert.Equal(t, []string{"serviceAccount:p.svc.id.goog[ns/ksa]"}, p.Bindings[0].Members, "conditional grant untouched")
	assert.Equal(t, []string{"serviceAccount:p.svc.id.goog[other/ksa]"}, p.Bindings[1].Members)

	assert.False(t, p.RemoveMember("roles/iam.workloadIdentityUser", "serviceAccount:p.svc.id.goog[ns/ksa]"))
	assert.True(t, p.RemoveMember("roles/iam.serviceAccountTokenCreator", "serviceAccount:gsa@p.iam.gserviceaccount.com"))
	require.Len(t, p.Bindings, 2, "empty binding dropped")
	assert.Equal(t, "roles/iam.workloadIdentityUser", p.Bindings[1].Role)
}

func TestPolicyPrepareWriteVersion(t *testing.T) {
	p := &Policy{Bindings: []*Binding{{Role: "roles/viewer", Members: []string{"user:a@x.com"}}}}
	p.prepareWrite()
	assert.EqualValues(t, 1, p.Version)

	p.Bindings = append(p.Bindings, &Binding{Role: "roles/editor", Members: []string{"user:a@x.com"}, Condition: &Condition{Expression: "true"}})
	p.prepareWrite()
	assert.EqualValues(t, 3, p.Version)
}

func TestPolicyConvertsBetweenAPITypes(t *testing.T) {
	src := &iam.Policy{
		Version: 3, Etag: "BwX=",
		Bindings: []*iam.Binding{
			{Role: "roles/iam.workloadIdentityUser", Members: []string{"serviceAccount:p.svc.id.goog[ns/ksa]"},
				Condition: &iam.Expr{Title: "t", Expression: "request.time < timestamp('2030-01-01T00:00:00Z')"}},
		},
		AuditConfigs: []*iam.AuditConfig{{Service: "allServices", AuditLogConfigs: []*iam.AuditLogConfig{{LogType: "DATA_READ"}}}},
	}
	p, err := convertPolicy[Policy](src)
	require.NoError(t, err)
	assert.Equal(t, "BwX=", p.Etag)
	require.Len(t, p.Bindings, 1)
	assert.Equal(t, "t", p.Bindings[0].Condition.Title)

	crm, err := convertPolicy[cloudresourcemanager.Policy](p)
	require.NoError(t, err)
	assert.EqualValues(t, 3, crm.Version)
	assert.Equal(t, "BwX=", crm.Etag)
	require.Len(t, crm.Bindings, 1)
	assert.Equal(t, src.Bindings[0].Condition.Expression, crm.Bindings[0].Condition.Expression)
	require.Len(t, crm.AuditConfigs, 1, "audit configs are carried through")
	assert.Equal(t, "DATA_READ", crm.AuditConfigs[0].AuditLogConfigs[0].LogType)
}

// fakePolicyStore is one resource's policy with etags, like setIamPolicy: a write
// with a stale etag fails with 409 ABORTED.
type fakePolicyStore struct {
	mu        sync.Mutex
	policy    Policy
	gen       int
	reads     int
	writes    int
	conflicts int
	// before runs (unlocked) between a read and the write that follows it, so a
	// test can slip in a competing writer.
	beforeWrite func()
	// alwaysConflict makes every write fail.
	alwaysConflict bool
	// latency is added to every call, as a network round trip would.
	latency time.Duration
}

func (s *fakePolicyStore) access(resource string) policyAccess {
	return policyAccess{
		resource: resource,
		get: func(ctx context.Context) (*Policy, error) {
			time.Sleep(s.latency)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.reads++
			cp, err := convertPolicy[Policy](&s.policy)
			if err != nil {
				return nil, err
			}
			cp.Etag = strconv.Itoa(s.gen)
			return cp, nil
		},
		set: func(ctx context.Context, p *Policy) error {
			time.Sleep(s.latency)
			if s.beforeWrite != nil {
				s.beforeWrite()
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.alwaysConflict || p.Etag != strconv.Itoa(s.gen) {
				s.conflicts++
				return ClassifyGoogleError(googleErr(409, "ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."),
					"write policy", "")
			}
			s.writes++
			s.gen++
			cp, err := convertPolicy[Policy](p)
			if err != nil {
				return err
			}
			s.policy = *cp
			return nil
		},
	}
}

func testPolicyGCP() *GCP {
	g := &GCP{
		locks:         newResourceLocks(),
		conflictRetry: ConflictRetry{Attempts: 50, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}.withDefaults(),
		pollInterval:  time.Millisecond,
	}
	g.policies = newPolicyBatcher(g, 0)
	return g
}

func TestPolicyReadModifyWriteSkipsUnchangedWrite(t *testing.T) {
	store := &fakePolicyStore{policy: Policy{Bindings: []*Binding{{Role: "roles/viewer", Members: []string{"user:a@x.com"}}}}}
	g := testPolicyGCP()
	changed, err := g.modifyPolicy(context.Background(), store.access("r"), func(p *Policy) bool { return p.AddMember("roles/viewer", "user:a@x.com") })
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, 0, store.writes)
	assert.Equal(t, 1, store.reads)
}

func TestPolicyReadModifyWriteRetriesLostRace(t *testing.T) {
	store := &fakePolicyStore{}
	raced := false
	store.beforeWrite = func() {
		if raced {
			return
		}
		raced = true
		// Another writer changes the policy between our read and our write.
		store.mu.Lock()
		store.policy.Bindings = append(store.policy.Bindings, &Binding{Role: "roles/viewer", Members: []string{"user:other@x.com"}})
		store.gen++
		store.mu.Unlock()
	}
	g := testPolicyGCP()
	changed, err := g.modifyPolicy(context.Background(), store.access("r"), func(p *Policy) bool { return p.AddMember("roles/viewer", "user:me@x.com") })
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 1, store.conflicts)
	assert.Equal(t, 2, store.reads, "the whole cycle ran again from the read")
	assert.ElementsMatch(t, []string{"user:other@x.com", "user:me@x.com"}, store.policy.Bindings[0].Members, "the other writer's change survives")
}

func TestPolicyReadModifyWriteGivesUpRetryably(t *testing.T) {
	store := &fakePolicyStore{alwaysConflict: true}
	g := testPolicyGCP()
	g.conflictRetry.Attempts = 4
	_, err := g.modifyPolicy(context.Background(), store.access("r"), func(p *Policy) bool { return p.AddMember("roles/viewer", "user:me@x.com") })
	appErr := requireAppError(t, err)
	assert.False(t, appErr.NonRetryable())
	assert.Equal(t, contract.ErrTypeConcurrentChange, appErr.Type())
	assert.Equal(t, 4, store.conflicts)
}

func TestPolicyConcurrentWritersInOneProcessDoNotConflict(t *testing.T) {
	store := &fakePolicyStore{}
	g := testPolicyGCP()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			member := fmt.Sprintf("user:u%d@x.com", i)
			_, err := g.modifyPolicy(context.Background(), store.access("r"), func(p *Policy) bool { return p.AddMember("roles/viewer", member) })
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Equal(t, 0, store.conflicts, "writes to one resource are serialized within the process")
	require.Len(t, store.policy.Bindings, 1)
	assert.Len(t, store.policy.Bindings[0].Members, 10)
}

func TestPolicyConcurrentWritersInManyProcessesAllLand(t *testing.T) {
	store := &fakePolicyStore{}
	// No write goes before all ten processes have read: their first cycles all
	// overlap, so nine of them must lose the race at least once.
	store.beforeWrite = func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
			store.mu.Lock()
			reads := store.reads
			store.mu.Unlock()
			if reads >= 10 {
				return
			}
		}
	}
	var wg sync.WaitGroup
	for i := range 10 {
		g := testPolicyGCP() // one per process: no shared lock
		wg.Go(func() {
			member := fmt.Sprintf("user:u%d@x.com", i)
			_, err := g.modifyPolicy(context.Background(), store.access("r"), func(p *Policy) bool { return p.AddMember("roles/viewer", member) })
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	require.Len(t, store.policy.Bindings, 1)
	assert.Len(t, store.policy.Bindings[0].Members, 10)
	assert.Equal(t, 10, store.writes)
	assert.GreaterOrEqual(t, store.conflicts, 9)
}

func TestPolicyLocksHonourContext(t *testing.T) {
	l := newResourceLocks()
	unlock, err := l.lock(context.Background(), "r")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = l.lock(ctx, "r")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	other, err := l.lock(context.Background(), "other")
	require.NoError(t, err, "other resources are not blocked")
	other()
	unlock()
	again, err := l.lock(context.Background(), "r")
	require.NoError(t, err)
	again()
	assert.Empty(t, l.locks, "locks are dropped when nobody holds or waits for them")
}

func TestPolicyConflictBackoffGrowsAndIsBounded(t *testing.T) {
	next := ConflictRetry{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}.withDefaults().delays()
	for attempt, max := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second} {
		d := next()
		assert.GreaterOrEqual(t, d, max/2, "attempt %d", attempt)
		assert.LessOrEqual(t, d, max, "attempt %d", attempt)
	}
	for range 1000 {
		next()
	}
	d := next()
	assert.GreaterOrEqual(t, d, 500*time.Millisecond)
	assert.LessOrEqual(t, d, time.Second)
}

func TestGCPDatasetAccessEntries(t *testing.T) {
	entries := []*bigquery.DatasetAccess{
		{Role: "OWNER", SpecialGroup: "projectOwners"},
		{Role: "WRITER", UserByEmail: "gsa@p.iam.gserviceaccount.com", Condition: &bigquery.Expr{Expression: "true"}},
	}
	member := "serviceAccount:gsa@p.iam.gserviceaccount.com"

	added, changed := addDatasetAccess(entries, roleBigQueryDataEditor, member)
	require.True(t, changed, "a conditional entry does not count")
	require.Len(t, added, 3)
	assert.Equal(t, &bigquery.DatasetAccess{Role: roleBigQueryDataEditor, UserByEmail: "gsa@p.iam.gserviceaccount.com"}, added[2])

	// BigQuery reads the grant back under its legacy name.
	readBack := append(entries[:2:2], &bigquery.DatasetAccess{Role: "WRITER", UserByEmail: "GSA@p.iam.gserviceaccount.com"})
	_, changed = addDatasetAccess(readBack, roleBigQueryDataEditor, member)
	assert.False(t, changed)

	removed, changed := removeDatasetAccess(readBack, roleBigQueryDataEditor, member)
	assert.True(t, changed)
	assert.Equal(t, entries, removed, "only the unconditional grant goes")
	_, changed = removeDatasetAccess(removed, roleBigQueryDataEditor, member)
	assert.False(t, changed)

	principal := "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p.svc.id.goog/subject/ns/ns/sa/ksa"
	withPrincipal, changed := addDatasetAccess(nil, roleBigQueryDataEditor, principal)
	assert.True(t, changed)
	assert.Equal(t, principal, withPrincipal[0].IamMember)
	assert.True(t, accessEntryMatches(&bigquery.DatasetAccess{Role: "WRITER", IamMember: member}, roleBigQueryDataEditor, member))
	assert.False(t, accessEntryMatches(&bigquery.DatasetAccess{Role: "READER", UserByEmail: "gsa@p.iam.gserviceaccount.com"}, roleBigQueryDataEditor, member))
}

func TestGCPBigQueryGrantsPlan(t *testing.T) {
	grants, temp, err := bigQueryGrants(BigQueryAccessInput{
		Member: "serviceAccount:gsa@p.iam.gserviceaccount.com", DataProject: "data", BillingProject: "bill", TempDataset: "tmp",
	})
	require.NoError(t, err)
	assert.Equal(t, datasetRef{project: "bill", dataset: "tmp"}, temp)
	var got []string
	for _, g := range grants {
		got = append(got, g.String())
	}
	assert.Equal(t, []string{
		"roles/bigquery.dataEditor on project data",
		"roles/bigquery.jobUser on project bill",
		"roles/bigquery.dataEditor on dataset bill.tmp",
	}, got)

	grants, _, err = bigQueryGrants(BigQueryAccessInput{
		Member: "serviceAccount:gsa@p.iam.gserviceaccount.com", DataProject: "data", BillingProject: "bill", TempDataset: "tmp",
		Datasets: []string{"sales", "other:shared"},
	})
	require.NoError(t, err)
	got = got[:0]
	for _, g := range grants {
		got = append(got, g.String())
	}
	assert.Equal(t, []string{
		"roles/bigquery.dataEditor on dataset data.sales",
		"roles/bigquery.dataEditor on dataset other.shared",
		"roles/bigquery.jobUser on project bill",
		"roles/bigquery.dataEditor on dataset bill.tmp",
	}, got)

	_, _, err = bigQueryGrants(BigQueryAccessInput{Member: "gsa@p.iam.gserviceaccount.com", DataProject: "d", BillingProject: "b", TempDataset: "t"})
	assert.True(t, requireAppError(t, err).NonRetryable(), "member without a type prefix")
	_, _, err = bigQueryGrants(BigQueryAccessInput{Member: "serviceAccount:x", DataProject: "d", BillingProject: "b", TempDataset: "t", Datasets: []string{"p."}})
	assert.Error(t, err)
}

func TestGCPWorkloadPoolProject(t *testing.T) {
	assert.Equal(t, "my-proj", workloadPoolProject("serviceAccount:my-proj.svc.id.goog[ns/ksa]"))
	assert.Equal(t, "my-proj", workloadPoolProject("principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/ns/sa/ksa"))
	assert.Equal(t, "", workloadPoolProject("serviceAccount:gsa@my-proj.iam.gserviceaccount.com"))
}

func TestGCPEndpointsFromMap(t *testing.T) {
	eps := GCPEndpointsFromMap(map[string]string{
		"serviceusage": "http://h/su/", "container": "http://h/c", "iam": "http://h/iam/", "cloudresourcemanager": "http://h/crm/",
		"bigquery": "http://h/bq/bigquery/v2/", "sts": "http://h/sts/", "iamcredentials": "http://h/iamc/",
	})
	assert.Equal(t, GCPEndpoints{
		ServiceUsage: "http://h/su/", Container: "http://h/c", IAM: "http://h/iam/", ResourceManager: "http://h/crm/",
		BigQuery: "http://h/bq/bigquery/v2/", STS: "http://h/sts/", IAMCredentials: "http://h/iamc/",
	}, eps)
	assert.Len(t, eps.ClientOptions(APIContainer), 1)
	assert.Empty(t, GCPEndpoints{}.ClientOptions(APIContainer), "empty endpoint means Google's")
}

// A propagation longer than the attempt ends the attempt with a retryable
// error before its deadline, not with the last (final-looking) answer.
func TestPolicyWhilePropagatingEndsWithinTheAttempt(t *testing.T) {
	g := testPolicyGCP()
	g.propagationTimeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	calls := 0
	_, err := g.whilePropagating(ctx, newAccountPropagating, func(ctx context.Context) (bool, error) {
		calls++
		return false, ClassifyGoogleError(googleErr(400, "INVALID_ARGUMENT", "Service account carto@p.iam.gserviceaccount.com does not exist."), "write", "")
	})
	require.NoError(t, ctx.Err(), "ended before the attempt's deadline")
	appErr := requireAppError(t, err)
	assert.Equal(t, contract.ErrTypePropagating, appErr.Type())
	assert.False(t, appErr.NonRetryable(), "the next attempt tries again")
	assert.Contains(t, appErr.Message(), "does not exist")
	assert.Greater(t, calls, 1)
}

func TestPolicyWhilePropagatingRetriesOnlyPropagationErrors(t *testing.T) {
	g := testPolicyGCP()
	g.propagationTimeout = time.Second
	calls := 0
	changed, err := g.whilePropagating(context.Background(), newAccountPropagating, func(ctx context.Context) (bool, error) {
		calls++
		if calls < 3 {
			return false, ClassifyGoogleError(googleErr(404, "NOT_FOUND", "gone"), "read", "")
		}
		return true, nil
	})
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 3, calls)

	calls = 0
	_, err = g.whilePropagating(context.Background(), newAccountPropagating, func(ctx context.Context) (bool, error) {
		calls++
		return false, ClassifyGoogleError(googleErr(400, "INVALID_ARGUMENT", "bad role"), "write", "")
	})
	assert.Error(t, err)
	assert.Equal(t, 1, calls, "other errors are not retried")

	g.propagationTimeout = 30 * time.Millisecond
	start := time.Now()
	_, err = g.whilePropagating(context.Background(), newAccountPropagating, func(ctx context.Context) (bool, error) {
		return false, ClassifyGoogleError(googleErr(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getIamPolicy' denied"), "read", "")
	})
	assert.Less(t, time.Since(start), time.Second, "bounded by the propagation timeout")
	assert.Equal(t, contract.ErrTypePermissionDenied, requireAppError(t, err).Type())
}
