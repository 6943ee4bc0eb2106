package plugin_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// listenRole gives the plugin's change feed a role of its own (plugin_opt_listen_dsn), so that a test can
// hold LISTEN down (NOLOGIN, then end its backends) while lookups go on. It returns the feed's DSN.
func listenRole(t *testing.T, dsn string) (string, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	role := "feed_" + strings.TrimPrefix(u.Path, "/")
	harness.Exec(t, dsn, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		harness.Exec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
	})
	u.User = url.User(role)
	return u.String(), role
}

// Intermittent agents: while LISTEN is up, an agent's entry older than cache_ttl is served without a
// query (every change would have arrived by NOTIFY); a revocation still kicks and refuses at once; with
// LISTEN down the TTL applies again, and an entry fetched during the gap is not trusted past its TTL
// after LISTEN is back.
func TestAgedEntriesWhileListenIsUp(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	dsn := pg.NewDatabase(t)
	feedDSN, role := listenRole(t, dsn)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.PluginBroker(t, dsn, [2]string{"preload", "false"}, [2]string{"cache_ttl", ttl.String()},
		[2]string{"stale_grace", "0s"}, [2]string{"listen_dsn", feedDSN}, [2]string{"log_level", "debug"},
		[2]string{"db_timeout", "3s"}) // generous: the machine is shared; the test counts lookups, not their speed
	if !e.b.WaitLog("credential change feed listening", 15*time.Second) {
		t.Fatal("the plugin's LISTEN did not come up")
	}
	a, b := e.agent("a"), e.agent("b")
	// Their creation's notifications invalidate what is cached for them when they arrive: let them all
	// arrive first (they are handled in order, so the next agent's means a's and b's are done).
	sentinel := e.agent("sentinel")
	if !e.b.WaitLog("credential change handled agent="+sentinel.UUID, 15*time.Second) {
		t.Fatal("the plugin did not handle the agents' notifications")
	}
	connect := func(ag harness.Agent) {
		t.Helper()
		if err := connectOnce(t, e.b, ag.Key, ag.Password, ag.ClientID); err != nil {
			t.Fatalf("connect %s: %v", ag.UUID, err)
		}
	}
	// pastTTL lets cache_ttl pass (the precondition; what is asserted is the count of lookups), and the
	// background refresh (every second) of an entry served past it: a refreshed entry is fresh again.
	pastTTL := func() { time.Sleep(ttl + 1500*time.Millisecond) }

	before := e.lookups()
	connect(a)
	connect(b)
	for range 2 {
		pastTTL()
		connect(a)
		connect(b)
	}
	if n := e.lookups() - before; n != 2 {
		t.Fatalf("%d lookups for two agents reconnecting twice after cache_ttl with LISTEN up, want 2 (the first connects)", n)
	}

	// A revocation while a's entry is aged: its live session is kicked and its next connect refused.
	_, lost := watch(t, e.b, a)
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE agent_uuid = $1::uuid`, a.UUID)
	closedBy(t, lost, 10*time.Second, "the session of a key revoked while its entry was aged")
	refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "a key revoked while its entry was aged")

	// LISTEN down (and held down): the TTL applies again.
	harness.Exec(t, dsn, `ALTER ROLE `+role+` NOLOGIN`)
	harness.Exec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
	if !e.b.WaitLog("credential change feed (LISTEN) down", 15*time.Second) {
		t.Fatal("the plugin did not notice LISTEN going down")
	}
	before = e.lookups()
	pastTTL()
	connect(b)
	if n := e.lookups() - before; n != 1 {
		t.Fatalf("%d lookups for an agent reconnecting after cache_ttl with LISTEN down, want 1", n)
	}
	connect(b) // within the TTL of the entry just fetched: no lookup
	if n := e.lookups() - before; n != 1 {
		t.Fatalf("%d lookups, want 1 (a fresh entry is a hit)", n)
	}

	// LISTEN back: b's entry was fetched during the gap, so it keeps its TTL; the next one is trusted.
	harness.Exec(t, dsn, `ALTER ROLE `+role+` LOGIN`)
	if !e.b.WaitLog("credential change feed reconnected", 30*time.Second) {
		t.Fatal("the change feed did not reconnect")
	}
	pastTTL()
	connect(b)
	if n := e.lookups() - before; n != 2 {
		t.Fatalf("%d lookups, want 2: an entry fetched while LISTEN was down must not outlive cache_ttl after it is back", n)
	}
	pastTTL()
	connect(b)
	if n := e.lookups() - before; n != 2 {
		t.Fatalf("%d lookups, want 2: an entry fetched after LISTEN came back is trusted past cache_ttl", n)
	}
}
