package harness

import "testing"

// TestMosquittoHasWebSockets: Debian's broker (the default) opens websockets listeners, and the probe
// says so; a broker that refuses them is reported as such (make test-compat's 2.0.20 build).
func TestMosquittoHasWebSockets(t *testing.T) {
	if MosquittoPath() == "mosquitto" && !MosquittoHasWebSockets() {
		t.Fatal("Debian's mosquitto should accept a websockets listener")
	}
	t.Logf("%s (%s): websockets %v", MosquittoPath(), MosquittoVersion(), MosquittoHasWebSockets())
}
