package engine

import (
	"context"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/presence"
	"github.com/iotauth/iotauth/plugin/session"
)

// Presence (docs/presence.md): the recorder keeps the live sessions and writes them to PostgreSQL off
// the broker's thread; these are the engine's calls into it, one per hook. e.presence is nil when
// plugin_opt_presence is false.

// startPresence registers this start (closing the previous start's sessions) before the broker's
// listeners open, and starts the recorder's writer.
func (e *Engine) startPresence(ctx context.Context) {
	rec := e.presence
	if rec == nil {
		return
	}
	if err := rec.Start(ctx); err != nil {
		e.log.Warn("presence: cannot register this broker in PostgreSQL; sessions of its previous start stay open until it can",
			"broker", rec.Broker(), "error", err)
	}
	// Supervised like every background loop: a panic in the writer is recovered and the loop restarted
	// (docs/security.md); the recorder keeps its queue across a restart.
	e.Go("presence writer", rec.Run)
	e.log.Info("presence recording", "broker", rec.Broker(), "incarnation", rec.Incarnation(), "timeout", e.cfg.PresenceTimeout,
		"events", e.cfg.PresenceEvents) // tests wait for it
}

// presenceConnected records an admitted session. Broker's thread.
func (e *Engine) presenceConnected(client uintptr, s *auth.Session) {
	if e.presence == nil {
		return
	}
	kind, id := presence.KindOf(s)
	version, addr := e.broker.ClientInfo(client)
	e.presence.Connected(client, kind, id, presenceClientID(s, id), presence.Protocol(version), addr)
}

// presenceDisconnected records a session's end. Broker's thread.
func (e *Engine) presenceDisconnected(client uintptr) {
	if e.presence != nil {
		e.presence.Disconnected(client)
	}
}

// presenceKicking gives a kicked session's coming end its reason.
func (e *Engine) presenceKicking(s session.Snapshot, reason error) {
	if e.presence != nil {
		_, id := presence.KindOf(&s.Session)
		e.presence.Kicking(presenceClientID(&s.Session, id), id, reason)
	}
}

// publishPresence publishes the queued lifecycle events. Broker's thread (TICK).
func (e *Engine) publishPresence() {
	if e.presence == nil {
		return
	}
	evs := e.presence.TakeEvents()
	if evs == nil {
		return
	}
	for _, ev := range evs {
		if !e.broker.Publish(ev.CTopic, ev.Payload) {
			// A copy: the event's buffer is reused once published, and log lines may wait for the next TICK.
			e.log.Warn("presence: the broker refused to publish a lifecycle event (out of memory?)", "topic", strings.Clone(ev.Topic))
		}
	}
	e.presence.Published() // the broker copied them: their buffers may be reused
}

// presenceRefuses reports whether a client's check is a publish under the presence topics, which only
// the plugin may publish to, whatever the client's grants.
func presenceRefuses(access acl.Access, topic string) bool {
	return access == acl.Write && presence.Reserved(topic)
}

// closePresence ends the live sessions (broker_shutdown) and writes what is queued, within 3 s.
func (e *Engine) closePresence() {
	if e.presence == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.presence.Close(ctx); err != nil {
		e.log.Warn("presence: could not write the last session ends; the sessions read offline after this broker's presence timeout",
			"error", err)
	}
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
