package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/session"
)

// The broker's events, each on its main thread: a connect (BasicAuth), an ACL check the shim did not
// answer (ACLCheck), a disconnect, a TICK and a reload (SIGHUP).

// BasicAuth decides a CONNECT (or Mosquitto's re-check of a live client on SIGHUP).
// username and password are borrowed from the broker for the call and must not be kept.
func (e *Engine) BasicAuth(client uintptr, username string, password []byte, clientID string) Result {
	e.ticks.check(e)
	r := e.decide(client, username, password, clientID)
	if r != OK && !e.reloading && secret.LooksLikeAny(clientID) {
		// Mosquitto 2.0.13 and later log a refused client's id ("Client <id> disconnected, not
		// authorised."): replace one that carries a secret first. Such a client is never deferred to
		// another plugin, which could admit it under that id. Not during a reload's re-check of
		// connected clients: 2.0 indexes those by id, and replacing it in place would break the index.
		if !e.broker.ReplaceClientID(client, hiddenClientID(len(clientID))) {
			e.log.Warn("could not replace a refused client id that looks like a secret; the broker may log it")
		}
		return Refused
	}
	return r
}

// principalOfName is who a refused connect claimed to be, from its username (appPrefix: an application
// key's prefix).
func principalOfName(appPrefix, username string) Principal {
	if strings.HasPrefix(username, appPrefix) {
		return App
	}
	if strings.HasPrefix(username, auth.TokenUsernamePrefix) {
		return Token
	}
	return Agent
}

// principalOf is who an authorised session is.
func principalOf(s *auth.Session) Principal {
	if s.App() {
		return App
	}
	if s.Token != nil {
		return Token
	}
	return Agent
}

// hiddenClientID is what a refused client id carrying a secret becomes: no longer than the original n.
func hiddenClientID(n int) string {
	const id = "iotauth-hidden-secret"
	if n >= len(id) {
		return id
	}
	return strings.Repeat("x", n)
}

// check logs an error when connects arrive but the broker never delivered a TICK: kicks and
// queued log lines wait for TICK, so revocation would fail silently.
func (w *tickWatch) check(e *Engine) {
	if w.ok {
		return
	}
	if e.broker.TicksSeen() > 0 {
		w.ok = true
		return
	}
	now := e.now()
	if w.firstAuth.IsZero() {
		w.firstAuth = now
	}
	if now.Sub(w.firstAuth) >= 2*time.Second && (w.warned.IsZero() || now.Sub(w.warned) >= time.Minute) {
		w.warned = now
		e.log.Error("Mosquitto delivers no TICK event to the plugin (per_listener_settings true on Mosquitto 2.0.11 " +
			"to 2.0.14?): revoked agents are NOT kicked. Use per_listener_settings false or Mosquitto 2.0.15 or newer")
	}
	e.FlushLogs() // no TICK will write them
}

func (e *Engine) decide(client uintptr, username string, password []byte, clientID string) Result {
	if e.hook != nil {
		e.hook(username)
	}
	ctx := context.Background()
	if reservedName(username) {
		return e.reauth(client, username, password)
	}
	// Read before the cache is: a change to the credential after this point shows as a new epoch.
	epoch := e.sessions.Epoch()
	s, err := e.auth.Authorize(ctx, auth.Credentials{Username: username, Password: password, ClientID: clientID})
	if errors.Is(err, auth.ErrDeferred) {
		e.metrics.Deferred()
		return Defer
	}
	if err != nil {
		if e.counting {
			e.metrics.Refused(principalOfName(e.appPrefix, username), err)
		}
		e.refused(clientID, err)
		// errors.AsType, not errors.As: no pointer escapes, so a flood of refusals allocates nothing here.
		if app, ok := errors.AsType[*auth.AppKeyRefused](err); ok {
			e.audits.refusal(app.KeyID, clientID, app.Err)
		} else if tok, ok := errors.AsType[*auth.TokenRefused](err); ok {
			e.audits.tokenRefusal(tok.Subject, tok.ID, clientID, tok.Err)
		}
		return Refused
	}
	// Admit replaces the client's username, which username borrows: it must not be used from here.
	username = ""
	current, err := e.sessions.Admit(client, s, epoch)
	if err != nil {
		e.metrics.Refused(principalOf(&s), err)
		e.refused(clientID, err)
		switch {
		case s.Token != nil:
			e.audits.tokenRefusal(s.Token.Subject, s.Token.ID, clientID, err)
		case s.App():
			e.audits.refusal(s.KeyID(), clientID, err)
		}
		return Refused
	}
	if !current {
		e.rechecks.later(s.Agent)
	}
	e.presence.connected(client, &s)
	if s.Token != nil {
		if e.log.Enabled(ctx, slog.LevelDebug) {
			e.log.Debug("connect authorised", "subject", s.Token.Subject, "token", s.Token.ID)
		}
		return OK
	}
	e.writes.touches.Add(s.Digest, struct{}{})
	e.metrics.Allowed(principalOf(&s))
	if e.log.Enabled(ctx, slog.LevelDebug) { // skip boxing the arguments on the hot path
		e.log.Debug("connect authorised", "agent", s.Agent, "key", s.KeyID())
	}
	return OK
}

func (e *Engine) reauth(client uintptr, username string, password []byte) Result {
	if !e.sessions.IsLive(client, username, password) {
		if e.counting {
			p := Agent
			if strings.HasPrefix(username, reservedAppPrefix) {
				p = App
			} else if strings.HasPrefix(username, renamedTokenPrefix) {
				p = Token
			}
			e.metrics.Refused(p, ErrReservedName)
		}
		e.refused("", ErrReservedName)
		return Refused
	}
	// Mosquitto re-checks every client on SIGHUP, one after another on its only thread: answer from
	// memory (same client, same name, same password) and let the background re-check, which Reload
	// started, consult PostgreSQL and kick whatever is no longer allowed.
	return OK
}

// refused logs a refusal, at most one a second after a burst of five, with the count of those not
// logged in between: a flood of bad connects must not become a flood of log lines on the broker thread.
func (e *Engine) refused(clientID string, err error) {
	if !e.refusals.AllowN(e.now(), 1) {
		e.unlogged.Add(1)
		return
	}
	if len(clientID) > 64 {
		clientID = clientID[:64] + "…"
	}
	if n := e.unlogged.Swap(0); n > 0 {
		e.log.Info("connect refused", "client", clientID, "reason", err.Error(), "refusals_not_logged", n)
		return
	}
	e.log.Info("connect refused", "client", clientID, "reason", err.Error())
}

// ACLCheck decides an ACL check the shim did not answer, from the session table. A client iotauth never
// admitted is deferred to the next plugin when defer_unknown is set, unless it carries one of the
// plugin's own names (a session iotauth no longer vouches for: its name must not earn it anything
// elsewhere). topic is borrowed for the call.
func (e *Engine) ACLCheck(client uintptr, access acl.Access, topic string) Result {
	if e.hook != nil {
		e.hook(topic)
	}
	if presenceRefuses(access, topic) {
		return Denied
	}
	switch e.sessions.Allows(client, func() (string, string) { return e.broker.ClientID(client), e.broker.ClientUsername(client) }, access, topic) {
	case session.Allow:
		return OK
	case session.Unknown:
		if e.cfg.DeferUnknown && !reservedName(e.broker.ClientUsername(client)) {
			return Defer
		}
	}
	return Denied
}

// Disconnect ends a client's session: kept for its will and offline deliveries as session.KeptFor says.
func (e *Engine) Disconnect(client uintptr, cleanStart bool, protocolVersion int, told session.Told, reason int) {
	keptFor := session.KeptFor(protocolVersion, cleanStart, told, e.cfg.MQTT5SessionHold)
	e.sessions.Disconnect(client, keptFor)
	e.presence.disconnected(client, reason)
}

// Tick runs on the main thread when the shim was asked for it (at most every 50 ms): it carries out
// queued kicks, publishes presence events and writes queued logs.
func (e *Engine) Tick() {
	e.reloading = false
	e.sessions.Tick()
	e.presence.publish()
	e.FlushLogs()
}

// Reload handles SIGHUP: Mosquitto re-checks every client next (answered from memory), and the engine
// re-checks every live session against the store and re-reads the short-lived credentials' keys.
func (e *Engine) Reload() {
	e.reloading = true // its log line below asks for the TICK that ends it
	e.log.Info("reload: re-checking live sessions (plugin options are read at start only)")
	if e.tokens != nil {
		// The key file is re-read, so that a signing key can be rotated without a restart.
		if err := e.tokens.Reload(); err != nil {
			e.log.Error("reload: keeping the MQTT credential public keys in use", "error", err)
		} else {
			e.log.Info("reload: MQTT credential public keys read", "public_keys", e.tokens.Keys())
		}
	}
	e.rechecks.all()
}

// FlushLogs writes queued log lines to the broker; main thread only.
func (e *Engine) FlushLogs() {
	lines, dropped := e.logs.Drain()
	for _, l := range lines {
		e.broker.Log(l.Level, l.Msg)
	}
	if dropped > 0 {
		e.broker.Log(e.levels.Warning, fmt.Sprintf("%d log lines suppressed (rate limit)", dropped))
	}
}
