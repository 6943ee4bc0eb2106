package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LoginAttempts is the login throttle's counter in PostgreSQL (table login_attempts, migration 005): every
// API replica on the database shares it (docs/security.md, U2). It implements throttle.Counter; times come
// from the caller's clock, not the database's, so that tests can move them.
type LoginAttempts struct{ s *core }

// LoginAttempts returns the throttle counter on this store's database.
func (s Accounts) LoginAttempts() LoginAttempts { return LoginAttempts{s.core} }

// Add counts one failure for key in one atomic upsert: a window that has ended starts afresh at now; a
// key already at max is set to max+1 and not counted further.
func (a LoginAttempts) Add(ctx context.Context, key string, now time.Time, window time.Duration, max int) (int, time.Time, error) {
	var n int
	var start time.Time
	err := a.s.pool.QueryRow(ctx, `
INSERT INTO login_attempts AS a (budget_key, window_start, failures) VALUES ($1, $2, 1)
ON CONFLICT (budget_key) DO UPDATE SET
    window_start = CASE WHEN a.window_start <= $3 THEN $2 ELSE a.window_start END,
    failures     = CASE WHEN a.window_start <= $3 THEN 1
                        WHEN a.failures < $4 THEN a.failures + 1
                        ELSE $4 + 1 END
RETURNING failures, window_start`, key, now, now.Add(-window), max).Scan(&n, &start)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count a failed login: %w", err)
	}
	return n, start, nil
}

// Get returns key's count and window start while its window holds now.
func (a LoginAttempts) Get(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	var n int
	var start time.Time
	err := a.s.idem().QueryRow(ctx, `SELECT failures, window_start FROM login_attempts WHERE budget_key = $1 AND window_start > $2`,
		key, now.Add(-window)).Scan(&n, &start)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read a login budget: %w", err)
	}
	return n, start, nil
}

// Sub gives back one failure of key.
func (a LoginAttempts) Sub(ctx context.Context, key string) error {
	if _, err := a.s.pool.Exec(ctx, `UPDATE login_attempts SET failures = failures - 1 WHERE budget_key = $1 AND failures > 0`, key); err != nil {
		return fmt.Errorf("give back a login attempt: %w", err)
	}
	return nil
}

// Delete forgets key.
func (a LoginAttempts) Delete(ctx context.Context, key string) error {
	if _, err := a.s.idem().Exec(ctx, `DELETE FROM login_attempts WHERE budget_key = $1`, key); err != nil {
		return fmt.Errorf("reset a login budget: %w", err)
	}
	return nil
}

// Prune deletes the budgets whose window started at or before before.
func (a LoginAttempts) Prune(ctx context.Context, before time.Time) error {
	if _, err := a.s.idem().Exec(ctx, `DELETE FROM login_attempts WHERE window_start <= $1`, before); err != nil {
		return fmt.Errorf("prune ended login windows: %w", err)
	}
	return nil
}
