package api_test

import (
	"fmt"
	"testing"

	"github.com/iotauth/iotauth/backend/api"
)

// Found by a review of the login throttle and application keys; each failed before its fix.

// Past its budget, an address without a known device is refused before any password is checked: one
// address cannot try a password against every account (spraying), even the right one.
func TestAddressBudgetStopsSpraying(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.LoginMaxFailures = 5; c.LoginMaxFailuresPerAddr = 3 }))
	e.remember("Winter2026!x")
	e.createUser("victim@example.com", "Winter2026!x", "operator")
	for i := 0; i < 10; i++ {
		e.do(loginReq(fmt.Sprintf("user%d@example.com", i), "Winter2026!x"))
	}
	res := e.do(loginReq("victim@example.com", "Winter2026!x"))
	if res.Status != 429 {
		t.Fatalf("the right password from an address past its budget: %d, want 429", res.Status)
	}
	if res.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
}

// A disable and re-enable made in plain SQL ends the refresh tokens issued before it, as it does the
// access tokens.
func TestRefreshEndsWithADisableInSQL(t *testing.T) {
	e := newEnv(t)
	e.createUser("u@example.com", "correct horse battery", "operator")
	tk := e.login("u@example.com", "correct horse battery")
	e.exec(`UPDATE users SET disabled = true WHERE email = 'u@example.com'`)
	e.exec(`UPDATE users SET disabled = false WHERE email = 'u@example.com'`)
	e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: tk.Access}, 401, "invalid_token")
	res := e.do(req{Method: "POST", Path: "/api/v1/auth/refresh", Body: map[string]any{"refreshToken": tk.Refresh}})
	if res.Status == 200 {
		e.rememberFrom(res.JSON(t))
		t.Fatal("a refresh token issued before a disable still works after the re-enable")
	}
}

// Malformed and unknown application keys are refused without writing to the audit trail: anyone could
// fill it without authenticating.
func TestGarbageAppKeysAreNotAudited(t *testing.T) {
	e := newEnv(t)
	before := e.count("audit_events", "")
	for i := 0; i < 20; i++ {
		e.do(req{Method: "GET", Path: "/api/v1/agents", Header: map[string]string{"Authorization": "Bearer iotak_x"}})
		e.do(req{Method: "GET", Path: "/api/v1/users", Header: map[string]string{"Authorization": "Bearer iotak_"}})
	}
	if n := e.count("audit_events", "") - before; n > 0 {
		t.Fatalf("%d audit rows from 40 unauthenticated requests with made-up keys", n)
	}
}

// An account change that ends its tokens (a password change, a disable and re-enable) also forgets every
// known device: a stolen device cookie no longer gets a budget of its own.
func TestAccountChangesForgetDevices(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.LoginMaxFailures = 2 }))
	u := e.createUser("dev@example.com", "correct horse battery", "operator")
	e.remember("guess", "another long password")
	dev := e.deviceCookie(e.do(loginReq("dev@example.com", "correct horse battery")), false)
	e.exec(`UPDATE users SET disabled = true WHERE id = $1`, u.ID)
	e.exec(`UPDATE users SET disabled = false WHERE id = $1`, u.ID)
	// Spend the account's budget: a valid device cookie would not care, an outdated one must.
	for i := 0; i < 2; i++ {
		e.expect(loginReq("dev@example.com", "guess"), 401, "invalid_credentials")
	}
	e.expect(loginWith("dev@example.com", "correct horse battery", cookieHeader(dev)), 429, "login_throttled")
}
