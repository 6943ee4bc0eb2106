// Package legacy holds the broker's in-memory set of live legacy usernames: the digests of the existing
// MQTT usernames of imported devices (docs/import.md). The plugin asks it, on the broker thread, before it
// lets a username that is not a well-formed key reach the database, so that an unknown name still
// costs no query. The set is loaded whole when the change feed is (re-)established and kept current by
// the credential notifications; a change that arrives while a load is under way is applied to the
// loaded set too, so the load cannot undo it.
package legacy

import (
	"sync"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Set is a concurrent set of digests. The zero value is not usable; use New.
type Set struct {
	mu      sync.RWMutex
	names   map[secret.Digest]struct{}
	loading bool
	journal []change
}

type change struct {
	d    secret.Digest
	live bool
}

// New returns an empty set.
func New() *Set { return &Set{names: map[secret.Digest]struct{}{}} }

// Len is the number of live legacy usernames.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.names)
}

// Has reports whether d is the digest of a live legacy username.
func (s *Set) Has(d secret.Digest) bool {
	s.mu.RLock()
	_, ok := s.names[d]
	s.mu.RUnlock()
	return ok
}

// Apply records one notified change: d is now live (admits) or not.
func (s *Set) Apply(d secret.Digest, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	apply(s.names, d, live)
	if s.loading {
		s.journal = append(s.journal, change{d, live})
	}
}

func apply(m map[secret.Digest]struct{}, d secret.Digest, live bool) {
	if live {
		m[d] = struct{}{}
	} else {
		delete(m, d)
	}
}

// BeginLoad starts a full load: changes applied from now on are also replayed onto the loaded set.
// Call it before the query starts.
func (s *Set) BeginLoad() {
	s.mu.Lock()
	s.loading = true
	s.journal = nil
	s.mu.Unlock()
}

// FinishLoad replaces the set with loaded (what the query returned), replaying the changes notified
// since BeginLoad on top of it. ok false (the load failed) keeps the current set.
func (s *Set) FinishLoad(loaded map[secret.Digest]struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		for _, c := range s.journal {
			apply(loaded, c.d, c.live)
		}
		s.names = loaded
	}
	s.loading = false
	s.journal = nil
}
