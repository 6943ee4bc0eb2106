// Package cache is a bounded LRU with per-entry expiry. It keeps
// positive and negative answers with their own TTLs, in two separate LRUs, so that a flood of lookups
// for keys that do not exist can never push a real credential out, lets a positive answer be served stale for a grace
// period while the source of truth is unreachable, and invalidates by group (all entries of one agent)
// without scanning: an entry fetched before its group's invalidation time is treated as absent, which
// also closes the race of a lookup that started before a change and finished after it. Values are
// stored by value in a slab (see lru), so a cached value costs no allocation of its own.
//
// While the source of truth announces every change (FeedUp), a positive answer fetched since the feed
// came up stays usable past its TTL (Aged): the announcement, not the clock, is what ends it. As soon as
// the feed is down (FeedDown), or has been down at any time since the answer was fetched, the TTL
// applies again (docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md).
package cache

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Result says what Get found.
type Result uint8

// The outcomes of Get.
const (
	// Miss: nothing usable; ask the source of truth.
	Miss Result = iota
	// Hit: a fresh positive answer.
	Hit
	// NegativeHit: a fresh "does not exist".
	NegativeHit
	// Stale: a positive answer past its TTL but within the stale grace. Use it only when the source of
	// truth cannot be reached.
	Stale
	// Known: nothing usable, like Miss, but the key had a positive answer (too old now, or its group was
	// invalidated): it existed, so asking the source of truth is not a stranger's guess.
	Known
	// Aged: a positive answer past its TTL, still trusted because the change feed has been up without
	// a break since it was fetched (see FeedUp). Use it, and have it refreshed off the hot path.
	Aged
)

// Options configure a Cache. Size 0 disables caching (every Get misses). G is the type of invalidation
// group keys: any comparable type, so a group can be a fixed-size id rather than a string per entry.
type Options[V any, G comparable] struct {
	Size int
	// NegativeSize bounds the "does not exist" answers, kept apart from the positive ones so that they
	// never evict them. 0 means min(Size, 16384).
	NegativeSize int
	TTL          time.Duration
	NegativeTTL  time.Duration
	StaleGrace   time.Duration
	// Group names the invalidation group of a value (the agent a credential belongs to).
	Group func(V) G
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

type entry[V any] struct {
	val V
	at  int64 // unix nanoseconds when the answer was fetched
}

// Stats are cumulative counters.
type Stats struct {
	Hits, NegativeHits, StaleHits, AgedHits, Misses, Evictions uint64
	Len                                                        int
}

// Cache is safe for concurrent use.
type Cache[K comparable, V any, G comparable] struct {
	opt Options[V, G]

	mu          sync.Mutex
	lru         *lru[K, entry[V]]
	negs        *lru[K, int64] // "does not exist", fetched at (unix ns)
	invalid     map[G]int64    // group -> invalidated at (unix ns)
	invalidAll  int64
	lastPruneAt int64
	// feedSince is when the change feed last came up (unix ns); 0 while it is down. Only answers fetched
	// after it may outlive their TTL.
	feedSince int64
	// forgotten is the newest group invalidation pruned from invalid (unix ns).
	forgotten int64

	hits, negHits, staleHits, agedHits, misses, evictions atomic.Uint64
}

// New builds a cache.
func New[K comparable, V any, G comparable](opt Options[V, G]) (*Cache[K, V, G], error) {
	if opt.Size < 0 || opt.NegativeSize < 0 || opt.TTL < 0 || opt.NegativeTTL < 0 || opt.StaleGrace < 0 {
		return nil, errors.New("cache size and durations must not be negative")
	}
	if opt.Size > math.MaxInt32 {
		return nil, errors.New("cache size must not exceed 2^31-1")
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	c := &Cache[K, V, G]{opt: opt, invalid: map[G]int64{}}
	if opt.Size > 0 {
		c.lru = newLRU[K, entry[V]](opt.Size, func() { c.evictions.Add(1) })
		if opt.NegativeSize == 0 {
			opt.NegativeSize = min(opt.Size, 16384)
			c.opt.NegativeSize = opt.NegativeSize
		}
		c.negs = newLRU[K, int64](opt.NegativeSize, func() { c.evictions.Add(1) })
	}
	return c, nil
}

func (c *Cache[K, V, G]) now() int64 { return c.opt.Now().UnixNano() }

// Get looks k up. For Hit and Stale the value is returned.
func (c *Cache[K, V, G]) Get(k K) (V, Result) {
	var zero V
	if c.lru == nil {
		c.misses.Add(1)
		return zero, Miss
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.lru.Get(k)
	if !ok {
		at, neg := c.negs.Get(k)
		c.mu.Unlock()
		// A negative answer from before InvalidateAll ("changes may have been missed") is not trusted.
		if neg && at > c.invalidAll && time.Duration(now-at) < c.opt.NegativeTTL {
			c.negHits.Add(1)
			return zero, NegativeHit
		}
		c.misses.Add(1)
		return zero, Miss
	}
	// InvalidateAll means "changes may have been missed", not "this changed": such positives are no
	// longer fresh but stay usable as Stale (while the source is down), so stale_grace survives a
	// reconnect of the change feed. A group invalidation means the entry did change: it is gone.
	suspect := e.at <= c.invalidAll
	if c.groupInvalidatedLocked(e) {
		c.lru.Remove(k)
		c.mu.Unlock()
		c.misses.Add(1)
		return zero, Known
	}
	// Trusted past its TTL only when fetched after the feed last came up, so not across a gap in it. A
	// TTL of 0 means "always ask the source of truth": never trusted.
	covered := c.opt.TTL > 0 && c.feedSince != 0 && e.at > c.feedSince && e.at > c.forgotten && !suspect
	c.mu.Unlock()
	age := time.Duration(now - e.at)
	switch {
	case age < c.opt.TTL && !suspect:
		c.hits.Add(1)
		return e.val, Hit
	case covered:
		c.agedHits.Add(1)
		return e.val, Aged
	case age < c.opt.TTL+c.opt.StaleGrace:
		c.staleHits.Add(1)
		return e.val, Stale
	}
	c.misses.Add(1)
	return zero, Known
}

// Peek returns k's positive answer as held, whatever its age, without counting a lookup or marking k
// recently used (for a background refresh to compare with what the source of truth says now).
func (c *Cache[K, V, G]) Peek(k K) (V, bool) {
	var zero V
	if c.lru == nil {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.lru.index[k]
	if !ok {
		return zero, false
	}
	return c.lru.at(i).val.val, true
}

// Full reports whether the cache holds as many positive answers as it may, so that adding one evicts
// another (always true for a disabled cache).
func (c *Cache[K, V, G]) Full() bool {
	if c.lru == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len() >= c.opt.Size
}

// Touch marks k as recently used without reading it, so that the credentials of live sessions, which
// are looked up only at connect, are the last to be evicted.
func (c *Cache[K, V, G]) Touch(k K) {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	c.lru.Get(k)
	c.mu.Unlock()
}

func (c *Cache[K, V, G]) invalidatedLocked(e entry[V]) bool {
	return e.at <= c.invalidAll || c.groupInvalidatedLocked(e)
}

func (c *Cache[K, V, G]) groupInvalidatedLocked(e entry[V]) bool {
	if len(c.invalid) == 0 || c.opt.Group == nil {
		return false
	}
	at, ok := c.invalid[c.opt.Group(e.val)]
	return ok && e.at <= at
}

// Add stores a positive answer fetched at fetchedAt (take the time before the query started, so an
// invalidation that raced the query wins).
func (c *Cache[K, V, G]) Add(k K, v V, fetchedAt time.Time) {
	if c.lru == nil {
		return
	}
	e := entry[V]{val: v, at: fetchedAt.UnixNano()}
	c.mu.Lock()
	if !c.invalidatedLocked(e) {
		c.negs.Remove(k)
		c.lru.Add(k, e)
	}
	c.mu.Unlock()
}

// AddNegative stores "k does not exist", fetched at fetchedAt.
func (c *Cache[K, V, G]) AddNegative(k K, fetchedAt time.Time) {
	if c.lru == nil || c.opt.NegativeTTL == 0 {
		return
	}
	at := fetchedAt.UnixNano()
	c.mu.Lock()
	if at > c.invalidAll {
		c.lru.Remove(k)
		c.negs.Add(k, at)
	}
	c.mu.Unlock()
}

// Remove drops k.
func (c *Cache[K, V, G]) Remove(k K) {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	c.lru.Remove(k)
	c.negs.Remove(k)
	c.mu.Unlock()
}

// InvalidateGroup makes every entry of group fetched at or before at behave as absent.
func (c *Cache[K, V, G]) InvalidateGroup(group G, at time.Time) {
	ns := at.UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if ns > c.invalid[group] {
		c.invalid[group] = ns
	}
	// Forget invalidations older than any entry could be: bounded memory without a timer. An Aged entry
	// can be older still, so the newest forgotten time becomes a floor: entries fetched at or before it
	// are no longer trusted past their TTL (they might belong to a forgotten group).
	horizon := max(c.opt.TTL+c.opt.StaleGrace, c.opt.NegativeTTL)
	now := c.now()
	if len(c.invalid) > 1024 && now-c.lastPruneAt > int64(time.Second) {
		c.lastPruneAt = now
		for g, t := range c.invalid {
			if time.Duration(now-t) > horizon {
				delete(c.invalid, g)
				c.forgotten = max(c.forgotten, t)
			}
		}
	}
}

// InvalidateAll makes every entry fetched at or before at behave as absent (used after missed
// notifications). Entries stay in place until looked up or evicted.
func (c *Cache[K, V, G]) InvalidateAll(at time.Time) {
	c.mu.Lock()
	if ns := at.UnixNano(); ns > c.invalidAll {
		c.invalidAll = ns
	}
	c.mu.Unlock()
}

// FeedUp records that the change feed is up since at: from then on every change of an entry is
// announced (InvalidateGroup, Remove, InvalidateAll), so an answer fetched after at stays usable past its
// TTL, as Aged, until the feed goes down. Call it once the feed listens, with the time taken after that;
// answers fetched before at keep their TTL (call InvalidateAll(at) too, as changes may have been missed).
func (c *Cache[K, V, G]) FeedUp(at time.Time) {
	c.mu.Lock()
	c.feedSince = max(at.UnixNano(), 1)
	c.mu.Unlock()
}

// FeedDown records that the change feed is down: every entry has its TTL again, now and after the feed
// comes back (only answers fetched after the next FeedUp may outlive it).
func (c *Cache[K, V, G]) FeedDown() {
	c.mu.Lock()
	c.feedSince = 0
	c.mu.Unlock()
}

// Purge drops everything.
func (c *Cache[K, V, G]) Purge() {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	c.lru.Purge()
	c.negs.Purge()
	c.mu.Unlock()
}

// Len is the number of positive entries held (some may be expired or invalidated).
func (c *Cache[K, V, G]) Len() int {
	if c.lru == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Stats returns the counters.
func (c *Cache[K, V, G]) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), NegativeHits: c.negHits.Load(), StaleHits: c.staleHits.Load(), AgedHits: c.agedHits.Load(),
		Misses: c.misses.Load(), Evictions: c.evictions.Load(), Len: c.Len(),
	}
}
