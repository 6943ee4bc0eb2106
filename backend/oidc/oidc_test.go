package oidc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

func provider(mod func(p map[string]any)) []byte {
	p := map[string]any{"name": "idp", "issuer": "https://idp.example/", "audience": "app", "jwks_url": "https://idp.example/jwks",
		"algs": []string{"RS256"}, "rules": []map[string]any{{"claim": "groups", "equals": "ops", "topics": []map[string]string{{"access": "read", "pattern": "agents/#"}}}}}
	if mod != nil {
		mod(p)
	}
	b, _ := json.Marshal(map[string]any{"providers": []any{p}})
	return b
}

func TestParseRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(p map[string]any)
		want string
	}{
		"HS256":         {func(p map[string]any) { p["algs"] = []string{"HS256"} }, "HS256"},
		"none":          {func(p map[string]any) { p["algs"] = []string{"none"} }, "none"},
		"skew":          {func(p map[string]any) { p["clock_skew_seconds"] = 301 }, "clock_skew_seconds"},
		"http jwks":     {func(p map[string]any) { p["jwks_url"] = "http://idp.example/jwks" }, "https"},
		"two jwks":      {func(p map[string]any) { p["jwks_file"] = "/x" }, "exactly one"},
		"no audience":   {func(p map[string]any) { delete(p, "audience") }, "audience"},
		"reserved":      {func(p map[string]any) { p["name"] = "iotauth" }, "name"},
		"unknown field": {func(p map[string]any) { p["jwks"] = "x" }, "unknown field"},
		"value w/ equals": {func(p map[string]any) {
			p["rules"].([]map[string]any)[0]["topics"] = []map[string]string{{"access": "read", "pattern": "a/{value}"}}
		}, "{value}"},
		"no value": {func(p map[string]any) { delete(p["rules"].([]map[string]any)[0], "equals") }, "{value}"},
		"bad pattern": {func(p map[string]any) {
			p["rules"].([]map[string]any)[0]["topics"] = []map[string]string{{"access": "read", "pattern": "a/#/b"}}
		}, "pattern"},
		"dollar": {func(p map[string]any) {
			p["rules"].([]map[string]any)[0]["topics"] = []map[string]string{{"access": "read", "pattern": "$SYS/#"}}
		}, "pattern"},
		"other template": {func(p map[string]any) {
			p["rules"].([]map[string]any)[0]["topics"] = []map[string]string{{"access": "read", "pattern": "a/{email}"}}
		}, "only {sub}"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(provider(tc.mod))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
	if _, err := Parse(provider(nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(provider(func(p map[string]any) { p["jwks_url"] = "http://127.0.0.1:9/jwks" })); err != nil {
		t.Fatalf("http on loopback refused: %v", err)
	}
}

func TestGrants(t *testing.T) {
	p := Provider{Rules: []Rule{
		{Claim: "agents", Topics: []Template{{Access: "read", Pattern: "agents/{value}/#"}}},
		{Claim: "groups", Equals: "ops", Topics: []Template{{Access: "readwrite", Pattern: "ops/{sub}"}}},
	}}
	const u1, u2 = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "3F2B8C1E-9A4D-4E6F-8B7A-1C2D3E4F5A6C"
	for name, tc := range map[string]struct {
		sub    string
		claims map[string]any
		want   string
		err    bool
	}{
		"list":        {"bob", map[string]any{"agents": []any{u1, u2}}, "read:agents/" + u1 + "/# read:agents/" + strings.ToLower(u2) + "/#", false},
		"string":      {"bob", map[string]any{"agents": u1}, "read:agents/" + u1 + "/#", false},
		"group":       {"bob", map[string]any{"groups": []any{"x", "ops"}}, "readwrite:ops/bob", false},
		"no group":    {"bob", map[string]any{"groups": "dev"}, "", false},
		"absent":      {"bob", map[string]any{}, "", false},
		"not uuid":    {"bob", map[string]any{"agents": []any{"+"}}, "", true},
		"number":      {"bob", map[string]any{"agents": 3.0}, "", true},
		"sub slash":   {"a/b", map[string]any{}, "", true},
		"sub hash":    {"#", map[string]any{}, "", true},
		"sub dollar":  {"$x", map[string]any{}, "", true},
		"sub empty":   {"", map[string]any{}, "", true},
		"mixed types": {"bob", map[string]any{"agents": []any{u1, 1.0}}, "", true},
	} {
		t.Run(name, func(t *testing.T) {
			gs, err := p.Grants(Identity{Subject: tc.sub, Claims: tc.claims})
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if err != nil {
				if !errors.Is(err, ErrMapping) {
					t.Fatalf("error %v does not wrap ErrMapping", err)
				}
				return
			}
			var got []string
			for _, g := range gs {
				got = append(got, string(g.Access)+":"+g.Filter)
				if topicfilter.Check(g.Filter) != nil {
					t.Errorf("grant %q is not a valid filter", g.Filter)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("grants %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}

// TestKeySetLimits: a JWKS larger than the cap, a redirect, and an answer that is not a key set are
// refused; symmetric keys in a JWKS are ignored; a kid-less token uses the only key of its type.
func TestKeySetLimits(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var fetches atomic.Int64
	var mode atomic.Value
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		switch mode.Load() {
		case "big":
			w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", MaxJWKSBytes) + `"}`))
		case "redirect":
			http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
		case "html":
			w.Write([]byte("<html>"))
		default:
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "k", Algorithm: "HS256"},
				{Key: pub, KeyID: "k", Algorithm: "EdDSA"},
			}})
		}
	}))
	defer srv.Close()
	var now atomic.Int64
	now.Store(time.Now().Unix())
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	cfg, err := Parse([]byte(fmt.Sprintf(`{"providers":[{"name":"p","issuer":"iss","audience":"aud","jwks_url":%q,"algs":["EdDSA"],
		"rules":[{"claim":"g","equals":"x","topics":[{"access":"read","pattern":"a/#"}]}]}]}`, srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSet(cfg, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(kid string) string {
		opts := &jose.SignerOptions{}
		var key any = priv
		if kid != "" {
			key = jose.JSONWebKey{Key: priv, KeyID: kid}
		}
		sg, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
		n := clock()
		tok, _ := jwt.Signed(sg).Claims(jwt.Claims{Issuer: "iss", Audience: jwt.Audience{"aud"}, Subject: "s",
			IssuedAt: jwt.NewNumericDate(n), Expiry: jwt.NewNumericDate(n.Add(time.Minute))}).Serialize()
		return tok
	}
	ctx := context.Background()
	for _, m := range []string{"big", "redirect", "html"} {
		mode.Store(m)
		now.Add(31)
		if _, err := s.Verify(ctx, "p", sign("k")); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v", m, err)
		}
	}
	mode.Store("ok")
	if _, err := s.Verify(ctx, "p", sign("k")); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a refetch within the interval after a failed fetch: %v", err)
	}
	now.Add(31)
	if id, err := s.Verify(ctx, "p", sign("k")); err != nil || id.Subject != "s" {
		t.Fatalf("valid token: %v %v", id, err)
	}
	if id, err := s.Verify(ctx, "p", sign("")); err != nil || id.Subject != "s" {
		t.Fatalf("kid-less token: %v %v", id, err)
	}
	if n := fetches.Load(); n != 4 {
		t.Errorf("%d fetches, want 4", n)
	}
	if _, err := s.Verify(ctx, "nope", sign("k")); !errors.Is(err, ErrUnknownProvider) {
		t.Errorf("unknown provider: %v", err)
	}

	// A JWKS file, and Replace reporting removed providers.
	dir := t.TempDir()
	f := filepath.Join(dir, "jwks.json")
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k"}}})
	os.WriteFile(f, b, 0o600)
	cfg2, err := Parse([]byte(fmt.Sprintf(`{"providers":[{"name":"q","issuer":"iss","audience":"aud","jwks_file":%q,"algs":["EdDSA"],
		"rules":[{"claim":"g","equals":"x","topics":[{"access":"read","pattern":"a/#"}]}]}]}`, f)))
	if err != nil {
		t.Fatal(err)
	}
	if removed := s.Replace(cfg2); len(removed) != 1 || removed[0] != "p" {
		t.Fatalf("removed %v", removed)
	}
	if _, err := s.Verify(ctx, "q", sign("k")); err != nil {
		t.Fatalf("JWKS file: %v", err)
	}
	if _, err := s.Verify(ctx, "p", sign("k")); !errors.Is(err, ErrUnknownProvider) {
		t.Fatalf("removed provider still verifies: %v", err)
	}
}

// FuzzGrants: whatever the claims hold, every grant is a valid filter, and a substituted value never
// adds a level or a wildcard to its template.
func FuzzGrants(f *testing.F) {
	f.Add("alice", "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "ops")
	f.Add("a/b", "+", "#")
	f.Add("$SYS", "3F2B8C1E-9A4D-4E6F-8B7A-1C2D3E4F5A6B", "")
	p := Provider{Rules: []Rule{
		{Claim: "agents", Topics: []Template{{Access: "read", Pattern: "agents/{value}/+/x"}}},
		{Claim: "groups", Equals: "ops", Topics: []Template{{Access: "readwrite", Pattern: "ops/{sub}/y"}}},
	}}
	f.Fuzz(func(t *testing.T, sub, agent, group string) {
		gs, err := p.Grants(Identity{Subject: sub, Claims: map[string]any{"agents": []any{agent}, "groups": group}})
		if err != nil {
			return
		}
		for _, g := range gs {
			if topicfilter.Check(g.Filter) != nil {
				t.Fatalf("grant %q is not a valid filter", g.Filter)
			}
			if n := strings.Count(g.Filter, "/"); n != 3 && n != 2 {
				t.Fatalf("grant %q changed the template's levels", g.Filter)
			}
			if strings.Count(g.Filter, "+") > 1 || strings.Contains(g.Filter, "#") || strings.HasPrefix(g.Filter, "ops/") && strings.Contains(g.Filter, "+") {
				t.Fatalf("grant %q gained a wildcard", g.Filter)
			}
		}
	})
}

// TestVerifyExpiryWithoutSkew: nbf and iat get the provider's skew, exp gets none (a verified token
// buys a credential); the identity carries the token's exp and an id for the audit trail: its jti, or a
// hash of the token when it has none.
func TestVerifyExpiryWithoutSkew(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f := filepath.Join(t.TempDir(), "jwks.json")
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k"}}})
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(fmt.Sprintf(`{"providers":[{"name":"p","issuer":"iss","audience":"aud","jwks_file":%q,"algs":["EdDSA"],
		"clock_skew_seconds":60,"rules":[{"claim":"g","equals":"x","topics":[{"access":"read","pattern":"a/#"}]}]}]}`, f)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_900_000_000, 0)
	s, err := NewSet(cfg, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(c jwt.Claims) string {
		sg, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "k"}}, nil)
		c.Issuer, c.Audience, c.Subject = "iss", jwt.Audience{"aud"}, "s"
		tok, err := jwt.Signed(sg).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	at := func(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(now.Add(d)) }
	ctx := context.Background()
	for name, c := range map[string]jwt.Claims{
		"expired 1 s ago": {IssuedAt: at(-time.Hour), Expiry: at(-time.Second)},
		"expires now":     {IssuedAt: at(-time.Hour), Expiry: at(0)},
	} {
		if _, err := s.Verify(ctx, "p", sign(c)); !errors.Is(err, ErrInvalidToken) || !errors.Is(err, ErrExpired) {
			t.Errorf("%s: %v, want an expired token", name, err)
		}
	}
	// nbf and iat 30 s ahead are forgiven by the 60 s skew.
	tok := sign(jwt.Claims{IssuedAt: at(30 * time.Second), NotBefore: at(30 * time.Second), Expiry: at(time.Minute), ID: "abc"})
	id, err := s.Verify(ctx, "p", tok)
	if err != nil || !id.Expiry.Equal(now.Add(time.Minute)) || id.TokenID != "jti:abc" {
		t.Fatalf("skewed iat/nbf: %+v %v", id, err)
	}
	tok = sign(jwt.Claims{IssuedAt: at(0), Expiry: at(time.Minute)})
	if id, err := s.Verify(ctx, "p", tok); err != nil || !strings.HasPrefix(id.TokenID, "sha256:") || len(id.TokenID) != len("sha256:")+64 || strings.Contains(id.TokenID, tok) {
		t.Fatalf("no jti: %q %v", id.TokenID, err)
	}
	long := sign(jwt.Claims{IssuedAt: at(0), Expiry: at(time.Minute), ID: strings.Repeat("é", 100)})
	if id, err := s.Verify(ctx, "p", long); err != nil || len(id.TokenID) > len("jti:")+maxJTILen || !utf8.ValidString(id.TokenID) {
		t.Fatalf("long jti: %d bytes, %v", len(id.TokenID), err)
	}
}
