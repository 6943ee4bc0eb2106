package auth

import (
	"sync"
	"time"
)

// SlowBudget bounds the time the broker thread spends in slow password KDFs (imported bcrypt, PBKDF2,
// argon2id hashes, before their fast hash is recorded). Allow is asked before a KDF and Spend is told
// what it cost.
type SlowBudget interface {
	Allow() bool
	Spend(time.Duration)
}

// TimeBudget is a SlowBudget that refills Rate of KDF time per second of wall-clock time, up to Burst.
// A KDF may start while any time is left; its cost may overdraw the budget, which then refuses until it
// has refilled. So a flood of wrong passwords for imported names costs the broker thread at most about
// Rate per second, however slow each hash is.
type TimeBudget struct {
	rate, burst time.Duration
	now         func() time.Time

	mu   sync.Mutex
	left time.Duration
	last time.Time
}

// NewTimeBudget returns a budget of rate KDF time per second (burst: the most saved up); now may be nil.
func NewTimeBudget(rate, burst time.Duration, now func() time.Time) *TimeBudget {
	if now == nil {
		now = time.Now
	}
	return &TimeBudget{rate: rate, burst: burst, now: now, left: burst, last: now()}
}

// Allow reports whether a KDF may run now.
func (b *TimeBudget) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	return b.left > 0
}

// Spend charges d to the budget.
func (b *TimeBudget) Spend(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.left -= d
}

func (b *TimeBudget) refill() {
	now := b.now()
	if el := now.Sub(b.last); el > 0 {
		b.left = min(b.burst, b.left+time.Duration(float64(el)*float64(b.rate)/float64(time.Second)))
	}
	b.last = now
}
