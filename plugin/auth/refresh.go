package auth

import (
	"context"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// An entry served past its TTL (cache.Aged: the change feed has been up since it was fetched, see
// docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md) is queued for a refresh, which a
// background goroutine (RunRefresh) does in batches, off the broker thread. A refresh that finds the
// credential changed although no notification removed the entry means a change was not announced (or
// its notification is still on its way): the agent's entries are dropped and Refreshed is called, so that
// the plugin re-checks the agent's live sessions.

// BatchLookup reads many credentials at once (the store's LookupCredentials): digests without a row are
// absent from the map.
type BatchLookup interface {
	LookupCredentials(ctx context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error)
}

// maxRefreshPending bounds the digests waiting for a refresh; past it an aged entry is served without
// being queued (it is queued again at its next connect).
const maxRefreshPending = 8192

// DefaultRefreshRate bounds the entries refreshed per second (Config.RefreshRate). A refresh costs the
// broker process about 10 µs of CPU per entry (a batched read and its decoding, off the broker thread but
// on the same cores), so 100 a second is about 0.1 % of a core whatever the connect rate; a fleet
// whose aged connects come faster has only a sample of them refreshed. Refreshing is a safety net, not
// what keeps entries correct (the change feed is).
const DefaultRefreshRate = 100

// refreshBatch is the most digests read by one query.
const refreshBatch = 1000

// queueRefresh asks for d's entry to be refreshed; on the broker thread, so it only takes a lock.
func (a *Authorizer) queueRefresh(d secret.Digest) {
	if a.cfg.Refresh == nil {
		return
	}
	a.refreshMu.Lock()
	defer a.refreshMu.Unlock()
	if _, queued := a.refreshQ[d]; queued {
		// Already waiting: a client reconnecting in a loop spends no more of the budget than once, so it
		// cannot starve the refresh of everyone else's entries.
		return
	}
	if len(a.refreshQ) >= maxRefreshPending || !a.refreshLimit.Allow() {
		a.refreshSkipped.Add(1)
		return
	}
	a.refreshQ[d] = struct{}{}
}

// RunRefresh refreshes the queued entries every RefreshEvery until ctx ends. Without Config.Refresh it
// returns at once.
func (a *Authorizer) RunRefresh(ctx context.Context) {
	if a.cfg.Refresh == nil {
		return
	}
	t := time.NewTicker(a.cfg.RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.RefreshNow(ctx)
	}
}

// RefreshNow refreshes the queued entries now (RunRefresh's step). While the store is considered down
// they stay queued.
func (a *Authorizer) RefreshNow(ctx context.Context) {
	if a.StoreDown() {
		return
	}
	a.refreshMu.Lock()
	if len(a.refreshQ) == 0 {
		a.refreshMu.Unlock()
		return
	}
	ds := make([]secret.Digest, 0, len(a.refreshQ))
	for d := range a.refreshQ {
		ds = append(ds, d)
	}
	clear(a.refreshQ)
	a.refreshMu.Unlock()
	for start := 0; start < len(ds); start += refreshBatch {
		batch := ds[start:min(start+refreshBatch, len(ds))]
		fetched := a.cfg.Now()
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		found, err := a.cfg.Refresh.LookupCredentials(qctx, batch)
		cancel()
		if err != nil {
			// Not retried: the entries are queued again at their next connect.
			a.failLog.Do(func() {
				a.cfg.Log.Warn("refreshing cached credentials failed; they stay in use while the change feed is up", "error", err, "count", len(batch))
			})
			return
		}
		for _, d := range batch {
			a.refreshOne(d, found, fetched)
		}
	}
}

func (a *Authorizer) refreshOne(d secret.Digest, found map[secret.Digest]credential.Credential, fetched time.Time) {
	old, held := a.cache.Peek(d)
	if !held {
		return // evicted meanwhile: its next connect takes the cold path
	}
	c, ok := found[d]
	if !ok {
		a.cache.Remove(d)
		a.differed(old.Agent())
		return
	}
	e := NewEntry(c)
	if !sameEntry(&old, &e) {
		// Every entry of the agent may be out of date (a password or rule is the agent's): drop those
		// fetched before this read, then keep this one.
		a.cache.InvalidateGroup(old.Agent(), fetched.Add(-1))
		if e.Agent() != old.Agent() {
			a.cache.InvalidateGroup(e.Agent(), fetched.Add(-1))
		}
		a.cache.Add(d, e, fetched)
		a.differed(old.Agent())
		return
	}
	if old.x != nil && e.x != nil {
		// Keep what a slow hash already verified.
		e.x.verified.Store(old.x.verified.Load())
	}
	a.refreshed.Add(1)
	a.cache.Add(d, e, fetched) // not if a change was announced since fetched
}

func (a *Authorizer) differed(agent string) {
	n := a.refreshDiffered.Add(1)
	a.diffLog.Do(func() {
		a.cfg.Log.Warn("a cached credential differed from PostgreSQL without a change notification having removed it; "+
			"its agent's sessions are re-checked. If this repeats, check that the iotauth triggers are installed and enabled "+
			"(changes made with triggers disabled are not announced)", "agent", agent, "count", n)
	})
	if a.cfg.Refreshed != nil {
		a.cfg.Refreshed(agent)
	}
}

// sameEntry reports whether two entries admit the same connects with the same rules.
func sameEntry(x, y *Entry) bool {
	if x.flags != y.flags || x.expiresAt != y.expiresAt || x.Agent() != y.Agent() || x.KeyID() != y.KeyID() ||
		x.scheme != y.scheme || x.sum != y.sum || x.fingerprint() != y.fingerprint() {
		return false
	}
	var xl, yl string
	if x.x != nil {
		xl = x.x.legacyClientID
	}
	if y.x != nil {
		yl = y.x.legacyClientID
	}
	return xl == yl
}
