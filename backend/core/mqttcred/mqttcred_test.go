package mqttcred

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func testKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var grant = Grant{Subject: "user:1", ClientIDPrefix: "web-1-", From: []string{"user:1"},
	Topics: []Topic{{Access: "read", Pattern: "agents/+/telemetry"}}}

func TestIssueAndVerify(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	k := testKey(t)
	iss := NewIssuing(k, clock)
	c, err := iss.Issue(grant)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Username, UsernamePrefix) || !c.ExpiresAt.Equal(now.Add(DefaultTTL)) {
		t.Fatalf("credential %+v", c)
	}
	v := NewVerifying([]ed25519.PublicKey{testKey(t).Public().(ed25519.PublicKey), iss.PublicKey()}, clock)
	got, err := v.Verify(c.Username, []byte(c.Password))
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "user:1" || got.ClientIDPrefix != "web-1-" || len(got.Topics) != 1 || got.From[0] != "user:1" {
		t.Fatalf("claims %+v", got)
	}
	if !got.ClientIDAllowed("web-1-tab") || got.ClientIDAllowed("web-1-") || got.ClientIDAllowed("web-2-x") {
		t.Fatal("client id prefix not enforced")
	}
	now = now.Add(DefaultTTL + maxClockSkew + time.Second)
	if _, err := v.Verify(c.Username, []byte(c.Password)); !errors.Is(err, ErrExpired) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("expired credential: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Now()
	k := testKey(t)
	iss := NewIssuing(k, nil)
	c, err := iss.Issue(grant)
	if err != nil {
		t.Fatal(err)
	}
	other, err := iss.Issue(grant)
	if err != nil {
		t.Fatal(err)
	}
	pub := iss.PublicKey()
	sign := func(method jwt.SigningMethod, key any, claims Claims, typ string) string {
		tok := jwt.NewWithClaims(method, claims)
		tok.Header["typ"] = typ
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	id := c.Username[len(UsernamePrefix):]
	base := Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: Issuer, Subject: "user:1", Audience: jwt.ClaimStrings{Audience},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), ID: id},
		ClientIDPrefix: "web-", Topics: grant.Topics, From: grant.From}
	with := func(f func(*Claims)) Claims { c := base; f(&c); return c }
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, base).SignedString(jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name, user, pass string
	}{
		{"another token's username", other.Username, c.Password},
		{"not our username", "iotsk_live_x", c.Password},
		{"signed by another key", c.Username, sign(jwt.SigningMethodEdDSA, testKey(t), base, TokenType)},
		{"alg none", c.Username, none},
		{"HS256 keyed with the public key", c.Username, sign(jwt.SigningMethodHS256, []byte(pub), base, TokenType)},
		{"wrong typ", c.Username, sign(jwt.SigningMethodEdDSA, k, base, "JWT")},
		{"wrong audience", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"iotauth-api"} }), TokenType)},
		{"wrong issuer", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.Issuer = "someone" }), TokenType)},
		{"no expiry", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.ExpiresAt = nil }), TokenType)},
		{"issued in the future", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour)) }), TokenType)},
		{"lifetime over a day", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(25 * time.Hour)) }), TokenType)},
		{"a $ topic", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.Topics = []Topic{{Access: "read", Pattern: "$SYS/#"}} }), TokenType)},
		{"an agent's client ids", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.ClientIDPrefix = "agent-" }), TokenType)},
		{"no source subject", c.Username, sign(jwt.SigningMethodEdDSA, k, with(func(c *Claims) { c.From = nil }), TokenType)},
		{"empty password", c.Username, ""},
	}
	v := NewVerifying([]ed25519.PublicKey{pub}, nil)
	if _, err := v.Verify(c.Username, []byte(sign(jwt.SigningMethodEdDSA, k, base, TokenType))); err != nil {
		t.Fatalf("the well-formed control case is refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(tc.user, []byte(tc.pass)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("accepted (err %v)", err)
			}
		})
	}
}

func TestIssueRefusesBadGrants(t *testing.T) {
	iss := NewIssuing(testKey(t), nil)
	bad := []Grant{
		{Subject: "", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: grant.Topics},
		{Subject: "u", ClientIDPrefix: "agent-", From: []string{"user:1"}, Topics: grant.Topics},
		{Subject: "u", ClientIDPrefix: "age", From: []string{"user:1"}, Topics: grant.Topics},
		{Subject: "u", ClientIDPrefix: "a/b", From: []string{"user:1"}, Topics: grant.Topics},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: []Topic{{Access: "all", Pattern: "a"}}},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: []Topic{{Access: "read", Pattern: "a/#/b"}}},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: []Topic{{Access: "read", Pattern: "a+/b"}}},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"nocolon"}, Topics: grant.Topics},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: grant.Topics, TTL: 25 * time.Hour},
		{Subject: "u", ClientIDPrefix: "x-", From: []string{"user:1"}, Topics: grant.Topics, TTL: time.Second},
	}
	for i, g := range bad {
		if _, err := iss.Issue(g); !errors.Is(err, ErrBadGrant) {
			t.Errorf("grant %d accepted: %v", i, err)
		}
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := ParsePublicKeys(append(pubPEM, pubPEM...))
	if err != nil || len(pubs) != 2 || !pubs[0].Equal(priv.Public()) {
		t.Fatalf("keys %d, %v", len(pubs), err)
	}
	if _, err := ParsePublicKeys([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted as a public key")
	}
}

func TestIssuedAtIsTheCallersMoment(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)
	iss := NewIssuing(testKey(t), func() time.Time { return now })
	g := grant
	g.IssuedAt = now.Add(-1500 * time.Millisecond)
	c, err := iss.Issue(g)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifying([]ed25519.PublicKey{iss.PublicKey()}, func() time.Time { return now }).Verify(c.Username, []byte(c.Password))
	if err != nil || !got.IssuedAt.Time.Equal(now.Add(-2*time.Second)) {
		t.Fatalf("iat %v, %v: want the request's second", got.IssuedAt, err)
	}
	for _, at := range []time.Time{now.Add(time.Second), now.Add(-2 * MaxIssueDelay)} {
		g.IssuedAt = at
		if _, err := iss.Issue(g); !errors.Is(err, ErrBadGrant) {
			t.Errorf("IssuedAt %v accepted: %v", at, err)
		}
	}
}
