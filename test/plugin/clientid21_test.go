//go:build mosquitto21

package plugin_test

import (
	"errors"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// Mosquitto 2.1 tells plugins whether it keeps a session that goes offline (CLIENT_OFFLINE) or ends it
// (DISCONNECT), where 2.0 leaves the plugin to presume from the clean start flag. With clientid any, an
// MQTT 5 session that resumed but asked for no expiry holds nothing, and one that started clean but asked
// for an expiry holds its id.
func TestClientIDAnyOn21FollowsTheBrokersWord(t *testing.T) {
	t.Parallel()
	if !harness.MosquittoAtLeast(2, 1, 0) {
		t.Fatalf("built with -tags mosquitto21, but the broker is %s: set IOTAUTH_MOSQUITTO to a 2.1 build (make test-compat does)", harness.MosquittoVersion())
	}
	e := newEnv(t, [2]string{"clientid", "any"})
	owner, other := e.agent("owner"), e.agent("another device")

	disconnect, err := connectAs(t, e.b, session{v5: true, clean: false, expiry: 0}, other.Key, other.Password, "resumed-no-expiry")
	if err != nil {
		t.Fatal(err)
	}
	disconnected(t, e.b, disconnect, "resumed-no-expiry")
	disconnect, err = connectAs(t, e.b, session{v5: true, clean: true}, owner.Key, owner.Password, "resumed-no-expiry")
	if err != nil {
		t.Fatalf("a session that asked for no expiry held its id: %v", err)
	}
	disconnected(t, e.b, disconnect, "resumed-no-expiry")

	disconnect, err = connectAs(t, e.b, session{v5: true, clean: true, expiry: 3600}, other.Key, other.Password, "clean-with-expiry")
	if err != nil {
		t.Fatal(err)
	}
	disconnected(t, e.b, disconnect, "clean-with-expiry")
	if _, err := connectAs(t, e.b, session{v5: true, clean: false}, owner.Key, owner.Password, "clean-with-expiry"); !errors.Is(err, errNotAuthorised) {
		t.Fatalf("another agent resumed a session the broker keeps: %v, want CONNACK not authorised", err)
	}
}
