package api_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/secret"
)

const appOrigin = "https://app.example.com"

// createPK creates a publishable key as the admin and returns its id and key.
func (x *exchangeEnv) createPK(adminTok string, body map[string]any) (id, key string) {
	x.t.Helper()
	res := x.expect(req{Method: "POST", Path: "/api/v1/auth/publishable-keys", Token: adminTok, Body: body}, 201, "")
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		x.t.Errorf("Cache-Control %q, want no-store", cc)
	}
	m := res.JSON(x.t)
	key = m["key"].(string)
	x.remember(key)
	if secret.Check(secret.PublishableKey, key) != nil || !regexp.MustCompile(`^iotpk_live_`).MatchString(key) {
		x.t.Fatalf("key %.14q… is not a publishable key", key)
	}
	return m["id"].(string), key
}

// TestPublishableKeys is T4 and H4 (docs/security.md): an admin creates, lists (paginated, prefixes only) and
// revokes publishable keys; a browser exchanges an IdP token with one from a listed origin only, with
// CORS for that origin only; its topics cap the credential; its providers bound which IdPs it may use;
// revoking it denies "pk:<id>" and its exchanges fail at once.
func TestPublishableKeys(t *testing.T) {
	idp, other := newTestIdP(t, jose.RS256), newTestIdP(t, jose.RS256)
	x := newExchangeEnv(t, []map[string]any{providerJSON("test", idp), providerJSON("other", other)}, nil)
	adm := x.admin()
	op := x.userWithRole("operator")
	pkBody := map[string]any{"name": "web", "origins": []string{appOrigin, "http://localhost:5173"},
		"topics": []map[string]string{{"access": "read", "pattern": "users/#"}}, "providers": []string{"test"}}
	id, key := x.createPK(adm.Access, pkBody)
	secondID, _ := x.createPK(adm.Access, map[string]any{"name": "second", "origins": []string{"https://b.example.com"},
		"topics": []map[string]string{{"access": "read", "pattern": "x/#"}}, "providers": []string{"other"}})

	// Validation and admin-only.
	for field, body := range map[string]map[string]any{
		"origins":   {"name": "w", "origins": []string{"https://app.example.com/path"}, "topics": pkBody["topics"], "providers": []string{"test"}},
		"providers": {"name": "w", "origins": []string{appOrigin}, "topics": pkBody["topics"], "providers": []string{"nope"}},
		"topics":    {"name": "w", "origins": []string{appOrigin}, "topics": []map[string]string{}, "providers": []string{"test"}},
	} {
		if p := x.expect(req{Method: "POST", Path: "/api/v1/auth/publishable-keys", Token: adm.Access, Body: body}, 400, "validation_failed").Problem(t); p.Field != field {
			t.Errorf("field %q, want %q", p.Field, field)
		}
	}
	for _, o := range []string{"http://app.example.com", "https://APP.example.com", "https://app.example.com:443", "*", "https://u@app.example.com", "https://app.example.com?x"} {
		if api.ValidOrigin(o) == "" {
			t.Errorf("origin %q accepted", o)
		}
	}
	x.expect(req{Method: "POST", Path: "/api/v1/auth/publishable-keys", Token: op.Access, Body: pkBody}, 403, "forbidden")
	list := x.expect(req{Method: "GET", Path: "/api/v1/auth/publishable-keys?limit=1", Token: adm.Access}, 200, "").JSON(t)
	items := list["items"].([]any)
	cur, _ := list["nextCursor"].(string)
	if len(items) != 1 || cur == "" || strings.Contains(string(x.do(req{Method: "GET", Path: "/api/v1/auth/publishable-keys", Token: adm.Access}).Body), key) {
		t.Fatalf("list: %d items, cursor %q (or the key is listed)", len(items), cur)
	}
	rest := x.expect(req{Method: "GET", Path: "/api/v1/auth/publishable-keys?limit=1&cursor=" + cur, Token: adm.Access}, 200, "").JSON(t)
	if n := len(rest["items"].([]any)); n != 1 || rest["nextCursor"] != nil {
		t.Fatalf("second page: %d items, cursor %v", n, rest["nextCursor"])
	}

	// The exchange from a listed origin: CORS for that origin, topics capped by the key's.
	claims := idp.claims("erin", testAudience)
	claims["groups"] = []string{"users", "ops"}
	tok := idp.token(claims)
	body := map[string]any{"provider": "test", "token": tok}
	res := x.exchange(key, body, map[string]string{"Origin": appOrigin}, 200, "")
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
		t.Errorf("Access-Control-Allow-Origin %q, want %q", got, appOrigin)
	}
	c := x.credential(res)
	if topicsOf(c) != "read:users/erin/#" || c.Subject != "oidc:test:erin" || fmt.Sprint(c.From) != "[pk:"+id+" provider:test]" {
		t.Errorf("T4: topics %q subject %q from %v", topicsOf(c), c.Subject, c.From)
	}
	x.exchange(key, body, map[string]string{"Origin": "http://localhost:5173"}, 200, "")

	// Another origin, or none: 403 and no CORS header.
	for _, o := range []string{"https://evil.example.com", "https://app.example.com.evil.example", ""} {
		h := map[string]string{}
		if o != "" {
			h["Origin"] = o
		}
		res := x.exchange(key, body, h, 403, "origin_not_allowed")
		if v := res.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("origin %q got Access-Control-Allow-Origin %q", o, v)
		}
	}
	// A provider the key does not list.
	oc := other.claims("erin", testAudience)
	oc["groups"] = "users"
	x.exchange(key, map[string]any{"provider": "other", "token": other.token(oc)}, map[string]string{"Origin": appOrigin}, 403, "provider_not_allowed")
	x.exchange(key, map[string]any{"provider": "iotauth"}, map[string]string{"Origin": appOrigin}, 400, "unknown_provider")

	// Preflight: a listed origin gets CORS, any other is refused without it.
	pre := func(origin string, status int) resp {
		t.Helper()
		r := x.do(req{Method: "OPTIONS", Path: api.ExchangePath, Header: map[string]string{"Origin": origin,
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}})
		if r.Status != status {
			t.Fatalf("preflight from %s: %d, want %d: %s", origin, r.Status, status, r.Body)
		}
		return r
	}
	r := pre(appOrigin, 204)
	if r.Header.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		r.Header.Get("Access-Control-Allow-Methods") != "POST" {
		t.Errorf("preflight headers: %v", r.Header)
	}
	for _, o := range []string{"https://evil.example.com", "null"} {
		if v := pre(o, 403).Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("refused preflight from %s carries Access-Control-Allow-Origin %q", o, v)
		}
	}

	// A publishable key does nothing else: every other route refuses it, whatever it is.
	for _, rt := range x.srv.Routes() {
		if rt.Path == api.ExchangePath {
			continue
		}
		path := strings.NewReplacer("{uuid}", "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "{id}", id).Replace(rt.Path)
		res := x.do(req{Method: rt.Method, Path: path, Token: key, Body: "{}", Header: map[string]string{"Origin": appOrigin}})
		if res.Status != 401 && res.Status != 403 {
			t.Errorf("T4: a publishable key on %s %s got %d", rt.Method, path, res.Status)
		}
	}

	// Revocation: denied subject, exchanges fail at once, preflight no longer admitted.
	x.expect(req{Method: "DELETE", Path: "/api/v1/auth/publishable-keys/" + id, Token: adm.Access}, 204, "")
	if x.count("subject_denials", "subject = $1", "pk:"+id) != 1 {
		t.Fatal("A4: revoking a publishable key did not deny pk:<id>")
	}
	x.exchange(key, body, map[string]string{"Origin": appOrigin}, 401, "invalid_publishable_key")
	pre(appOrigin, 403)
	x.expect(req{Method: "DELETE", Path: "/api/v1/auth/publishable-keys/" + id, Token: adm.Access}, 204, "")
	x.expect(req{Method: "DELETE", Path: "/api/v1/auth/publishable-keys/3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", Token: adm.Access}, 404, "not_found")
	for action, want := range map[string]int{"publishable_key_create": 2, "publishable_key_revoke": 2, "publishable_key_refused": 4} {
		if n := x.count("audit_events", "action = $1", action); n != want {
			t.Errorf("%d %s audit events, want %d", n, action, want)
		}
	}
	if n := x.count("audit_events", "action = 'token_exchange' AND actor = $1", "pk:"+id); n != 2 {
		t.Errorf("%d exchanges by the publishable key audited, want 2", n)
	}
	// A revoke in plain SQL denies as well (the trigger, as for application keys).
	x.exec(`UPDATE publishable_keys SET revoked_at = now() WHERE id = $1::uuid`, secondID)
	if x.count("subject_denials", "subject = $1", "pk:"+secondID) != 1 {
		t.Fatal("A4: a publishable key revoked in SQL did not deny pk:<id>")
	}
}
