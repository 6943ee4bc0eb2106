package presence_test

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/bench"
	"github.com/iotauth/iotauth/test/harness"
)

// brokerSaysWhy reports whether the broker under test passes plugins why a connection ended (Mosquitto
// 2.1 does; every 2.0 passes -1, and its sessions that end without a kick or takeover read client).
func brokerSaysWhy() bool { return harness.MosquittoAtLeast(2, 1, 0) }

// TestKeepaliveAndLostConnectionReasons: a client that goes silent past 1.5 times its keep-alive, and one
// whose connection closes without DISCONNECT, end with reasons keepalive and error where the broker says
// why (Mosquitto 2.1; make test-compat), and client where it does not (2.0, docs/presence.md).
func TestKeepaliveAndLostConnectionReasons(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-reasons", "30s")
	silent := harness.CreateAgent(t, e.st, "silent")
	dropped := harness.CreateAgent(t, e.st, "dropped")
	wantKeepalive, wantLost := "keepalive", "error"
	if !brokerSaysWhy() {
		wantKeepalive, wantLost = "client", "client"
	}
	t.Logf("Mosquitto %s: expecting %s and %s", harness.MosquittoVersion(), wantKeepalive, wantLost)

	// Keep-alive 1 s and nothing sent after CONNECT: the broker drops it after 1.5 s.
	c, err := bench.Dial(b.Addr(), bench.ConnectOptions{ClientID: silent.ClientID, Username: silent.Key, Password: silent.Password,
		KeepAlive: 1, CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.waitPresence(silent.UUID, restDeadline, "online", onlineOn(1))
	e.waitPresence(silent.UUID, 10*time.Second, "offline after its keep-alive", offlineWith(wantKeepalive))

	// The socket closes without DISCONNECT.
	d, err := bench.Dial(b.Addr(), bench.ConnectOptions{ClientID: dropped.ClientID, Username: dropped.Key, Password: dropped.Password,
		KeepAlive: 60, CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	e.waitPresence(dropped.UUID, restDeadline, "online", onlineOn(1))
	d.Close()
	e.waitPresence(dropped.UUID, restDeadline, "offline after its connection closed", offlineWith(wantLost))
}
