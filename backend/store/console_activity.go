package store

import (
	"context"
	"fmt"
	"time"
)

// ActivityPoint is one step of the console's activity charts: the agents online at the step's end
// (or now, for the step under way), and the agents' session starts and ends and the refused connects
// the audit trail holds within the step.
type ActivityPoint struct {
	At                    time.Time // the step's start
	Online                int64
	Connects, Disconnects int64
	Refused               int64
}

// refusedActions are the audit actions of refused connects of existing credentials (application keys,
// MQTT tokens); refused device-key connects are counted by the plugin's metrics only.
var refusedActions = []string{"app_key_refused", "mqtt_token_refused"}

// PresenceActivity returns n steps of length step from since, oldest first. Sessions read as in
// docs/presence.md: one whose broker fell silent ended at the broker's last heartbeat. An agent on two
// brokers counts once in Online.
func (s *Store) PresenceActivity(ctx context.Context, since time.Time, step time.Duration, n int) ([]ActivityPoint, error) {
	if n <= 0 || n > 2000 || step < time.Second {
		return nil, ErrInvalid
	}
	rows, err := s.idem().Query(ctx, `WITH t AS (
  SELECT at, least(at + $2::interval, now()) AS upto, at + $2::interval AS next
  FROM generate_series($1::timestamptz, $1::timestamptz + ($3::int - 1) * $2::interval, $2::interval) AS at),
 v AS MATERIALIZED (SELECT principal_id, connected_at, live, ended_at FROM (`+presenceView+`) x
  WHERE x.principal_kind = 'agent' AND (x.live OR x.ended_at >= $1::timestamptz))
SELECT t.at,
  (SELECT count(DISTINCT v.principal_id) FROM v WHERE v.connected_at <= t.upto AND (v.live OR v.ended_at > t.upto)),
  (SELECT count(*) FROM v WHERE v.connected_at >= t.at AND v.connected_at < t.next),
  (SELECT count(*) FROM v WHERE NOT v.live AND v.ended_at >= t.at AND v.ended_at < t.next),
  (SELECT count(*) FROM audit_events e WHERE e.action = ANY($4) AND e.at >= t.at AND e.at < t.next)
FROM t ORDER BY t.at`, since, step, n, refusedActions)
	if err != nil {
		return nil, Classify(fmt.Errorf("presence activity: %w", err))
	}
	defer rows.Close()
	var out []ActivityPoint
	for rows.Next() {
		var p ActivityPoint
		if err := rows.Scan(&p.At, &p.Online, &p.Connects, &p.Disconnects, &p.Refused); err != nil {
			return nil, fmt.Errorf("presence activity: %w", err)
		}
		out = append(out, p)
	}
	return out, Classify(rows.Err())
}
