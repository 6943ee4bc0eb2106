package throttle_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/throttle"
	"github.com/iotauth/iotauth/backend/throttle/throttletest"
)

func TestMemoryConformance(t *testing.T) {
	throttletest.Run(t, func(*testing.T) throttle.Counter { return throttle.NewMemory(0) })
}

func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	m := throttle.NewMemory(10)
	l := throttle.New(m, throttle.Config{Window: time.Minute, MaxFailures: 1, Now: func() time.Time { return now }})
	for i := 0; i < 100; i++ {
		_, _, _ = l.Attempt(ctx, fmt.Sprint(i))
	}
	if m.Len() != 10 {
		t.Fatalf("%d entries, want 10", m.Len())
	}
	now = now.Add(time.Minute)
	_, _, _ = l.Attempt(ctx, "new")
	if m.Len() != 1 {
		t.Fatalf("expired entries not swept: %d", m.Len())
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, 10 * time.Millisecond: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := throttle.RetryAfterSeconds(d); got != want {
			t.Errorf("%s → %d, want %d", d, got, want)
		}
	}
}

func TestSemaphoreCaps(t *testing.T) {
	s := throttle.NewSemaphore(2)
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
