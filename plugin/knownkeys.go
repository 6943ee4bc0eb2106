package main

import (
	"context"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/plugin/keyset"
)

// The set of known keys (plugin/keyset) lets every real key skip the unknown-key lookup budget. It is
// loaded whole when the change feed is (re-)established, after a TRUNCATE and every keysResync as a safety
// net, and kept current by notifications in between (keyChanged).

// keysResync is how often the set of known keys is loaded again although no notification asked for it:
// it drops the old digest of a key whose digest was changed in plain SQL (its notification names only
// the new one).
const keysResync = time.Hour

// maxKeyChecks bounds the changed keys waiting to be re-read; past it a full load is asked for instead.
const maxKeyChecks = 10000

// keyChanged keeps the set of known keys current with one notification of a device key, legacy username
// or application key: a new key is known at once, a deleted one forgotten, and a changed one (revoked,
// re-enabled, its expiry or rights changed) stays known until the loader has re-read it.
func (in *instance) keyChanged(c store.Change) {
	if c.Table != "api_keys" && c.Table != "app_keys" {
		return
	}
	d, ok := c.Digest()
	if !ok {
		return
	}
	switch c.Op {
	case "INSERT":
		in.keys.Apply(d, true)
	case "DELETE":
		in.keys.Apply(d, false)
	default:
		in.keys.Apply(d, true)
		in.keyChecksMu.Lock()
		full := len(in.keyChecks) >= maxKeyChecks
		if !full {
			in.keyChecks[d] = struct{}{}
		}
		in.keyChecksMu.Unlock()
		if full {
			in.reloadKeys()
		}
	}
}

// reloadKeys asks the loader for a full load of the set of known keys.
func (in *instance) reloadKeys() {
	select {
	case in.keysLoad <- struct{}{}:
	default:
	}
}

// keysLoader loads the set of known keys whenever asked (reloadKeys), retrying with backoff while
// PostgreSQL does not answer, and once a second re-reads the keys whose notifications did not say whether
// they are still usable. Loads and re-reads run here only, one at a time.
func (in *instance) keysLoader(ctx context.Context) {
	failLog := rate.Sometimes{Interval: 30 * time.Second}
	second := time.NewTicker(time.Second)
	defer second.Stop()
	resync := time.NewTicker(keysResync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			in.reloadKeys()
		case <-second.C:
			in.checkKeys(ctx)
		case <-in.keysLoad:
			backoff := 500 * time.Millisecond
			for ctx.Err() == nil {
				err := in.loadKeys(ctx)
				if err == nil {
					break
				}
				failLog.Do(func() {
					in.log.Warn("loading the set of known keys failed; retrying (until it loads, every unknown key is looked up)",
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

func (in *instance) loadKeys(ctx context.Context) error {
	start := time.Now()
	in.keys.Begin()
	l := keyset.NewLoader(in.keys.Len())
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := in.store.KeyDigests(lctx, l.Add)
	cancel()
	if err != nil {
		in.keys.FinishLoad(nil)
		return err
	}
	in.keys.FinishLoad(l)
	in.keysOnce.Do(func() { close(in.keysLoaded) })
	in.log.Info("loaded the set of known keys", "count", in.keys.Len(), "took", time.Since(start).Round(time.Millisecond)) // tests wait for it
	return nil
}

// checkKeys re-reads the keys whose notifications did not say whether they are still usable.
func (in *instance) checkKeys(ctx context.Context) {
	in.keyChecksMu.Lock()
	if len(in.keyChecks) == 0 {
		in.keyChecksMu.Unlock()
		return
	}
	ds := make([]secret.Digest, 0, len(in.keyChecks))
	for d := range in.keyChecks {
		ds = append(ds, d)
	}
	clear(in.keyChecks)
	in.keyChecksMu.Unlock()
	in.keys.Begin()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	found, err := in.store.LookupCredentials(qctx, ds)
	cancel()
	if err != nil {
		in.keys.FinishCheck(nil)
		// Still known, which only spares them the budget: the next full load settles them.
		in.log.Debug("could not re-read changed keys for the set of known keys", "error", err)
		return
	}
	live := make(map[secret.Digest]bool, len(ds))
	for _, d := range ds {
		c, ok := found[d]
		live[d] = ok && !c.KeyRevoked
	}
	in.keys.FinishCheck(live)
}
