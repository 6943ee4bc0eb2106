// Package throttle owns the login throttle: failure budgets per key (an account, a client address, a
// known-good device) over fixed windows. A key that used up its budget is refused until its window ends,
// so an attacker cannot guess quickly and the real owner is never locked out for good (docs/security.md, L3).
// The counts live behind Counter so that every API replica shares them (PostgreSQL in production, see
// store.LoginAttempts; Memory for unit tests).
//
// It also holds the semaphore that caps concurrent password-hash computations (L5).
package throttle

import (
	"context"
	"math"
	"sync"
	"time"
)

// Counter keeps failure counts per key over fixed windows. A window starts at a key's first failure
// after the previous window ended and lasts the given duration. Implementations must make Add atomic
// across every process that shares them: it is what stops parallel guesses on several replicas from
// outrunning the limit.
type Counter interface {
	// Add counts one failure against key unless the key already holds max failures in its current
	// window, and returns the count afterwards and the window's start. A count of max+1 means the
	// attempt was refused and not counted (the count never grows past max+1).
	Add(ctx context.Context, key string, now time.Time, window time.Duration, max int) (failures int, start time.Time, err error)
	// Get returns key's count and window start when its window holds now, and 0 otherwise.
	Get(ctx context.Context, key string, now time.Time, window time.Duration) (failures int, start time.Time, err error)
	// Sub gives back one failure of key (never below zero).
	Sub(ctx context.Context, key string) error
	// Delete forgets key.
	Delete(ctx context.Context, key string) error
	// Prune deletes every key whose window started at or before before.
	Prune(ctx context.Context, before time.Time) error
}

// Config sets the limits of one budget. Zero values take the defaults.
type Config struct {
	// Window is how long failures are remembered and how long a locked key stays locked (default 15 min).
	Window time.Duration
	// MaxFailures is how many failures a key may have in one window (default 5).
	MaxFailures int
	// Now is the clock; time.Now by default. Replicas that share a Counter need clocks in step (NTP).
	Now func() time.Time
}

// Limiter is one budget (say, per account) over a Counter that several budgets may share: their keys
// must not collide (prefix them).
type Limiter struct {
	c      Counter
	window time.Duration
	max    int
	now    func() time.Time

	mu        sync.Mutex
	lastPrune time.Time
}

// New returns a Limiter counting in c.
func New(c Counter, cfg Config) *Limiter {
	l := &Limiter{c: c, window: cfg.Window, max: cfg.MaxFailures, now: cfg.Now}
	if l.window <= 0 {
		l.window = 15 * time.Minute
	}
	if l.max <= 0 {
		l.max = 5
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

// Window is the limiter's window.
func (l *Limiter) Window() time.Duration { return l.window }

// Attempt reserves one attempt for key before the password is checked, so that requests sent in parallel
// cannot all pass a check made before any of them failed. It reports false, with the wait, when key has no
// attempts left. A failed login keeps the reservation; a successful one gives it back (Reset or Refund).
func (l *Limiter) Attempt(ctx context.Context, key string) (bool, time.Duration, error) {
	now := l.now()
	n, start, err := l.c.Add(ctx, key, now, l.window, l.max)
	if err != nil {
		return false, 0, err
	}
	if n > l.max {
		return false, l.wait(start, now), nil
	}
	return true, 0, nil
}

// Blocked reports whether key has used up its budget, with the wait, without counting anything.
func (l *Limiter) Blocked(ctx context.Context, key string) (bool, time.Duration, error) {
	now := l.now()
	n, start, err := l.c.Get(ctx, key, now, l.window)
	if err != nil {
		return false, 0, err
	}
	if n >= l.max {
		return true, l.wait(start, now), nil
	}
	return false, 0, nil
}

func (l *Limiter) wait(start, now time.Time) time.Duration {
	if d := start.Add(l.window).Sub(now); d > 0 {
		return d
	}
	return time.Millisecond
}

// Refund gives back one attempt reserved by Attempt (the check could not be made: the request was
// cancelled or the database failed).
func (l *Limiter) Refund(ctx context.Context, key string) error { return l.c.Sub(ctx, key) }

// Reset forgets key (after a successful login for that budget).
func (l *Limiter) Reset(ctx context.Context, key string) error { return l.c.Delete(ctx, key) }

// PruneInterval is how often Prune deletes ended windows.
const PruneInterval = time.Minute

// Prune deletes the keys whose window has ended, at most once per PruneInterval of this limiter's
// clock (it does nothing the rest of the time), so that a flood of made-up accounts leaves no lasting
// rows. It reports whether it ran.
func (l *Limiter) Prune(ctx context.Context) (bool, error) {
	now := l.now()
	l.mu.Lock()
	due := l.lastPrune.IsZero() || now.Sub(l.lastPrune) >= PruneInterval || now.Before(l.lastPrune)
	if due {
		l.lastPrune = now
	}
	l.mu.Unlock()
	if !due {
		return false, nil
	}
	return true, l.c.Prune(ctx, now.Add(-l.window))
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
