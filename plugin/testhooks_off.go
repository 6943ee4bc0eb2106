//go:build !iotauth_testhooks

package main

// testHook does nothing in production builds; see testhooks_on.go.
func testHook(string) {}
