package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/plugin/auth"
)

// Start starts the background work that keeps the engine in step with PostgreSQL (the change feed, the
// re-check worker, the loaders, the periodic jobs, the preload, the presence writer) and, with preload on,
// waits for the first preload (at most preload_wait): Mosquitto opens its listeners only after plugin init
// returns, so agents reconnecting after a restart find their credentials cached.
func (e *Engine) Start() {
	cfg := e.cfg
	e.presence.start()
	preloaded := e.goBackground(e.ctx)
	if cfg.Preload && cfg.CacheSize > 0 && cfg.PreloadWait > 0 {
		start := time.Now()
		select {
		case <-preloaded:
			e.log.Info("start waited for the preload", "took", time.Since(start).Round(time.Millisecond))
		case <-time.After(cfg.PreloadWait):
			e.log.Warn("preload is taking longer than preload_wait; starting now, it continues in the background",
				"preload_wait", cfg.PreloadWait)
		}
	}
	e.log.Info("started", "cache_size", cfg.CacheSize, "cache_ttl", cfg.CacheTTL, "db_timeout", cfg.DBTimeout,
		"clientid", cfg.ClientID, "acl", cfg.ACLSpec, "preload", cfg.Preload, "fast_acl", e.fastACL)
}

// Go runs loop on a goroutine of its own under supervision (see supervise) until Close.
func (e *Engine) Go(name string, loop func(context.Context)) {
	e.wg.Add(1)
	go supervise(e.ctx, &e.wg, e.log, name, loop)
}

// goBackground starts the background loops. It returns a channel that is closed once the first preload
// has finished, or has no chance to finish soon: preload is off, or the first attempt to reach
// PostgreSQL failed.
func (e *Engine) goBackground(ctx context.Context) <-chan struct{} {
	listenFail := rate.Sometimes{Interval: 30 * time.Second}
	deafLog := rate.Sometimes{Interval: 5 * time.Minute} // a configuration error: it stays until fixed
	listening := make(chan struct{})
	var listened sync.Once
	settled := make(chan struct{})
	var settle sync.Once
	settledNow := func() { settle.Do(func() { close(settled) }) }
	e.Go("credential change feed", func(ctx context.Context) {
		defer e.auth.Cache().FeedDown() // also when a panic ends the listener until supervise restarts it
		e.feed.Listen(ctx, ListenHandler{
			Changed: e.Changed,
			Connected: func(reconnect bool) {
				e.feedConnected(ctx)
				// preload may start: from now on no change goes unnoticed (once: the feed restarts
				// after a panic)
				listened.Do(func() { close(listening) })
				if reconnect {
					e.log.Info("credential change feed reconnected; cache invalidated and live sessions re-checked")
				} else {
					e.log.Info("credential change feed listening") // tests wait for it
				}
			},
			Failed: func(err error) {
				// Changes may go unannounced now: cache_ttl applies to every entry again.
				e.auth.Cache().FeedDown()
				settledNow() // PostgreSQL is unreachable: do not hold up the broker's start
				if errors.Is(err, ErrFeedDeaf) {
					deafLog.Do(func() { e.log.Error(e.deafMessage(), "error", err) })
					return
				}
				listenFail.Do(func() {
					e.log.Warn("credential change feed (LISTEN) down; retrying with backoff", "error", err)
				})
			},
		})
	})
	e.Go("re-check worker", e.rechecks.worker)
	e.Go("legacy usernames", e.legacy.loader)
	e.Go("known keys", e.keys.loader)
	e.Go("periodic resync", e.periodic)
	e.Go("cache refresh", e.auth.RunRefresh)
	e.Go("preload", func(ctx context.Context) { defer settledNow(); e.preload(ctx, listening, settledNow) })
	return settled
}

// deafMessage tells the operator why the change feed never comes up although LISTEN connects, and what
// to do (docs/operations.md, PgBouncer).
func (e *Engine) deafMessage() string {
	if e.cfg.ListenDSN == "" {
		return "credential change feed (LISTEN) receives no notifications sent through plugin_opt_dsn: " +
			"is plugin_opt_dsn a pooler in transaction mode (PgBouncer)? Set plugin_opt_listen_dsn to a direct " +
			"connection to the primary. Until then revocations reach this broker only through cache_ttl; retrying"
	}
	return "credential change feed (LISTEN) receives no notifications sent through plugin_opt_dsn: " +
		"plugin_opt_listen_dsn must reach the same primary and database as plugin_opt_dsn, directly (not through " +
		"a pooler in transaction mode). Until then revocations reach this broker only through cache_ttl; retrying"
}

// supervise runs one background loop until ctx ends (docs/security.md). A panic in it is recovered and
// logged, and the loop starts again after a backoff (100 ms, doubling to 30 s; reset after a minute
// without a panic): an unrecovered panic in any goroutine would take the broker down. A loop that
// returns normally is not restarted.
func supervise(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, name string, loop func(context.Context)) {
	defer wg.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		if !runRecovered(ctx, log, name, loop) {
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
func runRecovered(ctx context.Context, log *slog.Logger, name string, loop func(context.Context)) (panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			stack := string(debug.Stack())
			if len(stack) > 2000 {
				stack = stack[:2000]
			}
			log.Error("internal error in the "+name+"; restarting it (please report this)", "panic", fmt.Sprint(r), "stack", stack)
		}
	}()
	loop(ctx)
	return false
}

// periodic runs the periodic jobs: every 100 ms the expiry of keys (cheap: the sessions are scanned only
// once one is due, so that a session closes within about 150 ms of its expiry, the next TICK included),
// and every second the rest (secondly).
func (e *Engine) periodic(ctx context.Context) {
	second, stopSecond := e.every(time.Second)
	defer stopSecond()
	expiry, stopExpiry := e.every(100 * time.Millisecond)
	defer stopExpiry()
	j := newJobs(e)
	for {
		select {
		case <-ctx.Done():
			return
		case <-expiry:
			e.kickExpired()
		case <-second:
			j.secondly(ctx)
		}
	}
}

// jobs holds when the periodic jobs that run less often than every second last ran.
type jobs struct {
	e                       *Engine
	resync, resident, prune time.Time
}

func newJobs(e *Engine) *jobs {
	now := e.now()
	return &jobs{e: e, resync: now, resident: now, prune: now}
}

// secondly re-checks every live session now and then (a safety net for missed notifications), kicks
// sessions whose key expired, writes the queued batches, and probes the store while the authorizer
// considers it down.
func (j *jobs) secondly(ctx context.Context) {
	e := j.e
	e.denied.load(ctx)
	now := e.now()
	if now.Sub(j.prune) >= time.Minute {
		j.prune = now
		e.denials.Prune(now)
	}
	if e.auth.StoreDown() {
		pctx, cancel := context.WithTimeout(ctx, e.cfg.DBTimeout+time.Second)
		if e.store.Ping(pctx) == nil {
			e.auth.MarkStoreUp()
			e.log.Info("PostgreSQL answers again")
		}
		cancel()
	}
	e.kickExpired()
	if e.writes.touches.Due(now) {
		e.writes.touchUsedKeys(ctx)
	}
	e.audits.write(ctx)
	e.writes.fastHashes(ctx)
	if now.Sub(j.resident) >= 30*time.Second {
		// Connected agents look their credentials up only at connect: keep them the most recently used,
		// so that other credentials are evicted first (they are what an outage falls back on).
		j.resident = now
		for _, d := range e.sessions.Digests() {
			e.auth.Cache().Touch(d)
		}
	}
	if now.Sub(j.resync) >= e.cfg.ResyncInterval {
		j.resync = now
		e.rechecks.all()
	}
}

// preload fills the cache with every active credential, retrying until PostgreSQL answers once. It
// starts only once the change feed is established, so no change between the load and the feed can be
// missed.
func (e *Engine) preload(ctx context.Context, listening <-chan struct{}, failed func()) {
	if !e.cfg.Preload || e.cfg.CacheSize == 0 {
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
	wait := time.NewTimer(e.cfg.PreloadWait)
	defer wait.Stop()
waiting:
	for _, loaded := range []<-chan struct{}{e.legacy.loaded, e.keys.loaded} {
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
		start, at := time.Now(), e.now()
		n := 0
		lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := e.store.ActiveCredentials(lctx, func(c credential.Credential) {
			e.auth.Cache().Add(c.Digest, auth.NewEntry(c), at)
			n++
		})
		cancel()
		if err == nil || errors.Is(err, credential.ErrCorrupt) {
			e.metrics.Preloaded(n, time.Since(start))
			e.log.Info("preloaded credentials", "count", n, "took", time.Since(start), "skipped", errString(err))
			debug.FreeOSMemory() // hand the preload's garbage and the GC's headroom back to the OS
			return
		}
		failed()
		failLog.Do(func() { e.log.Warn("preload failed; retrying in the background", "error", err) })
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
