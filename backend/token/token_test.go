package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("k3J9vQx2Lr8ZpT5mWc7Yb1Hn4Gd6Fs0AeUiOoPlKjHgF")

func hsManager(t *testing.T, now func() time.Time) *Manager {
	t.Helper()
	m, err := New(Config{Secret: testSecret, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func rsaPair(t *testing.T) (*rsa.PrivateKey, []byte, []byte) {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	return rsaKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

func edPair(t *testing.T) ([]byte, []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pder, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder})
}

func TestIssueAndParseEachAlgorithm(t *testing.T) {
	_, rsaPriv, rsaPub := rsaPair(t)
	edPriv, edPub := edPair(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		alg  string
	}{
		{"HS256", Config{Secret: testSecret}, "HS256"},
		{"RS256", Config{PrivateKeyPEM: rsaPriv, PublicKeyPEM: rsaPub}, "RS256"},
		{"RS256 without public key", Config{PrivateKeyPEM: rsaPriv}, "RS256"},
		{"EdDSA", Config{PrivateKeyPEM: edPriv, PublicKeyPEM: edPub}, "EdDSA"},
		{"EdDSA one-line PEM", Config{PrivateKeyPEM: NormalizePEM(strings.ReplaceAll(string(edPriv), "\n", `\n`))}, "EdDSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if m.Algorithm() != tc.alg {
				t.Fatalf("algorithm %s, want %s", m.Algorithm(), tc.alg)
			}
			at, exp, err := m.IssueAccess("u1", "admin")
			if err != nil {
				t.Fatal(err)
			}
			a, err := m.ParseAccess(at)
			if err != nil {
				t.Fatal(err)
			}
			if a.UserID != "u1" || a.Role != "admin" || !a.Expires.Equal(exp) {
				t.Fatalf("got %+v", a)
			}
			// J3: expiresIn equals exp − iat.
			if a.Expires.Sub(a.IssuedAt) != m.AccessTTL() {
				t.Fatalf("exp-iat = %s, want %s", a.Expires.Sub(a.IssuedAt), m.AccessTTL())
			}
			rt, err := m.IssueRefresh("u1", NewID(), "fam", time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			r, err := m.ParseRefresh(rt)
			if err != nil || r.Family != "fam" || r.UserID != "u1" {
				t.Fatalf("refresh %+v %v", r, err)
			}
		})
	}
}

// TestWeakKeysRefused proves J5: short or repetitive HMAC secrets, small RSA keys, mismatched pairs and
// ambiguous configuration are refused, with advice on how to make a good key.
func TestWeakKeysRefused(t *testing.T) {
	_, rsaPriv, _ := rsaPair(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	smallPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	_, otherPub := edPair(t)
	edPriv, _ := edPair(t)
	for _, tc := range []struct {
		name   string
		cfg    Config
		advice string
	}{
		{"nothing configured", Config{}, "openssl rand"},
		{"6-byte secret", Config{Secret: []byte("secret")}, "openssl rand -base64 48"},
		{"31-byte secret", Config{Secret: []byte(strings.Repeat("ab", 15) + "c")}, "openssl rand -base64 48"},
		{"32 repetitive bytes", Config{Secret: []byte(strings.Repeat("abcd", 8))}, "openssl rand -base64 48"},
		{"RSA 1024", Config{PrivateKeyPEM: smallPEM}, "rsa_keygen_bits"},
		{"public key only", Config{PublicKeyPEM: otherPub}, "openssl genpkey"},
		{"mismatched pair", Config{PrivateKeyPEM: edPriv, PublicKeyPEM: otherPub}, "pubout"},
		{"secret and pair", Config{Secret: testSecret, PrivateKeyPEM: rsaPriv}, "choose one"},
		{"garbage PEM", Config{PrivateKeyPEM: []byte("not a key")}, "openssl genpkey"},
		{"leeway too large", Config{Secret: testSecret, Leeway: 5 * time.Minute}, "leeway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.advice) {
				t.Fatalf("error %q does not say %q", err, tc.advice)
			}
		})
	}
}

func segment(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func validClaims(now time.Time) Claims {
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "iotauth", Subject: "u1", Audience: jwt.ClaimStrings{"iotauth-api"},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), ID: "j1",
		},
		Type: TypeAccess, Role: "admin",
	}
}

// TestForgedTokensRejected covers J1–J4, J6 and J7 for the HS256 and RS256 managers.
func TestForgedTokensRejected(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	hs := hsManager(t, clock)
	_, rsaPriv, rsaPub := rsaPair(t)
	rs, err := New(Config{PrivateKeyPEM: rsaPriv, PublicKeyPEM: rsaPub, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, c jwt.Claims, hdr map[string]any) string {
		tok := jwt.NewWithClaims(method, c)
		for k, v := range hdr {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	mod := func(f func(*Claims)) Claims { c := validClaims(now); f(&c); return c }
	attackerKey, _ := rsa.GenerateKey(rand.Reader, 2048)

	// A sanity check that the unmodified claims pass, so each case below fails for its own reason.
	if _, err := hs.ParseAccess(sign(jwt.SigningMethodHS256, testSecret, validClaims(now), nil)); err != nil {
		t.Fatalf("valid HS256 token rejected: %v", err)
	}
	if _, err := rs.ParseAccess(sign(jwt.SigningMethodRS256, rsaKey, validClaims(now), nil)); err != nil {
		t.Fatalf("valid RS256 token rejected: %v", err)
	}
	noneHdr := func(alg string) string {
		return segment(map[string]string{"alg": alg, "typ": "JWT"}) + "." + segment(validClaims(now)) + "."
	}
	cases := []struct {
		name string
		m    *Manager
		tok  string
	}{
		{"alg none", hs, sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims(now), nil)},
		{"alg NONE", hs, noneHdr("NONE")},
		{"alg None", rs, noneHdr("None")},
		{"HS256 signed with the RSA public key PEM", rs, sign(jwt.SigningMethodHS256, rsaPub, validClaims(now), nil)},
		{"HS512 with the right secret", hs, sign(jwt.SigningMethodHS512, testSecret, validClaims(now), nil)},
		{"RS256 signed by another key", rs, sign(jwt.SigningMethodRS256, attackerKey, validClaims(now), nil)},
		{"RS256 with jku and kid pointing elsewhere", rs, sign(jwt.SigningMethodRS256, attackerKey, validClaims(now),
			map[string]any{"kid": "attacker", "jku": "http://127.0.0.1:1/keys", "x5u": "http://127.0.0.1:1/x5"})},
		{"no exp", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.ExpiresAt = nil }), nil)},
		{"expired beyond leeway", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute))
		}), nil)},
		{"no iat", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.IssuedAt = nil }), nil)},
		{"iat in the future", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(5 * time.Minute)) }), nil)},
		{"wrong iss", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Issuer = "evil" }), nil)},
		{"no iss", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Issuer = "" }), nil)},
		{"wrong aud", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other"} }), nil)},
		{"no aud", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Audience = nil }), nil)},
		{"refresh typ as access", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Type = TypeRefresh; c.Family = "f" }), nil)},
		{"license typ as access", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Type = "license" }), nil)},
		{"no typ", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Type = "" }), nil)},
		{"no sub", hs, sign(jwt.SigningMethodHS256, testSecret, mod(func(c *Claims) { c.Subject = "" }), nil)},
		{"tampered payload", hs, func() string {
			s := sign(jwt.SigningMethodHS256, testSecret, validClaims(now), nil)
			p := strings.Split(s, ".")
			p[1] = segment(mod(func(c *Claims) { c.Subject = "someone-else" }))
			return strings.Join(p, ".")
		}()},
		{"empty", hs, ""},
		{"garbage", hs, "eyJ.eyJ.sig"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.ParseAccess(tc.tok)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}

// TestTypesNotInterchangeable proves J6 with tokens the manager itself issued.
func TestTypesNotInterchangeable(t *testing.T) {
	m := hsManager(t, nil)
	at, _, _ := m.IssueAccess("u1", "viewer")
	rt, _ := m.IssueRefresh("u1", NewID(), NewID(), time.Now().Add(time.Hour))
	if _, err := m.ParseRefresh(at); !errors.Is(err, ErrInvalid) {
		t.Fatalf("access token accepted as refresh: %v", err)
	}
	if _, err := m.ParseAccess(rt); !errors.Is(err, ErrInvalid) {
		t.Fatalf("refresh token accepted as access: %v", err)
	}
	// A token from another deployment (other secret) is refused too.
	other, _ := New(Config{Secret: []byte("ZxCvBnMaSdFgHjKlQwErTyUiOp1234567890")})
	ot, _, _ := other.IssueAccess("u1", "admin")
	if _, err := m.ParseAccess(ot); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign token accepted: %v", err)
	}
}

func TestLeewayTolerated(t *testing.T) {
	now := time.Now()
	m := hsManager(t, func() time.Time { return now })
	tok, _, _ := m.IssueAccess("u1", "admin")
	later := now.Add(time.Hour + 20*time.Second)
	m2, _ := New(Config{Secret: testSecret, Now: func() time.Time { return later }})
	if _, err := m2.ParseAccess(tok); err != nil {
		t.Fatalf("token 20 s past exp rejected within 30 s leeway: %v", err)
	}
}

func TestNewIDIsUUIDv4(t *testing.T) {
	id := NewID()
	if len(id) != 36 || id[14] != '4' || !strings.ContainsAny(id[19:20], "89ab") {
		t.Fatalf("bad uuid %q", id)
	}
	if NewID() == id {
		t.Fatal("ids repeat")
	}
}
