package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Durable commit levels: the synchronous_commit setting of the transactions that make a security
// change (revoke, disable, rotate, decommission, deny, and every other audited change). See
// docs/operations.md, "High availability".
const (
	// DurableRemoteApply waits until a synchronous standby has applied the change, so that a read on
	// it (and on it once promoted) sees the change. The default.
	DurableRemoteApply = "remote_apply"
	// DurableOn waits until a synchronous standby has flushed the change to disk.
	DurableOn = "on"
	// DurableRemoteWrite waits until a synchronous standby has received the change (written, not
	// flushed): survives the primary's loss, not both machines'.
	DurableRemoteWrite = "remote_write"
	// DurableOff leaves every transaction to the server's own synchronous_commit and waits unbounded.
	DurableOff = "off"
)

// DefaultDurableTimeout is how long a security change waits for a synchronous standby by default.
const DefaultDurableTimeout = 5 * time.Second

// ErrNotConfirmed means a change was committed on the primary but no synchronous standby confirmed it
// in time: it is in force on the primary (brokers act on it), yet a failover now could lose it. The
// caller must not report success. Only changes that take access away wait (see durableAction), and
// repeating one of those is safe: it succeeds once a standby confirms.
var ErrNotConfirmed = errors.New("the change was committed on the primary and is in force, but no synchronous standby confirmed it in time, so a failover now could lose it: repeat it (that is safe) once the standby is back, and check replication in pg_stat_replication on the primary")

// Durability configures durable commits.
type Durability struct {
	// Level is one of the Durable* constants; "" is DurableOff.
	Level string
	// Timeout bounds the wait for a standby's confirmation (DefaultDurableTimeout when zero).
	Timeout time.Duration
}

// ParseDurableLevel checks a durable-commit level as an operator writes it.
func ParseDurableLevel(v string) (string, error) {
	switch v {
	case DurableRemoteApply, DurableOn, DurableRemoteWrite, DurableOff:
		return v, nil
	}
	return "", fmt.Errorf("durable commit level %q: use remote_apply (default), on, remote_write or off", v)
}

func (d Durability) enabled() bool { return d.Level != "" && d.Level != DurableOff }

// warnedKey is where the notice handler marks a connection that received a WARNING.
const warnedKey = "iotauth.warned"

// onNotice marks the connection when the server sends a WARNING. A commit whose wait for a
// synchronous standby was cancelled still answers COMMIT, with such a warning: the warning, not the
// command's result, says the standby never confirmed.
func onNotice(c *pgconn.PgConn, n *pgconn.Notice) {
	if n.Severity == "WARNING" || n.SeverityUnlocalized == "WARNING" {
		c.CustomData()[warnedKey] = true
	}
}

// cancelRequestHandler makes a cancelled or expired context send PostgreSQL a cancel request (and
// give the server a second to answer before the socket is cut) instead of cutting the socket at once.
// Only a cancel request ends a backend's wait for a synchronous standby: with the socket cut, the
// backend would go on waiting, holding the row locks of the change.
func cancelRequestHandler(c *pgconn.PgConn) ctxwatch.Handler {
	return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Second}
}

// tx runs fn in a transaction on a pooled connection. A connection that turns out to be dead before
// COMMIT was sent (a stale pooled connection to a primary that failed over, a server that restarted)
// changed nothing: the pool drops its other connections and the transaction runs once more on a fresh
// one. With durable set and durable commits enabled, the change commits on the primary at once (so that
// it is visible and its notification reaches the brokers without waiting for any standby: a revocation
// bites within a second whatever the standby does), and then tx waits, for at most the durability
// timeout, until a synchronous standby confirms it, returning ErrNotConfirmed when none does.
func (s *core) tx(ctx context.Context, durable bool, fn func(pgx.Tx) error) error {
	sent, err := s.txOnce(ctx, durable, fn)
	if err == nil || sent || ctx.Err() != nil || !connBroken(err) {
		return err
	}
	s.pool.Reset()
	_, err = s.txOnce(ctx, durable, fn)
	return err
}

// txOnce is one attempt of tx; sent reports whether COMMIT was sent (so that the outcome may be unknown
// and the transaction must not be repeated).
func (s *core) txOnce(ctx context.Context, durable bool, fn func(pgx.Tx) error) (sent bool, err error) {
	durable = durable && s.durable.enabled()
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	var opts pgx.TxOptions
	if durable {
		// The change itself waits for no standby, whatever the server's own synchronous_commit: a
		// transaction waiting for a standby is invisible to others and holds back its NOTIFY until the
		// wait ends, which would delay the revocation it carries. One round trip: BEGIN and the setting
		// go as one simple-protocol message.
		opts.BeginQuery = "BEGIN; SET LOCAL synchronous_commit = local"
	}
	tx, err := c.BeginTx(ctx, opts)
	if err != nil {
		c.Release()
		return false, err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		c.Release()
		return false, err
	}
	err = tx.Commit(ctx)
	if err != nil || !durable {
		c.Release()
		return true, err
	}
	return true, s.confirm(ctx, c)
}

// confirm waits until a synchronous standby has what the connection c just committed, for at most the
// durability timeout, and releases c. It commits a marker transaction at the durable level: its commit
// record lies after the change's in the WAL, so the standby's confirmation of the marker covers the
// change too. The marker must write WAL, or PostgreSQL commits it without waiting (a transaction that
// only took a transaction id does not wait): a transactional logical message does, with no table, and
// any role may send one (logical decoding consumers see it under the prefix "iotauth").
func (s *core) confirm(ctx context.Context, c *pgxpool.Conn) error {
	timeout := s.durable.Timeout
	if timeout <= 0 {
		timeout = DefaultDurableTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pc := c.Conn().PgConn()
	delete(pc.CustomData(), warnedKey)
	// The level is one of ParseDurableLevel's constants, never the caller's text.
	_, err := pc.Exec(cctx, "BEGIN; SET LOCAL synchronous_commit = "+s.durable.Level+"; SELECT pg_logical_emit_message(true, 'iotauth', 'confirm'); COMMIT").ReadAll()
	warned, _ := pc.CustomData()[warnedKey].(bool)
	expired := cctx.Err() != nil && ctx.Err() == nil
	if err == nil && !warned && !expired {
		c.Release()
		return nil
	}
	// The wait was cut short (our deadline sent a cancel request, or someone cancelled the backend), or
	// the marker failed: the change is committed on the primary and in force there, but no standby
	// confirmed it. The connection is not reused, so that a late cancel request cannot hit its next
	// statement.
	_ = c.Hijack().Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("%w (confirmation: %v)", ErrNotConfirmed, err)
	}
	return ErrNotConfirmed
}

// connBroken reports whether err shows that the connection it came from is dead or points at a server
// that no longer takes writes: closed by the server (EOF, reset, broken pipe), terminated by an
// administrator or a shutdown (57P01, 57P02, 57P03), or a server in recovery (25006: a primary that
// became a standby). Other pooled connections are most likely in the same state.
func connBroken(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow, pgerrcode.ReadOnlySQLTransaction:
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// resetTracer drops the pool's idle connections when a statement fails on a dead connection, so that
// after a failover only the first statement sees a stale connection, not one per pooled connection.
type resetTracer struct{ s *core }

func (t resetTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (t resetTracer) TraceQueryEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if d.Err != nil && t.s.pool != nil && connBroken(d.Err) {
		t.s.pool.Reset()
	}
}

// SynchronousStandbys returns the server's synchronous_standby_names ("" when commits wait for no
// standby), for the start-up log line that says what a durable commit waits for.
func (s *Store) SynchronousStandbys(ctx context.Context) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&v)
	return v, err
}

// repeatable runs statements that are safe to run twice — reads, and writes whose repetition changes
// nothing more (last-used stamps) — on the pool, once more on a fresh connection when the first
// attempt met a dead one. The row of QueryRow is read again as a whole; the rows of Query only when
// the error came before the first row (later errors surface in rows.Err, past the point of repeating).
type repeatable struct{ s *core }

// idem returns the store's repeatable runner (see repeatable).
func (s *core) idem() DBTX { return repeatable{s} }

func (r repeatable) again(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && connBroken(err)
}

func (r repeatable) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := r.s.pool.Exec(ctx, sql, args...)
	if r.again(ctx, err) {
		r.s.pool.Reset()
		tag, err = r.s.pool.Exec(ctx, sql, args...)
	}
	return tag, err
}

func (r repeatable) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := r.s.pool.Query(ctx, sql, args...)
	if r.again(ctx, err) {
		r.s.pool.Reset()
		rows, err = r.s.pool.Query(ctx, sql, args...)
	}
	return rows, err
}

func (r repeatable) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return repeatableRow{r: r, ctx: ctx, sql: sql, args: args}
}

type repeatableRow struct {
	r    repeatable
	ctx  context.Context
	sql  string
	args []any
}

func (row repeatableRow) Scan(dest ...any) error {
	err := row.r.s.pool.QueryRow(row.ctx, row.sql, row.args...).Scan(dest...)
	if row.r.again(row.ctx, err) {
		row.r.s.pool.Reset()
		err = row.r.s.pool.QueryRow(row.ctx, row.sql, row.args...).Scan(dest...)
	}
	return err
}
