package keyset

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/iotauth/iotauth/backend/core/secret"
)

func TestApplyAndHas(t *testing.T) {
	a, b := secret.DigestOf("a"), secret.DigestOf("b")
	s := New()
	if s.Loaded() || s.Len() != 0 || s.Has(a) {
		t.Fatal("a new set must be empty and not loaded")
	}
	s.Apply(a, true)
	s.Apply(b, true)
	s.Apply(b, false)
	if !s.Has(a) || s.Has(b) || s.Len() != 1 {
		t.Fatalf("after adding a and b and removing b: has a %v, has b %v, len %d", s.Has(a), s.Has(b), s.Len())
	}
	if s.Loaded() {
		t.Fatal("notifications alone must not make the set loaded: keys created before them are missing")
	}
}

// A full load races with notifications: what was notified during the load wins over what it read.
func TestLoadKeepsChangesNotifiedDuringIt(t *testing.T) {
	old, created, deleted, stays := secret.DigestOf("old"), secret.DigestOf("created"), secret.DigestOf("deleted"), secret.DigestOf("stays")
	s := New()
	s.Apply(old, true) // gone from the store while the feed was down: the load drops it
	s.Begin()
	s.Apply(created, true)  // created after the load's snapshot
	s.Apply(deleted, false) // deleted after the load's snapshot
	if !s.Has(created) || s.Has(deleted) {
		t.Fatal("changes during a load must apply at once too")
	}
	l := NewLoader(3)
	l.Add(deleted)
	l.Add(stays)
	s.FinishLoad(l)
	for _, tc := range []struct {
		name string
		d    secret.Digest
		want bool
	}{{"a key the load did not read", old, false}, {"a key created during the load", created, true},
		{"a key deleted during the load", deleted, false}, {"a key the load read", stays, true}} {
		if s.Has(tc.d) != tc.want {
			t.Errorf("%s: Has %v, want %v", tc.name, !tc.want, tc.want)
		}
	}
	if !s.Loaded() || s.Len() != 2 {
		t.Fatalf("loaded %v, len %d; want true, 2", s.Loaded(), s.Len())
	}

	// A failed load keeps the set as it was, and stops journaling.
	s.Begin()
	s.FinishLoad(nil)
	if !s.Has(stays) || !s.Loaded() {
		t.Fatal("a failed load must keep the set")
	}
	s.Apply(old, true)
	if len(s.journal) != 0 {
		t.Fatal("changes after a finished load must not be journaled")
	}
}

// A re-read of changed keys (revoked or re-enabled) sets their state, unless a notification came after
// the re-read started.
func TestCheck(t *testing.T) {
	revoked, reenabled, racing := secret.DigestOf("revoked"), secret.DigestOf("re-enabled"), secret.DigestOf("racing")
	s := New()
	s.Apply(revoked, true)
	s.Apply(racing, true)
	s.Begin()
	s.Apply(racing, true) // a newer change than the re-read's answer below
	s.FinishCheck(map[secret.Digest]bool{revoked: false, reenabled: true, racing: false})
	if s.Has(revoked) || !s.Has(reenabled) || !s.Has(racing) {
		t.Fatalf("revoked %v, re-enabled %v, racing %v; want false, true, true", s.Has(revoked), s.Has(reenabled), s.Has(racing))
	}
	s.Begin()
	s.FinishCheck(nil)
	if !s.Has(reenabled) {
		t.Fatal("a failed re-read must change nothing")
	}
}

// The memory a key costs, measured on 100,000 keys (the figure docs/operations.md states). The bound is
// loose: it catches a set that keeps whole digests or pointers per key, not allocator noise.
func TestMemoryPerKey(t *testing.T) {
	const n = 100_000
	perKey := measure(n)
	t.Logf("%d keys: %.1f bytes per key", n, perKey)
	if perKey > 32 {
		t.Fatalf("%.1f bytes per key; the set should keep 8 bytes of each digest, not the digest", perKey)
	}
}

func measure(n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := NewLoader(0) // grown as a load grows it, without a size hint
	var d secret.Digest
	for i := range n {
		binary.LittleEndian.PutUint64(d[:8], uint64(i)*0x9e3779b97f4a7c15)
		l.Add(d)
	}
	s := New()
	s.Begin()
	s.FinishLoad(l)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkHas is the cost of the question asked before a lookup of a key the cache does not hold.
func BenchmarkHas(b *testing.B) {
	s := New()
	l := NewLoader(100_000)
	for i := range 100_000 {
		l.Add(secret.DigestOf(string(rune(i))))
	}
	s.FinishLoad(l)
	d := secret.DigestOf("forged")
	b.ReportAllocs()
	for b.Loop() {
		s.Has(d)
	}
}
