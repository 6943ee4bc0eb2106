package plugin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// plugin_opt_dsn through PgBouncer in transaction mode and no plugin_opt_listen_dsn: LISTEN connects but
// no notification reaches it. The plugin says so (an error naming the option to set), never reports the
// feed listening, and does not grant cached entries the trust of a healthy feed: an agent whose key is
// revoked (the NOTIFY lost) is refused at its first connect after cache_ttl.
func TestFeedThroughPgBouncerWithoutListenDSN(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	dsn := pg.NewDatabase(t)
	pooled := harness.StartPgBouncer(t, dsn)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.PluginBroker(t, pooled, [2]string{"preload", "false"}, [2]string{"cache_ttl", ttl.String()},
		[2]string{"stale_grace", "0s"}, [2]string{"db_timeout", "3s"})
	if !e.b.WaitLog("Set plugin_opt_listen_dsn to a direct connection to the primary", 30*time.Second) {
		t.Fatal("the plugin did not report that its change feed receives no notifications")
	}
	a := e.agent("a")
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatalf("connect through PgBouncer: %v", err)
	}
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	time.Sleep(ttl + 500*time.Millisecond) // the precondition: a's entry is past cache_ttl
	refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "a key revoked while the feed was deaf, after cache_ttl")
	if strings.Contains(e.b.Log(), "credential change feed listening") {
		t.Fatal("the plugin reported its deaf change feed as listening")
	}
}
