package api_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/token"
)

func refreshReq(tok string) req {
	return req{Method: "POST", Path: "/api/v1/auth/refresh", Body: map[string]string{"refreshToken": tok}}
}

// TestRefreshRotationIsAtomic is R1 and R2: of 20 concurrent refreshes of one token exactly one
// succeeds; the losers are replays, which revoke the whole family, so the winner's new token stops
// working too.
func TestRefreshRotationIsAtomic(t *testing.T) {
	e := newEnv(t)
	tk := e.admin()
	const n = 20
	var ok atomic.Int32
	var winner atomic.Value
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res := e.do(refreshReq(tk.Refresh))
			switch res.Status {
			case 200:
				ok.Add(1)
				var m map[string]any
				_ = json.Unmarshal(res.Body, &m)
				winner.Store(m["refreshToken"].(string))
			case 401:
			default:
				t.Errorf("unexpected %d: %s", res.Status, res.Body)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d of %d concurrent refreshes succeeded, want exactly 1", ok.Load(), n)
	}
	if e.count("refresh_tokens", "used_at IS NOT NULL") != 1 {
		t.Fatal("more than one token row spent")
	}
	// The replays revoked the family: the winner's token is dead too.
	e.expect(refreshReq(winner.Load().(string)), 401, "invalid_refresh_token")
	if e.count("refresh_tokens", "revoked_at IS NULL") != 0 {
		t.Fatal("family not revoked after replay")
	}
	if e.count("audit_events", "action = 'refresh_token_reuse'") == 0 {
		t.Fatal("replay not audited")
	}
}

// TestRefreshReuseRevokesFamily is R2 sequentially: rotate once, replay the spent token, and both the
// spent and the new token stop working, while another login's family is untouched.
func TestRefreshReuseRevokesFamily(t *testing.T) {
	e := newEnv(t)
	first := e.admin()
	other := e.login("admin@example.com", "correct horse battery")
	res := e.expect(refreshReq(first.Refresh), 200, "")
	second := res.JSON(t)["refreshToken"].(string)
	e.expect(refreshReq(first.Refresh), 401, "invalid_refresh_token")
	e.expect(refreshReq(second), 401, "invalid_refresh_token")
	e.expect(refreshReq(other.Refresh), 200, "")
}

// TestRefreshFamilyLifetime is R3: rotation does not extend a family's absolute lifetime.
func TestRefreshFamilyLifetime(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.RefreshFamilyTTL = 3 * time.Second }))
	tk := e.admin()
	famEnd := claims(t, tk.Refresh)["exp"].(float64)
	time.Sleep(1100 * time.Millisecond)
	res := e.expect(refreshReq(tk.Refresh), 200, "")
	next := res.JSON(t)["refreshToken"].(string)
	if exp := claims(t, next)["exp"].(float64); exp > famEnd {
		t.Fatalf("rotation moved the family's end from %v to %v", famEnd, exp)
	}
	time.Sleep(time.Until(time.Unix(int64(famEnd), 0)) + 100*time.Millisecond)
	e.expect(refreshReq(next), 401, "invalid_refresh_token")
}

// TestLogoutAndAccountChangesRevoke is R4 and J8: logout revokes the family; disabling a user or
// changing their password revokes all their families and their access tokens stop working.
func TestLogoutAndAccountChangesRevoke(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	ops := e.userWithRole("operator")
	// Logout.
	e.expect(req{Method: "POST", Path: "/api/v1/auth/logout", Body: map[string]string{"refreshToken": ops.Refresh}}, 204, "")
	e.expect(refreshReq(ops.Refresh), 401, "invalid_refresh_token")
	// Disable.
	ops = e.login("operator@example.com", "password-of-operator")
	var opsID string
	for _, u := range e.expect(req{Method: "GET", Path: "/api/v1/users", Token: adm.Access}, 200, "").JSON(t)["items"].([]any) {
		if u.(map[string]any)["email"] == "operator@example.com" {
			opsID = u.(map[string]any)["id"].(string)
		}
	}
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + opsID, Token: adm.Access, Body: `{"disabled": true}`}, 200, "")
	e.expect(refreshReq(ops.Refresh), 401, "invalid_refresh_token")
	e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: ops.Access}, 401, "invalid_token")
	e.expect(req{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]string{"email": "operator@example.com", "password": "password-of-operator"}}, 401, "invalid_credentials")
	// Re-enable, then change the password: old families and access tokens die, the new password works.
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + opsID, Token: adm.Access, Body: `{"disabled": false}`}, 200, "")
	ops = e.login("operator@example.com", "password-of-operator")
	time.Sleep(1100 * time.Millisecond) // access tokens carry whole-second iat
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + opsID, Token: adm.Access, Body: `{"password": "a brand new passphrase"}`}, 200, "")
	e.remember("a brand new passphrase")
	e.expect(refreshReq(ops.Refresh), 401, "invalid_refresh_token")
	e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: ops.Access}, 401, "invalid_token")
	e.login("operator@example.com", "a brand new passphrase")
	// Role comes from the database on refresh.
	fresh := e.login("operator@example.com", "a brand new passphrase")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + opsID, Token: adm.Access, Body: `{"role": "viewer"}`}, 200, "")
	res := e.expect(refreshReq(fresh.Refresh), 200, "")
	if role := claims(t, res.JSON(t)["accessToken"].(string))["role"]; role != "viewer" {
		t.Fatalf("refreshed access token has role %v, want viewer", role)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: fresh.Access}, 403, "forbidden")
}

func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestForgedTokensRefused covers J1–J4 and J6 over HTTP against an RS256 deployment: each forged token
// gets 401 invalid_token (or invalid_refresh_token on the refresh route) and changes nothing.
func TestForgedTokensRefused(t *testing.T) {
	e := newEnv(t, withRSA)
	tk := e.admin()
	_, pubPEM := rsaKeyPEM(t)
	sub := claims(t, tk.Access)["sub"].(string)
	now := time.Now()
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": "iotauth", "aud": []string{"iotauth-api"}, "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"jti": token.NewID(), "typ": "access", "role": "admin"}
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(f func(jwt.MapClaims)) jwt.MapClaims { c := base(); f(c); return c }
	// Sanity: our key and the base claims make a token the server accepts.
	e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: sign(jwt.SigningMethodRS256, rsaKey, base())}, 200, "")

	unsigned := func(alg string) string {
		h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
		p, _ := json.Marshal(base())
		return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
	}
	forged := map[string]string{
		"alg none":                        sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, base()),
		"alg NONE":                        unsigned("NONE"),
		"HS256 keyed with RSA public PEM": sign(jwt.SigningMethodHS256, pubPEM, base()),
		"no exp":                          sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { delete(c, "exp") })),
		"expired":                         sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-5 * time.Minute).Unix() })),
		"wrong iss":                       sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["iss"] = "someone-else" })),
		"wrong aud":                       sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["aud"] = "other-api" })),
		"no aud":                          sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { delete(c, "aud") })),
		"future iat":                      sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() })),
		"no typ":                          sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { delete(c, "typ") })),
		"license typ":                     sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["typ"] = "license" })),
		"unknown user":                    sign(jwt.SigningMethodRS256, rsaKey, with(func(c jwt.MapClaims) { c["sub"] = token.NewID() })),
		"refresh token as access":         tk.Refresh,
	}
	before := e.fingerprint()
	for name, tok := range forged {
		e.remember(tok)
		t.Run(name, func(t *testing.T) {
			e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: tok}, 401, "invalid_token")
			e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: tok}, 401, "invalid_token")
		})
	}
	// Access token (and forged refresh tokens) on the refresh route.
	refreshForged := map[string]string{
		"access as refresh": tk.Access,
		"refresh signed HS256 with the public PEM": sign(jwt.SigningMethodHS256, pubPEM, with(func(c jwt.MapClaims) {
			c["typ"], c["fam"] = "refresh", token.NewID()
		})),
	}
	for name, tok := range refreshForged {
		e.remember(tok)
		t.Run(name, func(t *testing.T) {
			e.expect(refreshReq(tok), 401, "invalid_refresh_token")
		})
	}
	if e.fingerprint() != before {
		t.Fatal("forged tokens changed the database")
	}
}
