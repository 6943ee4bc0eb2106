// Package budget bounds the PostgreSQL lookups that connects with unknown keys may cause. A key's
// checksum is CRC32, which anyone can compute, so well-formed keys that no database holds are cheap to
// forge, and each would otherwise cost a query on the broker's thread. Lookups of keys the plugin has no
// entry for spend a per-second budget; beyond it such connects are refused without the database.
//
// A key that the set of known keys holds (plugin/keyset: every key PostgreSQL holds that is not revoked,
// loaded at start and kept current by notifications) never spends it, so a real agent or application key
// gets in during a flood however long ago it was created and whether or not it ever connected. The budget
// applies only once that set has been loaded: before, a miss may well be a real key, and each is looked up.
package budget

import (
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Known is the set of keys that exist (keyset.Set).
type Known interface {
	// Loaded reports whether the set holds every key that exists (a full load succeeded).
	Loaded() bool
	// Has reports whether the key with digest d exists.
	Has(d secret.Digest) bool
}

// Budget is safe for concurrent use. A nil *Budget allows everything.
type Budget struct {
	limiter *rate.Limiter
	known   Known
	now     func() time.Time
}

// New allows perSecond lookups of unknown keys a second (with a burst of as many); perSecond 0 means no
// bound, and New returns nil. Keys that known holds never spend the budget; until known is loaded every
// lookup is allowed. now is the clock (time.Now when nil).
func New(perSecond int, known Known, now func() time.Time) *Budget {
	if perSecond <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &Budget{limiter: rate.NewLimiter(rate.Limit(perSecond), perSecond), known: known, now: now}
}

// Allow reports whether a lookup of d, a key the cache has no entry for, may go to the database.
func (b *Budget) Allow(d secret.Digest) bool {
	if b == nil || !b.known.Loaded() || b.known.Has(d) {
		return true
	}
	return b.limiter.AllowN(b.now(), 1)
}
