package gcpemu

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// IAMConsistency configures the model of IAM's eventual consistency for
// service accounts. IAM's front ends learn of a new account at different
// moments: for up to about a minute after a create, a look-up by email may
// answer 404, then 200, then 404 again, and a policy naming the account as a
// new member may be refused with 400 "Service account X does not exist.". The
// unique id is the account's key and is always answered exactly. A deleted
// account's email answers 403 (IAM_PERMISSION_DENIED) even to callers allowed
// to read the project's accounts.
type IAMConsistency struct {
	// NewAccountWindow is how long after its create an account may look
	// missing by email; 0 turns the whole model off.
	NewAccountWindow Duration `json:"newAccountWindow,omitempty"`
	// StaleRate is the chance that one look by email within the window misses
	// the account; default 0.5. The first look after the create always misses,
	// so every new account shows the behaviour at least once.
	StaleRate float64 `json:"staleRate,omitempty"`
}

const defaultStaleRate = 0.5

func (c IAMConsistency) validate() error {
	if c.NewAccountWindow < 0 || c.StaleRate < 0 || c.StaleRate > 1 {
		return fmt.Errorf("gcpemu: iamConsistency needs a window >= 0 and a staleRate in [0,1], got %s and %v",
			time.Duration(c.NewAccountWindow), c.StaleRate)
	}
	return nil
}

// defaultServiceAccountQuota is IAM's default number of service accounts per project.
const defaultServiceAccountQuota = 100

// serviceAccountQuotaRetry is the RetryInfo IAM sends with its account quota error.
const serviceAccountQuotaRetry = 86401 * time.Second

// consistencyModel is the state of the model; every method runs under e.mu.
type consistencyModel struct {
	window time.Duration
	rate   float64
	seed   uint64
	// fresh are the accounts still within their window, by unique id.
	fresh map[string]*freshAccount
	// deleted are the lower-cased emails of deleted accounts with no live
	// successor.
	deleted map[string]bool
	// gone maps the unique ids of deleted accounts to their projects, so a call
	// naming one is answered 404 after the project's permission check, whether
	// the model is on or not.
	gone map[string]string
}

type freshAccount struct {
	until time.Time
	looks uint64
}

func newConsistencyModel(c IAMConsistency, seed uint64) *consistencyModel {
	rate := c.StaleRate
	if rate == 0 {
		rate = defaultStaleRate
	}
	return &consistencyModel{window: time.Duration(c.NewAccountWindow), rate: rate, seed: seed,
		fresh: map[string]*freshAccount{}, deleted: map[string]bool{}, gone: map[string]string{}}
}

func (m *consistencyModel) on() bool { return m.window > 0 }

// created starts a new account's window.
func (m *consistencyModel) created(sa saResource, now time.Time) {
	if !m.on() {
		return
	}
	m.fresh[sa.UniqueID] = &freshAccount{until: now.Add(m.window)}
	delete(m.deleted, strings.ToLower(sa.Email))
}

// removed remembers a deleted account's email.
func (m *consistencyModel) removed(sa saResource) {
	delete(m.fresh, sa.UniqueID)
	m.gone[sa.UniqueID] = sa.ProjectID
	if m.on() {
		m.deleted[strings.ToLower(sa.Email)] = true
	}
}

// misses reports whether this look at sa by email misses it. Whether a look
// misses depends only on the seed, the account and how many looks it had, so a
// run is repeatable whatever other accounts do meanwhile.
func (m *consistencyModel) misses(sa saResource, now time.Time) bool {
	f := m.fresh[sa.UniqueID]
	if f == nil {
		return false
	}
	if !now.Before(f.until) {
		delete(m.fresh, sa.UniqueID)
		return false
	}
	f.looks++
	if f.looks == 1 {
		return true
	}
	return unitFloat(m.seed, sa.UniqueID, f.looks) < m.rate
}

// wasDeleted reports an email whose account was deleted and not re-created.
func (m *consistencyModel) wasDeleted(email string) bool {
	return m.deleted[strings.ToLower(email)]
}

// unitFloat is a number in [0,1) determined by its arguments.
func unitFloat(seed uint64, key string, n uint64) float64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], n)
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(key))
	// splitmix64's finalizer spreads FNV's weak low bits.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// staleMemberLocked refuses a policy write that adds a service account IAM's
// front end does not know yet, with IAM's message.
func (e *Emulator) staleMemberLocked(member string, now time.Time) error {
	email, ok := strings.CutPrefix(member, "serviceAccount:")
	if !ok || !strings.Contains(email, "@") {
		return nil
	}
	sa := e.findServiceAccountLocked(email)
	if sa != nil && e.accounts.misses(sa.Resource, now) {
		return errInvalid("Service account %s does not exist.", email)
	}
	return nil
}

// maxPolicyMembers is IAM's limit on the principals of one allow policy; every
// appearance in a binding counts.
const maxPolicyMembers = 1500

func checkPolicySize(p *policy) error {
	n := 0
	for _, b := range p.Bindings {
		n += len(b.Members)
	}
	if n > maxPolicyMembers {
		return errInvalid("The number of members in the policy (%s) is larger than the maximum allowed size %s.",
			withThousands(n), withThousands(maxPolicyMembers))
	}
	return nil
}

// withThousands writes n with comma separators, as IAM's messages do.
func withThousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// SettleServiceAccounts ends every new account's window, as if IAM had caught
// up everywhere: tests that set accounts up as fixtures call it.
func (e *Emulator) SettleServiceAccounts() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.accounts.fresh)
}
