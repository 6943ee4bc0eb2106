package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/test/harness"
)

// serveProc is a running `iotauth serve` process.
type serveProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
	done chan error
}

// startServe runs `iotauth serve -migrate` with env (plus PATH, DATABASE_URL, JWT_SECRET, LISTEN_ADDR)
// and waits until it is ready; it is killed when the test ends.
func startServe(t *testing.T, dsn string, env ...string) *serveProc {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := &serveProc{t: t, base: "http://" + addr, logs: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary(t), "serve", "-migrate")
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "JWT_SECRET=" + string(hsSecret), "LISTEN_ADDR=" + addr}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	p.waitFor("ready", 20*time.Second, func() bool {
		res, err := http.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return p
}

// waitFor polls cond every 50 ms up to a generous bound, failing if the process exits meanwhile.
func (p *serveProc) waitFor(what string, bound time.Duration, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		select {
		case err := <-p.done:
			p.t.Fatalf("serve exited (%v) while waiting for %s:\n%s", err, what, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not reached within %s:\n%s", what, bound, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends one JSON request and decodes a JSON answer into out (when not nil).
func (p *serveProc) call(method, path, bearer string, body any, out any) int {
	p.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	hr, _ := http.NewRequest(method, p.base+path, r)
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		_ = json.NewDecoder(res.Body).Decode(out)
	}
	return res.StatusCode
}

// stop sends SIGTERM and expects a clean exit.
func (p *serveProc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, p.logs.String())
		}
	case <-time.After(25 * time.Second):
		p.t.Fatal("serve did not stop on SIGTERM")
	}
}

// TestServeWithoutLicenseIsRestricted: the production default. `iotauth serve` with no LICENSE_*
// setting starts (it is not a start failure), logs that it is restricted with the reason and how to fix
// it (the keygen and issue commands), and refuses a registration with 403 license_missing.
func TestServeWithoutLicenseIsRestricted(t *testing.T) {
	p := startServe(t, pg.NewDatabase(t))
	key, _ := secret.Generate(secret.ProvisioningKey)
	var prob map[string]any
	if st := p.call("POST", "/api/v1/provision/agent", "", map[string]string{"key": key.Reveal(), "agentName": "x"}, &prob); st != 403 || prob["code"] != "license_missing" {
		t.Fatalf("registration without a license: %d %v", st, prob)
	}
	p.stop()
	l := p.logs.String()
	for _, want := range []string{`"reason":"license_missing"`, "restricted mode", "iotauth license keygen", "iotauth license issue", "LICENSE_KEY_FILE"} {
		if !strings.Contains(l, want) {
			t.Errorf("serve's log does not say %q:\n%s", want, l)
		}
	}
}

// TestServeLicenseReloadOnSIGHUP is P7 through the real binary: `iotauth serve` started with an expired
// license (LICENSE_PUBLIC_KEY_FILE, LICENSE_KEY_FILE) is restricted (403 license_expired, the
// provisioning key kept); a valid license written to the same file takes effect on SIGHUP, without a
// restart, and the very key that was refused now registers the agent. SIGHUP never kills the process,
// and neither the license token nor any other secret reaches the log.
func TestServeLicenseReloadOnSIGHUP(t *testing.T) {
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	now := time.Now()
	expired := edVendor().issue(t, license.Terms{IssuedAt: now.Add(-48 * time.Hour), ExpiresAt: now.Add(-24 * time.Hour), MaxDevices: 10})
	valid := edVendor().issue(t, license.Terms{IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(30 * 24 * time.Hour), MaxDevices: 10,
		Features: []string{license.FeatureDataExport}})
	licEnv := licenseFiles(t, dir, edVendor().pubPEM, expired)

	const password = "license admin passphrase"
	create := exec.Command(binary(t), "user", "create", "--email", "root@example.com", "--role", "admin")
	create.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn}
	create.Stdin = strings.NewReader(password + "\n")
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("user create: %v\n%s", err, out)
	}
	p := startServe(t, dsn, licEnv...)

	var pair map[string]any
	if st := p.call("POST", "/api/v1/auth/login", "", map[string]string{"email": "root@example.com", "password": password}, &pair); st != 200 {
		t.Fatalf("login in restricted mode: %d", st)
	}
	access := pair["accessToken"].(string)
	var status map[string]any
	if p.call("GET", "/api/v1/license", access, nil, &status); status["restricted"] != true || status["reason"] != "license_expired" {
		t.Fatalf("status with the expired license: %v", status)
	}
	var pk map[string]any
	if st := p.call("POST", "/api/v1/provision/keys", access, nil, &pk); st != 201 {
		t.Fatalf("provisioning key in restricted mode: %d", st)
	}
	reg := map[string]string{"key": pk["key"].(string), "agentName": "after-sighup"}
	var prob map[string]any
	if st := p.call("POST", "/api/v1/provision/agent", "", reg, &prob); st != 403 || prob["code"] != "license_expired" {
		t.Fatalf("registration with an expired license: %d %v", st, prob)
	}

	// Renew: write the valid license to LICENSE_KEY_FILE and send SIGHUP.
	writeFileAtomic(t, filepath.Join(dir, "license.jwt"), valid+"\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the renewed license", 15*time.Second, func() bool {
		var s map[string]any
		p.call("GET", "/api/v1/license", access, nil, &s)
		return s["restricted"] == false && s["status"] == "valid"
	})
	var agent map[string]any
	if st := p.call("POST", "/api/v1/provision/agent", "", reg, &agent); st != 201 {
		t.Fatalf("registration after SIGHUP with the key refused before: %d %v", st, agent)
	}
	// A second SIGHUP with nothing changed is harmless too.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the second reload", 15*time.Second, func() bool { return strings.Count(p.logs.String(), "SIGHUP: re-reading the license") == 2 })
	if st := p.call("GET", "/readyz", "", nil, nil); st != 200 {
		t.Fatalf("readyz after SIGHUP: %d", st)
	}
	p.stop()

	l := p.logs.String()
	for _, want := range []string{`"reason":"license_expired"`, `"trigger":"reload"`, "license valid"} {
		if !strings.Contains(l, want) {
			t.Errorf("serve's log does not say %q:\n%s", want, l)
		}
	}
	for _, s := range []string{expired, valid, access, password, pk["key"].(string)} {
		if strings.Contains(l, s) {
			t.Errorf("serve logged a secret or the license (%.6q…)", s)
		}
	}
	if secretPattern.MatchString(l) {
		t.Errorf("serve logged a secret-shaped string:\n%s", l)
	}
}
