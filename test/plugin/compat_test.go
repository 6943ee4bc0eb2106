package plugin_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// These tests cover what differs between Mosquitto versions; make test-compat runs them against 2.0.20
// and 2.1 as well as Debian's 2.0.11 (IOTAUTH_MOSQUITTO selects the broker).

// Since 2.0.13 Mosquitto logs a refused client's id; one that carries a secret is replaced before that,
// whatever refused the connect (here: the key as client id, a wrong password, no username at all).
func TestRefusedSecretClientIDNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"}, [2]string{"defer_unknown", "true"})
	a := e.agent("a")
	for _, tc := range []struct{ name, user, pass, id string }{
		{"key as id", a.Key, a.Password, a.Key},
		{"password as id, wrong password", a.Key, "wrong", "x" + a.Password},
		{"no username (would be deferred)", "", "", a.Key},
	} {
		refused(t, connectOnce(t, e.b, tc.user, tc.pass, tc.id), tc.name)
	}
	c := harness.MustConnect(t, e.b, a) // the broker handled the refusals before this connect
	c.Disconnect(10)
	log := e.b.Log()
	if containsSecret(log, a) {
		t.Fatalf("the broker's log holds the refused client's secret:\n%s", log)
	}
	if harness.MosquittoAtLeast(2, 0, 13) && strings.Count(log, "Client iotauth-hidden-secret disconnected, not authorised") != 3 {
		t.Fatalf("want 3 refusals logged under the replaced client id (Mosquitto %s):\n%s", harness.MosquittoVersion(), log)
	}
}

// A plugin line per listener (per_listener_settings true) would initialise the plugin twice: the second
// init is refused with a message, so the broker does not start half-configured.
func TestLoadedTwiceRefused(t *testing.T) {
	t.Parallel()
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b, err := harness.LaunchBroker(harness.BrokerConfig{
		Plugin: plugin, Options: [][2]string{{"dsn", dsn}}, PerListener: true,
		Extra: []string{"listener " + strconv.Itoa(port) + " 127.0.0.1", "allow_anonymous false", "plugin " + plugin, "plugin_opt_dsn " + dsn},
	})
	if err == nil {
		b.Close()
		t.Fatal("mosquitto started with the plugin loaded twice")
	}
	if !strings.Contains(err.Error(), "the plugin is loaded a second time") {
		t.Fatalf("start error does not say the plugin was loaded twice:\n%v", err)
	}
}

// per_listener_settings true with the plugin on one listener: Mosquitto 2.0.15 and later deliver TICK,
// so revocation kicks as usual. 2.0.11 to 2.0.14 never do, and offer no way to learn the version: the
// plugin logs an error at connects (at most once a minute) instead of failing silently.
func TestPerListenerSettings(t *testing.T) {
	t.Parallel()
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin, Options: [][2]string{{"dsn", dsn}}, PerListener: true})
	a := e.agent("a")
	const noTick = "delivers no TICK event"
	if !harness.MosquittoAtLeast(2, 0, 15) {
		c := harness.MustConnect(t, e.b, a)
		c.Disconnect(10)
		time.Sleep(2100 * time.Millisecond) // the plugin waits 2 s for a first TICK after a connect
		c = harness.MustConnect(t, e.b, a)
		c.Disconnect(10)
		if !e.b.WaitLog(noTick, 2*time.Second) {
			t.Fatalf("Mosquitto %s delivered no TICK and the plugin did not say so", harness.MosquittoVersion())
		}
		return
	}
	_, lost := watch(t, e.b, a)
	start := time.Now()
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	at := closedBy(t, lost, 3*time.Second, "the revoked agent's session")
	if d := at.Sub(start); d > time.Second {
		t.Errorf("session closed after %v, want ≤ 1s", d)
	}
	if strings.Contains(e.b.Log(), noTick) {
		t.Errorf("the plugin complains about missing TICKs on Mosquitto %s", harness.MosquittoVersion())
	}
}

// A panic in a background goroutine (here the NOTIFY handler, by a test hook) is recovered and logged,
// the loop restarts, the broker keeps running and later revocations still kick (docs/security.md, M17).
func TestBackgroundPanicRestartsTheLoop(t *testing.T) {
	t.Parallel()
	e := newHooksEnv(t)
	a := e.agent("a")
	_, lost := watch(t, e.b, a)
	e.exec(`SELECT pg_notify('iotauth_credentials', '{"table":"agents","op":"UPDATE","agent":"iotauth-test-panic"}')`)
	if !e.b.WaitLog("internal error in the credential change feed; restarting it", 5*time.Second) {
		t.Fatal("the panic in the NOTIFY handler was not logged")
	}
	if !e.b.Alive() {
		t.Fatal("broker died")
	}
	start := time.Now()
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	at := closedBy(t, lost, 5*time.Second, "a session revoked after the panic")
	if d := at.Sub(start); d > 2*time.Second {
		t.Errorf("session closed after %v, want ≤ 2s", d)
	}
	refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "the revoked key")
}
