// Package throttletest is the conformance suite every throttle.Counter must pass (the in-memory one and
// PostgreSQL's alike), so that the login throttle behaves the same whichever holds its counts.
package throttletest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/throttle"
)

// Run runs the suite against counters made by newCounter (a fresh, empty one per call).
func Run(t *testing.T, newCounter func(t *testing.T) throttle.Counter) {
	t.Helper()
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, c throttle.Counter)
	}{
		{"LockoutIsTimeBoxed", lockoutIsTimeBoxed},
		{"RefundGivesBackOneAttempt", refundGivesBackOneAttempt},
		{"BlockedDoesNotCount", blockedDoesNotCount},
		{"PruneDropsEndedWindows", pruneDropsEndedWindows},
		{"ParallelAttemptsNeverOutrunTheLimit", parallelAttempts},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newCounter(t)) })
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0).UTC()} }

// lim wraps a Limiter so that a test reads straight: an error fails the test.
type lim struct {
	t *testing.T
	l *throttle.Limiter
}

func (l lim) attempt(key string) (bool, time.Duration) {
	l.t.Helper()
	ok, wait, err := l.l.Attempt(context.Background(), key)
	if err != nil {
		l.t.Fatal(err)
	}
	return ok, wait
}

func (l lim) blocked(key string) (bool, time.Duration) {
	l.t.Helper()
	b, wait, err := l.l.Blocked(context.Background(), key)
	if err != nil {
		l.t.Fatal(err)
	}
	return b, wait
}

func lockoutIsTimeBoxed(t *testing.T, c throttle.Counter) {
	ctx := context.Background()
	clk := newClock()
	l := throttle.New(c, throttle.Config{Window: time.Minute, MaxFailures: 3, Now: clk.now})
	w := lim{t, l}
	for i := 0; i < 3; i++ {
		if ok, _ := w.attempt("a"); !ok {
			t.Fatalf("refused after %d attempts", i)
		}
		clk.advance(time.Second)
	}
	ok, wait := w.attempt("a")
	if ok || wait != 57*time.Second {
		t.Fatalf("ok=%v wait=%s, want false 57s", ok, wait)
	}
	if ok, _ := w.attempt("b"); !ok {
		t.Fatal("another key is blocked")
	}
	clk.advance(wait)
	if ok, _ := w.attempt("a"); !ok {
		t.Fatal("still blocked after the window")
	}
	w.attempt("a")
	w.attempt("a")
	if err := l.Reset(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := w.attempt("a"); !ok {
		t.Fatal("blocked after reset")
	}
}

func refundGivesBackOneAttempt(t *testing.T, c throttle.Counter) {
	ctx := context.Background()
	clk := newClock()
	l := throttle.New(c, throttle.Config{Window: time.Minute, MaxFailures: 2, Now: clk.now})
	w := lim{t, l}
	for i := 0; i < 10; i++ {
		if ok, _ := w.attempt("addr"); !ok {
			t.Fatalf("refused at %d despite refunds", i)
		}
		if err := l.Refund(ctx, "addr"); err != nil {
			t.Fatal(err)
		}
	}
	w.attempt("addr")
	w.attempt("addr")
	if ok, _ := w.attempt("addr"); ok {
		t.Fatal("third unrefunded attempt allowed with MaxFailures 2")
	}
	if err := l.Refund(ctx, "missing"); err != nil { // harmless
		t.Fatal(err)
	}
}

func blockedDoesNotCount(t *testing.T, c throttle.Counter) {
	clk := newClock()
	l := throttle.New(c, throttle.Config{Window: time.Minute, MaxFailures: 2, Now: clk.now})
	w := lim{t, l}
	for i := 0; i < 5; i++ {
		if blocked, _ := w.blocked("k"); blocked {
			t.Fatal("Blocked on a key with no failures")
		}
	}
	w.attempt("k")
	clk.advance(10 * time.Second)
	w.attempt("k")
	blocked, wait := w.blocked("k")
	if !blocked || wait != 50*time.Second {
		t.Fatalf("blocked=%v wait=%s, want true 50s", blocked, wait)
	}
	clk.advance(50 * time.Second)
	if blocked, _ := w.blocked("k"); blocked {
		t.Fatal("still blocked after the window")
	}
}

func pruneDropsEndedWindows(t *testing.T, c throttle.Counter) {
	ctx := context.Background()
	clk := newClock()
	l := throttle.New(c, throttle.Config{Window: time.Minute, MaxFailures: 1, Now: clk.now})
	w := lim{t, l}
	w.attempt("old")
	clk.advance(30 * time.Second)
	w.attempt("young")
	clk.advance(31 * time.Second)
	if ran, err := l.Prune(ctx); err != nil || !ran {
		t.Fatalf("first prune: ran=%v err=%v", ran, err)
	}
	if ran, _ := l.Prune(ctx); ran {
		t.Fatal("pruned twice within PruneInterval")
	}
	// The pruned key starts afresh; the young one is still locked.
	if ok, _ := w.attempt("young"); ok {
		t.Fatal("prune dropped a live window")
	}
	if n, _, err := c.Get(ctx, "old", clk.now().Add(-time.Hour), time.Hour); err != nil || n != 0 {
		t.Fatalf("old key still held after prune: %d %v", n, err)
	}
}

func parallelAttempts(t *testing.T, c throttle.Counter) {
	ctx := context.Background()
	clk := newClock()
	l := throttle.New(c, throttle.Config{Window: time.Minute, MaxFailures: 3, Now: clk.now})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed, errs := 0, []error{}
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _, err := l.Attempt(ctx, "p")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				allowed++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 || allowed != 3 {
		t.Fatalf("30 parallel attempts: %d allowed, want 3 (errors: %v)", allowed, fmt.Sprint(errs))
	}
}
