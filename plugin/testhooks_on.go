//go:build iotauth_testhooks

package main

// testHook panics on a magic username or topic, so that the integration tests can prove a panic behind
// an export denies one request and leaves the broker running. Only in builds tagged iotauth_testhooks
// (build/mosquitto-iotauth-testhooks.so); the production plugin has no such hook.
func testHook(s string) {
	if s == "iotauth-test-panic" || s == "iotauth/test/panic" {
		panic("test hook: deliberate panic")
	}
}
