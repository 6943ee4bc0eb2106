// Package denylist holds the subject deny list of short-lived MQTT credentials in memory
// (docs/security.md, A4): which source subjects ("app:<id>", "user:<uuid>", …) were denied when. A credential is dead when
// any subject it derives from was denied at or after the second it was issued. The plugin fills the list
// from PostgreSQL at start and on every LISTEN reconnect, and from each NOTIFY in between, so that a
// connect is decided without a query. It is plain Go with an injected clock.
package denylist

import (
	"sync"
	"time"
)

// List is the deny list. It is safe for concurrent use: connects read it on the broker's thread while
// the change feed writes it.
type List struct {
	keep time.Duration // entries older than this are pruned: they cannot deny a live credential

	mu     sync.RWMutex
	at     map[string]time.Time // subject -> latest denial
	loaded bool                 // a full load from the store completed at least once
}

// New returns an empty list that forgets denials older than keep (the longest credential lifetime plus
// clock skew).
func New(keep time.Duration) *List {
	return &List{keep: keep, at: map[string]time.Time{}}
}

// Deny records that subject was denied at at. An older denial never replaces a newer one, so a
// NOTIFY and a full load may arrive in any order.
func (l *List) Deny(subject string, at time.Time) {
	l.mu.Lock()
	if cur, ok := l.at[subject]; !ok || at.After(cur) {
		l.at[subject] = at
	}
	l.mu.Unlock()
}

// Denial is one entry of a full load.
type Denial struct {
	Subject  string
	DeniedAt time.Time
}

// Load merges a full load from the store and marks the list as loaded.
func (l *List) Load(ds []Denial) {
	l.mu.Lock()
	for _, d := range ds {
		if cur, ok := l.at[d.Subject]; !ok || d.DeniedAt.After(cur) {
			l.at[d.Subject] = d.DeniedAt
		}
	}
	l.loaded = true
	l.mu.Unlock()
}

// Loaded reports whether a full load completed at least once.
func (l *List) Loaded() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.loaded
}

// Denied reports the first of from that was denied at or after issuedAt (a credential issued in the
// second of a denial, or before it, is dead).
func (l *List) Denied(from []string, issuedAt time.Time) (subject string, denied bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range from {
		if at, ok := l.at[s]; ok && !at.Before(issuedAt) {
			return s, true
		}
	}
	return "", false
}

// Prune forgets the denials recorded before now minus keep and reports how many remain.
func (l *List) Prune(now time.Time) int {
	cut := now.Add(-l.keep)
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, at := range l.at {
		if at.Before(cut) {
			delete(l.at, s)
		}
	}
	return len(l.at)
}

// Len is the number of subjects held.
func (l *List) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.at)
}
