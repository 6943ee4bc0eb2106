package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
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
// brokers at once counts once in Online. The sessions of the window are read once and swept in
// memory (one pass over them per chart, not one query per step).
func (s Presence) PresenceActivity(ctx context.Context, since time.Time, step time.Duration, n int) ([]ActivityPoint, error) {
	if n <= 0 || n > 2000 || step < time.Second {
		return nil, ErrInvalid
	}
	end := since.Add(time.Duration(n) * step)
	pts := make([]ActivityPoint, n)
	for i := range pts {
		pts[i].At = since.Add(time.Duration(i) * step)
	}
	bucket := func(t time.Time) int {
		if t.Before(since) || !t.Before(end) {
			return -1
		}
		return int(t.Sub(since) / step)
	}
	type span struct {
		agent      string
		start, end time.Time // end is the zero time while live
	}
	var now time.Time
	var spans []span
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(q pgx.Tx) error {
		if err := q.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT principal_id, connected_at, live, ended_at FROM (`+presenceView+`) x
 WHERE x.principal_kind = 'agent' AND x.connected_at < $2 AND (x.live OR x.ended_at >= $1)`, since, end)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var sp span
			var live bool
			var ended time.Time
			if err := rows.Scan(&sp.agent, &sp.start, &live, &ended); err != nil {
				return err
			}
			if !live {
				sp.end = ended
			}
			spans = append(spans, sp)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		ar, err := q.Query(ctx, `SELECT floor(extract(epoch FROM at - $1::timestamptz) / $3)::int, count(*) FROM audit_events
 WHERE action = ANY($4) AND at >= $1 AND at < $2 GROUP BY 1`, since, end, step.Seconds(), refusedActions)
		if err != nil {
			return err
		}
		defer ar.Close()
		for ar.Next() {
			var b int
			var c int64
			if err := ar.Scan(&b, &c); err != nil {
				return err
			}
			if b >= 0 && b < n {
				pts[b].Refused += c
			}
		}
		return ar.Err()
	})
	if err != nil {
		return nil, Classify(fmt.Errorf("presence activity: %w", err))
	}
	// Starts and ends per step.
	for _, sp := range spans {
		if b := bucket(sp.start); b >= 0 {
			pts[b].Connects++
		}
		if !sp.end.IsZero() {
			if b := bucket(sp.end); b >= 0 {
				pts[b].Disconnects++
			}
		}
	}
	// Online agents at each step's end (now for the step under way): merge each agent's sessions into
	// disjoint spans, then sweep the +1/-1 events of all agents against the instants in time order.
	slices.SortFunc(spans, func(a, b span) int {
		if a.agent != b.agent {
			if a.agent < b.agent {
				return -1
			}
			return 1
		}
		return a.start.Compare(b.start)
	})
	type event struct {
		at    time.Time
		delta int64
	}
	far := end.Add(step) // a live session's end, after every instant
	var events []event
	for i := 0; i < len(spans); {
		agent, start, stop := spans[i].agent, spans[i].start, spans[i].end
		if stop.IsZero() {
			stop = far
		}
		j := i + 1
		for ; j < len(spans) && spans[j].agent == agent; j++ {
			e := spans[j].end
			if e.IsZero() {
				e = far
			}
			if spans[j].start.After(stop) {
				events = append(events, event{start, 1}, event{stop, -1})
				start, stop = spans[j].start, e
				continue
			}
			if e.After(stop) {
				stop = e
			}
		}
		events = append(events, event{start, 1}, event{stop, -1})
		i = j
	}
	slices.SortFunc(events, func(a, b event) int { return a.at.Compare(b.at) })
	var online int64
	k := 0
	for i := range pts {
		t := pts[i].At.Add(step)
		if t.After(now) {
			t = now
		}
		// Online at t: started at or before t, not ended at or before t.
		for k < len(events) && !events[k].at.After(t) {
			online += events[k].delta
			k++
		}
		pts[i].Online = online
	}
	return pts, nil
}
