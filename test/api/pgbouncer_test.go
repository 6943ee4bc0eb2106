package api_test

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// Scale-out through PgBouncer (transaction pooling, no server-side prepared statements): the REST API
// and three brokers' lookups go through it, each broker's change feed (LISTEN) goes to PostgreSQL
// directly (plugin_opt_listen_dsn). An agent provisioned over REST connects to all three, and revoking
// its key over REST closes the three sessions within a second.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPgBouncer)
	var brokers []*harness.Broker
	for range 3 {
		plugin, err := harness.PluginPath(false)
		if err != nil {
			t.Fatal(err)
		}
		brokers = append(brokers, harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin,
			Options: [][2]string{{"dsn", e.pooled}, {"listen_dsn", e.dsn}}}))
	}
	adm := e.admin()
	a := e.provision(adm.Access, "behind-pgbouncer")
	var sessions []*session
	for _, b := range brokers {
		s, err := connectWith(t, "127.0.0.1", b.Port, a.MQTT.Username, a.MQTT.Password, a.MQTT.ClientID)
		if err != nil {
			t.Fatalf("broker %d refused the agent (lookup through PgBouncer): %v", b.Port, err)
		}
		roundTrip(t, s, a.AgentUUID)
		sessions = append(sessions, s)
	}
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + a.KeyID, Token: adm.Access}, 204, "")
	revoked := time.Now()
	for i, s := range sessions {
		waitKicked(t, s, revoked, "revocation through PgBouncer, broker "+string(rune('A'+i)))
	}
	for _, b := range brokers {
		_, err := connectWith(t, "127.0.0.1", b.Port, a.MQTT.Username, a.MQTT.Password, a.MQTT.ClientID)
		refused(t, err, "revoked key behind PgBouncer")
	}
	// An application key made over REST reads the telemetry through every broker.
	k := e.createAppKey(adm.Access, map[string]any{"name": "consumer", "rights": []string{"agents:read"},
		"topics": []map[string]string{{"access": "read", "pattern": "agents/+/telemetry"}}})
	for _, b := range brokers {
		s, err := connectWith(t, "127.0.0.1", b.Port, k.Key, k.Password, "consumer-1")
		if err != nil {
			t.Fatalf("an application key refused behind PgBouncer: %v", err)
		}
		s.c.Disconnect(10)
	}
	e.expect(req{Method: "GET", Path: "/api/v1/auth/app-keys", Token: adm.Access}, 200, "")

	// A second agent provisioned after the revocation still gets in everywhere.
	b2 := e.provision(adm.Access, "second")
	for _, b := range brokers {
		s, err := connectWith(t, "127.0.0.1", b.Port, b2.MQTT.Username, b2.MQTT.Password, b2.MQTT.ClientID)
		if err != nil {
			t.Fatalf("a new agent refused behind PgBouncer: %v", err)
		}
		s.c.Disconnect(10)
	}
}
