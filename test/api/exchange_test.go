package api_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/oidc"
)

// exchangeEnv is an env with the token exchange configured: a signing key, and the providers of a
// providers document over test IdPs, whose key sets run on a clock the test moves (so that the JWKS
// refresh interval passes without sleeping).
type exchangeEnv struct {
	*env
	signer *mqttcred.Issuing
	clock  *offsetClock
	set    *oidc.Set
}

// offsetClock is real time plus an offset the test moves forward.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

const testAudience = "iotauth-test-app"

// providerJSON is one provider over idp with the test's mapping rules: each agent uuid in "agents"
// gives readwrite agents/<uuid>/#; group "ops" gives read fleet/#; group "users" gives readwrite
// users/{sub}/#.
func providerJSON(name string, idp *testIdP, algs ...string) map[string]any {
	if len(algs) == 0 {
		algs = []string{string(idp.alg)}
	}
	return map[string]any{
		"name": name, "issuer": idp.issuer, "audience": testAudience, "jwks_url": idp.jwksURL(), "algs": algs,
		"clock_skew_seconds": 30,
		"rules": []map[string]any{
			{"claim": "agents", "topics": []map[string]string{{"access": "readwrite", "pattern": "agents/{value}/#"}}},
			{"claim": "groups", "equals": "ops", "topics": []map[string]string{{"access": "read", "pattern": "fleet/#"}}},
			{"claim": "groups", "equals": "users", "topics": []map[string]string{{"access": "readwrite", "pattern": "users/{sub}/#"}}},
		},
	}
}

func newExchangeEnv(t *testing.T, providers []map[string]any, tune func(*api.Config)) *exchangeEnv {
	t.Helper()
	priv, _, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := mqttcred.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	x := &exchangeEnv{signer: mqttcred.NewIssuing(k, nil), clock: &offsetClock{}}
	doc, _ := json.Marshal(map[string]any{"providers": providers})
	cfg, err := oidc.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if x.set, err = oidc.NewSet(cfg, oidc.Options{Now: x.clock.Now}); err != nil {
		t.Fatal(err)
	}
	x.env = newEnv(t, withConfig(func(c *api.Config) {
		c.Exchange = api.ExchangeConfig{Signer: x.signer, Providers: x.set}
		if tune != nil {
			tune(c)
		}
	}))
	return x
}

// exchange posts to the token exchange.
func (x *exchangeEnv) exchange(bearer string, body map[string]any, header map[string]string, status int, code string) resp {
	x.t.Helper()
	if tok, ok := body["token"].(string); ok {
		x.remember(tok)
	}
	return x.expect(req{Method: "POST", Path: api.ExchangePath, Token: bearer, Body: body, Header: header}, status, code)
}

// credential checks a 200 answer with the broker's verifier (the public key only) and returns the
// verified claims.
func (x *exchangeEnv) credential(res resp) mqttcred.Claims {
	x.t.Helper()
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		x.t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var out struct {
		MQTT api.ExchangedMQTT `json:"mqtt"`
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		x.t.Fatal(err)
	}
	c, err := mqttcred.NewVerifying([]ed25519.PublicKey{x.signer.PublicKey()}, nil).Verify(out.MQTT.Username, []byte(out.MQTT.Password))
	if err != nil {
		x.t.Fatalf("the issued credential does not verify with the public key: %v", err)
	}
	if c.ClientIDPrefix != out.MQTT.ClientIDPrefix || !strings.HasPrefix(c.ClientIDPrefix, "x") || c.ClientIDAllowed("agent-1") {
		x.t.Errorf("client id prefix %q (answer %q)", c.ClientIDPrefix, out.MQTT.ClientIDPrefix)
	}
	if !c.ExpiresAt.Time.Equal(out.MQTT.ExpiresAt) {
		x.t.Errorf("expiresAt %v, claims %v", out.MQTT.ExpiresAt, c.ExpiresAt.Time)
	}
	if fmt.Sprint(out.MQTT.Topics) != fmt.Sprint(c.Topics) {
		x.t.Errorf("answer topics %v, credential %v", out.MQTT.Topics, c.Topics)
	}
	return c
}

func topicsOf(c mqttcred.Claims) string {
	var s []string
	for _, t := range c.Topics {
		s = append(s, t.Access+":"+t.Pattern)
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

func ttlOf(c mqttcred.Claims) time.Duration { return c.ExpiresAt.Sub(c.IssuedAt.Time) }

// TestExchangeOperator is the dashboard's exchange ({"provider": "iotauth"} with an operator's access
// token): admins and operators get readwrite agents/#, a viewer read only; ttl in seconds, default 15
// minutes, above 24 h refused; every exchange audited; without a signing key the route answers 503.
func TestExchangeOperator(t *testing.T) {
	x := newExchangeEnv(t, nil, nil)
	adm := x.admin()
	op := x.userWithRole("operator")
	viewer := x.userWithRole("viewer")
	vid := x.userID(adm.Access, "viewer@example.com")

	c := x.credential(x.exchange(op.Access, map[string]any{"provider": "iotauth"}, nil, 200, ""))
	if topicsOf(c) != "readwrite:agents/#" || ttlOf(c) != 15*time.Minute || !strings.HasPrefix(c.Subject, "user:") || len(c.From) != 1 || c.From[0] != c.Subject {
		t.Errorf("operator: topics %q ttl %v subject %q from %v", topicsOf(c), ttlOf(c), c.Subject, c.From)
	}
	c = x.credential(x.exchange(viewer.Access, map[string]any{"provider": "iotauth", "ttl": 3600}, nil, 200, ""))
	if topicsOf(c) != "read:agents/#" || ttlOf(c) != time.Hour || c.Subject != "user:"+vid || fmt.Sprint(c.From) != "[user:"+vid+"]" {
		t.Errorf("viewer: topics %q ttl %v subject %q from %v", topicsOf(c), ttlOf(c), c.Subject, c.From)
	}
	c = x.credential(x.exchange(adm.Access, map[string]any{"provider": "iotauth", "ttl": 86400}, nil, 200, ""))
	if ttlOf(c) != 24*time.Hour {
		t.Errorf("ttl 86400 gave %v", ttlOf(c))
	}
	x.exchange(adm.Access, map[string]any{"provider": "iotauth", "ttl": 86401}, nil, 400, "validation_failed")
	x.exchange(adm.Access, map[string]any{"provider": "iotauth", "ttl": 59}, nil, 400, "validation_failed")
	// A ttl of the wrong kind is the same validation error as one out of range, naming the field.
	for _, bad := range []string{`"1h"`, `"900"`, `900.5`, `900.0`, `9e2`, `-900`, `true`, `[900]`, `{"s": 900}`} {
		res := x.expect(req{Method: "POST", Path: api.ExchangePath, Token: adm.Access, Body: `{"provider": "iotauth", "ttl": ` + bad + `}`}, 400, "validation_failed")
		if p := res.Problem(t); p.Field != "ttl" || !strings.Contains(p.Detail, "whole number of seconds") {
			t.Errorf("ttl %s: field %q detail %q", bad, p.Field, p.Detail)
		}
	}
	x.credential(x.exchange(adm.Access, map[string]any{"provider": "iotauth", "ttl": nil}, nil, 200, ""))
	// topics narrows what the caller may have (the console's Watch live reads one agent); it never widens.
	one := "agents/0b6e6bd4-5c1f-4a3e-9a51-3f0d2b8c7e11/#"
	topic := func(access, pattern string) []map[string]string {
		return []map[string]string{{"access": access, "pattern": pattern}}
	}
	c = x.credential(x.exchange(op.Access, map[string]any{"provider": "iotauth", "topics": topic("read", one)}, nil, 200, ""))
	if topicsOf(c) != "read:"+one {
		t.Errorf("operator narrowed to read %s: topics %q", one, topicsOf(c))
	}
	c = x.credential(x.exchange(viewer.Access, map[string]any{"provider": "iotauth", "topics": topic("readwrite", one)}, nil, 200, ""))
	if topicsOf(c) != "read:"+one {
		t.Errorf("viewer asking readwrite %s: topics %q, want read only", one, topicsOf(c))
	}
	x.exchange(op.Access, map[string]any{"provider": "iotauth", "topics": topic("read", "users/#")}, nil, 403, "no_topics")
	for _, bad := range []any{[]map[string]string{}, topic("own", one), topic("read", "agents/#/x"), topic("read", "$SYS/#"), topic("read", "agents/%u/#")} {
		res := x.expect(req{Method: "POST", Path: api.ExchangePath, Token: adm.Access, Body: map[string]any{"provider": "iotauth", "topics": bad}}, 400, "validation_failed")
		if p := res.Problem(t); p.Field != "topics" {
			t.Errorf("topics %v: field %q detail %q", bad, p.Field, p.Detail)
		}
	}
	x.exchange(adm.Access, map[string]any{"provider": "test"}, nil, 400, "validation_failed")
	x.exchange(adm.Access, map[string]any{"provider": "iotauth", "extra": 1}, nil, 400, "invalid_json")
	x.exchange("", map[string]any{"provider": "iotauth"}, nil, 401, "authentication_required")
	if n := x.count("audit_events", "action = 'token_exchange' AND detail->>'provider' = 'iotauth'"); n != 6 {
		t.Errorf("%d exchanges audited, want 6", n)
	}

	off := newEnv(t)
	tok := off.admin()
	off.expect(req{Method: "POST", Path: api.ExchangePath, Token: tok.Access, Body: map[string]any{"provider": "iotauth"}}, 503, "token_exchange_unavailable")
}

// TestExchangeAppKey is server code exchanging an end user's IdP token with an application key
// (docs/security.md, A1, T1): the mapping's topics narrowed to the key's own, from = the key and the
// provider; a key without token:exchange gets 403; every way a token can be wrong is refused.
func TestExchangeAppKey(t *testing.T) {
	idp := newTestIdP(t, jose.RS256)
	x := newExchangeEnv(t, []map[string]any{providerJSON("test", idp)}, nil)
	adm := x.admin()
	key := x.createAppKey(adm.Access, map[string]any{"name": "backend", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "read", "pattern": "agents/+/telemetry"}, {"access": "readwrite", "pattern": "users/#"}}})
	noRight := x.createAppKey(adm.Access, map[string]any{"name": "reader", "rights": []string{"agents:read"},
		"topics": []map[string]string{{"access": "read", "pattern": "#"}}})
	agent := "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"

	claims := idp.claims("alice", testAudience)
	claims["exp"] = time.Now().Add(time.Hour).Unix() // longer than the 600 s asked: the ttl is not cut to the token's life
	claims["agents"] = []string{agent}
	claims["groups"] = []string{"ops", "users"}
	good := idp.token(claims)
	c := x.credential(x.exchange(key.Key, map[string]any{"provider": "test", "token": good, "ttl": 600}, nil, 200, ""))
	// The mapping asks for readwrite agents/<uuid>/#, read fleet/# and readwrite users/alice/#; the key
	// has read agents/+/telemetry and readwrite users/#: fleet/# goes, agents/<uuid>/# shrinks.
	if want := "read:agents/" + agent + "/telemetry readwrite:users/alice/#"; topicsOf(c) != want {
		t.Errorf("A1: topics %q, want %q", topicsOf(c), want)
	}
	if c.Subject != "oidc:test:alice" || fmt.Sprint(c.From) != "[app:"+key.ID+" provider:test]" || ttlOf(c) != 10*time.Minute {
		t.Errorf("subject %q from %v ttl %v", c.Subject, c.From, ttlOf(c))
	}
	if idp.fetches.Load() != 1 {
		t.Errorf("%d JWKS fetches for the first token, want 1", idp.fetches.Load())
	}
	x.exchange(noRight.Key, map[string]any{"provider": "test", "token": good}, nil, 403, "missing_right")
	// A1 in time: no credential outlives the key it was exchanged through.
	shortLived := x.createAppKey(adm.Access, map[string]any{"name": "short", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "readwrite", "pattern": "users/#"}}, "expiresAt": time.Now().Add(10 * time.Minute)})
	if c := x.credential(x.exchange(shortLived.Key, map[string]any{"provider": "test", "token": good, "ttl": 3600}, nil, 200, "")); ttlOf(c) > 10*time.Minute || ttlOf(c) < 9*time.Minute {
		t.Errorf("a key expiring in 10 minutes exchanged a credential for %v", ttlOf(c))
	}
	x.exchange(key.Key, map[string]any{"provider": "iotauth"}, nil, 400, "unknown_provider")
	x.exchange(key.Key, map[string]any{"provider": "other", "token": good}, nil, 400, "unknown_provider")
	x.exchange(key.Key, map[string]any{"provider": "test"}, nil, 400, "validation_failed")

	// Nothing within the key's topics: refused, not an empty credential.
	fleet := idp.claims("bob", testAudience)
	fleet["groups"] = "ops"
	x.exchange(key.Key, map[string]any{"provider": "test", "token": idp.token(fleet)}, nil, 403, "no_topics")

	mutate := func(f func(m map[string]any)) map[string]any {
		m := idp.claims("alice", testAudience)
		m["groups"] = []string{"users"}
		f(m)
		return m
	}
	now := time.Now()
	esKey := newSigningKey(t, jose.ES256)
	for name, tok := range map[string]string{
		"wrong issuer":          idp.token(mutate(func(m map[string]any) { m["iss"] = "https://evil.example/" })),
		"wrong audience":        idp.token(mutate(func(m map[string]any) { m["aud"] = "another-app" })),
		"no exp":                idp.token(mutate(func(m map[string]any) { delete(m, "exp") })),
		"expired":               idp.token(mutate(func(m map[string]any) { m["exp"] = now.Add(-2 * time.Minute).Unix() })),
		"future iat":            idp.token(mutate(func(m map[string]any) { m["iat"] = now.Add(time.Hour).Unix() })),
		"not yet valid":         idp.token(mutate(func(m map[string]any) { m["nbf"] = now.Add(time.Hour).Unix() })),
		"alg none":              unsignedToken("key-1", mutate(func(map[string]any) {})),
		"HS256 with public key": idp.hsWithPublicKey(mutate(func(map[string]any) {})),
		"alg not allowed":       signToken(t, jose.ES256, esKey, "key-1", mutate(func(map[string]any) {})),
		"garbage":               "not.a.token",
	} {
		t.Run(name, func(t *testing.T) {
			x.exchange(key.Key, map[string]any{"provider": "test", "token": tok}, nil, 401, "invalid_idp_token")
		})
	}
	// Values that would reshape a topic refuse the token, with a code of their own (not "no topics").
	for name, m := range map[string]map[string]any{
		"sub with wildcards":     mutate(func(m map[string]any) { m["sub"] = "a/#" }),
		"agents value +":         mutate(func(m map[string]any) { m["agents"] = []string{"+"} }),
		"agents value not UUID":  mutate(func(m map[string]any) { m["agents"] = "not-a-uuid" }),
		"groups not a string":    mutate(func(m map[string]any) { m["groups"] = 7 }),
		"groups list of numbers": mutate(func(m map[string]any) { m["groups"] = []int{1} }),
	} {
		if p := x.exchange(key.Key, map[string]any{"provider": "test", "token": idp.token(m)}, nil, 403, "unmappable_claims").Problem(t); !strings.Contains(p.Detail, "cannot be mapped") {
			t.Errorf("%s: detail %q", name, p.Detail)
		}
	}
	if n := idp.fetches.Load(); n != 1 {
		t.Errorf("T2: refused tokens made %d JWKS fetches in all, want the first one only", n)
	}
	if n := x.count("audit_events", "action = 'token_exchange_refused' AND actor = $1", "app-key:"+key.ID); n < 13 {
		t.Errorf("%d refused exchanges audited, want at least 13", n)
	}
	if n := x.count("audit_events", "action = 'token_exchange' AND actor = $1 AND (detail->>'topics')::int = 2 AND (detail->>'ttlSeconds')::int = 600", "app-key:"+key.ID); n != 1 {
		t.Errorf("%d successful exchanges audited with topics and ttl, want 1", n)
	}
}

// TestExchangeBoundByIdPToken: a credential never outlives the identity provider's token it was
// exchanged for (unless the provider allows it, credential_may_outlive_token), a token that expired a
// moment ago is refused although it is within the provider's clock skew, and every exchange of one
// token is audited with its jti, or a hash of the token when it has none (docs/token-exchange.md).
func TestExchangeBoundByIdPToken(t *testing.T) {
	idp := newTestIdP(t, jose.RS256)
	long := providerJSON("long", idp)
	long["credential_may_outlive_token"] = true
	x := newExchangeEnv(t, []map[string]any{providerJSON("test", idp), long}, nil)
	adm := x.admin()
	key := x.createAppKey(adm.Access, map[string]any{"name": "backend", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "readwrite", "pattern": "users/#"}}})
	tokenWith := func(exp time.Time, jti string) string {
		m := idp.claims("alice", testAudience)
		m["groups"] = "users"
		m["exp"] = exp.Unix()
		if jti != "" {
			m["jti"] = jti
		}
		return idp.token(m)
	}

	// Five minutes left, 24 h asked: the credential ends with the token, to the second.
	exp := time.Now().Add(5 * time.Minute).Truncate(time.Second)
	tok := tokenWith(exp, "jti-five-minutes")
	c := x.credential(x.exchange(key.Key, map[string]any{"provider": "test", "token": tok, "ttl": 86400}, nil, 200, ""))
	if !c.ExpiresAt.Time.Equal(exp) {
		t.Errorf("credential expires %v, the IdP token %v: it must not outlive the token", c.ExpiresAt.Time, exp)
	}
	// Asked for less than the token has left: the ttl asked.
	if c := x.credential(x.exchange(key.Key, map[string]any{"provider": "test", "token": tok, "ttl": 120}, nil, 200, "")); ttlOf(c) != 2*time.Minute {
		t.Errorf("ttl 120 within the token's life gave %v", ttlOf(c))
	}
	// The provider that allows it: the ttl asked, past the token's exp.
	if c := x.credential(x.exchange(key.Key, map[string]any{"provider": "long", "token": tok, "ttl": 3600}, nil, 200, "")); ttlOf(c) != time.Hour {
		t.Errorf("credential_may_outlive_token: ttl %v, want 1h", ttlOf(c))
	}

	// Expired 3 s ago (inside the 30 s skew), or expiring as it arrives: refused by every provider.
	for name, tk := range map[string]string{
		"expired 3 s ago": tokenWith(time.Now().Add(-3*time.Second), "jti-expired"),
		"expires now":     tokenWith(time.Now(), "jti-now"),
	} {
		for _, prov := range []string{"test", "long"} {
			res := x.exchange(key.Key, map[string]any{"provider": prov, "token": tk}, nil, 401, "invalid_idp_token")
			if p := res.Problem(t); !strings.Contains(p.Detail, "expired") {
				t.Errorf("%s via %s: detail %q does not say the token expired", name, prov, p.Detail)
			}
		}
	}
	// Less than a minute left: no credential fits within the token's life (the shortest is a minute),
	// so the default provider refuses and says why; the provider that allows it issues one.
	tk30 := tokenWith(time.Now().Add(30*time.Second), "jti-30s")
	if p := x.exchange(key.Key, map[string]any{"provider": "test", "token": tk30}, nil, 401, "invalid_idp_token").Problem(t); !strings.Contains(p.Detail, "within a minute") {
		t.Errorf("a token with 30 s left: detail %q", p.Detail)
	}
	x.credential(x.exchange(key.Key, map[string]any{"provider": "long", "token": tk30}, nil, 200, ""))
	if n := x.count("audit_events", "action = 'token_exchange' AND detail->>'idpToken' IN ('jti:jti-expired', 'jti:jti-now')"); n != 0 {
		t.Errorf("%d exchanges of expired tokens succeeded", n)
	}

	// Repeated exchanges of one token are audited with its jti; a token without one by its hash.
	if n := x.count("audit_events", "action = 'token_exchange' AND detail->>'idpToken' = 'jti:jti-five-minutes' AND detail->>'idpTokenExpiresAt' = $1", exp.UTC().Format(time.RFC3339)); n != 3 {
		t.Errorf("%d exchanges audited with the token's jti and expiry, want 3", n)
	}
	noJTI := tokenWith(time.Now().Add(10*time.Minute), "")
	for range 2 {
		x.credential(x.exchange(key.Key, map[string]any{"provider": "test", "token": noJTI}, nil, 200, ""))
	}
	sum := sha256.Sum256([]byte(noJTI))
	if n := x.count("audit_events", "action = 'token_exchange' AND detail->>'idpToken' = $1", "sha256:"+hex.EncodeToString(sum[:])); n != 2 {
		t.Errorf("%d exchanges of a token without jti audited with its hash, want 2", n)
	}
	// A refusal after the token verified names it too.
	fleet := idp.claims("bob", testAudience)
	fleet["groups"], fleet["jti"] = "ops", "jti-fleet"
	x.exchange(key.Key, map[string]any{"provider": "test", "token": idp.token(fleet)}, nil, 403, "no_topics")
	if n := x.count("audit_events", "action = 'token_exchange_refused' AND detail->>'idpToken' = 'jti:jti-fleet'"); n != 1 {
		t.Errorf("%d refusals audited with the token's jti, want 1", n)
	}
	if n := x.count("audit_events", "detail::text LIKE '%' || $1 || '%'", noJTI[:40]); n != 0 {
		t.Error("a token reached the audit trail")
	}
}

// TestExchangeJWKSRefresh is T2 (docs/security.md): an unknown kid costs at most one JWKS fetch per interval
// (30 s, on the key set's test clock), then is refused; after the provider rotates its key, the new
// kid is accepted after one refresh.
func TestExchangeJWKSRefresh(t *testing.T) {
	idp := newTestIdP(t, jose.RS256)
	x := newExchangeEnv(t, []map[string]any{providerJSON("test", idp)}, nil)
	adm := x.admin()
	key := x.createAppKey(adm.Access, map[string]any{"name": "backend", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "readwrite", "pattern": "users/#"}}})
	tok := func(kidKey *testIdP) string {
		m := idp.claims("carol", testAudience)
		m["groups"] = "users"
		return kidKey.token(m)
	}
	body := func(t string) map[string]any { return map[string]any{"provider": "test", "token": t} }
	x.credential(x.exchange(key.Key, body(tok(idp)), nil, 200, ""))
	if n := idp.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after the first token", n)
	}

	// A token signed by a key the provider never published, with an unknown kid.
	stranger := signToken(t, jose.RS256, newSigningKey(t, jose.RS256), "forged-kid", func() map[string]any {
		m := idp.claims("carol", testAudience)
		m["groups"] = "users"
		return m
	}())
	x.exchange(key.Key, body(stranger), nil, 401, "invalid_idp_token")
	if n := idp.fetches.Load(); n != 1 {
		t.Fatalf("an unknown kid within the interval fetched the JWKS (%d fetches)", n)
	}
	x.clock.advance(31 * time.Second)
	for range 5 {
		x.exchange(key.Key, body(stranger), nil, 401, "invalid_idp_token")
	}
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("five unknown-kid tokens after the interval made %d fetches in all, want exactly one more (2)", n)
	}

	idp.rotate()
	rotated := tok(idp)
	x.exchange(key.Key, body(rotated), nil, 401, "invalid_idp_token") // within the interval: not yet
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("a new kid within the interval fetched (%d)", n)
	}
	x.clock.advance(31 * time.Second)
	x.credential(x.exchange(key.Key, body(rotated), nil, 200, ""))
	x.credential(x.exchange(key.Key, body(tok(idp)), nil, 200, ""))
	if n := idp.fetches.Load(); n != 3 {
		t.Fatalf("rotation took %d fetches in all, want one more (3)", n)
	}
}

// TestExchangeAlgorithms: ES256 and EdDSA providers work; a provider configured with HS256 or none is
// refused at start.
func TestExchangeAlgorithms(t *testing.T) {
	es, ed := newTestIdP(t, jose.ES256), newTestIdP(t, jose.EdDSA)
	x := newExchangeEnv(t, []map[string]any{providerJSON("es", es), providerJSON("ed", ed)}, nil)
	adm := x.admin()
	key := x.createAppKey(adm.Access, map[string]any{"name": "backend", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "read", "pattern": "users/#"}}})
	for name, idp := range map[string]*testIdP{"es": es, "ed": ed} {
		m := idp.claims("dave", testAudience)
		m["groups"] = []string{"users"}
		c := x.credential(x.exchange(key.Key, map[string]any{"provider": name, "token": idp.token(m)}, nil, 200, ""))
		if topicsOf(c) != "read:users/dave/#" || c.Subject != "oidc:"+name+":dave" {
			t.Errorf("%s: topics %q subject %q", name, topicsOf(c), c.Subject)
		}
	}
	for _, alg := range []string{"HS256", "none", "RS512"} {
		doc, _ := json.Marshal(map[string]any{"providers": []map[string]any{providerJSON("p", es, alg)}})
		if _, err := oidc.Parse(doc); err == nil || !strings.Contains(err.Error(), alg) {
			t.Errorf("a provider allowing %s was accepted: %v", alg, err)
		}
	}
}

// TestExchangeRateLimit: exchanges are rate-limited per caller: 429 with Retry-After, audited; another
// caller is not affected.
func TestExchangeRateLimit(t *testing.T) {
	x := newExchangeEnv(t, nil, func(c *api.Config) { c.Exchange.Rate, c.Exchange.Burst = 0.01, 2 })
	adm := x.admin()
	op := x.userWithRole("operator")
	for range 2 {
		x.exchange(adm.Access, map[string]any{"provider": "iotauth"}, nil, 200, "")
	}
	res := x.exchange(adm.Access, map[string]any{"provider": "iotauth"}, nil, 429, "exchange_throttled")
	if ra := res.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q", ra)
	}
	x.exchange(op.Access, map[string]any{"provider": "iotauth"}, nil, 200, "")
	if n := x.count("audit_events", "action = 'token_exchange_refused' AND detail->>'reason' = 'rate limited'"); n != 1 {
		t.Errorf("%d rate-limited exchanges audited, want 1", n)
	}
}
