package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Presence (docs/presence.md): brokers record the authenticated sessions they hold in presence_sessions
// and heartbeat in presence_brokers; the API reads who is online from both.

// Principal kinds of a presence session.
const (
	PrincipalAgent = "agent"
	PrincipalApp   = "app"
	PrincipalToken = "token"
)

// PresenceRow is a session as a broker writes it: a start (DisconnectedAt nil) or a start with its end.
type PresenceRow struct {
	Seq            int64
	Kind           string // PrincipalAgent, PrincipalApp, PrincipalToken
	Principal      string // agent uuid, application key id, short-lived credential subject
	ClientID       string
	Protocol       string     // mqtt3.1, mqtt3.1.1, mqtt5
	Remote         netip.Addr // IP address (the zero Addr when unknown: written as "")
	ConnectedAt    time.Time
	DisconnectedAt *time.Time
	Reason         string // set with DisconnectedAt
}

// presenceUpsert writes a batch of rows in one statement, and heartbeats the broker with it: a start
// inserts, an end closes the row still open (a row already closed keeps its first end). Its columns
// arrive as array literals in text (presenceBatch), times as microseconds since the Unix epoch.
const presenceUpsert = `WITH hb AS (
  UPDATE presence_brokers SET heartbeat_at = now() WHERE broker_id = $2 AND incarnation = $1::uuid
)
INSERT INTO presence_sessions (incarnation, seq, broker_id, principal_kind, principal_id, client_id, protocol,
  remote_address, connected_at, disconnected_at, reason)
SELECT $1::uuid, u.seq, $2, u.kind, u.pid, u.cid, u.proto, u.addr,
  timestamptz 'epoch' + u.ca * interval '1 microsecond', timestamptz 'epoch' + u.da * interval '1 microsecond', u.reason
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[],
  $10::bigint[], $11::text[]) AS u(seq, kind, pid, cid, proto, addr, ca, da, reason)
ON CONFLICT (incarnation, seq) DO UPDATE SET disconnected_at = EXCLUDED.disconnected_at, reason = EXCLUDED.reason
WHERE presence_sessions.disconnected_at IS NULL AND EXCLUDED.disconnected_at IS NOT NULL`

// presenceUpsertName names presenceUpsert where it is prepared (once per pooled connection).
const presenceUpsertName = "iotauth_presence_upsert"

// presenceBatch encodes a batch as presenceUpsert's eleven parameters in text: the incarnation, the broker
// and nine columns as PostgreSQL array literals, one after the other in one buffer reused between batches.
// A connect storm writes thousands of rows a second from inside the broker's process: encoding them by
// hand costs a fraction of what pgx's binary encoding of nine typed arrays (pointer arrays for the NULLs
// among them) did, and allocates nothing once the buffer has grown; pgx's protocol layer sends the
// parameters as they are, and PostgreSQL parses them.
type presenceBatch struct {
	buf    []byte
	ends   [11]int
	params [11][]byte
}

// maxPresenceBatchBuf bounds the buffer a presenceBatch keeps for the next batch.
const maxPresenceBatchBuf = 4 << 20

var presenceBatches = sync.Pool{New: func() any { return new(presenceBatch) }}

// encode fills the buffer with the parameters and returns them, pointing into it: valid until the next
// encode.
func (b *presenceBatch) encode(incarnation, broker string, rows []PresenceRow) [][]byte {
	buf := append(b.buf[:0], incarnation...)
	b.ends[0] = len(buf)
	buf = append(buf, broker...)
	b.ends[1] = len(buf)
	col := 2
	end := func() {
		if buf[len(buf)-1] == ',' {
			buf[len(buf)-1] = '}'
		} else {
			buf = append(buf, '}')
		}
		b.ends[col] = len(buf)
		col++
	}
	buf = append(buf, '{')
	for i := range rows {
		buf = strconv.AppendInt(buf, rows[i].Seq, 10)
		buf = append(buf, ',')
	}
	end()
	for _, f := range [...]func(*PresenceRow) string{
		func(r *PresenceRow) string { return r.Kind },
		func(r *PresenceRow) string { return r.Principal },
		func(r *PresenceRow) string { return r.ClientID },
		func(r *PresenceRow) string { return r.Protocol },
	} {
		buf = append(buf, '{')
		for i := range rows {
			buf = appendArrayString(buf, f(&rows[i]))
			buf = append(buf, ',')
		}
		end()
	}
	// An address as text holds no character to escape.
	buf = append(buf, '{')
	for i := range rows {
		buf = append(buf, '"')
		if a := rows[i].Remote; a.IsValid() {
			buf = a.AppendTo(buf)
		}
		buf = append(buf, '"', ',')
	}
	end()
	buf = append(buf, '{')
	for i := range rows {
		buf = strconv.AppendInt(buf, rows[i].ConnectedAt.UnixMicro(), 10)
		buf = append(buf, ',')
	}
	end()
	buf = append(buf, '{')
	for i := range rows {
		if d := rows[i].DisconnectedAt; d != nil {
			buf = strconv.AppendInt(buf, d.UnixMicro(), 10)
		} else {
			buf = append(buf, "NULL"...)
		}
		buf = append(buf, ',')
	}
	end()
	buf = append(buf, '{')
	for i := range rows {
		if rows[i].DisconnectedAt != nil {
			buf = appendArrayString(buf, rows[i].Reason)
		} else {
			buf = append(buf, "NULL"...)
		}
		buf = append(buf, ',')
	}
	end()
	b.buf = buf
	start := 0
	for i, e := range b.ends {
		b.params[i] = buf[start:e:e]
		start = e
	}
	return b.params[:]
}

// appendArrayString appends s as a double-quoted element of an array literal: '"' and '\\' escaped with
// a backslash, anything else as it is.
func appendArrayString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', c)
			start = i + 1
		}
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// PresenceWrite writes rows of broker's incarnation in one statement (which also counts as a heartbeat).
// A row seen twice in rows must not be: the caller merges a start and its end into one row.
func (s Presence) PresenceWrite(ctx context.Context, broker, incarnation string, rows []PresenceRow) error {
	b := presenceBatches.Get().(*presenceBatch)
	err := s.presenceWrite(ctx, b.encode(incarnation, broker, rows))
	clear(b.params[:])
	if cap(b.buf) <= maxPresenceBatchBuf {
		presenceBatches.Put(b)
	}
	if err != nil {
		return fmt.Errorf("write presence sessions: %w", err)
	}
	return nil
}

// presenceWrite runs presenceUpsert with params in text, prepared once per connection, through pgx's
// protocol layer: pgx's own Exec would copy each parameter once more through its type map. A pool that
// must not prepare statements (default_query_exec_mode other than the default, as behind PgBouncer in
// transaction mode: docs/operations.md) gets the parameters as strings through pgx's Exec instead.
func (s Presence) presenceWrite(ctx context.Context, params [][]byte) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if c.Conn().Config().DefaultQueryExecMode != pgx.QueryExecModeCacheStatement {
		args := make([]any, len(params))
		for i, p := range params {
			args[i] = string(p)
		}
		_, err := c.Exec(ctx, presenceUpsert, args...)
		return err
	}
	sd, err := c.Conn().Prepare(ctx, presenceUpsertName, presenceUpsert)
	if err != nil {
		return err
	}
	_, err = c.Conn().PgConn().ExecPrepared(ctx, sd.Name, params, nil, nil).Close()
	return err
}

// PresenceStart registers a broker's new incarnation with its timeout and closes the open sessions of
// its earlier incarnations (reason broker_lost, at the earlier incarnation's last heartbeat). It reports
// how many it closed.
func (s Presence) PresenceStart(ctx context.Context, broker, incarnation string, timeout time.Duration) (closed int64, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var last *time.Time
		err := tx.QueryRow(ctx, `SELECT heartbeat_at FROM presence_brokers WHERE broker_id = $1 FOR UPDATE`, broker).Scan(&last)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE presence_sessions SET reason = 'broker_lost',
  disconnected_at = greatest(connected_at, least(coalesce($3::timestamptz, now()), now()))
WHERE broker_id = $1 AND disconnected_at IS NULL AND incarnation <> $2::uuid`, broker, incarnation, last)
		if err != nil {
			return err
		}
		closed = tag.RowsAffected()
		_, err = tx.Exec(ctx, `INSERT INTO presence_brokers (broker_id, incarnation, timeout_ms) VALUES ($1, $2::uuid, $3)
ON CONFLICT (broker_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, timeout_ms = EXCLUDED.timeout_ms,
  heartbeat_at = now(), started_at = now()`, broker, incarnation, timeout.Milliseconds())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("register broker for presence: %w", err)
	}
	return closed, nil
}

// PresenceHeartbeat records that broker's incarnation is alive. A row that names another incarnation
// (a broker started since with the same id) is left alone, and owned is then false.
func (s Presence) PresenceHeartbeat(ctx context.Context, broker, incarnation string, timeout time.Duration) (owned bool, err error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO presence_brokers (broker_id, incarnation, timeout_ms) VALUES ($1, $2::uuid, $3)
ON CONFLICT (broker_id) DO UPDATE SET heartbeat_at = now(), timeout_ms = EXCLUDED.timeout_ms
WHERE presence_brokers.incarnation = EXCLUDED.incarnation`, broker, incarnation, timeout.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("presence heartbeat: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// PresenceReconcile makes the database hold exactly the live sessions of broker's incarnation: it writes
// live (in batches of batch rows) and closes every other open session of the incarnation at at with
// reason error (their ends were lost). It reports how many it closed.
func (s Presence) PresenceReconcile(ctx context.Context, broker, incarnation string, live []PresenceRow, batch int, at time.Time) (int64, error) {
	if batch <= 0 {
		batch = 1000
	}
	seqs := make([]int64, 0, len(live))
	for i := 0; i < len(live); i += batch {
		chunk := live[i:min(i+batch, len(live))]
		if err := s.PresenceWrite(ctx, broker, incarnation, chunk); err != nil {
			return 0, err
		}
	}
	for _, r := range live {
		seqs = append(seqs, r.Seq)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE presence_sessions SET reason = 'error', disconnected_at = greatest(connected_at, $3)
WHERE broker_id = $1 AND incarnation = $2::uuid AND disconnected_at IS NULL AND NOT (seq = ANY($4::bigint[]))`,
		broker, incarnation, at, seqs)
	if err != nil {
		return 0, fmt.Errorf("reconcile presence sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// PrunePresence deletes up to batch sessions that ended before cutoff, and brokers silent since cutoff
// with no open session; it reports the sessions deleted (call again while it returns batch).
func (s Presence) PrunePresence(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM presence_sessions WHERE ctid IN (
  SELECT ctid FROM presence_sessions WHERE disconnected_at IS NOT NULL AND disconnected_at < $1 LIMIT $2)`, cutoff, batch)
	if err != nil {
		return 0, fmt.Errorf("prune presence sessions: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM presence_brokers b WHERE heartbeat_at < $1
  AND NOT EXISTS (SELECT 1 FROM presence_sessions s WHERE s.broker_id = b.broker_id AND s.disconnected_at IS NULL)`, cutoff); err != nil {
		return 0, fmt.Errorf("prune presence brokers: %w", err)
	}
	return tag.RowsAffected(), nil
}
