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
// the broker's thread; these are the engine's calls into it, one per hook. Its recorder is nil when
// plugin_opt_presence is false, and every hook then does nothing.
type presenceHooks struct {
	e   *Engine
	rec *presence.Recorder
}

// start registers this start (closing the previous start's sessions) before the broker's
// listeners open, and starts the recorder's writer.
func (p presenceHooks) start() {
	e, rec := p.e, p.rec
	if rec == nil {
		return
	}
	ctx := e.ctx
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

// connected records an admitted session. Broker's thread.
func (p presenceHooks) connected(client uintptr, s *auth.Session) {
	if p.rec == nil {
		return
	}
	kind, id := presence.KindOf(s)
	version, addr := p.e.broker.ClientInfo(client)
	p.rec.Connected(client, kind, id, presenceClientID(s, id), presence.Protocol(version), addr)
}

// disconnected records a session's end; code is the broker's reason (presence.BrokerReason).
// Broker's thread.
func (p presenceHooks) disconnected(client uintptr, code int) {
	if p.rec != nil {
		p.rec.Disconnected(client, code)
	}
}

// kicking gives a kicked session's coming end its reason.
func (p presenceHooks) kicking(s session.Snapshot, reason error) {
	if p.rec != nil {
		_, id := presence.KindOf(&s.Session)
		p.rec.Kicking(presenceClientID(&s.Session, id), id, reason)
	}
}

// publish publishes the queued lifecycle events. Broker's thread (TICK).
func (p presenceHooks) publish() {
	e := p.e
	if p.rec == nil {
		return
	}
	evs := p.rec.TakeEvents()
	if evs == nil {
		return
	}
	for _, ev := range evs {
		if !e.broker.Publish(ev.CTopic, ev.Payload) {
			// A copy: the event's buffer is reused once published, and log lines may wait for the next TICK.
			e.log.Warn("presence: the broker refused to publish a lifecycle event (out of memory?)", "topic", strings.Clone(ev.Topic))
		}
	}
	p.rec.Published() // the broker copied them: their buffers may be reused
}

// presenceRefuses reports whether a client's check is a publish under the presence topics, which only
// the plugin may publish to, whatever the client's grants.
func presenceRefuses(access acl.Access, topic string) bool {
	return access == acl.Write && presence.Reserved(topic)
}

// close ends the live sessions (broker_shutdown) and writes what is queued, within 3 s.
func (p presenceHooks) close() {
	e := p.e
	if p.rec == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := p.rec.Close(ctx); err != nil {
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
