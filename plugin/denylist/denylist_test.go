package denylist

import (
	"testing"
	"time"
)

func TestDenied(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	denial := t0.Add(500 * time.Millisecond) // denied half a second into 12:00:00
	l := New(24*time.Hour + 2*time.Minute)
	l.Deny("app:1", denial)
	cases := []struct {
		name   string
		from   []string
		iat    time.Time
		denied bool
	}{
		{"issued the second before", []string{"app:1"}, t0.Add(-time.Second), true},
		{"issued in the denial's second", []string{"app:1"}, t0, true},
		{"issued the second after", []string{"app:1"}, t0.Add(time.Second), false},
		{"one of several subjects", []string{"user:2", "app:1"}, t0, true},
		{"other subjects", []string{"user:2", "pk:3"}, t0.Add(-time.Hour), false},
		{"no subjects", nil, t0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, denied := l.Denied(c.from, c.iat)
			if denied != c.denied || (denied && s != "app:1") {
				t.Fatalf("Denied = %q, %v; want %v", s, denied, c.denied)
			}
		})
	}
}

func TestLoadMergesAndPrunes(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	l := New(time.Hour)
	if l.Loaded() {
		t.Fatal("a new list claims to be loaded")
	}
	l.Deny("app:1", t0.Add(time.Minute)) // a NOTIFY newer than the load
	l.Load([]Denial{{"app:1", t0}, {"user:2", t0.Add(-2 * time.Hour)}, {"pk:3", t0}})
	if !l.Loaded() || l.Len() != 3 {
		t.Fatalf("loaded %v, %d subjects", l.Loaded(), l.Len())
	}
	if _, denied := l.Denied([]string{"app:1"}, t0.Add(30*time.Second)); !denied {
		t.Fatal("an older loaded denial replaced a newer notified one")
	}
	l.Deny("pk:3", t0.Add(-time.Minute)) // older than what is held: ignored
	if _, denied := l.Denied([]string{"pk:3"}, t0); !denied {
		t.Fatal("an older denial replaced a newer one")
	}
	if n := l.Prune(t0); n != 2 {
		t.Fatalf("%d subjects after pruning, want 2 (user:2 is older than an hour)", n)
	}
	if _, denied := l.Denied([]string{"user:2"}, t0.Add(-3*time.Hour)); denied {
		t.Fatal("a pruned denial still denies")
	}
}
