package main

import (
	"context"
	"github.com/iotauth/iotauth/backend/core/secret"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/metrics"
	"github.com/iotauth/iotauth/plugin/presence"
	"github.com/iotauth/iotauth/plugin/session"
)

// Presence (docs/presence.md): the recorder keeps the live sessions and writes them to PostgreSQL off
// the broker's thread; these are the plugin's calls into it, one per hook. in.presence is nil when
// plugin_opt_presence is false.

// startPresence builds the recorder, registers this start (closing the previous start's sessions) before
// the broker's listeners open, and starts its writer.
func (in *instance) startPresence(ctx context.Context) error {
	if !in.cfg.Presence {
		return nil
	}
	id := in.cfg.BrokerID
	if id == "" {
		id = presence.DefaultBrokerID()
	}
	var lag prometheus.Observer
	if in.metrics != nil {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: metrics.Prefix + "presence_write_lag_seconds",
			Help: "Time from a session's start or end on this broker until PostgreSQL committed it (docs/presence.md).",
			// Finer between 250 ms (the longest a batch waits) and 1 s (the figure docs/presence.md promises).
			Buckets: []float64{.01, .025, .05, .1, .25, .3, .4, .5, .75, 1, 2.5, 5, 10, 30, 60},
		})
		lag = h
		in.metrics.Registry().MustRegister(h)
	}
	rec, err := presence.New(presence.Config{
		Broker: id, Timeout: in.cfg.PresenceTimeout, Events: in.cfg.PresenceEvents, Store: &presenceStore{st: in.store},
		MaxQueue:    in.cfg.PresenceQueue,
		RequestTick: broker{}.RequestTick, Log: in.log,
		Lag: func(d time.Duration) {
			if lag != nil {
				lag.Observe(d.Seconds())
			}
		},
	})
	if err != nil {
		return err
	}
	if in.metrics != nil {
		in.metrics.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: metrics.Prefix + "presence_dropped_total",
			Help: "Session starts and ends not queued for PostgreSQL (the queue was full); reconciled from the live sessions once PostgreSQL answers.",
		}, func() float64 { return float64(rec.Stats().Dropped) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: metrics.Prefix + "presence_events_dropped_total",
			Help: "Lifecycle events not published over MQTT (their queue was full).",
		}, func() float64 { return float64(rec.Stats().EventsDropped) }))
	}
	if err := rec.Start(ctx); err != nil {
		in.log.Warn("presence: cannot register this broker in PostgreSQL; sessions of its previous start stay open until it can",
			"broker", id, "error", err)
	}
	in.presence = rec
	in.wg.Add(1)
	// Supervised like every background loop: a panic in the writer is recovered and the loop restarted
	// (docs/security.md, M17); the recorder keeps its queue across a restart.
	go in.supervise(ctx, "presence writer", rec.Run)
	in.log.Info("presence recording", "broker", id, "incarnation", rec.Incarnation(), "timeout", in.cfg.PresenceTimeout,
		"events", in.cfg.PresenceEvents) // tests wait for it
	return nil
}

// presenceConnected records an admitted session. Broker's thread.
func (in *instance) presenceConnected(client uintptr, s *auth.Session) {
	if in.presence == nil {
		return
	}
	kind, id := presence.KindOf(s)
	version, addr := clientInfo(client)
	in.presence.Connected(client, kind, id, presenceClientID(s, id), presence.Protocol(version), addr)
}

// presenceDisconnected records a session's end; code is the broker's reason (presence.BrokerReason).
// Broker's thread.
func (in *instance) presenceDisconnected(client uintptr, code int) {
	if in.presence != nil {
		in.presence.Disconnected(client, code)
	}
}

// presenceKicking gives a kicked session's coming end its reason.
func (in *instance) presenceKicking(s session.Snapshot, reason error) {
	if in.presence != nil {
		id := principalID(&s.Session)
		in.presence.Kicking(presenceClientID(&s.Session, id), id, reason)
	}
}

func principalID(s *auth.Session) string {
	_, id := presence.KindOf(s)
	return id
}

// publishPresence publishes the queued lifecycle events. Broker's thread (TICK).
func (in *instance) publishPresence() {
	if in.presence == nil {
		return
	}
	evs := in.presence.TakeEvents()
	if evs == nil {
		return
	}
	for _, ev := range evs {
		if !brokerPublish(ev.CTopic, ev.Payload) {
			// A copy: the event's buffer is reused once published, and log lines may wait for the next TICK.
			in.log.Warn("presence: the broker refused to publish a lifecycle event (out of memory?)", "topic", strings.Clone(ev.Topic))
		}
	}
	in.presence.Published() // the broker copied them: their buffers may be reused

}

// presenceRefuses reports whether a client's check is a publish under the presence topics, which only
// the plugin may publish to, whatever the client's grants.
func presenceRefuses(access acl.Access, topic string) bool {
	return access == acl.Write && presence.Reserved(topic)
}

// closePresence ends the live sessions (broker_shutdown) and writes what is queued, within 3 s.
func (in *instance) closePresence() {
	if in.presence == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := in.presence.Close(ctx); err != nil {
		in.log.Warn("presence: could not write the last session ends; the sessions read offline after this broker's presence timeout",
			"error", err)
	}
}

// presenceStore adapts the store to the recorder's Store interface. The recorder calls it from one writer
// at a time, so PresenceWrite reuses its rows between batches.
type presenceStore struct {
	st   *store.Store
	rows []store.PresenceRow
}

func (p *presenceStore) PresenceStart(ctx context.Context, broker, incarnation string, timeout time.Duration) (int64, error) {
	return p.st.PresenceStart(ctx, broker, incarnation, timeout)
}

func (p *presenceStore) PresenceWrite(ctx context.Context, broker, incarnation string, rows []presence.Row) error {
	out := p.rows[:0]
	for _, r := range rows {
		out = append(out, store.PresenceRow(r))
	}
	err := p.st.PresenceWrite(ctx, broker, incarnation, out)
	clear(out) // keeps no session's strings alive
	p.rows = out[:0]
	return err
}

func (p *presenceStore) PresenceHeartbeat(ctx context.Context, broker, incarnation string, timeout time.Duration) (bool, error) {
	return p.st.PresenceHeartbeat(ctx, broker, incarnation, timeout)
}

func (p *presenceStore) PresenceReconcile(ctx context.Context, broker, incarnation string, live []presence.Row, batch int, at time.Time) (int64, error) {
	return p.st.PresenceReconcile(ctx, broker, incarnation, storeRows(live), batch, at)
}

func storeRows(rows []presence.Row) []store.PresenceRow {
	out := make([]store.PresenceRow, len(rows))
	for i, r := range rows {
		out[i] = store.PresenceRow(r)
	}
	return out
}

// presenceClientID is the client id presence records and publishes for s. An imported device whose
// client id is its legacy username (imports with --clientid '%u') gets "imported-<agent uuid>" instead:
// the username is kept only as a digest everywhere else, and presence is readable by every role and by
// event subscribers.
func presenceClientID(s *auth.Session, agent string) string {
	if s.Legacy() && secret.DigestOf(s.ClientID) == s.Digest {
		return "imported-" + agent
	}
	return s.ClientID
}
