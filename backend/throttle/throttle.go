// Package throttle owns the login throttle: a failure counter per key (an account, a client address) over
// a fixed window. A key that reached its limit is refused until its window ends, so an attacker cannot
// guess quickly and the real owner is never locked out for good (SECURITY.md L3).
//
// It also holds the semaphore that caps concurrent password-hash computations (L5).
package throttle

import (
	"context"
	"math"
	"sync"
	"time"
)

// Config sets the limits. Zero values take the defaults.
type Config struct {
	// Window is how long failures are remembered and how long a locked key stays locked (default 15 min).
	Window time.Duration
	// MaxFailures is how many failures a key may have in one window (default 5).
	MaxFailures int
	// MaxKeys bounds memory: beyond it, expired entries are swept and new keys are not tracked until
	// there is room (the per-address key still limits a flood of made-up accounts). Default 100000.
	MaxKeys int
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Limiter counts failures per key.
type Limiter struct {
	window time.Duration
	max    int
	maxKey int
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	start    time.Time
	failures int
}

// New returns a Limiter.
func New(c Config) *Limiter {
	l := &Limiter{window: c.Window, max: c.MaxFailures, maxKey: c.MaxKeys, now: c.Now, entries: map[string]*entry{}}
	if l.window <= 0 {
		l.window = 15 * time.Minute
	}
	if l.max <= 0 {
		l.max = 5
	}
	if l.maxKey <= 0 {
		l.maxKey = 100000
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

// Attempt reserves one attempt for key before the password is checked, so that requests sent in parallel
// cannot all pass a check made before any of them failed. It reports false, with the wait, when key has no
// attempts left. A failed login keeps the reservation; a successful one gives it back (Reset or Refund).
func (l *Limiter) Attempt(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, ok := l.entries[key]
	if ok && !now.Before(e.start.Add(l.window)) {
		ok = false
	}
	if !ok {
		if len(l.entries) >= l.maxKey {
			l.sweep(now)
			if len(l.entries) >= l.maxKey {
				// Memory stays bounded: past MaxKeys live windows a new key is not tracked (the other
				// limiter and the hash semaphore still apply).
				return true, 0
			}
		}
		e = &entry{start: now}
		l.entries[key] = e
	}
	if e.failures >= l.max {
		return false, e.start.Add(l.window).Sub(now)
	}
	e.failures++
	return true, 0
}

// Refund gives back one attempt reserved by Attempt (a successful login from a shared address must not
// count against the address).
func (l *Limiter) Refund(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[key]; ok && e.failures > 0 {
		e.failures--
	}
}

// Reset forgets key (after a successful login for that account).
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	delete(l.entries, key)
	l.mu.Unlock()
}

func (l *Limiter) sweep(now time.Time) {
	for k, e := range l.entries {
		if !now.Before(e.start.Add(l.window)) {
			delete(l.entries, k)
		}
	}
}

// RetryAfterSeconds rounds a wait up to whole seconds (at least 1), for a Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// Semaphore caps how many expensive computations run at once.
type Semaphore chan struct{}

// NewSemaphore returns a semaphore with n slots (at least 1).
func NewSemaphore(n int) Semaphore {
	if n < 1 {
		n = 1
	}
	return make(Semaphore, n)
}

// Acquire takes a slot, waiting until one is free or ctx ends.
func (s Semaphore) Acquire(ctx context.Context) error {
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release frees a slot taken by Acquire.
func (s Semaphore) Release() { <-s }
