package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/migrations"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// emptyDatabase creates a database with no schema at all in the package's cluster; it is dropped when
// the test ends.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "iotauth_empty_" + hex.EncodeToString(b)
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, pg.AdminDSN)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	u, err := url.Parse(pg.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// serveOnce runs `iotauth serve` with args and expects it to refuse to start: exit status 1 within 20 s.
func serveOnce(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), append([]string{"serve", "-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "JWT_SECRET=" + string(hsSecret)}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("serve did not refuse to start (err %v):\n%s", err, out)
	}
	return string(out)
}

// TestServeRefusesADatabaseWithoutTheSchema: `iotauth serve` on a database without
// the schema, or with an older one, refuses to start and says what to run, instead of reporting ready
// and answering every route with 500. Asked to migrate at start, it serves.
func TestServeRefusesADatabaseWithoutTheSchema(t *testing.T) {
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	empty := emptyDatabase(t)
	out := serveOnce(t, empty)
	for _, want := range []string{"no iotauth schema", "iotauth migrate", "serve -migrate", "IOTAUTH_MIGRATE=true"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "listening") {
		t.Errorf("serve listened before refusing:\n%s", out)
	}
	// The check only reads: the refused start created nothing.
	conn, err := pgx.Connect(context.Background(), empty)
	if err != nil {
		t.Fatal(err)
	}
	var tables int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("the refused start left %d tables (%v)", tables, err)
	}
	conn.Close(context.Background())

	old := pg.NewDatabase(t)
	harness.OpenStore(t, old) // migrates it
	harness.Exec(t, old, `UPDATE `+migrations.VersionTable+` SET version = $1`, latest-1)
	out = serveOnce(t, old)
	if want := "at version " + strconv.Itoa(int(latest-1)) + " but this iotauth needs version " + strconv.Itoa(int(latest)); !strings.Contains(out, want) || !strings.Contains(out, "iotauth migrate") {
		t.Errorf("the refusal of an old schema does not say %q and what to run:\n%s", want, out)
	}

	// Asked to migrate at start, serve applies the schema and becomes ready.
	p := startServe(t, empty)
	p.stop()
}

// rawCall sends one request and returns status, headers and body.
func rawCall(t *testing.T, method, u, bearer string, body string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	hr, _ := http.NewRequest(method, u, r)
	if body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

// TestDatabaseOutageAnswers503 is H5 (docs/security.md): while PostgreSQL is down, routes answer 503
// problem details with the stable code database_unavailable and a Retry-After, never 500; /readyz
// reports not ready and /healthz stays up; no request logs an ERROR; when PostgreSQL is back, so is
// the API, without a restart. It runs against a cluster of its own, which it stops.
func TestDatabaseOutageAnswers503(t *testing.T) {
	own, err := harness.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Destroy)
	if !own.Owned() {
		t.Fatal("this test stops its PostgreSQL: run it without DATABASE_URL")
	}
	ctx := context.Background()
	dsn, err := own.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := harness.OpenStore(t, dsn)
	h, _ := passhash.HashPassword("correct horse battery")
	if _, err := st.Accounts.CreateUser(ctx, "admin@example.com", h, "admin", store.AuditEvent{Actor: "test", Action: "user_create"}); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, dsn)
	var pair map[string]any
	if code := p.call("POST", "/api/v1/auth/login", "", map[string]string{"email": "admin@example.com", "password": "correct horse battery"}, &pair); code != 200 {
		t.Fatalf("login: %d", code)
	}
	tok := pair["accessToken"].(string)

	if err := own.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, bearer, body string }{
		{"GET", "/api/v1/agents", tok, ""},
		{"GET", "/api/v1/auth/me", tok, ""},
		{"POST", "/api/v1/provision/keys", tok, ""},
		{"POST", "/api/v1/auth/login", "", `{"email": "admin@example.com", "password": "correct horse battery"}`},
		{"GET", "/readyz", "", ""},
	} {
		status, hdr, body := rawCall(t, c.method, p.base+c.path, c.bearer, c.body)
		var prob struct {
			Code   string `json:"code"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &prob)
		if status != 503 || hdr.Get("Content-Type") != "application/problem+json" || prob.Code != "database_unavailable" || prob.Detail == "" {
			t.Errorf("%s %s during the outage: %d %s %s", c.method, c.path, status, hdr.Get("Content-Type"), body)
		}
		if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("%s %s during the outage: Retry-After %q", c.method, c.path, hdr.Get("Retry-After"))
		}
	}
	if status, _, _ := rawCall(t, "GET", p.base+"/healthz", "", ""); status != 200 {
		t.Errorf("/healthz during the outage: %d, want 200 (the process is alive)", status)
	}

	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	p.waitFor("ready again", 30*time.Second, func() bool {
		status, _, _ := rawCall(t, "GET", p.base+"/readyz", "", "")
		return status == 200
	})
	if status, _, body := rawCall(t, "GET", p.base+"/api/v1/agents", tok, ""); status != 200 {
		t.Fatalf("after the outage: %d %s", status, body)
	}
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) && strings.Contains(line, `"requestId"`) {
			t.Errorf("the outage was logged as a server error: %s", line)
		}
	}
	p.stop()
}
