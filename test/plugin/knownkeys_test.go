package plugin_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// Agents and application keys created while the broker runs, and that never connected since, get in at
// once during a flood of forged keys, however long ago they were created: the plugin holds the set of
// every key PostgreSQL holds, and known keys never spend the unknown-key lookup budget. Forged keys stay
// bounded by it. (Created keys used to be exempt for ten minutes only; the test-hook build moves the
// budget's clock 11 minutes on instead of waiting.)
func TestKeysCreatedLongBeforeAFloodGetIn(t *testing.T) {
	t.Parallel()
	e := newHooksEnv(t, [2]string{"unknown_key_lookups", "2"}, [2]string{"log_level", "debug"})
	if !e.b.WaitLog("loaded the set of known keys", 15*time.Second) {
		t.Fatal("the plugin did not load the set of known keys")
	}
	const nAgents, nApps = 20, 5
	agents := make([]harness.Agent, nAgents)
	for i := range agents {
		agents[i] = e.agent(fmt.Sprintf("created before the flood %d", i))
	}
	apps := make([]app, nApps)
	for i := range apps {
		apps[i] = e.appKey(fmt.Sprintf("created before the flood %d", i), time.Time{}, "read agents/+/telemetry")
	}
	for _, a := range agents {
		if !e.b.WaitLog("credential change handled agent="+a.UUID, 10*time.Second) {
			t.Fatalf("the notification of agent %s was not handled", a.UUID)
		}
	}
	for _, k := range apps {
		if !e.b.WaitLog("credential change handled agent="+k.ID, 10*time.Second) {
			t.Fatalf("the notification of application key %s was not handled", k.ID)
		}
	}
	// 11 minutes pass for the budget (the hook's connect is refused, after the clock moved).
	refused(t, connectOnce(t, e.b, "iotauth-test-clock-11m", "x", "clock"), "the clock hook")

	before, appsBefore := e.lookups(), e.appLookups()
	start := time.Now()
	stop := make(chan struct{})
	var flood sync.WaitGroup
	var forged atomic.Int64
	for range 2 {
		flood.Add(1)
		go func() {
			defer flood.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k, _ := secret.Generate(secret.APIKey)
				if c, err := harness.Connect(e.b, k.Reveal(), "iotmp_whatever", "forged"); err == nil {
					c.Disconnect(0)
					t.Error("a forged key was accepted")
				}
				forged.Add(1)
			}
		}()
	}
	stopFlood := sync.OnceFunc(func() { close(stop); flood.Wait() })
	defer stopFlood()
	if !e.b.WaitLog("too many lookups of unknown keys", 15*time.Second) {
		t.Fatal("the flood did not spend the lookup budget")
	}

	// Every agent and application key connects at once, during the flood.
	errs := make(chan error, nAgents+nApps)
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
				errs <- fmt.Errorf("agent %s: %w", a.UUID, err)
			}
		}()
	}
	for i, k := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := connectOnce(t, e.b, k.Key, k.Password, fmt.Sprintf("dashboard-%d", i)); err != nil {
				errs <- fmt.Errorf("application key %s: %w", k.ID, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		n++
		t.Error(err)
	}
	if n > 0 {
		t.Fatalf("%d of %d keys created 11 minutes before a forged-key flood were refused during it", n, nAgents+nApps)
	}
	stopFlood()
	elapsed := time.Since(start)
	// Device-key lookups: the agents' own (one each) and at most the budget's for forged keys (a burst of
	// 2, then 2 a second).
	spent := e.lookups() - before
	if limit := int64(nAgents) + 2 + 2*int64(elapsed/time.Second+1); spent > limit {
		t.Fatalf("%d forged keys and %d agents in %v caused %d lookups, want at most %d", forged.Load(), nAgents, elapsed, spent, limit)
	}
	if got := e.appLookups() - appsBefore; got != nApps {
		t.Fatalf("%d application-key lookups, want %d (one per key; forged keys were device keys)", got, nApps)
	}
	t.Logf("%d forged keys in %v: %d device-key lookups", forged.Load(), elapsed, spent)
}

// A key whose notification the plugin missed (here: written with the table's triggers off, as if the
// change feed had been down) becomes known when the change feed reconnects, which loads the set again:
// it then gets in during a flood of forged keys.
func TestKnownKeysReloadedWhenTheChangeFeedReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"unknown_key_lookups", "1"})
	if !e.b.WaitLog("loaded the set of known keys", 15*time.Second) {
		t.Fatal("the plugin did not load the set of known keys")
	}
	e.exec(`ALTER TABLE api_keys DISABLE TRIGGER USER`)
	missed := e.agent("notification missed")
	e.exec(`ALTER TABLE api_keys ENABLE TRIGGER USER`)

	loads := strings.Count(e.b.Log(), "loaded the set of known keys")
	// The change feed's connection is one of the plugin's background connections: end them all.
	e.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'mosquitto-iotauth' AND pid <> pg_backend_pid()`)
	if !e.b.WaitLog("credential change feed reconnected", 30*time.Second) {
		t.Fatal("the change feed did not reconnect")
	}
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(e.b.Log(), "loaded the set of known keys") == loads {
		if time.Now().After(deadline) {
			t.Fatal("the set of known keys was not loaded again after the change feed reconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			k, _ := secret.Generate(secret.APIKey)
			if c, err := harness.Connect(e.b, k.Reveal(), "iotmp_whatever", "forged"); err == nil {
				c.Disconnect(0)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	if !e.b.WaitLog("too many lookups of unknown keys", 15*time.Second) {
		t.Fatal("the flood did not spend the lookup budget")
	}
	if err := connectOnce(t, e.b, missed.Key, missed.Password, missed.ClientID); err != nil {
		t.Fatalf("an agent whose notification was missed was refused during a flood after the change feed reconnected: %v", err)
	}
}

// The set of known keys follows the store: loaded at start, a created key counted at once, a revoked
// device or application key and a deleted key dropped (iotauth_plugin_known_keys).
func TestKnownKeysFollowCreateRevokeAndDelete(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	first := harness.CreateAgent(t, st, "before the start")
	b, addr := metricsBroker(t, dsn)
	e := &env{t: t, dsn: dsn, st: st, b: b}
	const gauge = "iotauth_plugin_known_keys"
	waitSeries(t, addr, gauge, 1, 15*time.Second)
	second := e.agent("created while running")
	k := e.appKey("created while running", time.Time{}, "read agents/+/telemetry")
	waitSeries(t, addr, gauge, 3, 10*time.Second)
	if _, err := st.Keys.RevokeAPIKey(context.Background(), second.KeyID, store.AuditEvent{Actor: "test", Action: "api_key_revoke"}); err != nil {
		t.Fatal(err)
	}
	waitSeries(t, addr, gauge, 2, 10*time.Second)
	if _, err := st.Keys.RevokeAppKey(context.Background(), k.ID, store.AuditEvent{Actor: "test", Action: "app_key_revoke"}); err != nil {
		t.Fatal(err)
	}
	waitSeries(t, addr, gauge, 1, 10*time.Second)
	e.exec(`DELETE FROM api_keys WHERE id = $1`, first.KeyID)
	waitSeries(t, addr, gauge, 0, 10*time.Second)
}
