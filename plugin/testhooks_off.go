//go:build !iotauth_testhooks

package main

import "time"

// testHooks is false in production builds: the engine gets no hook (see testhooks_on.go).
const testHooks = false

// testHook does nothing in production builds; see testhooks_on.go.
func testHook(string) {}

// testClock is the clock of the unknown-key lookup budget: nil (the engine's clock) in production builds.
func testClock() func() time.Time { return nil }
