package cache

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type cred struct{ agent, v string }

func newTest(t *testing.T, size int) (*Cache[string, cred], *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c, err := New[string, cred](Options[cred]{
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
		setup   func(c *Cache[string, cred], clk *clock)
		want    Result
		wantVal string
	}{
		{"miss", func(c *Cache[string, cred], clk *clock) {}, Miss, ""},
		{"fresh hit", func(c *Cache[string, cred], clk *clock) { c.Add("k", cred{"a", "v"}, clk.t) }, Hit, "v"},
		{"stale after ttl", func(c *Cache[string, cred], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(2 * time.Minute)
		}, Stale, "v"},
		{"gone after ttl+grace", func(c *Cache[string, cred], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			clk.advance(7 * time.Minute)
		}, Miss, ""},
		{"negative", func(c *Cache[string, cred], clk *clock) { c.AddNegative("k", clk.t) }, NegativeHit, ""},
		{"negative expires", func(c *Cache[string, cred], clk *clock) {
			c.AddNegative("k", clk.t)
			clk.advance(11 * time.Second)
		}, Miss, ""},
		{"group invalidation", func(c *Cache[string, cred], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateGroup("a", clk.t)
		}, Miss, ""},
		{"other group untouched", func(c *Cache[string, cred], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateGroup("b", clk.t)
		}, Hit, "v"},
		{"lookup raced invalidation", func(c *Cache[string, cred], clk *clock) {
			started := clk.t
			clk.advance(time.Millisecond)
			c.InvalidateGroup("a", clk.t) // change lands while the query runs
			c.Add("k", cred{"a", "old"}, started)
		}, Miss, ""},
		{"refetch after invalidation", func(c *Cache[string, cred], clk *clock) {
			c.InvalidateGroup("a", clk.t)
			clk.advance(time.Millisecond)
			c.Add("k", cred{"a", "new"}, clk.t)
		}, Hit, "new"},
		{"invalidate all", func(c *Cache[string, cred], clk *clock) {
			c.Add("k", cred{"a", "v"}, clk.t)
			c.InvalidateAll(clk.t)
		}, Miss, ""},
		{"remove", func(c *Cache[string, cred], clk *clock) {
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
	if s := c.Stats(); s.Evictions != 1900 {
		t.Fatalf("evictions = %d, want 1900", s.Evictions)
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
