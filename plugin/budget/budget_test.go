package budget

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/secret"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func digest(s string) secret.Digest { return secret.DigestOf(s) }

func TestBudget(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	b := New(3, clk.now)
	for i := 0; i < 10; i++ {
		if !b.Allow(digest("before the preload")) {
			t.Fatal("a lookup was refused before the cache held every credential")
		}
	}
	b.Complete(true)
	allowed := 0
	for i := 0; i < 10; i++ {
		if b.Allow(digest(string(rune('a' + i)))) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d of 10 unknown lookups allowed in one instant, want the burst of 3", allowed)
	}
	// An announced key is looked up even with the budget spent, for expectFor.
	announced := digest("new agent's key")
	b.Expect(announced)
	for i := 0; i < 5; i++ {
		if !b.Allow(announced) {
			t.Fatalf("announced key refused on try %d", i)
		}
	}
	clk.t = clk.t.Add(expectFor)
	for i := 0; i < 3; i++ {
		b.Allow(digest("spend the refilled budget"))
	}
	if b.Allow(announced) {
		t.Fatal("an announcement outlived expectFor while the budget was spent")
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
	var b *Budget = New(0, nil)
	if b != nil {
		t.Fatal("New(0) should mean no bound (nil)")
	}
	b.Expect(digest("k"))
	for i := 0; i < 1000; i++ {
		if !b.Allow(digest("k")) {
			t.Fatal("a nil budget refused a lookup")
		}
	}
}

func TestExpectedIsBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	b := New(1, clk.now)
	b.Complete(true)
	for i := 0; i < maxExpected+10; i++ {
		var d secret.Digest
		d[0], d[1], d[2] = byte(i), byte(i>>8), byte(i>>16)
		b.Expect(d)
	}
	if n := len(b.expected); n > maxExpected {
		t.Fatalf("%d announcements kept, want at most %d", n, maxExpected)
	}
}

// While the cache is full it evicts real credentials, so a miss may be a real agent: no bound then.
func TestNoBoundWhileTheCacheIsFull(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	b := New(1, clk.now)
	b.Complete(true)
	full := true
	b.WhenFull(func() bool { return full })
	for i := 0; i < 10; i++ {
		if !b.Allow(digest("evicted real key")) {
			t.Fatal("a lookup was refused while the cache was full")
		}
	}
	full = false
	b.Allow(digest("x"))
	if b.Allow(digest("y")) {
		t.Fatal("the bound did not apply once the cache had room")
	}
}
