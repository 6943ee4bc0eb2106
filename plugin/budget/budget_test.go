package budget

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/keyset"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func digest(s string) secret.Digest { return secret.DigestOf(s) }

func TestBudget(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	known := keyset.New()
	b := New(3, known, clk.now)
	for i := 0; i < 10; i++ {
		if !b.Allow(digest("before the known keys are loaded")) {
			t.Fatal("a lookup was refused before the set of known keys was loaded")
		}
	}
	l := keyset.NewLoader(1)
	l.Add(digest("preloaded key"))
	known.Begin()
	known.FinishLoad(l)
	allowed := 0
	for i := 0; i < 10; i++ {
		if b.Allow(digest(string(rune('a' + i)))) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d of 10 unknown lookups allowed in one instant, want the burst of 3", allowed)
	}
	// Known keys are looked up with the budget spent, however much time has passed.
	created := digest("key created later")
	known.Apply(created, true)
	for _, later := range []time.Duration{0, 11 * time.Minute, 30 * 24 * time.Hour} {
		clk.t = clk.t.Add(later)
		for i := 0; i < 3; i++ {
			b.Allow(digest("spend the refilled budget"))
		}
		for _, d := range []secret.Digest{created, digest("preloaded key")} {
			if !b.Allow(d) {
				t.Fatalf("a known key was refused %v later with the budget spent", later)
			}
		}
	}
	// A revoked or deleted key spends the budget like any unknown key.
	known.Apply(created, false)
	if b.Allow(created) {
		t.Fatal("a key no longer known was looked up with the budget spent")
	}
	// The budget refills at its rate.
	clk.t = clk.t.Add(time.Second)
	allowed = 0
	for i := 0; i < 10; i++ {
		if b.Allow(digest("x")) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d allowed after a second, want 3", allowed)
	}
}

func TestNoBound(t *testing.T) {
	var b *Budget = New(0, keyset.New(), nil)
	if b != nil {
		t.Fatal("New(0) should mean no bound (nil)")
	}
	for i := 0; i < 1000; i++ {
		if !b.Allow(digest("k")) {
			t.Fatal("a nil budget refused a lookup")
		}
	}
}
