package harness

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sqlTimeout bounds each statement a test runs through Exec or QueryRow, connecting included.
const sqlTimeout = 10 * time.Second

// Exec runs one SQL statement on the database at dsn, on a connection of its own, and fails the test
// if it errs. Tests use it to change rows behind the API's back, as any other writer of the database
// may (docs/architecture.md), and to send their own notifications.
func Exec(t testing.TB, dsn, sql string, args ...any) pgconn.CommandTag {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to run %q: %v", sql, err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag
}

// QueryRow runs a query on the database at dsn, on a connection of its own, and returns its first row.
// As with pgx, errors (pgx.ErrNoRows among them) come from the row's Scan, which the caller must call:
// it also closes the connection. It does not fail the test itself, so it may be used in cleanups and
// polling loops that decide for themselves.
func QueryRow(t testing.TB, dsn, sql string, args ...any) pgx.Row {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return &row{cancel: cancel, err: err}
	}
	return &row{ctx: ctx, cancel: cancel, conn: conn, row: conn.QueryRow(ctx, sql, args...)}
}

// row is QueryRow's answer: a pgx.Row that owns its connection.
type row struct {
	ctx    context.Context
	cancel context.CancelFunc
	conn   *pgx.Conn
	row    pgx.Row
	err    error
}

func (r *row) Scan(dest ...any) error {
	defer r.cancel()
	if r.err != nil {
		return r.err
	}
	defer r.conn.Close(r.ctx)
	return r.row.Scan(dest...)
}
