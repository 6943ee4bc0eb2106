package api_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// testIdP is an identity provider on loopback: its own key pair, a JWKS endpoint that counts its
// fetches, and tokens signed with go-jose. rotate switches to a new key (and kid), serving only it.
type testIdP struct {
	t       *testing.T
	srv     *httptest.Server
	issuer  string
	alg     jose.SignatureAlgorithm
	fetches atomic.Int64

	mu  sync.Mutex
	key crypto.Signer
	kid string
	n   int
}

func newTestIdP(t *testing.T, alg jose.SignatureAlgorithm) *testIdP {
	t.Helper()
	p := &testIdP{t: t, alg: alg}
	p.rotate()
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		p.fetches.Add(1)
		p.mu.Lock()
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: p.key.Public(), KeyID: p.kid, Algorithm: string(p.alg), Use: "sig"}}}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL + "/"
	return p
}

func (p *testIdP) jwksURL() string { return p.srv.URL + "/jwks.json" }

// rotate makes a new signing key with a new kid; the JWKS serves only the new one from now on.
func (p *testIdP) rotate() {
	p.t.Helper()
	k := newSigningKey(p.t, p.alg)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.key, p.kid = k, fmt.Sprintf("key-%d", p.n)
}

func newSigningKey(t *testing.T, alg jose.SignatureAlgorithm) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// claims are a token's standard claims for sub, valid now for ten minutes, for audience aud.
func (p *testIdP) claims(sub, aud string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": p.issuer, "sub": sub, "aud": aud, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
}

// token signs claims with the current key and kid.
func (p *testIdP) token(claims map[string]any) string {
	p.t.Helper()
	p.mu.Lock()
	key, kid := p.key, p.kid
	p.mu.Unlock()
	return signToken(p.t, p.alg, key, kid, claims)
}

func signToken(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsignedToken is an alg "none" token (go-jose will not make one).
func unsignedToken(kid string, claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// hsWithPublicKey is an HS256 token whose HMAC key is the provider's public key (the classic
// algorithm-confusion attack).
func (p *testIdP) hsWithPublicKey(claims map[string]any) string {
	p.t.Helper()
	p.mu.Lock()
	pub, kid := p.key.Public(), p.kid
	p.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		p.t.Fatal(err)
	}
	return signToken(p.t, jose.HS256, der, kid, claims)
}
