package cache

// lru is a fixed-capacity map that evicts the least recently used key. It is not safe for concurrent
// use; Cache guards it with its mutex.
//
// It replaces hashicorp/golang-lru's simplelru here for memory: simplelru allocates one list element per
// key (three pointers, the key again, the value, and a 24-byte expiry time and bucket it does not use
// for this), about 90 bytes of overhead per entry on top of the value and a map of pointers. The broker
// caches up to millions of credentials (the benchmark's target is ≤ 300 bytes of RSS per credential),
// so here the nodes live by value in fixed-size chunks of a slab, are linked by int32 index, and the
// map holds int32 indices: about 8 bytes of overhead per entry besides the key and value, and no
// per-entry allocation. Measured with the 88-byte credential entry, live heap per cached credential went
// from 255 B (100k) and 293 B (1M) with simplelru to 197 B and 228 B. Chunks are allocated as the cache
// fills, so an empty cache of a large capacity costs nothing. Freed nodes (Remove) are reused before the
// slab grows.
//
// A hit on a key that is already among the most recent part of the list leaves the list alone: Get is
// then read-only (docs/decisions/0018-lru-hits-without-relinking.md). Every move to the front stamps the
// node with a counter of such moves; a key moved fewer than window moves ago has fewer than window keys
// in front of it, so it stays where it is. Eviction still takes the tail, so a key that was used is
// evicted only after at least capacity-window other keys have been added (or every key behind it has
// gone): with window = capacity/8, at least 7/8 of the cache turns over first. With window 0 (capacity
// below 8) this is exact LRU.
type lru[K comparable, V any] struct {
	capacity  int
	window    uint64 // a key moved to the front fewer than window moves ago is not moved again on a hit
	moves     uint64 // moves to the front so far; each node records the count at its last one
	chunkBits uint
	index     map[K]int32
	chunks    [][]node[K, V]
	used      int32 // nodes handed out from the slab so far
	free      int32 // head of the list of freed nodes (linked by next), none when < 0
	head      int32 // most recently used, none when < 0
	tail      int32 // least recently used, none when < 0
	onEvict   func()
}

type node[K comparable, V any] struct {
	key        K
	val        V
	moved      uint64 // lru.moves at this node's last move to the front
	prev, next int32
}

const maxChunkBits = 10 // 1024 nodes per chunk

func newLRU[K comparable, V any](capacity int, onEvict func()) *lru[K, V] {
	bits := uint(0)
	for bits < maxChunkBits && 1<<bits < capacity {
		bits++
	}
	return &lru[K, V]{capacity: capacity, window: uint64(capacity / 8), chunkBits: bits, index: map[K]int32{}, free: -1, head: -1, tail: -1, onEvict: onEvict}
}

func (l *lru[K, V]) at(i int32) *node[K, V] {
	return &l.chunks[i>>l.chunkBits][i&(1<<l.chunkBits-1)]
}

// Len is the number of keys held.
func (l *lru[K, V]) Len() int { return len(l.index) }

// Get returns k's value and marks k recently used: it moves k to the front unless k is within the most
// recent window of the list already.
func (l *lru[K, V]) Get(k K) (v V, ok bool) {
	i, ok := l.index[k]
	if !ok {
		return v, false
	}
	n := l.at(i)
	if l.moves-n.moved >= l.window {
		l.moveToFront(i)
	}
	return n.val, true
}

// Add sets k's value and marks k most recently used, evicting the least recently used key when the
// cache is full.
func (l *lru[K, V]) Add(k K, v V) {
	if i, ok := l.index[k]; ok {
		l.at(i).val = v
		l.moveToFront(i)
		return
	}
	var i int32
	switch {
	case len(l.index) >= l.capacity:
		i = l.tail
		l.unlink(i)
		delete(l.index, l.at(i).key)
		if l.onEvict != nil {
			l.onEvict()
		}
	case l.free >= 0:
		i = l.free
		l.free = l.at(i).next
	default:
		i = l.used
		if int(i)>>l.chunkBits == len(l.chunks) {
			l.chunks = append(l.chunks, make([]node[K, V], 1<<l.chunkBits))
		}
		l.used++
	}
	n := l.at(i)
	n.key, n.val = k, v
	l.index[k] = i
	l.pushFront(i)
}

// Remove drops k.
func (l *lru[K, V]) Remove(k K) {
	i, ok := l.index[k]
	if !ok {
		return
	}
	l.unlink(i)
	delete(l.index, k)
	n := l.at(i)
	*n = node[K, V]{next: l.free} // drop references the value may hold
	l.free = i
}

// Purge drops every key, counting each as an eviction, and releases the memory.
func (l *lru[K, V]) Purge() {
	if l.onEvict != nil {
		for range len(l.index) {
			l.onEvict()
		}
	}
	l.index = map[K]int32{}
	l.chunks = nil
	l.used, l.free, l.head, l.tail = 0, -1, -1, -1
}

func (l *lru[K, V]) unlink(i int32) {
	n := l.at(i)
	if n.prev >= 0 {
		l.at(n.prev).next = n.next
	} else {
		l.head = n.next
	}
	if n.next >= 0 {
		l.at(n.next).prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next = -1, -1
}

func (l *lru[K, V]) pushFront(i int32) {
	n := l.at(i)
	l.moves++
	n.moved = l.moves
	n.prev, n.next = -1, l.head
	if l.head >= 0 {
		l.at(l.head).prev = i
	} else {
		l.tail = i
	}
	l.head = i
}

func (l *lru[K, V]) moveToFront(i int32) {
	if l.head == i {
		return
	}
	l.unlink(i)
	l.pushFront(i)
}
