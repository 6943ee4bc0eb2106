package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/denylist"
)

// goBackground starts the goroutines that keep the plugin in step with PostgreSQL: the NOTIFY listener,
// the re-check worker, the periodic resync, key expiry, the store health probe and the preload.
//
// It returns a channel that is closed once the first preload has finished, or has no chance to finish
// soon: preload is off, or the first attempt to reach PostgreSQL failed.
func (in *instance) goBackground(ctx context.Context) <-chan struct{} {
	listenFail := rate.Sometimes{Interval: 30 * time.Second}
	listening := make(chan struct{})
	var listened sync.Once
	settled := make(chan struct{})
	var settle sync.Once
	settledNow := func() { settle.Do(func() { close(settled) }) }
	in.wg.Add(5)
	go in.supervise(ctx, "credential change feed", func(ctx context.Context) {
		defer in.auth.Cache().FeedDown() // also when a panic ends the listener until supervise restarts it
		in.feed.Listen(ctx, store.ListenHandler{
			Changed: in.changed,
			Connected: func(reconnect bool) {
				// Changes made before LISTEN was (re-)established were missed, including those between
				// a preload or lookup and the first connection: trust nothing cached before now. The
				// deny list is loaded again too (before the line tests wait for).
				in.denialsStale.Store(true)
				in.loadDenials(ctx)
				in.auth.Cache().InvalidateAll(time.Now())
				in.auth.Cache().FeedUp(time.Now()) // entries fetched from now on outlive cache_ttl while LISTEN is up
				in.sessions.Changed()
				in.recheckAll()
				in.reloadLegacy()
				in.reloadKeys()
				// preload may start: from now on no change goes unnoticed (once: the feed restarts
				// after a panic)
				listened.Do(func() { close(listening) })
				if reconnect {
					in.log.Info("credential change feed reconnected; cache invalidated and live sessions re-checked")
				} else {
					in.log.Info("credential change feed listening") // tests wait for it
				}
			},
			Failed: func(err error) {
				// Changes may go unannounced now: cache_ttl applies to every entry again.
				in.auth.Cache().FeedDown()
				settledNow() // PostgreSQL is unreachable: do not hold up the broker's start
				listenFail.Do(func() {
					in.log.Warn("credential change feed (LISTEN) down; retrying with backoff", "error", err)
				})
			},
		})
	})
	go in.supervise(ctx, "re-check worker", in.recheckWorker)
	go in.supervise(ctx, "legacy usernames", in.legacyLoader)
	in.wg.Add(1)
	go in.supervise(ctx, "known keys", in.keysLoader)
	go in.supervise(ctx, "periodic resync", in.periodic)
	in.wg.Add(1)
	go in.supervise(ctx, "cache refresh", in.auth.RunRefresh)
	go in.supervise(ctx, "preload", func(ctx context.Context) { defer settledNow(); in.preload(ctx, listening, settledNow) })
	if in.metricsSrv != nil {
		in.wg.Add(1)
		go in.supervise(ctx, "metrics server", func(context.Context) {
			// Serve returns when close shuts the server down (ErrServerClosed), and is not restarted then.
			if err := in.metricsSrv.Serve(in.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				in.log.Error("the metrics server stopped; /metrics is no longer served", "error", err)
			}
		})
	}
	return settled
}

// supervise runs one background loop until ctx ends (docs/security.md, M17). A panic in it is recovered and
// logged, and the loop starts again after a backoff (100 ms, doubling to 30 s; reset after a minute
// without a panic): an unrecovered panic in any goroutine would take the broker down. A loop that
// returns normally is not restarted.
func (in *instance) supervise(ctx context.Context, name string, loop func(context.Context)) {
	defer in.wg.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		if !in.runRecovered(ctx, name, loop) {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// runRecovered runs loop and reports whether it panicked.
func (in *instance) runRecovered(ctx context.Context, name string, loop func(context.Context)) (panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			stack := string(debug.Stack())
			if len(stack) > 2000 {
				stack = stack[:2000]
			}
			in.log.Error("internal error in the "+name+"; restarting it (please report this)", "panic", fmt.Sprint(r), "stack", stack)
		}
	}()
	loop(ctx)
	return false
}

// changed handles one NOTIFY: drop what the cache holds for the key and agent, then re-check the agent's
// live sessions.
func (in *instance) changed(c store.Change) {
	arrived := in.metrics.Notified()
	if c.Table == "subject_denials" {
		in.denied(c.Subject, c.DeniedAt)
		return
	}
	// Logged once handled, which tests wait for.
	defer in.log.Debug("credential change handled", "agent", c.Agent)
	testHook(c.Agent)
	if c.Table == store.LegacyTable {
		// The set of live legacy usernames changed (an import, a retirement): keep the in-memory set
		// current, then handle it as any change of the agent.
		if d, ok := c.Digest(); ok {
			in.legacy.Apply(d, c.Live)
		}
	}
	if c.Agent == store.AllAgents {
		// A TRUNCATE: everything may have changed.
		in.reloadLegacy()
		in.reloadKeys()
		in.auth.Cache().InvalidateAll(time.Now())
		in.sessions.Changed()
		in.recheckAll()
		in.metrics.Applied(arrived) // the re-check of every session is not timed
		return
	}
	in.keyChanged(c) // a new key is looked up even while forged keys spend the budget
	if d, ok := c.Digest(); ok {
		in.auth.Cache().Remove(d)
	}
	in.auth.Cache().InvalidateGroup(c.Agent, time.Now())
	in.sessions.Changed() // before the re-check it starts (see session.Table.Admit)
	if !in.recheckSince(c.Agent, arrived) {
		in.metrics.Applied(arrived)
	}
}

// denied handles a subject denial: the deny list learns it first, then every session of a short-lived
// credential derived from the subject and issued at or before the denial is refused (live ones kicked on
// the next TICK, ended ones lose their will and queued messages). No query.
func (in *instance) denied(subject string, at time.Time) {
	defer in.log.Debug("subject denial handled", "subject", subject)
	if subject == "" || at.IsZero() {
		return
	}
	in.denials.Deny(subject, at)
	// A connect that read the deny list before Deny and is admitted after the scan below sees the epoch
	// change and has its session re-checked (session.Table.Admit).
	in.sessions.Changed()
	in.recheckTokens()
}

// recheckTokens refuses every session of a short-lived credential that expired or that the deny list
// now denies; memory only.
func (in *instance) recheckTokens() {
	for _, s := range in.sessions.Tokens() {
		if err := in.auth.RecheckToken(s.Session); err != nil {
			in.sessions.Refuse(s, err)
		}
	}
}

// loadDenials loads the deny list from the store (the denials younger than any live credential can be)
// when it is stale, then re-checks the short-lived credentials' sessions against it.
func (in *instance) loadDenials(ctx context.Context) {
	if !in.denialsStale.Load() {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ds, err := in.store.Denials(lctx, time.Now().Add(-denialKeep))
	cancel()
	if err != nil {
		in.denialFail.Do(func() {
			in.log.Warn("could not load the subject deny list; retrying every second", "error", err,
				"tokens_admitted", in.denials.Loaded())
		})
		return
	}
	list := make([]denylist.Denial, len(ds))
	for i, d := range ds {
		list[i] = denylist.Denial{Subject: d.Subject, DeniedAt: d.DeniedAt}
	}
	in.denialsStale.Store(false)
	in.denials.Load(list)
	in.sessions.Changed()
	in.recheckTokens()
	in.log.Info("subject deny list loaded", "denials", len(list))
}

// recheckLater has the re-check worker look at agent's live sessions soon.
func (in *instance) recheckLater(agent string) { in.recheckSince(agent, time.Time{}) }

// recheckSince is recheckLater for a change that arrived at arrived (zero: unknown): once the re-check
// is done, the time since then is recorded as the change's apply time. It reports whether a re-check was
// queued (not with kick_on_revoke false).
func (in *instance) recheckSince(agent string, arrived time.Time) bool {
	if !in.cfg.KickOnRevoke {
		return false
	}
	in.pendingMu.Lock()
	if t, ok := in.pending[agent]; !ok || t.IsZero() || (!arrived.IsZero() && arrived.Before(t)) {
		in.pending[agent] = arrived // the earliest change waiting for this agent
	}
	in.pendingMu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
	return true
}

func (in *instance) recheckAll() {
	agents := in.sessions.Agents()
	in.pendingMu.Lock()
	for _, a := range agents {
		if _, ok := in.pending[a]; !ok {
			in.pending[a] = time.Time{}
		}
	}
	in.pendingMu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// recheckWorker coalesces pending agents and re-checks their live and ended sessions against the store
// in batches, refusing every session its credentials no longer allow.
func (in *instance) recheckWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.wake:
		}
		in.pendingMu.Lock()
		agents := in.pending
		in.pending = map[string]time.Time{}
		in.pendingMu.Unlock()
		err := in.recheck(ctx, agents)
		if err == nil {
			for _, arrived := range agents {
				in.metrics.Applied(arrived)
			}
		}
		if err != nil && ctx.Err() == nil {
			in.log.Warn("re-checking live sessions failed; will retry", "error", err)
			in.pendingMu.Lock()
			for a, arrived := range agents {
				if t, ok := in.pending[a]; !ok || t.IsZero() || (!arrived.IsZero() && arrived.Before(t)) {
					in.pending[a] = arrived
				}
			}
			in.pendingMu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			select {
			case in.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (in *instance) recheck(ctx context.Context, agents map[string]time.Time) error {
	names := make([]string, 0, len(agents))
	for a := range agents {
		names = append(names, a)
	}
	all := in.sessions.Sessions(names)
	// Short-lived credentials are re-checked in memory (expiry, deny list), never against the store.
	targets := all[:0]
	for _, s := range all {
		if s.Token == nil {
			targets = append(targets, s)
		} else if err := in.auth.RecheckToken(s.Session); err != nil {
			in.sessions.Refuse(s, err)
		}
	}
	for start := 0; start < len(targets); start += 1000 {
		batch := targets[start:min(start+1000, len(targets))]
		ds := make([]secret.Digest, len(batch))
		for i := range batch {
			ds[i] = batch[i].Digest
		}
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		found, err := in.store.LookupCredentials(qctx, ds)
		cancel()
		if err != nil {
			return err
		}
		for i := range batch {
			c, ok := found[batch[i].Digest]
			if err := in.auth.Recheck(batch[i].Session, c, ok); err != nil {
				in.kick(batch[i], err)
			}
		}
	}
	return nil
}

// periodic re-checks every live session now and then (a safety net for missed notifications), kicks
// sessions whose key expired, and probes the store while the authorizer considers it down.
func (in *instance) periodic(ctx context.Context) {
	second := time.NewTicker(time.Second)
	defer second.Stop()
	// Expiries are looked at every 100 ms (cheap: the sessions are scanned only once one is due), so that
	// a session closes within about 150 ms of its expiry, the next TICK included.
	expiry := time.NewTicker(100 * time.Millisecond)
	defer expiry.Stop()
	lastResync, lastTouch, lastResident, lastPrune := time.Now(), time.Now(), time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expiry.C:
			in.kickExpired()
			continue
		case <-second.C:
		}
		in.loadDenials(ctx)
		if time.Since(lastPrune) >= time.Minute {
			lastPrune = time.Now()
			in.denials.Prune(lastPrune)
		}
		if in.auth.StoreDown() {
			pctx, cancel := context.WithTimeout(ctx, in.cfg.DBTimeout+time.Second)
			if in.store.Ping(pctx) == nil {
				in.auth.MarkStoreUp()
				in.log.Info("PostgreSQL answers again")
			}
			cancel()
		}
		in.kickExpired()
		if time.Since(lastTouch) >= 5*time.Second {
			lastTouch = time.Now()
			in.touchUsedKeys(ctx)
		}
		in.writeAudits(ctx)
		in.writeFastHashes(ctx)
		if time.Since(lastResident) >= 30*time.Second {
			// Connected agents look their credentials up only at connect: keep them the most recently
			// used, so that other credentials are evicted first (they are what an outage falls back on).
			lastResident = time.Now()
			for _, d := range in.sessions.Digests() {
				in.auth.Cache().Touch(d)
			}
		}
		if time.Since(lastResync) >= in.cfg.ResyncInterval {
			lastResync = time.Now()
			in.recheckAll()
		}
	}
}

// kickExpired refuses the live sessions whose key or short-lived credential has expired.
func (in *instance) kickExpired() {
	if !in.cfg.KickOnRevoke {
		return
	}
	for _, s := range in.sessions.Expired() {
		reason := auth.ErrExpired
		if s.Token != nil {
			reason = auth.ErrTokenExpired
		}
		in.kick(s, reason)
	}
}

// writeAudits writes the queued audit events (refusals of application keys, kicks) to the audit trail,
// in one transaction. While the store is down, or when a write fails (a failover under way), they wait
// in the bounded queue for the next attempt, a second later.
func (in *instance) writeAudits(ctx context.Context) {
	if in.auth.StoreDown() {
		return
	}
	queued, dropped := in.audits.Take()
	if len(queued) == 0 && len(dropped) == 0 {
		return
	}
	es := slices.Clone(queued)
	for action, n := range dropped {
		outcome := store.OutcomeSuccess
		if action == "app_key_refused" {
			outcome = store.OutcomeFailure
		}
		es = append(es, store.AuditEvent{Actor: auditActor, Action: action, Outcome: outcome,
			Detail: map[string]any{"via": "mqtt", "notRecorded": n}})
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := in.store.AuditMany(actx, es); err != nil {
		lost := in.audits.Failed(queued, dropped)
		in.auditRetrying = true
		in.auditFail.Do(func() {
			in.log.Warn("could not write refused connects and kicks to the audit trail; they are kept and written when PostgreSQL answers",
				"count", len(es), "error", err)
		})
		if lost > 0 {
			in.auditDropped(lost)
		}
		return
	}
	if in.auditRetrying {
		in.log.Info("wrote the refused connects and kicks kept while PostgreSQL did not answer", "count", len(es)) // tests wait for it
	}
	in.auditRetrying = false
}

// reloadLegacy asks the legacy loader for a full load of the legacy usernames.
func (in *instance) reloadLegacy() {
	select {
	case in.legacyLoad <- struct{}{}:
	default:
	}
}

// legacyLoader loads the set of live legacy usernames whenever asked (the change feed was established,
// a TRUNCATE), retrying with backoff while PostgreSQL does not answer. Notifications keep it current in
// between (changed).
func (in *instance) legacyLoader(ctx context.Context) {
	failLog := rate.Sometimes{Interval: 30 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.legacyLoad:
		}
		backoff := 500 * time.Millisecond
		for ctx.Err() == nil {
			in.legacy.BeginLoad()
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			names, err := in.store.LegacyDigests(lctx)
			cancel()
			in.legacy.FinishLoad(names, err == nil)
			if err == nil {
				in.log.Info("loaded legacy usernames", "count", len(names)) // tests wait for it
				in.legacyOnce.Do(func() { close(in.legacyLoaded) })
				break
			}
			failLog.Do(func() { in.log.Warn("loading legacy usernames failed; retrying", "error", err) })
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}
}

// writeFastHashes records the fast hashes queued by connects of imported devices (queueFastHash), in one
// statement. While the store is down they wait. A failed write is not retried: the cache entry's
// remembered password keeps the agent's connects fast, and the next slow verification after the entry
// is refreshed queues it again.
func (in *instance) writeFastHashes(ctx context.Context) {
	in.fastMu.Lock()
	if len(in.fast) == 0 || in.auth.StoreDown() {
		in.fastMu.Unlock()
		return
	}
	hs := make([]store.FastHash, 0, len(in.fast))
	for _, h := range in.fast {
		hs = append(hs, h)
	}
	clear(in.fast)
	in.fastMu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := in.store.RecordFastHashes(wctx, hs, store.AuditEvent{Actor: "mosquitto-iotauth", Action: "legacy_fast_hash_recorded"})
	if err != nil {
		in.log.Warn("could not record fast password hashes of imported devices; they are queued again after their cache entries refresh",
			"count", len(hs), "error", err)
		return
	}
	in.log.Info("recorded fast password hashes of imported devices", "count", n) // tests wait for it
}

// touchUsedKeys records last_used_at for the keys that connected recently, in one batched statement.
func (in *instance) touchUsedKeys(ctx context.Context) {
	in.usedMu.Lock()
	if len(in.used) == 0 || in.auth.StoreDown() {
		in.usedMu.Unlock()
		return
	}
	ds := make([]secret.Digest, 0, len(in.used))
	for d := range in.used {
		ds = append(ds, d)
	}
	clear(in.used)
	in.usedMu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := in.store.TouchKeys(tctx, ds); err != nil {
		in.log.Debug("could not record key use; it will be recorded on the next connect", "error", err)
	}
}

// preload fills the cache with every active credential, retrying until PostgreSQL answers once. It
// starts only once LISTEN is established, so no change between the load and the feed can be missed.
func (in *instance) preload(ctx context.Context, listening <-chan struct{}, failed func()) {
	if !in.cfg.Preload || in.cfg.CacheSize == 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-listening:
	}
	// Plugin init waits for the preload: let it also cover the first loads of the legacy usernames and of
	// the set of known keys, so that imported devices reconnecting after a restart are known when the
	// listeners open, and the forged-key lookup budget is in force from the first connect (until the set
	// has loaded, every unknown key is looked up). Bounded: the loaders retry on their own.
	wait := time.NewTimer(in.cfg.PreloadWait)
	defer wait.Stop()
waiting:
	for _, loaded := range []<-chan struct{}{in.legacyLoaded, in.keysLoaded} {
		select {
		case <-ctx.Done():
			return
		case <-loaded:
		case <-wait.C:
			break waiting
		}
	}
	backoff := 500 * time.Millisecond
	failLog := rate.Sometimes{Interval: 30 * time.Second}
	for ctx.Err() == nil {
		start := time.Now()
		n := 0
		lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := in.store.ActiveCredentials(lctx, func(c credential.Credential) {
			in.auth.Cache().Add(c.Digest, auth.NewEntry(c), start)
			n++
		})
		cancel()
		if err == nil || errors.Is(err, store.ErrCorrupt) {
			in.metrics.Preloaded(n, time.Since(start))
			in.log.Info("preloaded credentials", "count", n, "took", time.Since(start), "skipped", errString(err))
			debug.FreeOSMemory() // hand the preload's garbage and the GC's headroom back to the OS
			return
		}
		failed()
		failLog.Do(func() { in.log.Warn("preload failed; retrying in the background", "error", err) })
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
