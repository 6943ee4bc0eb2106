// Package budget bounds the PostgreSQL lookups that connects with unknown keys may cause. A key's
// checksum is CRC32, which anyone can compute, so well-formed keys that no database holds are cheap to
// forge, and each would otherwise cost a query on the broker's thread. Lookups of keys the plugin has no
// entry for spend a per-second budget; beyond it such connects are refused without the database. A key
// the plugin was told about (a NOTIFY for a new or changed key) does not spend it, so a newly provisioned
// agent gets in at once even during a flood. The budget applies only once the plugin holds every active
// credential (a complete preload into a cache with room to spare) and only to keys the cache never held:
// before that, or while the cache is full (it evicts), a miss may well be a real agent, and each is
// looked up.
package budget

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/secret"
)

// expectFor is how long an announced key skips the budget: long enough for its device to connect after
// provisioning, short enough that the set stays small.
const expectFor = 10 * time.Minute

// maxExpected bounds the announced keys remembered; past it the oldest announcements are dropped (those
// keys then spend the budget like any other).
const maxExpected = 100000

// Budget is safe for concurrent use. A nil *Budget allows everything.
type Budget struct {
	limiter  *rate.Limiter
	now      func() time.Time
	complete atomic.Bool
	full     func() bool // reports a cache that evicts (nil: never)

	mu       sync.Mutex
	expected map[secret.Digest]int64 // until (unix ns)
}

// New allows perSecond lookups of unknown keys a second (with a burst of as many); perSecond 0 means no
// bound, and New returns nil. now is the clock (time.Now when nil).
func New(perSecond int, now func() time.Time) *Budget {
	if perSecond <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &Budget{
		limiter: rate.NewLimiter(rate.Limit(perSecond), perSecond), now: now,
		expected: map[secret.Digest]int64{},
	}
}

// Complete tells the budget whether every active credential is cached, so that a miss is most likely a
// key that no database holds. Until then every lookup is allowed.
func (b *Budget) Complete(complete bool) {
	if b != nil {
		b.complete.Store(complete)
	}
}

// WhenFull gives the budget a check of whether the cache is full: while it is, credentials are evicted
// and a miss may be a real agent, so every lookup is allowed. Call it before the budget is used.
func (b *Budget) WhenFull(full func() bool) {
	if b != nil {
		b.full = full
	}
}

// Expect records that the key with digest d was just created or changed, so that its next lookups do not
// spend the budget.
func (b *Budget) Expect(d secret.Digest) {
	if b == nil {
		return
	}
	now := b.now().UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.expected) >= maxExpected {
		for k, until := range b.expected {
			if until <= now {
				delete(b.expected, k)
			}
		}
		if len(b.expected) >= maxExpected {
			clear(b.expected)
		}
	}
	b.expected[d] = now + int64(expectFor)
}

// Allow reports whether a lookup of d, a key the cache has no entry for, may go to the database.
func (b *Budget) Allow(d secret.Digest) bool {
	if b == nil || !b.complete.Load() || (b.full != nil && b.full()) {
		return true
	}
	now := b.now()
	b.mu.Lock()
	until, ok := b.expected[d]
	b.mu.Unlock()
	if ok && now.UnixNano() < until {
		return true
	}
	return b.limiter.AllowN(now, 1)
}
