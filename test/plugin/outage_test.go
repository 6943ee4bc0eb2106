package plugin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// privatePostgres starts a cluster of the test's own, which it may pause and stop.
func privatePostgres(t *testing.T) *harness.Postgres {
	t.Helper()
	p, err := harness.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	if !p.Owned() {
		t.Fatal("outage tests need a cluster of their own: unset DATABASE_URL")
	}
	t.Cleanup(p.Destroy)
	return p
}

// With PostgreSQL paused (SIGSTOP) or stopped, connected agents keep publishing, a cached
// agent reconnects within stale_grace, an unknown one is refused within the DB deadline, and everything
// — including LISTEN/NOTIFY revocation — recovers without a restart.
func TestPostgresOutage(t *testing.T) {
	for _, mode := range []string{"paused", "stopped"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p := privatePostgres(t)
			dsn := p.NewDatabase(t)
			st := harness.OpenStore(t, dsn)
			live := harness.CreateAgent(t, st, "live")
			cached := harness.CreateAgent(t, st, "cached")
			unseen := harness.CreateAgent(t, st, "unseen")
			b := harness.PluginBroker(t, dsn, [2]string{"preload", "false"}, [2]string{"db_timeout", "200ms"},
				[2]string{"cache_ttl", "1s"}, [2]string{"stale_grace", "10m"}, [2]string{"negative_ttl", "1s"})
			// The first LISTEN invalidates everything cached before it (changes until then went unseen):
			// wait for it, or the cached agent's entry may be dropped after its connect and the test would
			// read that as the stale grace failing.
			if !b.WaitLog("credential change feed listening", 10*time.Second) {
				t.Fatal("the plugin never listened for credential changes")
			}

			c, lost := watch(t, b, live)
			ec := subscribeEcho(t, c, live)
			if err := connectOnce(t, b, cached.Key, cached.Password, cached.ClientID); err != nil {
				t.Fatal(err)
			}
			// Cached entries are now past cache_ttl: stale once the DB stops (LISTEN breaks); while it is
			// paused LISTEN looks healthy, so they are still trusted (docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md).
			time.Sleep(1100 * time.Millisecond)

			if mode == "paused" {
				p.Pause()
			} else if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
			outage := time.Now()

			// Unknown agents are refused, each within the deadline (plus connect overhead), while the
			// connected agent's messages keep flowing.
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
				start := time.Now()
				refused(t, connectOnce(t, b, unseen.Key, unseen.Password, unseen.ClientID), "unseen agent during outage")
				if d := time.Since(start); d > time.Second {
					t.Errorf("refusal took %v with db_timeout 200ms: the broker waited on PostgreSQL", d)
				}
				d, err := ec.roundTrip(t, c, live, 2*time.Second)
				if err != nil {
					t.Fatalf("connected agent during outage: %v", err)
				}
				if d > time.Second {
					t.Errorf("connected agent's round trip took %v during the outage: the broker thread stalled", d)
				}
			}
			if err := connectOnce(t, b, cached.Key, cached.Password, cached.ClientID); err != nil {
				t.Fatalf("cached agent refused during the outage (stale_grace 10m): %v", err)
			}
			refused(t, connectOnce(t, b, cached.Key, "iotmp_wrong", cached.ClientID), "stale entry with a wrong password")
			if !b.Alive() {
				t.Fatal("broker died")
			}

			if mode == "paused" {
				p.Resume()
			} else if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("outage lasted %v", time.Since(outage))

			// Recovery: the unseen agent gets in, and revocation through NOTIFY works again.
			deadline := time.Now().Add(15 * time.Second)
			for connectOnce(t, b, unseen.Key, unseen.Password, unseen.ClientID) != nil {
				if time.Now().After(deadline) {
					t.Fatal("unseen agent still refused 15s after PostgreSQL came back")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if mode == "stopped" && !b.WaitLog("credential change feed reconnected", 15*time.Second) {
				t.Fatal("LISTEN connection was not re-established")
			}
			start := time.Now()
			harness.Exec(t, dsn, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, live.KeyID)
			at := closedBy(t, lost, 5*time.Second, "session revoked after recovery")
			if d := at.Sub(start); d > time.Second {
				t.Errorf("revocation after recovery took %v, want ≤ 1s", d)
			}
		})
	}
}

// Mosquitto starts and listens while PostgreSQL is down, refuses agents it cannot check,
// logs a bounded trickle, and catches up by itself when PostgreSQL comes.
func TestStartsWhilePostgresDown(t *testing.T) {
	t.Parallel()
	p := privatePostgres(t)
	dsn := p.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	a := harness.CreateAgent(t, st, "early")
	st.Close()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	b := harness.PluginBroker(t, dsn, [2]string{"db_timeout", "200ms"})
	// Init waits for the preload (preload_wait 5s) only while PostgreSQL may answer: refused
	// connections end the wait at once.
	if d := time.Since(start); d > 3*time.Second || strings.Contains(b.Log(), "preload is taking longer") {
		t.Fatalf("the broker took %v to start with PostgreSQL down: the preload wait did not end early", d)
	}
	attempts := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); attempts++ {
		refused(t, connectOnce(t, b, a.Key, a.Password, a.ClientID), "agent while PostgreSQL is down")
		time.Sleep(30 * time.Millisecond)
	}
	lines := 0
	for _, l := range strings.Split(b.Log(), "\n") {
		if strings.Contains(l, "iotauth:") {
			lines++
		}
	}
	if lines > 15 {
		t.Fatalf("%d connect attempts during the outage wrote %d plugin log lines; want a rate-limited trickle (≤ 15)", attempts, lines)
	}
	t.Logf("%d attempts, %d plugin log lines", attempts, lines)

	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for connectOnce(t, b, a.Key, a.Password, a.ClientID) != nil {
		if time.Now().After(deadline) {
			t.Fatal("agent still refused 15s after PostgreSQL started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !b.WaitLog("preloaded credentials count=1", 35*time.Second) {
		t.Fatal("preload did not catch up after PostgreSQL started")
	}
}
