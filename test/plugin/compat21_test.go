//go:build mosquitto21

package plugin_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// Tests of what only Mosquitto 2.1 has. make test-compat builds them in (-tags mosquitto21) for its 2.1
// broker; a 2.0 broker has no such configuration to test, so they are not built for it.

// Mosquitto 2.1 loads a plugin once (plugin_load) and attaches it to several listeners (plugin_use):
// one instance serves both, and a revocation kicks on either.
func TestPluginUseOnTwoListeners(t *testing.T) {
	t.Parallel()
	if !harness.MosquittoAtLeast(2, 1, 0) {
		t.Fatalf("built with -tags mosquitto21, but the broker is %s: set IOTAUTH_MOSQUITTO to a 2.1 build (make test-compat does)", harness.MosquittoVersion())
	}
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.StartBroker(t, harness.BrokerConfig{
		Plugin: plugin, Options: [][2]string{{"dsn", dsn}}, PerListener: true, LoadAs: "iotauth",
		Extra: []string{"listener " + strconv.Itoa(port) + " 127.0.0.1", "allow_anonymous false", "plugin_use iotauth"},
	})
	second := &harness.Broker{Port: port} // the same broker's other listener
	a, other := e.agent("a"), e.agent("other")
	_, lost := watch(t, e.b, a)
	_, lost2 := watch(t, second, other)
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = ANY($1)`, []string{a.KeyID, other.KeyID})
	closedBy(t, lost, 3*time.Second, "the revoked agent's session on the first listener")
	closedBy(t, lost2, 3*time.Second, "the revoked agent's session on the second listener")
}
