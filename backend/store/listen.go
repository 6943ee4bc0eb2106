package store

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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

// ListenHandler receives what the listener sees. Connected is called each time the feed is (re-)established
// (LISTEN is in place and a probe has come back through it, see ListenOptions): changes made while it was
// down were missed, so the receiver must re-check what it caches. Changed may be called before Connected
// for changes that arrive while the first probe is on its way. Failed is called for each failed attempt or
// lost connection (the receiver rate-limits any logging); ErrListenDeaf and ErrListenStalled tell a lost
// probe apart.
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

// Probe defaults (see ListenOptions).
const (
	DefaultProbeInterval = 10 * time.Second
	DefaultProbeTimeout  = 5 * time.Second
)

// ListenOptions tune Listen's end-to-end probe of the feed.
//
// A LISTEN connection that answers a ping is not proof that notifications reach it: through a PgBouncer
// in transaction mode, or to another server or database than the writes go to, LISTEN succeeds and no
// notification ever arrives. So Listen sends a probe (a NOTIFY on Channel with a random nonce) through
// the pool the writes take, and counts the feed as established only once the probe has come back on the
// LISTEN connection; while it is up, it probes every ProbeInterval and reconnects when a probe is lost.
type ListenOptions struct {
	// ProbeVia is the store whose pool sends the probes: the one queries and writes go through. Nil: the
	// listening store itself.
	ProbeVia *Store
	// ProbeInterval is the time between probes while the feed is up (DefaultProbeInterval when zero).
	ProbeInterval time.Duration
	// ProbeTimeout bounds the wait for a probe, its sending included (DefaultProbeTimeout when zero).
	ProbeTimeout time.Duration
}

// Errors Listen passes to ListenHandler.Failed when a probe is lost.
var (
	// ErrListenDeaf: a new LISTEN connection did not receive the probe sent through the query pool, so
	// notifications sent there do not reach it (a pooler in transaction mode, another server or database).
	ErrListenDeaf = errors.New("the LISTEN connection receives no notification sent through the query pool")
	// ErrListenStalled: an established LISTEN connection stopped receiving its probes (a connection that
	// died silently, a paused server).
	ErrListenStalled = errors.New("the LISTEN connection stopped receiving the probe notifications sent through the query pool")
)

// probePayload is the payload of a probe; Probe is the sender's nonce. Changes never carry it.
type probePayload struct {
	Probe string `json:"probe"`
}

// notification is what a payload on Channel may hold: a change or a probe.
type notification struct {
	Change
	Probe string `json:"probe"`
}

func newNonce() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Listen holds a dedicated connection that LISTENs on Channel and calls h for each change, reconnecting
// with capped, jittered exponential backoff until ctx ends. The feed counts as up (h.Connected) only once
// a probe sent through o.ProbeVia has arrived on that connection (see ListenOptions); a lost probe ends the
// connection (h.Failed) and LISTEN starts again.
func (s *Store) Listen(ctx context.Context, h ListenHandler, o ListenOptions) {
	if o.ProbeVia == nil {
		o.ProbeVia = s
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	cfg := s.pool.Config().ConnConfig.Copy()
	// A wait for notifications that times out is not a query to cancel on the server.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	backoff := listenRetryMin
	connectedBefore := false
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, h, o, &connectedBefore, &backoff)
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

// sendProbe sends a probe with a new nonce through o.ProbeVia's pool and returns the nonce.
func sendProbe(ctx context.Context, o ListenOptions) (string, error) {
	nonce := newNonce()
	payload, _ := json.Marshal(probePayload{Probe: nonce})
	sctx, cancel := context.WithTimeout(ctx, o.ProbeTimeout)
	defer cancel()
	if _, err := o.ProbeVia.pool.Exec(sctx, "SELECT pg_notify($1, $2)", Channel, string(payload)); err != nil {
		return "", fmt.Errorf("cannot send the change feed's probe (pg_notify) through the query pool; the feed counts as down until it can: %w", err)
	}
	return nonce, nil
}

func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, h ListenHandler, o ListenOptions, connectedBefore *bool, backoff *time.Duration) error {
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
	// One probe is outstanding at a time (pending, due by deadline); the next is sent at next. A probe
	// arriving is also what shows the connection alive, so there is no other keepalive.
	up := false
	var pending string
	var deadline, next time.Time
	for {
		if pending == "" && !time.Now().Before(next) {
			if pending, err = sendProbe(ctx, o); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			deadline = time.Now().Add(o.ProbeTimeout)
		}
		until := next
		if pending != "" {
			// Checked here too, not only when a wait times out: other brokers' probes and changes may
			// keep arriving on a connection that never receives ours.
			if !time.Now().Before(deadline) {
				if !up {
					return fmt.Errorf("%w (none arrived within %v)", ErrListenDeaf, o.ProbeTimeout)
				}
				return fmt.Errorf("%w (none arrived within %v)", ErrListenStalled, o.ProbeTimeout)
			}
			until = deadline
		}
		waitCtx, cancel := context.WithDeadline(ctx, until)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if waitCtx.Err() == nil || conn.IsClosed() {
				return err
			}
			continue // a probe is due, or the pending one is late
		}
		var m notification
		if json.Unmarshal([]byte(n.Payload), &m) != nil {
			continue
		}
		if m.Probe != "" {
			// Another broker's probe (they share the channel) is ignored, as is a late one of ours.
			if m.Probe != pending {
				continue
			}
			pending, next = "", time.Now().Add(o.ProbeInterval)
			if !up {
				up = true
				*backoff = listenRetryMin
				if h.Connected != nil {
					h.Connected(*connectedBefore)
				}
				*connectedBefore = true
			}
			continue
		}
		c := m.Change
		if c.Agent == "" && c.Subject == "" {
			continue
		}
		if h.Changed != nil {
			h.Changed(c)
		}
	}
}
