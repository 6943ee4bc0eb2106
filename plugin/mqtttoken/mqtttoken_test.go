package mqtttoken

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/plugin/auth"
)

// The authorizer (pure, no mqttcred) dispatches on its own copies of these constants.
func TestConstantsAgree(t *testing.T) {
	if auth.TokenUsernamePrefix != mqttcred.UsernamePrefix || auth.MaxTokenPasswordLen != mqttcred.MaxPasswordLen {
		t.Fatal("plugin/auth's token prefix or password bound differs from backend/core/mqttcred's")
	}
}

func keyFile(t *testing.T, dir, name string) (*mqttcred.Issuing, string) {
	t.Helper()
	priv, pub, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := mqttcred.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	return mqttcred.NewIssuing(k, nil), path
}

func TestVerifyAndReload(t *testing.T) {
	dir := t.TempDir()
	iss, path := keyFile(t, dir, "a.pem")
	next, nextPath := keyFile(t, dir, "b.pem")
	g := mqttcred.Grant{Subject: "user:1", ClientIDPrefix: "web-", From: []string{"app:k"},
		Topics: []mqttcred.Topic{{Access: "read", Pattern: "agents/+/telemetry"}}}
	c, err := iss.Issue(g)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := next.Issue(g)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.VerifyToken(c.Username, []byte(c.Password), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if !tok.ClientIDAllowed || tok.Subject != "user:1" || tok.From[0] != "app:k" || len(tok.Topics) != 1 ||
		tok.Topics[0] != (auth.TokenTopic{Access: "read", Pattern: "agents/+/telemetry"}) || !tok.ExpiresAt.Equal(c.ExpiresAt) ||
		time.Since(tok.IssuedAt) > time.Minute {
		t.Fatalf("token %+v", tok)
	}
	if tok, _ := v.VerifyToken(c.Username, []byte(c.Password), "agent-1"); tok.ClientIDAllowed {
		t.Fatal("a client id outside the prefix allowed")
	}
	if _, err := v.VerifyToken(c2.Username, []byte(c2.Password), "web-1"); err == nil {
		t.Fatal("a credential of a key not in the file accepted")
	}
	// Rotation: both keys in the file, re-read.
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(nextPath)
	if err := os.WriteFile(path, append(a, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err != nil || v.Keys() != 2 {
		t.Fatalf("reload: %v, %d keys", err, v.Keys())
	}
	tok2, err := v.VerifyToken(c2.Username, []byte(c2.Password), "web-1")
	if err != nil {
		t.Fatalf("the added key does not verify after a reload: %v", err)
	}
	if tok.Key == "" || tok2.Key == tok.Key || !v.KeyLoaded(tok.Key) || !v.KeyLoaded(tok2.Key) {
		t.Fatal("each credential should name the key that verified it, both loaded")
	}
	// The old key rotated out: credentials it verified name a key no longer loaded.
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err != nil || v.KeyLoaded(tok.Key) || !v.KeyLoaded(tok2.Key) {
		t.Fatalf("after removing the first key: %v, first loaded %v, second loaded %v", err, v.KeyLoaded(tok.Key), v.KeyLoaded(tok2.Key))
	}
	if err := os.WriteFile(path, append(a, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err != nil || v.Keys() != 2 {
		t.Fatalf("reload: %v, %d keys", err, v.Keys())
	}
	// A broken file keeps the keys in use.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil || v.Keys() != 2 {
		t.Fatalf("a broken key file: %v, %d keys", err, v.Keys())
	}
	if _, err := Open(filepath.Join(dir, "missing.pem"), nil); err == nil {
		t.Fatal("a missing key file accepted")
	}
}
