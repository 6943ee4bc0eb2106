package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// A session is live while it has no end, its broker's row still names its incarnation and that broker
// heartbeated within its own timeout (each broker records its timeout with its heartbeat). A session
// whose broker fell silent reads ended at the broker's last heartbeat, reason broker_lost.
const presenceView = `SELECT s.incarnation, s.seq, s.broker_id, s.principal_kind, s.principal_id, s.client_id, s.protocol,
  s.remote_address, s.connected_at,
  coalesce(s.disconnected_at IS NULL AND b.incarnation = s.incarnation
    AND b.heartbeat_at + b.timeout_ms * interval '1 millisecond' > now(), false) AS live,
  coalesce(s.disconnected_at, greatest(s.connected_at,
    CASE WHEN b.incarnation = s.incarnation THEN b.heartbeat_at ELSE coalesce(b.started_at, now()) END)) AS ended_at,
  coalesce(s.reason, 'broker_lost') AS reason
FROM presence_sessions s LEFT JOIN presence_brokers b ON b.broker_id = s.broker_id`

// liveAgentSession is the condition "agents.uuid has a live session", for queries over agents.
const liveAgentSession = `EXISTS (SELECT 1 FROM presence_sessions s JOIN presence_brokers b
  ON b.broker_id = s.broker_id AND b.incarnation = s.incarnation
 WHERE s.principal_kind = 'agent' AND s.principal_id = agents.uuid::text AND s.disconnected_at IS NULL
   AND b.heartbeat_at + b.timeout_ms * interval '1 millisecond' > now())`

// PresenceSession is a session as the API shows it. DisconnectedAt and Reason are nil while it is live.
type PresenceSession struct {
	Incarnation    string
	Seq            int64
	Broker         string
	ClientID       string
	Protocol       string
	Remote         string
	ConnectedAt    time.Time
	Live           bool
	DisconnectedAt *time.Time
	Reason         *string
}

const presenceColumns = `v.incarnation::text, v.seq, v.broker_id, v.client_id, v.protocol, v.remote_address, v.connected_at,
  v.live, v.ended_at, v.reason`

func scanPresenceSession(row pgx.CollectableRow) (PresenceSession, error) {
	var p PresenceSession
	var ended time.Time
	var reason string
	if err := row.Scan(&p.Incarnation, &p.Seq, &p.Broker, &p.ClientID, &p.Protocol, &p.Remote, &p.ConnectedAt, &p.Live,
		&ended, &reason); err != nil {
		return p, err
	}
	if !p.Live {
		p.DisconnectedAt, p.Reason = &ended, &reason
	}
	return p, nil
}

// AgentPresence is an agent's presence: its live sessions and its last connect and disconnect.
type AgentPresence struct {
	Sessions             []PresenceSession // live ones, newest first
	LastConnectedAt      *time.Time
	LastDisconnectedAt   *time.Time
	LastDisconnectReason *string
}

// recentForPresence bounds the sessions read for an agent's last disconnect: the newest by connect.
const recentForPresence = 50

// GetAgentPresence reads an agent's presence (the agent's existence is the caller's to check).
func (s Presence) GetAgentPresence(ctx context.Context, agentUUID string) (AgentPresence, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+presenceColumns+` FROM (`+presenceView+`
 WHERE s.principal_kind = 'agent' AND s.principal_id = $1 ORDER BY s.connected_at DESC LIMIT $2) v`, agentUUID, recentForPresence)
	if err != nil {
		return AgentPresence{}, fmt.Errorf("read agent presence: %w", err)
	}
	recent, err := pgx.CollectRows(rows, scanPresenceSession)
	if err != nil {
		return AgentPresence{}, fmt.Errorf("read agent presence: %w", err)
	}
	p := AgentPresence{Sessions: []PresenceSession{}}
	for i := range recent {
		r := &recent[i]
		if p.LastConnectedAt == nil {
			p.LastConnectedAt = &r.ConnectedAt
		}
		if r.Live {
			p.Sessions = append(p.Sessions, *r)
		} else if p.LastDisconnectedAt == nil || r.DisconnectedAt.After(*p.LastDisconnectedAt) {
			p.LastDisconnectedAt, p.LastDisconnectReason = r.DisconnectedAt, r.Reason
		}
	}
	return p, nil
}

// OnlineAgents reports which of these agents have a live session.
func (s Presence) OnlineAgents(ctx context.Context, agentUUIDs []string) (map[string]bool, error) {
	out := make(map[string]bool, len(agentUUIDs))
	if len(agentUUIDs) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT agents.uuid::text FROM agents WHERE agents.uuid::text = ANY($1::text[]) AND `+liveAgentSession, agentUUIDs)
	if err != nil {
		return nil, fmt.Errorf("read online agents: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read online agents: %w", err)
	}
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// PresenceSessionPage selects a page of an agent's sessions: live ones first, then by connect, newest
// first. After is the last session of the previous page (nil: the first page).
type PresenceSessionPage struct {
	Limit int
	After *PresenceSession
}

// ListAgentSessions returns one page of an agent's sessions; more reports whether another follows.
func (s Presence) ListAgentSessions(ctx context.Context, agentUUID string, p PresenceSessionPage) (items []PresenceSession, more bool, err error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	var live *int
	var at *time.Time
	var inc *string
	var seq *int64
	if p.After != nil {
		l := 0
		if p.After.Live {
			l = 1
		}
		live, at, inc, seq = &l, &p.After.ConnectedAt, &p.After.Incarnation, &p.After.Seq
	}
	rows, err := s.pool.Query(ctx, `SELECT `+presenceColumns+` FROM (`+presenceView+`
 WHERE s.principal_kind = 'agent' AND s.principal_id = $1) v
 WHERE $2::int IS NULL OR (v.live::int, v.connected_at, v.incarnation, v.seq) < ($2::int, $3::timestamptz, $4::uuid, $5::bigint)
 ORDER BY v.live DESC, v.connected_at DESC, v.incarnation DESC, v.seq DESC LIMIT $6`, agentUUID, live, at, inc, seq, p.Limit+1)
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, fmt.Errorf("list agent sessions: %w", err)
	}
	items, err = pgx.CollectRows(rows, scanPresenceSession)
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, fmt.Errorf("list agent sessions: %w", err)
	}
	if len(items) > p.Limit {
		return items[:p.Limit], true, nil
	}
	return items, false, nil
}

// PresenceSummary counts the agents that are not decommissioned by presence.
type PresenceSummary struct {
	Total, Online, Offline, NeverConnected, Disabled int64
	ByBroker                                         map[string]int64
}

// GetPresenceSummary counts agents: online ones have a live session; neverConnected and disabled are
// offline agents with no session on record (within retention) and disabled ones; byBroker counts online
// agents per broker (an agent on two brokers counts in both).
func (s Presence) GetPresenceSummary(ctx context.Context) (PresenceSummary, error) {
	sum := PresenceSummary{ByBroker: map[string]int64{}}
	const live = `SELECT DISTINCT s.principal_id, s.broker_id FROM presence_sessions s JOIN presence_brokers b
  ON b.broker_id = s.broker_id AND b.incarnation = s.incarnation
 WHERE s.principal_kind = 'agent' AND s.disconnected_at IS NULL AND b.heartbeat_at + b.timeout_ms * interval '1 millisecond' > now()`
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `WITH a AS (SELECT uuid::text AS id, status FROM agents WHERE status <> 'decommissioned'),
 l AS (`+live+`),
 o AS (SELECT DISTINCT l.principal_id AS id FROM l JOIN a ON a.id = l.principal_id)
SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM o),
  (SELECT count(*) FROM a WHERE NOT EXISTS (SELECT 1 FROM presence_sessions s WHERE s.principal_kind = 'agent' AND s.principal_id = a.id)),
  (SELECT count(*) FROM a WHERE a.status = 'disabled' AND a.id NOT IN (SELECT id FROM o))`).Scan(
			&sum.Total, &sum.Online, &sum.NeverConnected, &sum.Disabled)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `WITH l AS (`+live+`)
SELECT l.broker_id, count(*) FROM l JOIN agents a ON a.uuid::text = l.principal_id AND a.status <> 'decommissioned'
 GROUP BY l.broker_id`)
		if err != nil {
			return err
		}
		var broker string
		var n int64
		_, err = pgx.ForEachRow(rows, []any{&broker, &n}, func() error {
			sum.ByBroker[broker] = n
			return nil
		})
		return err
	})
	if err != nil {
		return PresenceSummary{}, fmt.Errorf("count agents by presence: %w", err)
	}
	sum.Offline = sum.Total - sum.Online
	return sum, nil
}
