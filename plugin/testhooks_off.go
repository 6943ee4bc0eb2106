//go:build !iotauth_testhooks

package main

import "time"

// testHook does nothing in production builds; see testhooks_on.go.
func testHook(string) {}

// testClock is the clock of the unknown-key lookup budget: nil (time.Now) in production builds.
func testClock() func() time.Time { return nil }
