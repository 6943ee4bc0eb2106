// Package batch is the plugin's one bounded queue of writes waiting for PostgreSQL: refused connects and
// kicks for the audit trail, fast password hashes of imported devices, keys whose use is to be recorded.
// Producers (often the broker's thread) only add; a background job takes the whole batch once its
// interval has passed and writes it in one statement. Items carry a key: adding a key already queued
// replaces its value in place (last wins), so a batch holds each key once. Beyond its bound a batch
// drops new keys and counts them by kind, never holding them, so that an outage cannot grow memory. A
// write that failed may put its batch back, ahead of what arrived since.
package batch

import (
	"sync"
	"time"
)

// Entry is one queued item and its key.
type Entry[K comparable, V any] struct {
	Key   K
	Value V
}

// Batcher holds at most Max entries. Its methods are safe for concurrent use.
type Batcher[K comparable, V any] struct {
	max   int
	every time.Duration
	kind  func(V) string

	mu      sync.Mutex
	entries []Entry[K, V]
	index   map[K]int
	dropped map[string]int // dropped since the last Take, by kind
	total   int64          // every entry ever dropped
	last    time.Time      // the last Due that answered true
}

// New returns a batcher of at most max entries, due every interval. kind names an entry's kind, by
// which dropped entries are counted (nil: all count as "").
func New[K comparable, V any](max int, every time.Duration, kind func(V) string) *Batcher[K, V] {
	if kind == nil {
		kind = func(V) string { return "" }
	}
	return &Batcher[K, V]{max: max, every: every, kind: kind, index: map[K]int{}}
}

// Add queues v under k, replacing the value of a queued k in its place. It reports false when the
// batcher was full and v was only counted as dropped.
func (b *Batcher[K, V]) Add(k K, v V) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i, ok := b.index[k]; ok {
		b.entries[i].Value = v
		return true
	}
	if len(b.entries) >= b.max {
		b.dropLocked(v)
		return false
	}
	b.index[k] = len(b.entries)
	b.entries = append(b.entries, Entry[K, V]{k, v})
	return true
}

func (b *Batcher[K, V]) dropLocked(v V) {
	if b.dropped == nil {
		b.dropped = map[string]int{}
	}
	b.dropped[b.kind(v)]++
	b.total++
}

// Due reports whether the interval has passed since the batcher last was due (now is the caller's
// clock); the first call starts the interval. A batcher without an interval is due whenever asked.
func (b *Batcher[K, V]) Due(now time.Time) bool {
	if b.every <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.last = now
		return false
	}
	if now.Sub(b.last) < b.every {
		return false
	}
	b.last = now
	return true
}

// Batch is what Take returned: the entries, oldest first, and the counts of dropped entries by kind.
type Batch[K comparable, V any] struct {
	Entries []Entry[K, V]
	Dropped map[string]int
}

// Empty reports whether the batch has nothing to write.
func (t Batch[K, V]) Empty() bool { return len(t.Entries) == 0 && len(t.Dropped) == 0 }

// Keys returns the entries' keys, oldest first.
func (t Batch[K, V]) Keys() []K {
	ks := make([]K, len(t.Entries))
	for i, e := range t.Entries {
		ks[i] = e.Key
	}
	return ks
}

// Values returns the entries' values, oldest first.
func (t Batch[K, V]) Values() []V {
	vs := make([]V, len(t.Entries))
	for i, e := range t.Entries {
		vs[i] = e.Value
	}
	return vs
}

// Take empties the batcher. It keeps its storage, so that producers do not allocate after a flush.
func (b *Batcher[K, V]) Take() Batch[K, V] {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := Batch[K, V]{Dropped: b.dropped}
	if len(b.entries) > 0 {
		t.Entries = make([]Entry[K, V], len(b.entries))
		copy(t.Entries, b.entries)
		clear(b.entries)
		b.entries = b.entries[:0]
		clear(b.index)
	}
	b.dropped = nil
	return t
}

// PutBack queues a batch whose write failed again, ahead of what was added since (a key added since keeps
// its newer value). Entries beyond the bound are dropped, newest first, and counted; it returns how many.
func (b *Batcher[K, V]) PutBack(t Batch[K, V]) (lost int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := make([]Entry[K, V], 0, len(t.Entries)+len(b.entries))
	for _, e := range t.Entries {
		if _, newer := b.index[e.Key]; !newer {
			all = append(all, e)
		}
	}
	all = append(all, b.entries...)
	if len(all) > b.max {
		for _, e := range all[b.max:] {
			b.dropLocked(e.Value)
		}
		lost = len(all) - b.max
		all = all[:b.max]
	}
	clear(b.index)
	for i, e := range all {
		b.index[e.Key] = i
	}
	b.entries = all
	for k, n := range t.Dropped {
		if b.dropped == nil {
			b.dropped = map[string]int{}
		}
		b.dropped[k] += n
	}
	return lost
}

// Len returns how many entries are queued.
func (b *Batcher[K, V]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}

// Dropped returns how many entries were dropped since the batcher was made.
func (b *Batcher[K, V]) Dropped() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
