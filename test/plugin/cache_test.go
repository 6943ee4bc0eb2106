package plugin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

func connectOnce(t *testing.T, b *harness.Broker, user, pass, cid string) error {
	t.Helper()
	c, err := harness.Connect(b, user, pass, cid)
	if c != nil {
		c.Disconnect(10)
	}
	return err
}

// Repeated connects of a known agent cause no query; a miss causes exactly one.
func TestCachedConnectsCauseNoQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"})
	a := e.agent("a")
	before := e.lookups()
	for i := 0; i < 10; i++ {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
	}
	// Wrong passwords for a cached key are answered from the cache too.
	for i := 0; i < 5; i++ {
		refused(t, connectOnce(t, e.b, a.Key, "iotmp_wrong", a.ClientID), "wrong password")
	}
	if n := e.lookups() - before; n != 1 {
		t.Fatalf("15 connects of one agent caused %d queries, want 1", n)
	}
}

// Unknown keys are remembered for negative_ttl, then asked again.
func TestNegativeEntriesExpire(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	e := newEnv(t, [2]string{"preload", "false"}, [2]string{"negative_ttl", ttl.String()})
	// LISTEN coming up invalidates the cache (changes before it were missed): wait for it, or the
	// negative entry may be dropped that way.
	if !e.b.WaitLog("credential change feed listening", 10*time.Second) {
		t.Fatal("the plugin's LISTEN did not come up")
	}
	unknown, _ := secret.Generate(secret.APIKey)
	cid := "agent-00000000-0000-4000-8000-000000000000"
	before := e.lookups()
	start := time.Now()
	for i := 0; i < 5; i++ {
		refused(t, connectOnce(t, e.b, unknown.Reveal(), "iotmp_x", cid), "unknown key")
	}
	if n := e.lookups() - before; n != 1 && time.Since(start) < ttl {
		t.Fatalf("5 connects with one unknown key caused %d queries, want 1", n)
	}
	// The entry expires ttl after the first lookup: connect until a connect queries again.
	for e.lookups()-before < 2 {
		if time.Since(start) > ttl+10*time.Second {
			t.Fatalf("the negative entry did not expire within %v", ttl+10*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
		refused(t, connectOnce(t, e.b, unknown.Reveal(), "iotmp_x", cid), "unknown key")
	}
	if d := time.Since(start); d < ttl {
		t.Fatalf("the negative entry was dropped after %v, before negative_ttl %v", d, ttl)
	}
}

// A key created after it was looked up (and cached as unknown) works at once: the insert's
// notification drops the negative entry.
func TestNewKeyDropsNegativeEntry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"}, [2]string{"negative_ttl", "1h"})
	a := e.agent("a")
	key, _ := secret.Generate(secret.APIKey)
	refused(t, connectOnce(t, e.b, key.Reveal(), a.Password, a.ClientID), "not yet created")
	d := secret.DigestOf(key.Reveal())
	e.exec(`INSERT INTO api_keys (agent_uuid, name, digest, prefix) VALUES ($1, 'second', $2, 'x')`, a.UUID, d[:])
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := connectOnce(t, e.b, key.Reveal(), a.Password, a.ClientID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new key still refused 2s after creation: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The cache holds at most cache_size entries: with room for 3, cycling through 6 agents
// misses every time.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"}, [2]string{"cache_size", "3"})
	var agents []harness.Agent
	for i := 0; i < 6; i++ {
		agents = append(agents, e.agent("a"))
	}
	before := e.lookups()
	for round := 0; round < 2; round++ {
		for _, a := range agents {
			if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := e.lookups() - before; n != 12 {
		t.Fatalf("2 rounds over 6 agents with cache_size 3: %d queries, want 12 (LRU evicts)", n)
	}
	// The last three are still cached.
	mark := e.lookups()
	for _, a := range agents[3:] {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.lookups() - mark; n != 0 {
		t.Fatalf("the 3 most recent agents caused %d queries, want 0", n)
	}
}

// Preload fills the cache at start, so the first connects need no query.
func TestPreloadFillsCache(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	var agents []harness.Agent
	for i := 0; i < 5; i++ {
		agents = append(agents, harness.CreateAgent(t, st, "a"))
	}
	// Plugin init waits (up to preload_wait) for the preload before Mosquitto opens its listeners, so
	// the very first connects after a start are cache hits: no waiting for the preload here.
	e := &env{t: t, dsn: dsn, st: st}
	before := e.lookups()
	b := harness.PluginBroker(t, dsn)
	e.b = b
	for _, a := range agents {
		if err := connectOnce(t, b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.lookups() - before; n != 0 {
		t.Fatalf("the first connects after a start caused %d queries, want 0 (preload is waited for)", n)
	}
	if !b.WaitLog("preloaded credentials count=5", 5*time.Second) || !b.WaitLog("start waited for the preload", time.Second) {
		t.Fatal("the log does not say that the start waited for a preload of 5 credentials")
	}
	// The wait covers the first load of the set of known keys too, so that the forged-key lookup budget is
	// in force from the first connect (until the set has loaded, every unknown key is looked up).
	log := b.Log()
	loaded, started := strings.Index(log, "loaded the set of known keys count=5"), strings.Index(log, "start waited for the preload")
	if loaded < 0 || loaded > started {
		t.Fatalf("the set of known keys was not loaded (with 5 keys) before the start (at %d, start at %d)", loaded, started)
	}
}

// Key use is recorded in api_keys.last_used_at in the background, never on the connect path.
func TestLastUsedRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var used *time.Time
		if err := harness.QueryRow(t, e.dsn, `SELECT last_used_at FROM api_keys WHERE id = $1`, a.KeyID).Scan(&used); err != nil {
			t.Fatal(err)
		}
		if used != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("last_used_at not recorded within 10s of a connect")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
