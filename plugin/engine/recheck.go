package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/session"
)

// Changed handles one notification: drop what the cache holds for the key and agent, then re-check the
// agent's live sessions.
func (e *Engine) Changed(c Change) {
	arrived := e.metrics.Notified()
	if c.Table == DenialTable {
		e.denied.deny(c.Subject, c.DeniedAt)
		return
	}
	// Logged once handled, which tests wait for.
	defer e.log.Debug("credential change handled", "agent", c.Agent)
	if e.hook != nil {
		e.hook(c.Agent)
	}
	if c.Table == LegacyTable && c.HasKey {
		// The set of live legacy usernames changed (an import, a retirement): keep the in-memory set
		// current, then handle it as any change of the agent.
		e.legacy.set.Apply(c.Key, c.Live)
	}
	if c.Agent == AllAgents {
		// A TRUNCATE: everything may have changed.
		e.legacy.reload()
		e.keys.reload()
		e.auth.Cache().InvalidateAll(e.now())
		e.sessions.Changed()
		e.rechecks.all()
		e.metrics.Applied(arrived) // the re-check of every session is not timed
		return
	}
	e.keys.changed(c) // a new key is looked up even while forged keys spend the budget
	if c.HasKey {
		e.auth.Cache().Remove(c.Key)
	}
	e.auth.Cache().InvalidateGroup(c.Agent, e.now())
	e.sessions.Changed() // before the re-check it starts (see session.Table.Admit)
	if !e.rechecks.since(c.Agent, arrived) {
		e.metrics.Applied(arrived)
	}
}

// feedConnected handles the change feed's (re-)establishment: changes made before it were missed,
// including those between a preload or lookup and the first connection, so nothing cached before now is
// trusted. The deny list is loaded again too.
func (e *Engine) feedConnected(ctx context.Context) {
	e.denied.stale.Store(true)
	e.denied.load(ctx)
	e.auth.Cache().InvalidateAll(e.now())
	e.auth.Cache().FeedUp(e.now()) // entries fetched from now on outlive cache_ttl while the feed is up
	e.sessions.Changed()
	e.rechecks.all()
	e.legacy.reload()
	e.keys.reload()
}

// kick refuses a session a re-check no longer allows (session.Table.Refuse) and, when that disconnects a
// live session, queues the audit event "session_kick" (docs/cli.md): target the agent or application key,
// with the client id, key id and reason. Never a secret: the reason is one of the authorizer's errors.
func (e *Engine) kick(s session.Snapshot, reason error) {
	if !e.sessions.Refuse(s, reason) {
		return
	}
	e.presence.kicking(s, reason)
	e.audits.kick(s, reason)
}

// kickExpired refuses the live sessions whose key or short-lived credential has expired.
func (e *Engine) kickExpired() {
	if !e.cfg.KickOnRevoke {
		return
	}
	for _, s := range e.sessions.Expired() {
		reason := auth.ErrExpired
		if s.Token != nil {
			reason = auth.ErrTokenExpired
		}
		e.kick(s, reason)
	}
}

// recheckTokens refuses every session of a short-lived credential that expired or that the deny list
// now denies; memory only.
func (e *Engine) recheckTokens() {
	for _, s := range e.sessions.Tokens() {
		if err := e.auth.RecheckToken(s.Session); err != nil {
			e.sessions.Refuse(s, err)
		}
	}
}

// denials keeps the subject deny list of short-lived credentials current.
type denials struct {
	e *Engine
	// stale is set while the deny list needs a full load from the store (at start, after the feed
	// reconnected): the periodic loop retries until one succeeds.
	stale atomic.Bool
	fail  rate.Sometimes
}

// deny handles a subject denial: the deny list learns it first, then every session of a short-lived
// credential derived from the subject and issued at or before the denial is refused (live ones kicked on
// the next TICK, ended ones lose their will and queued messages). No query.
func (d *denials) deny(subject string, at time.Time) {
	e := d.e
	defer e.log.Debug("subject denial handled", "subject", subject)
	if subject == "" || at.IsZero() {
		return
	}
	e.denials.Deny(subject, at)
	// A connect that read the deny list before Deny and is admitted after the scan below sees the epoch
	// change and has its session re-checked (session.Table.Admit).
	e.sessions.Changed()
	e.recheckTokens()
}

// load loads the deny list from the store (the denials younger than any live credential can be) when it
// is stale, then re-checks the short-lived credentials' sessions against it.
func (d *denials) load(ctx context.Context) {
	e := d.e
	if !d.stale.Load() {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	list, err := e.store.Denials(lctx, e.now().Add(-e.denialKeep))
	cancel()
	if err != nil {
		d.fail.Do(func() {
			e.log.Warn("could not load the subject deny list; retrying every second", "error", err,
				"tokens_admitted", e.denials.Loaded())
		})
		return
	}
	d.stale.Store(false)
	e.denials.Load(list)
	e.sessions.Changed()
	e.recheckTokens()
	e.log.Info("subject deny list loaded", "denials", len(list))
}

// rechecks coalesces the agents whose sessions need a re-check against the store; one worker runs them.
type rechecks struct {
	e       *Engine
	mu      sync.Mutex
	pending map[string]time.Time // agent → when the change arrived (zero: not a notification)
	wake    chan struct{}
}

// later has the worker look at agent's live sessions soon.
func (r *rechecks) later(agent string) { r.since(agent, time.Time{}) }

// since is later for a change that arrived at arrived (zero: unknown): once the re-check is done, the
// time since then is recorded as the change's apply time. It reports whether a re-check was queued (not
// with kick_on_revoke false).
func (r *rechecks) since(agent string, arrived time.Time) bool {
	if !r.e.cfg.KickOnRevoke {
		return false
	}
	r.mu.Lock()
	r.addLocked(agent, arrived)
	r.mu.Unlock()
	r.signal()
	return true
}

// addLocked keeps the earliest change waiting for agent.
func (r *rechecks) addLocked(agent string, arrived time.Time) {
	if t, ok := r.pending[agent]; !ok || t.IsZero() || (!arrived.IsZero() && arrived.Before(t)) {
		r.pending[agent] = arrived
	}
}

func (r *rechecks) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// all has the worker re-check every agent with a session.
func (r *rechecks) all() {
	agents := r.e.sessions.Agents()
	r.mu.Lock()
	for _, a := range agents {
		if _, ok := r.pending[a]; !ok {
			r.pending[a] = time.Time{}
		}
	}
	r.mu.Unlock()
	r.signal()
}

// worker coalesces pending agents and re-checks their live and ended sessions against the store in
// batches, refusing every session its credentials no longer allow; a failed batch is retried a second
// later.
func (r *rechecks) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		if r.runPending(ctx) != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			r.signal()
		}
	}
}

// runPending re-checks what is pending; on failure it is pending again.
func (r *rechecks) runPending(ctx context.Context) error {
	e := r.e
	r.mu.Lock()
	agents := r.pending
	r.pending = map[string]time.Time{}
	r.mu.Unlock()
	err := r.recheck(ctx, agents)
	if err == nil {
		for _, arrived := range agents {
			e.metrics.Applied(arrived)
		}
		return nil
	}
	if ctx.Err() == nil {
		e.log.Warn("re-checking live sessions failed; will retry", "error", err)
		r.mu.Lock()
		for a, arrived := range agents {
			r.addLocked(a, arrived)
		}
		r.mu.Unlock()
	}
	return err
}

func (r *rechecks) recheck(ctx context.Context, agents map[string]time.Time) error {
	e := r.e
	names := make([]string, 0, len(agents))
	for a := range agents {
		names = append(names, a)
	}
	all := e.sessions.Sessions(names)
	// Short-lived credentials are re-checked in memory (expiry, deny list), never against the store.
	targets := all[:0]
	for _, s := range all {
		if s.Token == nil {
			targets = append(targets, s)
		} else if err := e.auth.RecheckToken(s.Session); err != nil {
			e.sessions.Refuse(s, err)
		}
	}
	for start := 0; start < len(targets); start += 1000 {
		batch := targets[start:min(start+1000, len(targets))]
		ds := make([]secret.Digest, len(batch))
		for i := range batch {
			ds[i] = batch[i].Digest
		}
		fetched := e.now() // before the query: a change announced while it runs still wins
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		found, err := e.store.LookupCredentials(qctx, ds)
		cancel()
		if err != nil {
			return err
		}
		for i := range batch {
			c, ok := found[batch[i].Digest]
			if err := e.auth.Recheck(batch[i].Session, c, ok); err != nil {
				// The row just read refuses the session: what the cache holds for its key and agent is
				// out of date (a change nobody announced, found by the periodic resync), and must not
				// admit the key's next connect, however recently it was fetched.
				e.auth.Cache().Remove(batch[i].Digest)
				e.auth.Cache().InvalidateGroup(batch[i].Agent, fetched)
				e.kick(batch[i], err)
			}
		}
	}
	return nil
}
