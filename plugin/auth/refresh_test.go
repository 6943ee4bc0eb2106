package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
)

// batchStore answers the background refresh from the fixture's rows, counting its queries.
type batchStore struct {
	f       *fakeStore
	queries int
	err     error
}

func (b *batchStore) LookupCredentials(_ context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error) {
	b.queries++
	if b.err != nil {
		return nil, b.err
	}
	out := map[secret.Digest]credential.Credential{}
	for _, d := range ds {
		if c, ok := b.f.rows[d]; ok {
			out[d] = c
		}
	}
	return out, nil
}

// agedFixture is a fixture whose authorizer refreshes through a batchStore, with the change feed up and
// one connect done (the entry is cached, fetched after the feed came up).
func agedFixture(t *testing.T, mutate func(*credential.Credential)) (*fixture, *batchStore, *[]string) {
	t.Helper()
	f := newFixture(t, mutate)
	b := &batchStore{f: f.st}
	var rechecked []string
	cfg := f.a.cfg
	cfg.Refresh, cfg.Refreshed = b, func(agent string) { rechecked = append(rechecked, agent) }
	f.a = New(cfg, f.st, f.a.cache)
	f.a.cache.FeedUp(f.clk.t)
	f.clk.t = f.clk.t.Add(time.Millisecond)
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatal(err)
	}
	return f, b, &rechecked
}

func (f *fixture) connect(t *testing.T) error {
	t.Helper()
	_, err := f.a.Authorize(context.Background(), f.creds())
	return err
}

// An entry older than the TTL is served without a query while the change feed is up, and refreshed in
// the background: afterwards it is fresh again.
func TestAgedEntryServedAndRefreshed(t *testing.T) {
	f, b, rechecked := agedFixture(t, nil)
	f.clk.t = f.clk.t.Add(time.Hour) // past TTL (1 min) and stale grace (10 min)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	if f.st.queries != 1 {
		t.Fatalf("%d queries on the connect path, want only the first connect's", f.st.queries)
	}
	if st := f.a.cache.Stats(); st.AgedHits != 1 {
		t.Fatalf("AgedHits = %d", st.AgedHits)
	}
	f.a.RefreshNow(context.Background())
	if b.queries != 1 || f.a.Stats().Refreshed != 1 || len(*rechecked) != 0 {
		t.Fatalf("refresh: %d queries, %+v, rechecked %v", b.queries, f.a.Stats(), *rechecked)
	}
	if _, r := f.a.cache.Get(secret.DigestOf(f.key)); r != cache.Hit {
		t.Fatalf("after the refresh the entry is %v, want Hit", r)
	}
	f.a.RefreshNow(context.Background())
	if b.queries != 1 {
		t.Fatal("a refresh with nothing queued queried the store")
	}
}

// Without the change feed the TTL applies: the connect asks the store, and nothing is queued.
func TestAgedEntryNeedsTheFeed(t *testing.T) {
	f, b, _ := agedFixture(t, nil)
	f.a.cache.FeedDown()
	f.clk.t = f.clk.t.Add(time.Hour)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	if f.st.queries != 2 {
		t.Fatalf("%d queries, want 2 (the TTL applies once the feed is down)", f.st.queries)
	}
	f.a.RefreshNow(context.Background())
	if b.queries != 0 {
		t.Fatal("an entry served within its TTL was queued for a refresh")
	}
}

// The key's expiry, which no notification announces, is checked at every connect from the aged entry.
func TestAgedEntryHonoursExpiry(t *testing.T) {
	var exp time.Time
	f, _, _ := agedFixture(t, func(c *credential.Credential) {
		exp = time.Unix(1_800_000_000, 0).Add(30 * time.Minute)
		c.KeyExpiresAt = exp
	})
	f.clk.t = exp.Add(-time.Second)
	if err := f.connect(t); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	f.clk.t = exp
	if err := f.connect(t); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
	if f.st.queries != 1 {
		t.Fatalf("%d queries, want 1", f.st.queries)
	}
}

// A revocation announced by the feed (the plugin invalidates the agent) ends the aged entry at once.
func TestAgedEntryRevokedByNotification(t *testing.T) {
	f, _, _ := agedFixture(t, nil)
	f.clk.t = f.clk.t.Add(time.Hour)
	d := secret.DigestOf(f.key)
	c := f.st.rows[d]
	c.KeyRevoked = true
	f.st.rows[d] = c
	f.a.cache.InvalidateGroup(agentA, f.clk.t)
	f.clk.t = f.clk.t.Add(time.Millisecond)
	if err := f.connect(t); !errors.Is(err, ErrRevoked) {
		t.Fatalf("connect after revocation: %v, want ErrRevoked", err)
	}
}

// A refresh that finds the credential changed although no notification came (triggers disabled, say)
// replaces the entry, drops the agent's other entries and has its sessions re-checked.
func TestRefreshFindsUnannouncedChange(t *testing.T) {
	f, _, rechecked := agedFixture(t, nil)
	f.clk.t = f.clk.t.Add(time.Hour)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	d := secret.DigestOf(f.key)
	c := f.st.rows[d]
	c.KeyRevoked = true
	f.st.rows[d] = c
	f.a.RefreshNow(context.Background())
	if len(*rechecked) != 1 || (*rechecked)[0] != agentA || f.a.Stats().RefreshDiffered != 1 {
		t.Fatalf("rechecked %v, stats %+v", *rechecked, f.a.Stats())
	}
	if err := f.connect(t); !errors.Is(err, ErrRevoked) {
		t.Fatalf("connect after the refresh: %v, want ErrRevoked", err)
	}
	if f.st.queries != 1 {
		t.Fatalf("%d queries on the connect path, want 1 (the refresh cached the revoked row)", f.st.queries)
	}
	// A key deleted without a notification: the entry is dropped, the next connect asks the store.
	f.clk.t = f.clk.t.Add(time.Hour)
	c.KeyRevoked = false
	f.st.rows[d] = c
	f.a.cache.Add(d, NewEntry(c), f.clk.t)
	f.clk.t = f.clk.t.Add(time.Hour)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	delete(f.st.rows, d)
	f.a.RefreshNow(context.Background())
	if len(*rechecked) != 2 {
		t.Fatalf("rechecked %v", *rechecked)
	}
	if err := f.connect(t); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("connect after deletion: %v, want ErrUnknownKey", err)
	}
}

// A change announced while the refresh's query ran wins over the refresh's (older) answer.
func TestRefreshLosesToARacingNotification(t *testing.T) {
	f, _, _ := agedFixture(t, nil)
	f.clk.t = f.clk.t.Add(time.Hour)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	f.a.cfg.Refresh = racing{f}
	f.a.RefreshNow(context.Background())
	if _, r := f.a.cache.Get(secret.DigestOf(f.key)); r != cache.Known {
		t.Fatalf("after a refresh that raced an invalidation the entry is %v, want Known", r)
	}
}

type racing struct{ f *fixture }

func (r racing) LookupCredentials(_ context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error) {
	r.f.a.cache.InvalidateGroup(agentA, r.f.clk.t) // announced while the query ran
	r.f.clk.t = r.f.clk.t.Add(time.Millisecond)
	return map[secret.Digest]credential.Credential{ds[0]: r.f.st.rows[ds[0]]}, nil
}

// A failed refresh leaves the entry in use and queries nothing on the connect path.
func TestRefreshFailure(t *testing.T) {
	f, b, _ := agedFixture(t, nil)
	f.clk.t = f.clk.t.Add(time.Hour)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	b.err = errors.New("connection refused")
	f.a.RefreshNow(context.Background())
	if err := f.connect(t); err != nil || f.st.queries != 1 {
		t.Fatalf("connect after a failed refresh: %v, %d queries", err, f.st.queries)
	}
}

// Refreshes are bounded per second: past the rate an aged entry is served without being queued. An
// entry already queued is not counted again, so that one client reconnecting in a loop cannot spend the
// budget of everyone else's entries.
func TestRefreshRateBounded(t *testing.T) {
	f := newFixture(t, nil)
	b := &batchStore{f: f.st}
	cfg := f.a.cfg
	cfg.Refresh, cfg.RefreshRate = b, 1
	f.a = New(cfg, f.st, f.a.cache)
	f.a.cache.FeedUp(f.clk.t)
	f.clk.t = f.clk.t.Add(time.Millisecond)
	if err := f.connect(t); err != nil {
		t.Fatal(err)
	}
	f.clk.t = f.clk.t.Add(time.Hour)
	for range 3 {
		if err := f.connect(t); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.a.Stats(); st.RefreshSkipped != 0 || len(f.a.refreshQ) != 1 {
		t.Fatalf("3 aged connects of one key: %d refreshes skipped and %d queued, want 0 and 1", st.RefreshSkipped, len(f.a.refreshQ))
	}
	if f.st.queries != 1 {
		t.Fatalf("%d queries on the connect path", f.st.queries)
	}
	for _, k := range []string{"iotsk_live_other1", "iotsk_live_other2"} {
		f.a.queueRefresh(secret.DigestOf(k))
	}
	if st := f.a.Stats(); st.RefreshSkipped != 2 || len(f.a.refreshQ) != 1 {
		t.Fatalf("two more keys at 1/s (burst 1): %d skipped and %d queued, want 2 and 1", st.RefreshSkipped, len(f.a.refreshQ))
	}
}
