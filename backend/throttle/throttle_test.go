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
		if ok, _ := l.Attempt("a"); !ok {
			t.Fatalf("refused after %d attempts", i)
		}
		c.t = c.t.Add(time.Second)
	}
	ok, wait := l.Attempt("a")
	if ok || wait != 57*time.Second {
		t.Fatalf("ok=%v wait=%s, want false 57s", ok, wait)
	}
	if ok, _ := l.Attempt("b"); !ok {
		t.Fatal("another key is blocked")
	}
	c.t = c.t.Add(wait)
	if ok, _ := l.Attempt("a"); !ok {
		t.Fatal("still blocked after the window")
	}
	l.Attempt("a")
	l.Attempt("a")
	l.Reset("a")
	if ok, _ := l.Attempt("a"); !ok {
		t.Fatal("blocked after reset")
	}
}

func TestRefundGivesBackOneAttempt(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Window: time.Minute, MaxFailures: 2, Now: c.now})
	for i := 0; i < 10; i++ { // successful logins from a shared address never use up its attempts
		if ok, _ := l.Attempt("addr"); !ok {
			t.Fatalf("refused at %d despite refunds", i)
		}
		l.Refund("addr")
	}
	l.Attempt("addr")
	l.Attempt("addr")
	if ok, _ := l.Attempt("addr"); ok {
		t.Fatal("third unrefunded attempt allowed with MaxFailures 2")
	}
	l.Refund("missing") // harmless
}

func TestMemoryBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Window: time.Minute, MaxFailures: 1, MaxKeys: 10, Now: c.now})
	for i := 0; i < 100; i++ {
		l.Attempt(fmt.Sprint(i))
	}
	if len(l.entries) != 10 {
		t.Fatalf("%d entries, want 10", len(l.entries))
	}
	c.t = c.t.Add(time.Minute)
	l.Attempt("new")
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
