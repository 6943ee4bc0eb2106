package throttle

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLockoutIsTimeBoxed(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Window: time.Minute, MaxFailures: 3, Now: c.now})
	for i := 0; i < 3; i++ {
		if b, _ := l.Blocked("a"); b {
			t.Fatalf("blocked after %d failures", i)
		}
		l.Fail("a")
		c.t = c.t.Add(time.Second)
	}
	b, wait := l.Blocked("a")
	if !b || wait != 57*time.Second {
		t.Fatalf("blocked=%v wait=%s, want true 57s", b, wait)
	}
	if b, _ := l.Blocked("b"); b {
		t.Fatal("another key is blocked")
	}
	c.t = c.t.Add(wait)
	if b, _ := l.Blocked("a"); b {
		t.Fatal("still blocked after the window")
	}
	l.Fail("a")
	if b, _ := l.Blocked("a"); b {
		t.Fatal("a new window started full")
	}
	l.Fail("a")
	l.Fail("a")
	l.Reset("a")
	if b, _ := l.Blocked("a"); b {
		t.Fatal("blocked after reset")
	}
}

func TestMemoryBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Window: time.Minute, MaxFailures: 1, MaxKeys: 10, Now: c.now})
	for i := 0; i < 100; i++ {
		l.Fail(fmt.Sprint(i))
	}
	if len(l.entries) != 10 {
		t.Fatalf("%d entries, want 10", len(l.entries))
	}
	c.t = c.t.Add(time.Minute)
	l.Fail("new")
	if len(l.entries) != 1 {
		t.Fatalf("expired entries not swept: %d", len(l.entries))
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, 10 * time.Millisecond: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("%s → %d, want %d", d, got, want)
		}
	}
}

func TestSemaphoreCaps(t *testing.T) {
	s := NewSemaphore(2)
	ctx := context.Background()
	_ = s.Acquire(ctx)
	_ = s.Acquire(ctx)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.Acquire(short); err == nil {
		t.Fatal("third acquire succeeded")
	}
	s.Release()
	if err := s.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
}
