// Package store is iotauth's PostgreSQL access: a pgx pool, hand-written queries in one file per
// aggregate grouped into domain types (Agents, Keys, Accounts, AuditTrail, Presence, Credentials), and
// the LISTEN/NOTIFY listener that carries credential changes to every broker. Callers
// branch on its sentinel errors with errors.Is.
package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotauth/iotauth/backend/blockconn"
	"github.com/iotauth/iotauth/backend/core/credential"
)

// Sentinel errors. The two that a credential lookup returns are package credential's values, so that
// the authorizer, which does not import this package, recognises them; errors.Is(err, store.ErrNotFound)
// and errors.Is(err, credential.ErrNotFound) are the same test.
var (
	// ErrNotFound means no row matched.
	ErrNotFound = credential.ErrNotFound
	// ErrCorrupt means a row exists but cannot be trusted (NULLs where values belong, malformed ids or
	// hashes). The caller denies and logs; it is never a reason to panic.
	ErrCorrupt = credential.ErrCorrupt
)

// Store is the database: one pgx pool shared by the domain types in its fields (see domains.go and
// docs/store.md). Each domain type holds the queries of one part of the schema, and a caller takes the
// one it needs (st.Keys, st.Accounts, …); Store itself keeps the pool's life (Open, Ping, Close), the
// listener and the health checks.
type Store struct {
	*core
	Agents      Agents
	Keys        Keys
	Accounts    Accounts
	AuditTrail  AuditTrail
	Presence    Presence
	Credentials Credentials
}

// core is what every domain type shares: the pool, how its sockets behave and the durability of
// security changes, with the one transaction helper (tx, withAudit) that all of them use, so that a
// change and its audit event commit together whatever domain the change belongs to.
type core struct {
	pool *pgxpool.Pool
	// blocking: the pool's sockets are blockconn sockets, whose timeouts bound each query.
	blocking bool
	durable  Durability
}

// PoolOptions tune the pool for its user: the plugin wants few connections and short dial timeouts,
// the REST service more.
type PoolOptions struct {
	MaxConns       int32
	MinConns       int32
	ConnectTimeout time.Duration
	AppName        string
	// SocketTimeout, when set, gives the pool blocking sockets (package blockconn), for a pool used from
	// a thread that must not wait through Go's network poller. The kernel bounds each read and write by
	// this timeout, by ConnectTimeout while a connection is set up, and by the caller's deadline during a
	// credential lookup, which sets it on the socket rather than having a goroutine watch the context.
	SocketTimeout time.Duration
	// Durable makes security changes wait for a synchronous standby (see Durability). Other writes
	// follow the server's synchronous_commit, which docs/operations.md has set to local, so that a
	// standby that is down delays none but the changes that need its confirmation. (Set on the server,
	// not as a connection parameter, which a PgBouncer refuses.)
	Durable Durability
}

// Open builds a pool from a DSN without connecting (pgxpool connects lazily), so a caller can start
// while PostgreSQL is down. Use Ping to check it under a deadline.
func Open(dsn string, o PoolOptions) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database DSN (expected postgres://user:pass@host:port/db or key=value form): %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.MinConns > 0 {
		cfg.MinConns = o.MinConns
	}
	if o.ConnectTimeout > 0 {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	if o.AppName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = o.AppName
	}
	if o.SocketTimeout > 0 {
		cfg.ConnConfig.DialFunc = blockconn.Dialer{Timeout: cfg.ConnConfig.ConnectTimeout, OpTimeout: o.SocketTimeout}.DialContext
		// The dialled socket's deadline covers TLS and authentication; from here on SocketTimeout applies.
		cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
			return c.PgConn().Conn().SetDeadline(time.Time{})
		}
	}
	if o.Durable.enabled() {
		if _, err := ParseDurableLevel(o.Durable.Level); err != nil {
			return nil, err
		}
		cfg.ConnConfig.OnNotice = onNotice
		cfg.ConnConfig.BuildContextWatcherHandler = cancelRequestHandler
	}
	cfg.HealthCheckPeriod = 5 * time.Second
	c := &core{blocking: o.SocketTimeout > 0, durable: o.Durable}
	cfg.ConnConfig.Tracer = resetTracer{c}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("create database pool: %w", err)
	}
	c.pool = pool
	return newStore(c), nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }
