package api_test

import (
	"testing"
	"time"
)

// userID finds a user's id by email through the API.
func (e *env) userID(adminToken, email string) string {
	e.t.Helper()
	for _, u := range e.expect(req{Method: "GET", Path: "/api/v1/users", Token: adminToken}, 200, "").JSON(e.t)["items"].([]any) {
		if u.(map[string]any)["email"] == email {
			return u.(map[string]any)["id"].(string)
		}
	}
	e.t.Fatalf("no user %s", email)
	return ""
}

// TestDisableEndsAccessTokens is J8 and R4 (docs/security.md): disabling a user ends the access tokens they
// hold for good; enabling them again does not bring those tokens back, even when disable and re-enable
// happen within the token's own second. A fresh login right after the re-enable works, and the rule
// holds for plain SQL writers too (the database keeps it).
func TestDisableEndsAccessTokens(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	ops := e.userWithRole("operator")
	id := e.userID(adm.Access, "operator@example.com")
	me := func(tok string) req { return req{Method: "GET", Path: "/api/v1/auth/me", Token: tok} }
	provKey := func(tok string) req { return req{Method: "POST", Path: "/api/v1/provision/keys", Token: tok} }
	patch := func(body string) req {
		return req{Method: "PATCH", Path: "/api/v1/users/" + id, Token: adm.Access, Body: body}
	}
	e.expect(me(ops.Access), 200, "")

	e.expect(patch(`{"disabled": true}`), 200, "")
	e.expect(me(ops.Access), 401, "invalid_token")
	e.expect(patch(`{"disabled": false}`), 200, "")
	e.expect(me(ops.Access), 401, "invalid_token")
	e.expect(provKey(ops.Access), 401, "invalid_token")

	// A login right after the re-enable gets a token that works at once.
	fresh := e.login("operator@example.com", "password-of-operator")
	e.expect(me(fresh.Access), 200, "")
	e.expect(provKey(fresh.Access), 201, "")

	// Plain SQL: the trigger moves tokens_valid_after just the same.
	e.exec(`UPDATE users SET disabled = true WHERE id = $1::uuid`, id)
	e.exec(`UPDATE users SET disabled = false WHERE id = $1::uuid`, id)
	e.expect(me(fresh.Access), 401, "invalid_token")

	// A token issued well before the disable (not in its second) is refused too, and so is a token
	// issued before a password change.
	old := e.login("operator@example.com", "password-of-operator")
	time.Sleep(1100 * time.Millisecond)
	e.expect(patch(`{"disabled": true}`), 200, "")
	e.expect(patch(`{"disabled": false}`), 200, "")
	e.expect(me(old.Access), 401, "invalid_token")
	old = e.login("operator@example.com", "password-of-operator")
	e.expect(patch(`{"password": "another good passphrase"}`), 200, "")
	e.remember("another good passphrase")
	e.expect(me(old.Access), 401, "invalid_token")
	e.expect(me(e.login("operator@example.com", "another good passphrase").Access), 200, "")
}
