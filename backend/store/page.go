package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Page selects one page of a list in keyset order on (created_at, id): the rows after the cursor
// (AfterTime, AfterID) in the list's own direction. A zero AfterTime starts at the beginning.
type Page struct {
	Limit     int
	AfterTime time.Time
	AfterID   string
}

// cursor returns the cursor as query arguments (both nil at the start).
func (p Page) cursor() (*time.Time, *string) {
	if p.AfterTime.IsZero() {
		return nil, nil
	}
	return &p.AfterTime, &p.AfterID
}

func (p Page) limit() int {
	if p.Limit <= 0 {
		return 50
	}
	return p.Limit
}

// listPage runs a keyset query whose last argument is the row limit (the page's limit plus one, to learn
// whether more follow), scans its rows and reports whether another page follows. A malformed uuid in
// the cursor is ErrInvalid.
func listPage[T any](ctx context.Context, db DBTX, what string, p Page, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, bool, error) {
	n := p.limit()
	rows, err := db.Query(ctx, sql, append(args, n+1)...)
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, Classify(fmt.Errorf("list %s: %w", what, err))
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, Classify(fmt.Errorf("list %s: %w", what, err))
	}
	if len(items) > n {
		return items[:n], true, nil
	}
	return items, false, nil
}
