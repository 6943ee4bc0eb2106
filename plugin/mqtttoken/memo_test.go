package mqtttoken

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/denylist"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// memoFixture: a key file, an issuer and a verifier on one fake clock.
func memoFixture(t testing.TB, size int) (*Verifier, *mqttcred.Issuing, *fakeClock, string) {
	t.Helper()
	clk := &fakeClock{t: time.Now().Truncate(time.Second)}
	priv, pub, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := mqttcred.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(path, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := OpenMemo(path, clk.now, size)
	if err != nil {
		t.Fatal(err)
	}
	return v, mqttcred.NewIssuing(k, clk.now), clk, path
}

func issue(t testing.TB, iss *mqttcred.Issuing, subject string, ttl time.Duration) mqttcred.Credential {
	t.Helper()
	c, err := iss.Issue(mqttcred.Grant{Subject: subject, ClientIDPrefix: "web-", From: []string{"app:k", subject}, TTL: ttl,
		Topics: []mqttcred.Topic{{Access: "read", Pattern: "agents/+/telemetry"}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMemoRemembersAVerification(t *testing.T) {
	v, iss, _, _ := memoFixture(t, 100)
	c := issue(t, iss, "user:1", time.Hour)
	first, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.VerifyToken(c.Username, []byte(c.Password), "web-2")
	if err != nil {
		t.Fatal(err)
	}
	if hits, misses, held := v.MemoStats(); hits != 1 || misses != 1 || held != 1 {
		t.Fatalf("hits %d misses %d held %d", hits, misses, held)
	}
	if second.ID != first.ID || second.Subject != "user:1" || !second.ExpiresAt.Equal(first.ExpiresAt) || len(second.Topics) != 1 ||
		len(second.From) != 2 || !second.ClientIDAllowed {
		t.Fatalf("remembered token %+v", second)
	}
	// The client id is judged per connect, not remembered.
	if tok, err := v.VerifyToken(c.Username, []byte(c.Password), "agent-1"); err != nil || tok.ClientIDAllowed {
		t.Fatalf("client id of an agent on a remembered credential: %v, allowed %v", err, tok.ClientIDAllowed)
	}
	if tok, err := v.VerifyToken(c.Username, []byte(c.Password), "web-"); err != nil || tok.ClientIDAllowed {
		t.Fatal("the bare prefix allowed on a remembered credential")
	}
}

// The memo is keyed by the whole credential: another username with a remembered password, or a password
// that differs in one byte, is verified (and refused).
func TestMemoKeyIsTheWholeCredential(t *testing.T) {
	v, iss, _, _ := memoFixture(t, 100)
	c := issue(t, iss, "user:1", time.Hour)
	other := issue(t, iss, "user:2", time.Hour)
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(other.Username, []byte(c.Password), "web-1"); err == nil {
		t.Fatal("another token's username with a remembered password accepted")
	}
	bad := []byte(c.Password)
	bad[len(bad)-2] ^= 1
	if _, err := v.VerifyToken(c.Username, bad, "web-1"); err == nil {
		t.Fatal("a tampered signature accepted after the credential was remembered")
	}
	if hits, _, _ := v.MemoStats(); hits != 0 {
		t.Fatalf("%d memo hits for credentials never verified", hits)
	}
}

// A remembered credential is never served at or after its exp.
func TestMemoHonoursExpiry(t *testing.T) {
	v, iss, clk, _ := memoFixture(t, 100)
	c := issue(t, iss, "user:1", 5*time.Minute)
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
		t.Fatal(err)
	}
	clk.t = c.ExpiresAt.Add(-time.Second)
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
		t.Fatalf("a second before exp: %v", err)
	}
	clk.t = c.ExpiresAt
	tok, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1")
	if err == nil && clk.t.Before(tok.ExpiresAt) {
		t.Fatal("served at exp as valid")
	}
	if hits, _, _ := v.MemoStats(); hits != 1 {
		t.Fatalf("%d memo hits, want 1 (none at exp)", hits)
	}
	clk.t = c.ExpiresAt.Add(2 * time.Minute) // past the verifier's clock-skew leeway
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); !errors.Is(err, mqttcred.ErrExpired) {
		t.Fatalf("after exp: %v, want expired", err)
	}
}

// SIGHUP (Reload) forgets every verification: a credential of a key no longer in the file is refused
// at once, even though it was remembered.
func TestMemoFlushedOnReload(t *testing.T) {
	v, iss, _, path := memoFixture(t, 100)
	c := issue(t, iss, "user:1", time.Hour)
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
		t.Fatal(err)
	}
	_, pub, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err == nil {
		t.Fatal("a remembered credential of a removed key accepted after the reload")
	}
	if _, _, held := v.MemoStats(); held != 0 {
		t.Fatalf("%d verifications held after the reload", held)
	}
}

func TestMemoBounded(t *testing.T) {
	v, iss, _, _ := memoFixture(t, 2)
	for i := range 3 {
		c := issue(t, iss, "user:1", time.Hour)
		if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, _, held := v.MemoStats(); held != 2 {
		t.Fatalf("%d held, want the bound 2", held)
	}
	off, iss2, _, _ := memoFixture(t, 0)
	c := issue(t, iss2, "user:1", time.Hour)
	for range 2 {
		if _, err := off.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses, _ := off.MemoStats(); hits != 0 || misses != 2 {
		t.Fatalf("memo size 0: hits %d misses %d", hits, misses)
	}
}

// The deny list is asked on every connect: a subject denied after its credential was remembered is
// refused at once.
func TestMemoDoesNotBypassTheDenyList(t *testing.T) {
	v, iss, clk, _ := memoFixture(t, 100)
	denials := denylist.New(25 * time.Hour)
	denials.Load(nil)
	a := auth.New(auth.Config{KeyKind: secret.APIKey, ClientID: "agent-%u", Tokens: v, Denials: denials, Now: clk.now}, nil, nil)
	c := issue(t, iss, "user:1", time.Hour)
	creds := auth.Credentials{Username: c.Username, Password: []byte(c.Password), ClientID: "web-1"}
	for range 2 {
		if _, err := a.Authorize(context.Background(), creds); err != nil {
			t.Fatal(err)
		}
	}
	if hits, _, _ := v.MemoStats(); hits != 1 {
		t.Fatalf("%d memo hits, want 1", hits)
	}
	denials.Deny("app:k", clk.t)
	if _, err := a.Authorize(context.Background(), creds); !errors.Is(err, auth.ErrTokenDenied) {
		t.Fatalf("remembered credential of a denied subject: %v, want ErrTokenDenied", err)
	}
	if _, err := a.Authorize(context.Background(), auth.Credentials{Username: c.Username, Password: []byte(c.Password), ClientID: "agent-x"}); !errors.Is(err, auth.ErrTokenDenied) && !errors.Is(err, auth.ErrTokenClientID) {
		t.Fatalf("agent client id: %v", err)
	}
}

// TestMemoBytesPerEntry measures the live heap per remembered verification (one topic, two source
// subjects), for the bound documented at MemoSize.
func TestMemoBytesPerEntry(t *testing.T) {
	const n = 2000
	v, iss, _, _ := memoFixture(t, n)
	creds := make([]mqttcred.Credential, n)
	for i := range creds {
		creds[i] = issue(t, iss, "user:6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f", time.Hour)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, c := range creds {
		if _, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1"); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	_, _, held := v.MemoStats()
	t.Logf("%d bytes of live heap per remembered verification (%d held, heap %d -> %d)", per, held, before.HeapAlloc, after.HeapAlloc)
	if per > 1000 {
		t.Fatalf("%d bytes per remembered verification; MemoSize documents about 550", per)
	}
	runtime.KeepAlive(creds)
	runtime.KeepAlive(v)
}

// BenchmarkAuthorizeRemembered is a reconnect with a credential already verified, as the authorizer
// decides it (no broker).
func BenchmarkAuthorizeRemembered(b *testing.B) {
	v, iss, clk, _ := memoFixture(b, 100)
	denials := denylist.New(25 * time.Hour)
	denials.Load(nil)
	a := auth.New(auth.Config{KeyKind: secret.APIKey, ClientID: "agent-%u", Tokens: v, Denials: denials, Now: clk.now}, nil, nil)
	c := issue(b, iss, "user:1", time.Hour)
	creds := auth.Credentials{Username: c.Username, Password: []byte(c.Password), ClientID: "web-1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authorize(context.Background(), creds); err != nil {
			b.Fatal(err)
		}
	}
}
