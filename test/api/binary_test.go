package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

func binary(t *testing.T) string {
	t.Helper()
	bin, err := harness.BinPath()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestServeRefusesWeakKeys is J5 at start: `iotauth serve` refuses a short HS256 secret (a documentation
// placeholder among them), an RSA key under 2048 bits and a missing key, exits non-zero and says how
// to make a good key.
func TestServeRefusesWeakKeys(t *testing.T) {
	bin := binary(t)
	dsn := pg.NewDatabase(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for _, tc := range []struct {
		name, advice string
		env          []string
	}{
		{"6-byte secret", "openssl rand -base64 48", []string{"JWT_SECRET=secret"}},
		{"the seed's example secret", "openssl rand -base64 48", []string{"JWT_SECRET=your-hs256-secret"}},
		{"31-byte secret", "openssl rand -base64 48", []string{"JWT_SECRET=" + strings.Repeat("x", 31)}},
		{"RSA 1024", "rsa_keygen_bits", []string{"JWT_PRIVATE_KEY=" + strings.ReplaceAll(smallPEM, "\n", `\n`)}},
		{"no key", "openssl rand", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "-listen", "127.0.0.1:0")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn}, tc.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("serve did not refuse to start (err %v):\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.advice) {
				t.Fatalf("the refusal does not say %q:\n%s", tc.advice, out)
			}
			if strings.Contains(string(out), "your-hs256-secret") || strings.Contains(string(out), "BEGIN PRIVATE KEY") {
				t.Fatalf("the refusal echoes the key:\n%s", out)
			}
		})
	}
}

// TestServeBinary runs the real binary as an operator would: `iotauth user create` with the password on
// standard input, `iotauth serve -migrate` configured by environment variables, a login over HTTP, and
// a graceful stop on SIGTERM. Its log holds no secret.
func TestServeBinary(t *testing.T) {
	bin := binary(t)
	dsn := pg.NewDatabase(t)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "JWT_SECRET=" + string(hsSecret), "LISTEN_ADDR=" + addr,
		"ACCESS_TOKEN_TTL=600", "MQTT_PUBLIC_HOST=mqtt.example.com", "MQTT_PUBLIC_PORT=8883"}
	env = append(env, devLicenseEnv(t)...) // without a license serve is restricted and refuses registrations
	const password = "first admin's passphrase"

	create := exec.Command(bin, "user", "create", "--email", "root@example.com", "--role", "admin")
	create.Env = env
	create.Stdin = strings.NewReader(password + "\n")
	out, err := create.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"role":"admin"`) || strings.Contains(string(out), password) {
		t.Fatalf("user create: %v\n%s", err, out)
	}
	// A second create of the same email is refused; a password flag does not exist.
	dup := exec.Command(bin, "user", "create", "--email", "ROOT@example.com", "--role", "admin")
	dup.Env = append(env, "IOTAUTH_PASSWORD=another passphrase")
	if out, err := dup.CombinedOutput(); err == nil || !strings.Contains(string(out), "exists") {
		t.Fatalf("duplicate user created: %s", out)
	}
	if out, err := exec.Command(bin, "user", "create", "--email", "x@example.com", "--role", "admin", "--password", "x").CombinedOutput(); err == nil {
		t.Fatalf("a --password flag was accepted: %s", out)
	}

	var logs bytes.Buffer
	serve := exec.Command(bin, "serve", "-migrate")
	serve.Env = env
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	t.Cleanup(func() {
		_ = serve.Process.Kill()
	})
	base := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never became ready:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// H2: a client that never finishes its request headers (slowloris) is cut off by ReadHeaderTimeout
	// (5 s), not held forever. Runs beside the rest of the test.
	slow := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			slow <- err
			return
		}
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
			slow <- err
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err = io.Copy(io.Discard, c) // returns when the server closes the connection
		if d := time.Since(start); err != nil || d > 10*time.Second {
			slow <- fmt.Errorf("slow client held for %v (read error %v); want it closed after the 5 s header timeout", d, err)
			return
		}
		slow <- nil
	}()
	t.Cleanup(func() {
		if err := <-slow; err != nil {
			t.Error(err)
		}
	})

	body, _ := json.Marshal(map[string]string{"email": "root@example.com", "password": password})
	res, err := http.Post(base+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var pair map[string]any
	_ = json.NewDecoder(res.Body).Decode(&pair)
	res.Body.Close()
	if res.StatusCode != 200 || pair["expiresIn"].(float64) != 600 {
		t.Fatalf("login through the binary: %d %v", res.StatusCode, pair["expiresIn"])
	}
	// Provisioning tells agents the configured public broker address.
	hr, _ := http.NewRequest("POST", base+"/api/v1/provision/keys", nil)
	hr.Header.Set("Authorization", "Bearer "+pair["accessToken"].(string))
	res, err = http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	var pk map[string]any
	_ = json.NewDecoder(res.Body).Decode(&pk)
	res.Body.Close()
	body, _ = json.Marshal(map[string]string{"key": pk["key"].(string), "agentName": "bin"})
	res, err = http.Post(base+"/api/v1/provision/agent", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		MQTT struct {
			Host string `json:"host"`
			Port int    `json:"port"`
		} `json:"mqtt"`
	}
	_ = json.NewDecoder(res.Body).Decode(&reg)
	res.Body.Close()
	if res.StatusCode != 201 || reg.MQTT.Host != "mqtt.example.com" || reg.MQTT.Port != 8883 {
		t.Fatalf("registration through the binary: %d %+v", res.StatusCode, reg.MQTT)
	}
	// The operator console is served by the binary on the same listener (docs/console.md).
	consoleSignInThrough(t, base, "root@example.com", password)

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, logs.String())
		}
	case <-time.After(25 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	l := logs.String()
	if !strings.Contains(l, "listening") || !strings.Contains(l, "stopped") {
		t.Fatalf("serve's log lacks its start and stop lines:\n%s", l)
	}
	if secretPattern.MatchString(l) || strings.Contains(l, password) || strings.Contains(l, string(hsSecret)) {
		t.Fatalf("serve logged a secret:\n%s", l)
	}
}
