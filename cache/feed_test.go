package cache

import (
	"fmt"
	"testing"
	"time"
)

// While the change feed is up, an entry fetched since it came up outlives its TTL (Aged); everything
// else keeps the TTL: entries fetched before the feed came up, any entry once the feed went down, and
// entries fetched before a gap in the feed even after it is back.
func TestFeedKeepsEntriesPastTTL(t *testing.T) {
	type cache = Cache[string, cred, string]
	tests := []struct {
		name  string
		setup func(c *cache, clk *clock)
		want  Result
	}{
		{"no feed: ttl applies", func(c *cache, clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
		}, Known},
		{"feed up: aged past ttl and grace", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(24 * time.Hour)
		}, Aged},
		{"feed up: fresh is still a hit", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(30 * time.Second)
		}, Hit},
		{"fetched before the feed came up: ttl applies", func(c *cache, clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(time.Millisecond)
			c.FeedUp(clk.t)
			clk.advance(10 * time.Minute)
		}, Known},
		{"fetched at the instant the feed came up: ttl applies", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
		}, Known},
		{"feed down: ttl applies again", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
			c.FeedDown()
		}, Known},
		{"feed down: stale grace as before", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(2 * time.Minute)
			c.FeedDown()
		}, Stale},
		{"gap in the feed: not trusted past ttl after it", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(time.Second)
			c.FeedDown()
			clk.advance(time.Second)
			c.FeedUp(clk.t) // without InvalidateAll: the epoch alone refuses it
			clk.advance(10 * time.Minute)
		}, Known},
		{"fetched after the gap: aged", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			c.FeedDown()
			clk.advance(time.Second)
			c.InvalidateAll(clk.t)
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
		}, Aged},
		{"invalidate all: not aged", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
			c.InvalidateAll(clk.t)
		}, Known},
		{"group invalidation: gone", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
			c.InvalidateGroup("a", clk.t)
		}, Known},
		{"removed: miss", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(10 * time.Minute)
			c.Remove("k")
		}, Miss},
		{"evicted by the lru: miss (cold path)", func(c *cache, clk *clock) {
			c.FeedUp(clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "v"}, clk.t)
			for i := range 4 {
				c.Add(fmt.Sprint("other", i), cred{"b", "v"}, clk.t)
			}
			clk.advance(10 * time.Minute)
		}, Miss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk := newTest(t, 4)
			tt.setup(c, clk)
			v, r := c.Get("k")
			if r != tt.want {
				t.Fatalf("Get = %v, want %v", r, tt.want)
			}
			if (r == Aged || r == Hit || r == Stale) && v.v != "v" {
				t.Fatalf("value %q", v.v)
			}
		})
	}
}

// A group invalidation that was forgotten to bound memory can no longer remove an older entry of its
// group: such entries lose the feed's protection and go back to their TTL.
func TestForgottenInvalidationEndsAgedEntries(t *testing.T) {
	c, clk := newTest(t, 4096)
	c.FeedUp(clk.t)
	clk.advance(time.Millisecond)
	c.Add("k", cred{"a", "v"}, clk.t)
	clk.advance(time.Second)
	c.InvalidateGroup("a", clk.t)
	// Over 1024 later invalidations of other groups, past the horizon, make the cache prune "a".
	clk.advance(time.Hour)
	for i := range 1100 {
		c.InvalidateGroup(fmt.Sprint("g", i), clk.t)
	}
	clk.advance(2 * time.Second)
	c.InvalidateGroup("last", clk.t)
	c.mu.Lock()
	_, kept := c.invalid["a"]
	c.mu.Unlock()
	if kept {
		t.Fatal("the invalidation of a was not pruned; the test does not test the floor")
	}
	if _, r := c.Get("k"); r != Known {
		t.Fatalf("Get = %v after its group's invalidation was forgotten, want Known", r)
	}
	// An entry fetched after the forgotten invalidation is still trusted.
	c.Add("k2", cred{"a", "v"}, clk.t)
	clk.advance(time.Hour)
	if _, r := c.Get("k2"); r != Aged {
		t.Fatalf("Get = %v, want Aged", r)
	}
	if st := c.Stats(); st.AgedHits != 1 {
		t.Fatalf("AgedHits = %d", st.AgedHits)
	}
}

func TestPeek(t *testing.T) {
	c, clk := newTest(t, 4)
	if _, ok := c.Peek("k"); ok {
		t.Fatal("peek of nothing")
	}
	c.Add("k", cred{"a", "v"}, clk.t)
	clk.advance(time.Hour)
	if v, ok := c.Peek("k"); !ok || v.v != "v" {
		t.Fatal("peek of an old entry")
	}
	if st := c.Stats(); st.Hits+st.Misses+st.StaleHits+st.AgedHits != 0 {
		t.Fatalf("peek counted as a lookup: %+v", st)
	}
}

// A TTL of 0 asks the source of truth at every lookup, whatever the feed says.
func TestFeedDoesNotOverrideZeroTTL(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c, err := New[string, cred, string](Options[cred, string]{Size: 4, TTL: 0, Group: func(v cred) string { return v.agent }, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	c.FeedUp(clk.t)
	clk.advance(time.Millisecond)
	c.Add("k", cred{"a", "v"}, clk.t)
	clk.advance(time.Second)
	if _, r := c.Get("k"); r != Known {
		t.Fatalf("Get = %v with TTL 0, want Known", r)
	}
}
