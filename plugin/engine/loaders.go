package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/keyset"
	"github.com/iotauth/iotauth/plugin/legacy"
)

// legacyNames keeps the set of live legacy usernames (imported devices): loaded whole when asked (the
// change feed was established, a TRUNCATE), kept current by notifications in between (Changed).
type legacyNames struct {
	e      *Engine
	set    *legacy.Set
	load   chan struct{}
	loaded chan struct{} // closed by the first successful load
	once   sync.Once
}

// reload asks the loader for a full load.
func (l *legacyNames) reload() {
	select {
	case l.load <- struct{}{}:
	default:
	}
}

// loader loads the set whenever asked, retrying with backoff while PostgreSQL does not answer.
func (l *legacyNames) loader(ctx context.Context) {
	e := l.e
	failLog := rate.Sometimes{Interval: 30 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.load:
		}
		backoff := 500 * time.Millisecond
		for ctx.Err() == nil {
			l.set.BeginLoad()
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			names, err := e.store.LegacyDigests(lctx)
			cancel()
			l.set.FinishLoad(names, err == nil)
			if err == nil {
				e.log.Info("loaded legacy usernames", "count", len(names)) // tests wait for it
				l.once.Do(func() { close(l.loaded) })
				break
			}
			failLog.Do(func() { e.log.Warn("loading legacy usernames failed; retrying", "error", err) })
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}
}

// The set of known keys (plugin/keyset) lets every real key skip the unknown-key lookup budget. It is
// loaded whole when the change feed is (re-)established, after a TRUNCATE and every keysResync as a safety
// net, and kept current by notifications in between (knownKeys.changed).

// keysResync is how often the set of known keys is loaded again although no notification asked for it:
// it drops the old digest of a key whose digest was changed in plain SQL (its notification names only
// the new one).
const keysResync = time.Hour

// maxKeyChecks bounds the changed keys waiting to be re-read; past it a full load is asked for instead.
const maxKeyChecks = 10000

// knownKeys keeps the set of every key PostgreSQL holds.
type knownKeys struct {
	e      *Engine
	set    *keyset.Set
	load   chan struct{}
	loaded chan struct{} // closed by the first successful full load
	once   sync.Once
	n      atomic.Int64 // loads finished (tests)

	mu     sync.Mutex
	checks map[secret.Digest]struct{} // changed keys to re-read
}

// changed keeps the set current with one notification of a device key, legacy username or application
// key: a new key is known at once, a deleted one forgotten, and a changed one (revoked, re-enabled, its
// expiry or rights changed) stays known until the loader has re-read it.
func (k *knownKeys) changed(c Change) {
	if (c.Table != KeyTable && c.Table != AppKeyTable) || !c.HasKey {
		return
	}
	d := c.Key
	switch c.Op {
	case "INSERT":
		k.set.Apply(d, true)
	case "DELETE":
		k.set.Apply(d, false)
	default:
		k.set.Apply(d, true)
		k.mu.Lock()
		full := len(k.checks) >= maxKeyChecks
		if !full {
			k.checks[d] = struct{}{}
		}
		k.mu.Unlock()
		if full {
			k.reload()
		}
	}
}

// reload asks the loader for a full load of the set of known keys.
func (k *knownKeys) reload() {
	select {
	case k.load <- struct{}{}:
	default:
	}
}

// loader loads the set whenever asked (reload), retrying with backoff while PostgreSQL does not answer,
// and once a second re-reads the keys whose notifications did not say whether they are still usable.
// Loads and re-reads run here only, one at a time.
func (k *knownKeys) loader(ctx context.Context) {
	e := k.e
	failLog := rate.Sometimes{Interval: 30 * time.Second}
	second, stopSecond := e.every(time.Second)
	defer stopSecond()
	resync, stopResync := e.every(keysResync)
	defer stopResync()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync:
			k.reload()
		case <-second:
			k.check(ctx)
		case <-k.load:
			backoff := 500 * time.Millisecond
			for ctx.Err() == nil {
				err := k.loadAll(ctx)
				if err == nil {
					break
				}
				failLog.Do(func() {
					e.log.Warn("loading the set of known keys failed; retrying (until it loads, every unknown key is looked up)",
						"error", err)
				})
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 30*time.Second)
			}
		}
	}
}

func (k *knownKeys) loadAll(ctx context.Context) error {
	e := k.e
	start := time.Now()
	k.set.Begin()
	l := keyset.NewLoader(k.set.Len())
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := e.store.KeyDigests(lctx, l.Add)
	cancel()
	if err != nil {
		k.set.FinishLoad(nil)
		return err
	}
	k.set.FinishLoad(l)
	k.once.Do(func() { close(k.loaded) })
	k.n.Add(1)
	e.log.Info("loaded the set of known keys", "count", k.set.Len(), "took", time.Since(start).Round(time.Millisecond)) // tests wait for it
	return nil
}

// check re-reads the keys whose notifications did not say whether they are still usable.
func (k *knownKeys) check(ctx context.Context) {
	e := k.e
	k.mu.Lock()
	if len(k.checks) == 0 {
		k.mu.Unlock()
		return
	}
	ds := make([]secret.Digest, 0, len(k.checks))
	for d := range k.checks {
		ds = append(ds, d)
	}
	clear(k.checks)
	k.mu.Unlock()
	k.set.Begin()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	found, err := e.store.LookupCredentials(qctx, ds)
	cancel()
	if err != nil {
		k.set.FinishCheck(nil)
		// Still known, which only spares them the budget: the next full load settles them.
		e.log.Debug("could not re-read changed keys for the set of known keys", "error", err)
		return
	}
	live := make(map[secret.Digest]bool, len(ds))
	for _, d := range ds {
		c, ok := found[d]
		live[d] = ok && !c.KeyRevoked
	}
	k.set.FinishCheck(live)
}
