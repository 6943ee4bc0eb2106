// Package keyset holds the broker's compact in-memory set of the keys PostgreSQL holds: one entry per
// device key, legacy username and application key that is not revoked. The plugin asks it before a key the
// cache has no entry for spends the unknown-key lookup budget, so that every real credential is told apart
// from a forged one without the budget, however long ago it was created and whether it ever connected.
//
// The set is loaded whole when the change feed is (re-)established, and kept current by the credential
// notifications: a new key is added at once, a deleted one removed, and a changed one (revoked, re-enabled)
// is re-read from the store. A change that arrives while a load or a re-read is under way is applied to
// its result too, so the load cannot undo it.
//
// Each key is kept as the first 8 bytes of its SHA-256 digest, in a map of uint64: 10 to 25 bytes
// per key (docs/operations.md has the measurement). Two keys sharing those 8 bytes are told apart by the
// store; a forged key whose digest shares them with a real key merely gets one lookup without spending
// the budget, and the chance of that is about n/2^64 per forged key for n real ones.
package keyset

import (
	"encoding/binary"
	"sync"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Set is a concurrent set of key digests. The zero value is not usable; use New. Loads and re-reads
// (Begin, FinishLoad, FinishCheck) must come from one goroutine at a time; Apply and Has from any.
type Set struct {
	mu      sync.RWMutex
	keys    map[uint64]struct{}
	loaded  bool // a full load has succeeded at least once
	loading bool
	journal []change
}

type change struct {
	k    uint64
	live bool
}

// New returns an empty set that is not loaded yet.
func New() *Set { return &Set{keys: map[uint64]struct{}{}} }

// short is the part of a digest the set keeps.
func short(d secret.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

// Has reports whether d is (most likely) the digest of a key that PostgreSQL holds and that is not
// revoked.
func (s *Set) Has(d secret.Digest) bool {
	k := short(d)
	s.mu.RLock()
	_, ok := s.keys[k]
	s.mu.RUnlock()
	return ok
}

// Loaded reports whether a full load has succeeded: only then does a key outside the set most likely not
// exist.
func (s *Set) Loaded() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.loaded
}

// Len is the number of keys held.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.keys)
}

// Apply records one notified change: the key with digest d now exists and is not revoked (live), or not.
func (s *Set) Apply(d secret.Digest, live bool) {
	k := short(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	apply(s.keys, k, live)
	if s.loading {
		s.journal = append(s.journal, change{k, live})
	}
}

func apply(m map[uint64]struct{}, k uint64, live bool) {
	if live {
		m[k] = struct{}{}
	} else {
		delete(m, k)
	}
}

// Begin starts a load or a re-read: changes applied from now on are replayed over its result. Call it
// before the query starts.
func (s *Set) Begin() {
	s.mu.Lock()
	s.loading = true
	s.journal = nil
	s.mu.Unlock()
}

// Loader collects the digests a full load reads; hand it to FinishLoad.
type Loader struct{ keys map[uint64]struct{} }

// NewLoader returns an empty Loader sized for about n keys.
func NewLoader(n int) *Loader { return &Loader{keys: make(map[uint64]struct{}, n)} }

// Add records one digest read by the load.
func (l *Loader) Add(d secret.Digest) { l.keys[short(d)] = struct{}{} }

// FinishLoad replaces the set with what the load read (nil: the load failed, the set is kept), replaying
// the changes notified since Begin on top of it.
func (s *Set) FinishLoad(l *Loader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l != nil {
		for _, c := range s.journal {
			apply(l.keys, c.k, c.live)
		}
		s.keys = l.keys
		s.loaded = true
	}
	s.loading = false
	s.journal = nil
}

// FinishCheck records what a re-read of some keys found (live: exists and not revoked; a digest absent
// from the map is not live), replaying the changes notified since Begin on top of it. A nil map (the
// re-read failed) changes nothing.
func (s *Set) FinishCheck(found map[secret.Digest]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if found != nil {
		for d, live := range found {
			apply(s.keys, short(d), live)
		}
		for _, c := range s.journal {
			apply(s.keys, c.k, c.live)
		}
	}
	s.loading = false
	s.journal = nil
}
