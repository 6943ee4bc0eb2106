//go:build iotauth_testhooks

package main

import (
	"strings"
	"sync/atomic"
	"time"
)

// testHooks is true in builds tagged iotauth_testhooks: the engine is handed testHook.
const testHooks = true

// clockShift is how far the test hook moved testClock ahead of the wall clock.
var clockShift atomic.Int64

// testClockPrefix starts a username that moves testClock ahead by the duration that follows it
// (iotauth-test-clock-11m), so that a test can let time pass for the lookup budget without waiting.
const testClockPrefix = "iotauth-test-clock-"

// testHook panics on a magic username or topic, so that the integration tests can prove a panic behind
// an export denies one request and leaves the broker running, and moves the budget's clock on another
// (testClockPrefix; the connect itself is refused). Only in builds tagged iotauth_testhooks
// (build/mosquitto-iotauth-testhooks.so); the production plugin has no such hook.
func testHook(s string) {
	if s == "iotauth-test-panic" || s == "iotauth/test/panic" {
		panic("test hook: deliberate panic")
	}
	if rest, ok := strings.CutPrefix(s, testClockPrefix); ok {
		if d, err := time.ParseDuration(rest); err == nil && d > 0 {
			clockShift.Add(int64(d))
		}
	}
}

// testClock is the clock of the unknown-key lookup budget: the wall clock moved on by testHook.
func testClock() func() time.Time {
	return func() time.Time { return time.Now().Add(time.Duration(clockShift.Load())) }
}
