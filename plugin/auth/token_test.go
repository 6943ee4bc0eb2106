package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
)

// fakeVerifier accepts one username and password and hands out tok; it counts its calls.
type fakeVerifier struct {
	user, pass string
	tok        Token
	prefix     string
	calls      int
}

func (f *fakeVerifier) VerifyToken(username string, password []byte, clientID string) (Token, error) {
	f.calls++
	if username != f.user || string(password) != f.pass {
		return Token{}, errors.New("bad signature")
	}
	t := f.tok
	t.ClientIDAllowed = len(clientID) > len(f.prefix) && clientID[:len(f.prefix)] == f.prefix
	return t, nil
}

// fakeDenials denies subjects at fixed times.
type fakeDenials struct {
	at     map[string]time.Time
	loaded bool
}

func (f *fakeDenials) Denied(from []string, iat time.Time) (string, bool) {
	for _, s := range from {
		if at, ok := f.at[s]; ok && !at.Before(iat) {
			return s, true
		}
	}
	return "", false
}

func (f *fakeDenials) Loaded() bool { return f.loaded }

func tokenFixture(t *testing.T) (*Authorizer, *fakeStore, *fakeVerifier, *fakeDenials, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	st := &fakeStore{}
	c, err := NewCache(cache.Options[Entry, Group]{Size: 10, TTL: time.Minute, NegativeTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeVerifier{user: TokenUsernamePrefix + "abcdefghijklmnopqrstuv", pass: "header.claims.sig", prefix: "web-",
		tok: Token{ID: "abcdefghijklmnopqrstuv", Subject: "user:u1", From: []string{"app:k1", "user:u1"},
			IssuedAt: clk.t.Add(-time.Minute), ExpiresAt: clk.t.Add(10 * time.Minute),
			Topics: []TokenTopic{{"read", "agents/+/telemetry"}, {"write", "apps/%c/out"}}}}
	d := &fakeDenials{at: map[string]time.Time{}, loaded: true}
	a := New(Config{KeyKind: secret.APIKey, ClientID: "dev-%u", Rules: mustRules(t), DBTimeout: time.Second,
		Tokens: v, Denials: d, TokenNamePrefix: "iotauth-token:", Now: clk.now}, st, c)
	return a, st, v, d, clk
}

func mustRules(t *testing.T) []acl.Template {
	t.Helper()
	r, err := acl.ParseTemplates("readwrite agents/%u/#")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAuthorizeToken(t *testing.T) {
	a, st, v, d, clk := tokenFixture(t)
	good := Credentials{Username: v.user, Password: []byte(v.pass), ClientID: "web-tab1"}
	s, err := a.Authorize(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "iotauth-token:"+v.tok.ID || s.Agent != TokenAgentPrefix+"user:u1" || s.Token == nil ||
		!s.ExpiresAt.Equal(v.tok.ExpiresAt) || !s.App() || !s.Custom() {
		t.Fatalf("session %+v", s)
	}
	set := s.ACL()
	for _, c := range []struct {
		access acl.Access
		topic  string
		want   bool
	}{
		{acl.Read, "agents/x/telemetry", true},
		{acl.Subscribe, "agents/+/telemetry", true},
		{acl.Subscribe, "$share/g/agents/+/telemetry", true},
		{acl.Subscribe, "agents/#", false},
		{acl.Subscribe, "#", false},
		{acl.Subscribe, "$SYS/#", false},
		{acl.Write, "agents/x/telemetry", false},
		{acl.Write, "apps/%c/out", true}, // exactly as granted: %c is not the client id here
		{acl.Write, "apps/web-tab1/out", false},
	} {
		if got := set.Allows(c.access, c.topic); got != c.want {
			t.Errorf("%v %q: %v, want %v", c.access, c.topic, got, c.want)
		}
	}
	if st.queries != 0 {
		t.Fatalf("%d store queries for a token", st.queries)
	}

	refusals := []struct {
		name  string
		c     Credentials
		setup func()
		want  error
		audit bool // a well-signed token: the refusal names it
	}{
		{"bad signature", Credentials{Username: v.user, Password: []byte("x.y.z"), ClientID: "web-1"}, nil, ErrTokenInvalid, false},
		{"no password", Credentials{Username: v.user, ClientID: "web-1"}, nil, ErrNoCredentials, false},
		{"password too long", Credentials{Username: v.user, Password: make([]byte, MaxTokenPasswordLen+1), ClientID: "web-1"}, nil, ErrTokenInvalid, false},
		{"client id outside the prefix", Credentials{Username: v.user, Password: good.Password, ClientID: "other-1"}, nil, ErrTokenClientID, true},
		{"empty client id", Credentials{Username: v.user, Password: good.Password}, nil, ErrTokenClientID, true},
		{"an agent's client id", Credentials{Username: v.user, Password: good.Password, ClientID: "agent-x"}, func() { v.prefix = "" }, ErrTokenClientID, true},
		{"the configured agent template", Credentials{Username: v.user, Password: good.Password, ClientID: "dev-x"}, func() { v.prefix = "" }, ErrTokenClientID, true},
		{"denied subject", good, func() { v.prefix = "web-"; d.at["app:k1"] = v.tok.IssuedAt }, ErrTokenDenied, true},
		{"deny list not loaded", good, func() { clear(d.at); d.loaded = false }, ErrDenyListNotLoaded, true},
		{"expired within the verifier's leeway", good, func() { d.loaded = true; clk.t = v.tok.ExpiresAt }, ErrTokenExpired, false},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			if r.setup != nil {
				r.setup()
			}
			_, err := a.Authorize(t.Context(), r.c)
			if !errors.Is(err, r.want) {
				t.Fatalf("err %v, want %v", err, r.want)
			}
			var tr *TokenRefused
			if errors.As(err, &tr) != r.audit || (r.audit && (tr.Subject != "user:u1" || tr.ID != v.tok.ID)) {
				t.Fatalf("refusal %#v: audited %v, want %v", err, errors.As(err, &tr), r.audit)
			}
		})
	}
	if st.queries != 0 {
		t.Fatalf("%d store queries for tokens", st.queries)
	}
}

func TestTokensOff(t *testing.T) {
	a, _, v, _, _ := tokenFixture(t)
	a.cfg.Tokens = nil
	_, err := a.Authorize(t.Context(), Credentials{Username: v.user, Password: []byte(v.pass), ClientID: "web-1"})
	if !errors.Is(err, ErrTokensOff) {
		t.Fatalf("err %v", err)
	}
	a.cfg.DeferUnknown = true
	if _, err := a.Authorize(t.Context(), Credentials{Username: v.user, Password: []byte(v.pass), ClientID: "web-1"}); !errors.Is(err, ErrTokensOff) {
		t.Fatalf("a token username was deferred to another plugin: %v", err)
	}
}

func TestRecheckToken(t *testing.T) {
	a, _, v, d, clk := tokenFixture(t)
	s, err := a.Authorize(t.Context(), Credentials{Username: v.user, Password: []byte(v.pass), ClientID: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RecheckToken(s); err != nil {
		t.Fatal(err)
	}
	d.at["pk:9"] = clk.t // another subject
	if err := a.RecheckToken(s); err != nil {
		t.Fatal(err)
	}
	d.at["user:u1"] = v.tok.IssuedAt.Add(-time.Second) // denied before it was issued: still good
	if err := a.RecheckToken(s); err != nil {
		t.Fatal(err)
	}
	d.at["user:u1"] = clk.t
	if err := a.RecheckToken(s); !errors.Is(err, ErrTokenDenied) {
		t.Fatalf("denied subject kept: %v", err)
	}
	clear(d.at)
	clk.t = v.tok.ExpiresAt
	if err := a.RecheckToken(s); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token kept: %v", err)
	}
}
