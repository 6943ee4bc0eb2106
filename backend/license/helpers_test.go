package license

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the fixed "now" of most tests.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// keyPair is a signing key with its public PEM.
type keyPair struct {
	priv   crypto.Signer
	pubPEM []byte
}

// Keys are generated once per test binary: RSA generation is slow on a shared machine.
var (
	edKeys  = sync.OnceValue(func() keyPair { return newKeyPair("ed25519", 0) })
	edKeys2 = sync.OnceValue(func() keyPair { return newKeyPair("ed25519", 0) })
	rsaKeys = sync.OnceValue(func() keyPair { return newKeyPair("rs256", 2048) })
)

func newKeyPair(alg string, bits int) keyPair {
	privPEM, pubPEM, err := GenerateKey(alg, bits)
	if err != nil {
		panic(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		panic(err)
	}
	return keyPair{priv: priv, pubPEM: pubPEM}
}

// fixedEdKey is a deterministic Ed25519 key, so that fuzz seeds in testdata stay valid across runs.
func fixedEdKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func pubPEMOf(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// goodClaims are the claims of a sound license valid at t0 for a year.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss":        DefaultIssuer,
		"aud":        DefaultAudience,
		"sub":        "ACME Corp",
		"typ":        TokenType,
		"iat":        t0.Add(-24 * time.Hour).Unix(),
		"nbf":        t0.Add(-24 * time.Hour).Unix(),
		"exp":        t0.Add(365 * 24 * time.Hour).Unix(),
		"maxDevices": 5,
		"features":   []string{FeatureDataExport, FeatureAI},
	}
}

// with returns a copy of c with the given claims set (nil deletes).
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// sign signs claims with key using method, adding extra header members.
func sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawJWT assembles a token from literal parts, for shapes no library would produce (alg none variants).
func rawJWT(t testing.TB, header, claims any, sig []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// replaceClaims swaps the payload of a signed token, keeping its header and signature: the attacker's edit.
func replaceClaims(t testing.TB, token string, c jwt.MapClaims) string {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

// rsaPubPEM is a PEM for an RSA key of the given size (small sizes only for refusal tests).
func rsaPubPEM(t testing.TB, bits int) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return pubPEMOf(t, &k.PublicKey)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs JSON lines into a buffer the test can search.
func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
