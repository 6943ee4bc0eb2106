package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Channel is the NOTIFY channel the credential triggers announce changes on.
const Channel = "iotauth_credentials"

// AllAgents is the agent a change names when a whole table was emptied (TRUNCATE).
const AllAgents = "*"

// Change is one announced credential change.
type Change struct {
	Table string `json:"table"`
	Op    string `json:"op"`
	Agent string `json:"agent"`
	// DigestHex is the hex SHA-256 digest of the API key, for api_keys changes.
	DigestHex string `json:"digest"`
	// Subject and DeniedAt are set for subject_denials changes (schema 006): a subject whose short-lived
	// MQTT credentials issued at or before DeniedAt are dead.
	Subject  string    `json:"subject"`
	DeniedAt time.Time `json:"deniedAt"`
	// Live is set for changes of Table LegacyTable: whether the legacy username now admits.
	Live bool `json:"live"`
}

// LegacyTable is the Table of a change to the set of live legacy usernames (imported devices).
const LegacyTable = "legacy_usernames"

// Digest decodes DigestHex; ok is false when the change names no key.
func (c Change) Digest() (d secret.Digest, ok bool) {
	if len(c.DigestHex) != 2*len(d) {
		return d, false
	}
	if _, err := hex.Decode(d[:], []byte(c.DigestHex)); err != nil {
		return d, false
	}
	return d, true
}

// ListenHandler receives what the listener sees. Connected is called each time LISTEN is (re-)established:
// changes made while it was down were missed, so the receiver must re-check what it caches. Failed is
// called for each failed attempt (the receiver rate-limits any logging).
type ListenHandler struct {
	Changed   func(Change)
	Connected func(reconnect bool)
	Failed    func(err error)
}

// Listen retry delays: the first retry comes after listenRetryMin, doubling to listenRetryMax, each
// with up to a quarter added at random so that a fleet of brokers does not reconnect in step. The cap
// is low on purpose: a broker must learn of revocations within a second of a new primary being
// reachable (a failover), and a refused connection attempt costs the server next to nothing.
const (
	listenRetryMin = 50 * time.Millisecond
	listenRetryMax = 400 * time.Millisecond
)

// listenRetry returns the delay before the next attempt and the base of the one after.
func listenRetry(base time.Duration) (wait, next time.Duration) {
	wait = base + rand.N(base/4+1)
	return wait, min(base*2, listenRetryMax)
}

// Listen holds a dedicated connection that LISTENs on Channel and calls h for each change, reconnecting
// with capped, jittered exponential backoff until ctx ends.
func (s *Store) Listen(ctx context.Context, h ListenHandler) {
	cfg := s.pool.Config().ConnConfig.Copy()
	// A wait for notifications that times out is not a query to cancel on the server.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	backoff := listenRetryMin
	connectedBefore := false
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, h, &connectedBefore, &backoff)
		if ctx.Err() != nil {
			return
		}
		if h.Failed != nil && err != nil {
			h.Failed(err)
		}
		var wait time.Duration
		wait, backoff = listenRetry(backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, h ListenHandler, connectedBefore *bool, backoff *time.Duration) error {
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.ConnectConfig(dialCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	*backoff = listenRetryMin
	if h.Connected != nil {
		h.Connected(*connectedBefore)
	}
	*connectedBefore = true
	for {
		// Wake up now and then to notice a connection that died silently (a paused server).
		waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if waitCtx.Err() != nil && !conn.IsClosed() {
				pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				perr := conn.Ping(pingCtx)
				cancel()
				if perr == nil {
					continue
				}
				return perr
			}
			return err
		}
		var c Change
		if json.Unmarshal([]byte(n.Payload), &c) != nil || (c.Agent == "" && c.Subject == "") {
			continue
		}
		if h.Changed != nil {
			h.Changed(c)
		}
	}
}
