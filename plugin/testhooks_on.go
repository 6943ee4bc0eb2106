//go:build iotauth_testhooks

package main

// A queue of 4 events in the shim (4096 in production), so that the integration tests overflow it
// (TestQueuedDisconnectsAreApplied, TestMemoAdmissionsThroughAFullQueue).

// #cgo CFLAGS: -DIOTAUTH_EVENTS=4
import "C"

// testHook panics on a magic username or topic, so that the integration tests can prove a panic behind
// an export denies one request and leaves the broker running. Only in builds tagged iotauth_testhooks
// (build/mosquitto-iotauth-testhooks.so); the production plugin has no such hook.
func testHook(s string) {
	if s == "iotauth-test-panic" || s == "iotauth/test/panic" {
		panic("test hook: deliberate panic")
	}
}

// testQueueFull logs that the shim's event queue filled up, so that a test can tell it overflowed.
func testQueueFull() { writeLog(levelNotice, "test hook: event queue full") }
