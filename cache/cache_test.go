package cache

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type cred struct{ agent, v string }

func newTest(t *testing.T, size int) (*Cache[string, cred, string], *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c, err := New[string, cred, string](Options[cred, string]{
		Size: size, TTL: time.Minute, NegativeTTL: 10 * time.Second, StaleGrace: 5 * time.Minute,
		Group: func(v cred) string { return v.agent }, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func TestLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(c *Cache[string, cred, string], clk *clock)
		want    Result
		wantVal string
	}{
		{"miss", func(c *Cache[string, cred, string], clk *clock) {}, Miss, ""},
		{"fresh hit", func(c *Cache[string, cred, string], clk *clock) { c.Add("k", cred{"a", "v"}, clk.t) }, Hit, "v"},
		{"stale after ttl", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(2 * time.Minute)
		}, Stale, "v"},
		{"gone after ttl+grace", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(7 * time.Minute)
		}, Known, ""},
		{"negative", func(c *Cache[string, cred, string], clk *clock) { c.AddNegative("k", clk.t) }, NegativeHit, ""},
		{"negative expires", func(c *Cache[string, cred, string], clk *clock) {
			c.AddNegative("k", clk.t)
			clk.advance(11 * time.Second)
		}, Miss, ""},
		{"group invalidation", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateGroup("a", clk.t)
		}, Known, ""},
		{"other group untouched", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateGroup("b", clk.t)
		}, Hit, "v"},
		{"lookup raced invalidation", func(c *Cache[string, cred, string], clk *clock) {
			started := clk.t
			clk.advance(time.Millisecond)
			c.InvalidateGroup("a", clk.t) // change lands while the query runs
			c.Add("k", cred{"a", "old"}, started)
		}, Miss, ""},
		{"refetch after invalidation", func(c *Cache[string, cred, string], clk *clock) {
			c.InvalidateGroup("a", clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "new"}, clk.t)
		}, Hit, "new"},
		{"invalidate all leaves a stale positive", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateAll(clk.t)
		}, Stale, "v"},
		{"invalidate all, then past the grace", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateAll(clk.t)
			clk.advance(7 * time.Minute)
		}, Known, ""},
		{"invalidate all drops negatives", func(c *Cache[string, cred, string], clk *clock) {
			c.AddNegative("k", clk.t)
			c.InvalidateAll(clk.t)
		}, Miss, ""},
		{"group invalidation beats invalidate all", func(c *Cache[string, cred, string], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateAll(clk.t)
			c.InvalidateGroup("a", clk.t)
		}, Known, ""},
		{"remove", func(c *Cache[string, cred, string], clk *clock) {
			c.AddNegative("k", clk.t)
			c.Remove("k")
		}, Miss, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk := newTest(t, 10)
			tt.setup(c, clk)
			v, r := c.Get("k")
			if r != tt.want || v.v != tt.wantVal {
				t.Fatalf("Get = (%q, %v), want (%q, %v)", v.v, r, tt.wantVal, tt.want)
			}
		})
	}
}

func TestBounded(t *testing.T) {
	c, clk := newTest(t, 100)
	for i := 0; i < 1000; i++ {
		c.Add(string(rune(i)), cred{"a", "v"}, clk.t)
		c.AddNegative(string(rune(i+5000)), clk.t)
	}
	if n := c.Len(); n != 100 {
		t.Fatalf("Len = %d, want 100", n)
	}
	// Positives and negatives are bounded apart (100 each here): 900 evictions from each.
	if s := c.Stats(); s.Evictions != 1800 {
		t.Fatalf("evictions = %d, want 1800", s.Evictions)
	}
}

// A flood of "does not exist" answers never pushes a positive answer out, and the positives of live
// sessions, touched now and then, outlast other positives.
func TestNegativesNeverEvictPositives(t *testing.T) {
	c, clk := newTest(t, 3)
	for _, k := range []string{"a", "b", "c"} {
		c.Add(k, cred{k, "v"}, clk.t)
	}
	for i := 0; i < 10000; i++ {
		c.AddNegative(fmt.Sprintf("forged-%d", i), clk.t)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, r := c.Get(k); r != Hit {
			t.Fatalf("%s after the flood: %v, want Hit", k, r)
		}
	}
	if _, r := c.Get("forged-9999"); r != NegativeHit {
		t.Fatalf("the newest negative: %v", r)
	}
	c.Touch("a") // a live session's credential
	c.Get("b")
	c.Get("c")
	c.Touch("a")
	c.Add("d", cred{"d", "v"}, clk.t) // evicts the least recently used: b
	if _, r := c.Get("a"); r != Hit {
		t.Fatalf("the touched entry was evicted: %v", r)
	}
	if _, r := c.Get("b"); r != Miss {
		t.Fatalf("b: %v, want Miss (evicted)", r)
	}
	// A key that turns out to exist replaces its negative answer, and the reverse.
	c.AddNegative("e", clk.t)
	c.Add("e", cred{"e", "v"}, clk.t)
	if _, r := c.Get("e"); r != Hit {
		t.Fatalf("e after Add: %v", r)
	}
	c.AddNegative("e", clk.t)
	if _, r := c.Get("e"); r != NegativeHit {
		t.Fatalf("e after AddNegative: %v", r)
	}
}

func TestDisabled(t *testing.T) {
	c, clk := newTest(t, 0)
	c.Add("k", cred{"a", "v"}, clk.t)
	if _, r := c.Get("k"); r != Miss {
		t.Fatalf("disabled cache returned %v", r)
	}
}

func TestInvalidationMapBounded(t *testing.T) {
	c, clk := newTest(t, 10)
	for i := 0; i < 5000; i++ {
		c.InvalidateGroup(string(rune(i)), clk.t)
		clk.advance(10 * time.Second)
	}
	c.mu.Lock()
	n := len(c.invalid)
	c.mu.Unlock()
	if n > 1100 {
		t.Fatalf("invalidation map grew to %d", n)
	}
}

func TestPurgeAndStats(t *testing.T) {
	c, clk := newTest(t, 10)
	c.Add("a", cred{"a", "v"}, clk.t)
	c.AddNegative("b", clk.t)
	c.Get("a") // hit
	c.Get("b") // negative hit
	c.Get("z") // miss
	clk.advance(2 * time.Minute)
	c.Get("a") // stale
	c.Purge()
	if _, r := c.Get("a"); r != Miss {
		t.Fatalf("Get after Purge = %v", r)
	}
	want := Stats{Hits: 1, NegativeHits: 1, StaleHits: 1, Misses: 2, Evictions: 2, Len: 0}
	if s := c.Stats(); s != want {
		t.Fatalf("Stats = %+v, want %+v", s, want)
	}
	c.Add("a", cred{"a", "v"}, clk.t)
	if _, r := c.Get("a"); r != Hit {
		t.Fatalf("Get after Purge and Add = %v", r)
	}
}

func TestRecentlyUsedSurvivesEviction(t *testing.T) {
	c, clk := newTest(t, 2)
	c.Add("a", cred{"a", "1"}, clk.t)
	c.Add("b", cred{"b", "2"}, clk.t)
	c.Get("a")
	c.Add("c", cred{"c", "3"}, clk.t)
	for k, want := range map[string]Result{"a": Hit, "b": Miss, "c": Hit} {
		if _, r := c.Get(k); r != want {
			t.Errorf("Get(%q) = %v, want %v", k, r, want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Options[cred, string]{
		{Size: -1}, {Size: 1, TTL: -1}, {Size: 1, NegativeTTL: -1}, {Size: 1, StaleGrace: -1}, {Size: 1 << 31},
	} {
		if _, err := New[string](opt); err == nil {
			t.Errorf("New(%+v) accepted", opt)
		}
	}
}

// TestComparableGroups uses an array as the group key, as the credential cache does.
func TestComparableGroups(t *testing.T) {
	type val struct{ group [16]byte }
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c, err := New[int](Options[val, [16]byte]{
		Size: 10, TTL: time.Minute, Group: func(v val) [16]byte { return v.group }, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Add(1, val{[16]byte{1}}, clk.t)
	c.Add(2, val{[16]byte{2}}, clk.t)
	c.InvalidateGroup([16]byte{1}, clk.t)
	if _, r := c.Get(1); r != Known {
		t.Fatalf("invalidated group: %v, want Known (unusable, but the key existed)", r)
	}
	if _, r := c.Get(2); r != Hit {
		t.Fatalf("other group: %v", r)
	}
}

func TestConcurrent(t *testing.T) {
	c, err := New[int](Options[cred, string]{
		Size: 64, TTL: time.Minute, NegativeTTL: time.Minute, Group: func(v cred) string { return v.agent },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 5000 {
				k := (i*7 + w) % 100
				switch i % 5 {
				case 0:
					c.Add(k, cred{agent: string(rune('a' + k%3))}, time.Now())
				case 1:
					c.AddNegative(k, time.Now())
				case 2:
					c.Remove(k)
				case 3:
					c.InvalidateGroup(string(rune('a'+k%3)), time.Now())
				default:
					c.Get(k)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	if n := c.Len(); n > 64 {
		t.Fatalf("Len = %d beyond the size", n)
	}
}
