package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/test/harness"
)

// TestExchangeBinary runs the token exchange as an operator sets it up: `iotauth mqtt-token keygen`
// (private key 0600, never overwritten), `iotauth publishable-key create|list|revoke`, `iotauth serve`
// with MQTT_TOKEN_PRIVATE_KEY_FILE and OIDC_PROVIDERS_FILE (a provider allowing HS256 stops the start),
// an operator's exchange whose credential verifies with mqtt-token.pub, and a SIGHUP that drops a
// provider denies "provider:<name>" (docs/security.md, A4).
func TestExchangeBinary(t *testing.T) {
	bin := binary(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	run := func(env []string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(nil, "mqtt-token", "keygen", "-out", dir); err != nil || !strings.Contains(out, "plugin_opt_mqtt_token_public_key") {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "mqtt-token.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mqtt-token.key: %v %v", fi, err)
	}
	if out, err := run(nil, "mqtt-token", "keygen", "-out", dir); err == nil || !strings.Contains(out, "already exists") {
		t.Fatalf("keygen overwrote a key: %s", out)
	}
	pubPEM, err := os.ReadFile(filepath.Join(dir, "mqtt-token.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := mqttcred.ParsePublicKeys(pubPEM)
	if err != nil {
		t.Fatal(err)
	}

	// Publishable keys from the CLI.
	out, err := run(nil, "publishable-key", "create", "--name", "web", "--origin", "https://app.example.com",
		"--topic", "read:users/#", "--provider", "test")
	if err != nil {
		t.Fatalf("publishable-key create: %v\n%s", err, out)
	}
	var created struct{ ID, Key, Prefix string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Key, "iotpk_live_") {
		t.Fatalf("create output: %v %s", err, out)
	}
	if out, err := run(nil, "publishable-key", "create", "--name", "bad", "--origin", "http://app.example.com", "--topic", "read:a", "--provider", "test"); err == nil || !strings.Contains(out, "--origin") {
		t.Fatalf("an http origin was accepted: %s", out)
	}
	out, err = run(nil, "publishable-key", "list")
	if err != nil || !strings.Contains(out, created.Prefix) || strings.Contains(out, created.Key) || !strings.Contains(out, "active") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	// --json prints JSON Lines with the REST API's fields (GET /api/v1/auth/publishable-keys), as every list does.
	cmd := exec.Command(bin, "publishable-key", "list", "--json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn}
	jsonOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("publishable-key list --json: %v\n%s", err, jsonOut)
	}
	if lines := jsonLines(t, string(jsonOut)); len(lines) != 1 || lines[0]["id"] != created.ID || lines[0]["prefix"] != created.Prefix ||
		fmt.Sprint(lines[0]["origins"]) != "[https://app.example.com]" || fmt.Sprint(lines[0]["providers"]) != "[test]" || strings.Contains(string(jsonOut), created.Key) {
		t.Fatalf("publishable-key list --json:\n%s", jsonOut)
	}
	if out, err := run(nil, "publishable-key", "revoke", created.ID); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	var denied int
	if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM subject_denials WHERE subject = $1`, "pk:"+created.ID).Scan(&denied); err != nil || denied != 1 {
		t.Fatalf("revoke from the CLI did not deny the key: %d %v", denied, err)
	}

	// Providers file: HS256 refused at start.
	idp := newTestIdP(t, jose.RS256)
	provFile := filepath.Join(dir, "providers.json")
	writeProviders := func(providers ...map[string]any) {
		b, _ := json.Marshal(map[string]any{"providers": providers})
		if err := os.WriteFile(provFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeProviders(providerJSON("test", idp, "HS256"))
	base := []string{"JWT_SECRET=" + string(hsSecret), "MQTT_TOKEN_PRIVATE_KEY_FILE=" + filepath.Join(dir, "mqtt-token.key"), "OIDC_PROVIDERS_FILE=" + provFile, "METRICS_ADDR=off"}
	if out, err := run(append(base, "LISTEN_ADDR=127.0.0.1:0"), "serve"); err == nil || !strings.Contains(out, "HS256") {
		t.Fatalf("serve started with an HS256 provider:\n%s", out)
	}
	writeProviders(providerJSON("test", idp), providerJSON("second", idp))

	if out, err := run([]string{"IOTAUTH_PASSWORD=first admin's passphrase"}, "user", "create", "--email", "root@example.com", "--role", "admin"); err != nil {
		t.Fatalf("user create: %v\n%s", err, out)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var logs syncBuffer
	serve := exec.Command(bin, "serve")
	serve.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "LISTEN_ADDR=" + addr}, base...)
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill(); _, _ = serve.Process.Wait() })
	url := "http://" + addr
	waitFor(t, 15*time.Second, "serve ready", func() bool {
		res, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	post := func(path, bearer string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		hr, _ := http.NewRequest("POST", url+path, bytes.NewReader(b))
		hr.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			hr.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	st, login := post("/api/v1/auth/login", "", map[string]string{"email": "root@example.com", "password": "first admin's passphrase"})
	if st != 200 {
		t.Fatalf("login: %d %v", st, login)
	}
	st, ex := post("/api/v1/tokens/exchange", login["accessToken"].(string), map[string]any{"provider": "iotauth", "ttl": 120})
	if st != 200 {
		t.Fatalf("exchange: %d %v", st, ex)
	}
	mq := ex["mqtt"].(map[string]any)
	c, err := mqttcred.NewVerifying(pubs, nil).Verify(mq["username"].(string), []byte(mq["password"].(string)))
	if err != nil || c.ExpiresAt.Sub(c.IssuedAt.Time) != 2*time.Minute {
		t.Fatalf("the credential does not verify with mqtt-token.pub: %v", err)
	}

	// SIGHUP with a provider dropped: its subject is denied; a broken file keeps the running set.
	writeProviders(providerJSON("test", idp))
	if err := serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "provider:second denied after SIGHUP", func() bool {
		var n int
		_ = harness.QueryRow(t, dsn, `SELECT count(*) FROM subject_denials WHERE subject = 'provider:second'`).Scan(&n)
		return n == 1
	})
	if serve.ProcessState != nil {
		t.Fatal("serve exited on SIGHUP")
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("serve exited with %v after SIGHUP and SIGTERM:\n%s", err, logs.String())
		}
	case <-time.After(25 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	for _, s := range []string{mq["password"].(string), created.Key, string(hsSecret)} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("serve logged a secret (starting %.6q)", s)
		}
	}
	if !strings.Contains(logs.String(), `"tokenExchange":true`) || !strings.Contains(logs.String(), "OIDC providers reloaded") {
		t.Errorf("serve's log does not report the exchange and the reload:\n%s", logs.String())
	}
}

// waitFor polls cond every 50 ms until it holds or the deadline passes (generous deadlines: the
// machine is shared).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
