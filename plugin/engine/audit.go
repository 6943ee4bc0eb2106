package engine

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/engine/batch"
	"github.com/iotauth/iotauth/plugin/session"
)

// auditActor is the plugin's name as an actor in the audit trail.
const auditActor = "mosquitto-iotauth"

// auditLog holds refused connects and kicks until the periodic loop writes them; a failed write
// (PostgreSQL down, a failover) keeps them for the next attempt.
type auditLog struct {
	e     *Engine
	seq   atomic.Uint64 // keys of the queued events, in order
	queue *batch.Batcher[uint64, AuditEvent]
	lost  rate.Sometimes // logging of dropped audit events
	fail  rate.Sometimes // logging of failed writes
	// retrying: the last write failed (the periodic loop's own).
	retrying bool
}

func newAuditLog(e *Engine) *auditLog {
	return &auditLog{
		e: e, queue: batch.New[uint64, AuditEvent](maxQueuedAudits, 0, func(ev AuditEvent) string { return ev.Action }),
		lost: rate.Sometimes{Interval: 30 * time.Second}, fail: rate.Sometimes{Interval: 30 * time.Second},
	}
}

func shortClientID(clientID string) string {
	if len(clientID) > 64 {
		return clientID[:64] + "…"
	}
	return clientID
}

// refusal queues an audit event for a refused connect by an existing application key (docs/security.md:
// every refused use is audited).
func (a *auditLog) refusal(keyID, clientID string, reason error) {
	a.add(AuditEvent{
		Actor: "app-key:" + keyID, Action: "app_key_refused", Target: "app-key:" + keyID, Outcome: OutcomeFailure,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(clientID), "reason": reason.Error()},
	})
}

// tokenRefusal queues an audit event for a refused connect by a well-signed short-lived credential (a
// denied subject, a client id it does not allow): the actor is the token's subject; never the password.
func (a *auditLog) tokenRefusal(subject, id, clientID string, reason error) {
	a.add(AuditEvent{
		Actor: subject, Action: "mqtt_token_refused", Target: "mqtt-token:" + id, Outcome: OutcomeFailure,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(clientID), "reason": reason.Error()},
	})
}

// kick queues the audit event "session_kick" of a live session disconnected for reason.
func (a *auditLog) kick(s session.Snapshot, reason error) {
	target := "agent:" + s.Agent
	switch {
	case s.Token != nil:
		target = "mqtt-token:" + s.Token.ID
	case s.App():
		target = "app-key:" + s.KeyID()
	}
	a.add(AuditEvent{
		Actor: auditActor, Action: "session_kick", Target: target,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(s.ClientID), "keyId": s.KeyID(), "reason": reason.Error()},
	})
}

// add queues ev for the periodic loop, or counts it when the queue is full.
func (a *auditLog) add(ev AuditEvent) {
	if !a.queue.Add(a.seq.Add(1), ev) {
		a.dropped(1)
	}
}

// dropped records n audit events the queue could not hold: counted in the metrics, logged at most
// twice a minute, and audited as one event with the count once PostgreSQL answers.
func (a *auditLog) dropped(n int) {
	a.e.metrics.AuditDropped(n)
	a.lost.Do(func() {
		a.e.log.Warn("the audit queue is full (PostgreSQL has not answered for a while): refused connects and kicks are counted, not recorded one by one; the counts are written to the audit trail once it answers",
			"queued", maxQueuedAudits, "droppedSinceStart", a.queue.Dropped())
	})
}

// write writes the queued audit events to the audit trail, in one transaction. While the store is down,
// or when a write fails (a failover under way), they wait in the bounded queue for the next attempt, a
// second later.
func (a *auditLog) write(ctx context.Context) {
	e := a.e
	if e.auth.StoreDown() {
		return
	}
	b := a.queue.Take()
	if b.Empty() {
		return
	}
	es := b.Values()
	for action, n := range b.Dropped {
		outcome := OutcomeSuccess
		if action == "app_key_refused" {
			outcome = OutcomeFailure
		}
		es = append(es, AuditEvent{Actor: auditActor, Action: action, Outcome: outcome,
			Detail: map[string]any{"via": "mqtt", "notRecorded": n}})
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.store.AuditMany(actx, es); err != nil {
		lost := a.queue.PutBack(b)
		a.retrying = true
		a.fail.Do(func() {
			e.log.Warn("could not write refused connects and kicks to the audit trail; they are kept and written when PostgreSQL answers",
				"count", len(es), "error", err)
		})
		if lost > 0 {
			a.dropped(lost)
		}
		return
	}
	if a.retrying {
		e.log.Info("wrote the refused connects and kicks kept while PostgreSQL did not answer", "count", len(es)) // tests wait for it
	}
	a.retrying = false
}

// writes are the fast hashes of imported devices and the keys that connected, queued on the broker's
// thread and written by the periodic loop.
type writes struct {
	e       *Engine
	fast    *batch.Batcher[string, FastHash]        // by agent: fast hashes to record
	touches *batch.Batcher[secret.Digest, struct{}] // keys that connected since the last write
}

// queueFastHash is the authorizer's FastHashRecorder: on the broker thread, it only queues; the periodic
// loop writes the queue once a second (fastHashes). Only the SHA-256 of the password is kept, never the
// password.
func (w *writes) queueFastHash(agent, stored string, sum [32]byte) {
	w.fast.Add(agent, FastHash{Agent: agent, Old: stored, New: passhash.SHA256HexOfSum(sum)})
}

// fastHashes records the fast hashes queued by connects of imported devices (queueFastHash), in one
// statement. While the store is down they wait. A failed write is not retried: the cache entry's
// remembered password keeps the agent's connects fast, and the next slow verification after the entry
// is refreshed queues it again.
func (w *writes) fastHashes(ctx context.Context) {
	e := w.e
	if w.fast.Len() == 0 || e.auth.StoreDown() {
		return
	}
	hs := w.fast.Take().Values()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := e.store.RecordFastHashes(wctx, hs, AuditEvent{Actor: auditActor, Action: "legacy_fast_hash_recorded"})
	if err != nil {
		e.log.Warn("could not record fast password hashes of imported devices; they are queued again after their cache entries refresh",
			"count", len(hs), "error", err)
		return
	}
	e.log.Info("recorded fast password hashes of imported devices", "count", n) // tests wait for it
}

// touchUsedKeys records last_used_at for the keys that connected recently, in one batched statement; a
// failure is not retried (the next connect queues the key again).
func (w *writes) touchUsedKeys(ctx context.Context) {
	e := w.e
	if w.touches.Len() == 0 || e.auth.StoreDown() {
		return
	}
	ds := w.touches.Take().Keys()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.store.TouchKeys(tctx, ds); err != nil {
		e.log.Debug("could not record key use; it will be recorded on the next connect", "error", err)
	}
}
