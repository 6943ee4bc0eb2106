// Package api_test drives `iotauth serve`'s REST API over real HTTP against a real PostgreSQL (a
// throwaway cluster from the harness, one fresh database per test), and end to end against a real
// Mosquitto with the built plugin. Every test's server logs are captured and checked for secrets, and
// every test's database is dumped and checked for plaintext secrets when it ends.
package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/token"
	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

// hsSecret is the test deployment's HS256 secret.
var hsSecret = []byte("t3stS3cr3t-9fQ2xLm8WvZ4pR7kN1bY6cJ0hD5gA")

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// rsaKeyPEM returns a 2048-bit RSA key pair in PEM, generated once per test binary.
func rsaKeyPEM(t *testing.T) (priv, pub []byte) {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pder, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder})
}

// env is one test's server: a fresh migrated database, the API on a real loopback listener, and a
// buffer holding everything the server logged.
type env struct {
	t      *testing.T
	dsn    string
	st     *store.Store
	tokens *token.Manager
	srv    *api.Server
	http   *httptest.Server
	logs   *syncBuffer
	broker *harness.Broker // with withBroker: Mosquitto with the plugin on this test's database
	pooled string          // with withPgBouncer: the database through PgBouncer (the API's store uses it)

	mu      sync.Mutex
	secrets []string // every secret the test saw, checked against logs and the database dump
}

type envOptions struct {
	rsa       bool
	broker    bool
	pgbouncer bool
	cfg       func(*api.Config)
}

func newEnv(t *testing.T, opts ...func(*envOptions)) *env {
	t.Helper()
	var o envOptions
	for _, f := range opts {
		f(&o)
	}
	e := &env{t: t, dsn: pg.NewDatabase(t), logs: &syncBuffer{}}
	if o.pgbouncer {
		// The API reaches the database through a transaction-pooling PgBouncer; e.dsn stays direct.
		e.pooled = harness.StartPgBouncer(t, e.dsn)
		e.st = harness.OpenStore(t, e.pooled)
	} else {
		e.st = harness.OpenStore(t, e.dsn)
	}
	tc := token.Config{Secret: hsSecret}
	if o.rsa {
		priv, pub := rsaKeyPEM(t)
		tc = token.Config{PrivateKeyPEM: priv, PublicKeyPEM: pub}
	}
	var err error
	if e.tokens, err = token.New(tc); err != nil {
		t.Fatal(err)
	}
	// Deliberately no redaction here: the test proves the server never hands a secret to its logger.
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := api.Config{Store: e.st, Tokens: e.tokens, Logger: logger, MQTTHost: "127.0.0.1", MQTTPort: 1883, MaxConcurrentHashes: 2}
	if o.broker {
		e.broker = harness.PluginBroker(t, e.dsn)
		cfg.MQTTPort = e.broker.Port
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	if e.srv, err = api.New(cfg); err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewUnstartedServer(e.srv)
	e.http.Config.ReadHeaderTimeout = 5 * time.Second
	e.http.Config.ReadTimeout = 30 * time.Second
	e.http.Config.WriteTimeout = 30 * time.Second
	e.http.Start()
	t.Cleanup(func() {
		e.http.Close()
		e.checkNoSecretsLeaked()
	})
	e.remember(string(hsSecret))
	return e
}

func withRSA(o *envOptions) { o.rsa = true }

func withBroker(o *envOptions) { o.broker = true }

func withPgBouncer(o *envOptions) { o.pgbouncer = true }

func withConfig(f func(*api.Config)) func(*envOptions) {
	return func(o *envOptions) { o.cfg = f }
}

func (e *env) remember(secrets ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			e.secrets = append(e.secrets, s)
		}
	}
}

// secretPattern matches every kind of iotauth secret and any JWT (a display prefix, 8 characters after
// the kind prefix, is allowed: it is what listings show).
var secretPattern = regexp.MustCompile(`iot[sap]k_(live|test)_[0-9A-Za-z]{20,}|iotmp_[0-9A-Za-z]{20,}|prov_[0-9A-Za-z]{20,}|eyJ[0-9A-Za-z_-]{8,}\.`)

// checkNoSecretsLeaked is H3 and S3 for every test: the server's log holds no secret-shaped string and
// none of the secrets the test saw, and neither does a dump of every table.
func (e *env) checkNoSecretsLeaked() {
	t := e.t
	logs := e.logs.String()
	if m := secretPattern.FindString(logs); m != "" {
		t.Errorf("H3: the server logged a secret-shaped string starting %.8q", m)
	}
	e.mu.Lock()
	secrets := append([]string(nil), e.secrets...)
	e.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("H3: the server logged a secret the test used (%d chars, starting %.6q)", len(s), s)
		}
	}
	var dump strings.Builder
	for _, table := range []string{"agents", "api_keys", "mqtt_credentials", "acl_rules", "users", "refresh_tokens", "provisioning_keys", "audit_events", "app_keys", "publishable_keys"} {
		var s *string
		if err := harness.QueryRow(t, e.dsn, `SELECT string_agg(t::text, E'\n') FROM `+table+` t`).Scan(&s); err != nil {
			t.Errorf("dump %s: %v", table, err)
			continue
		}
		if s != nil {
			dump.WriteString(*s)
		}
	}
	if m := secretPattern.FindString(dump.String()); m != "" {
		t.Errorf("S3: the database holds a secret-shaped string starting %.8q", m)
	}
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(dump.String(), s) {
			t.Errorf("S3: the database holds a secret the test used in plaintext (starting %.6q)", s)
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// resp is an HTTP answer.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r resp) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object (status %d): %s", r.Status, r.Body)
	}
	return m
}

// Problem decodes a problem+json body.
func (r resp) Problem(t *testing.T) api.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json (status %d): %s", ct, r.Status, r.Body)
	}
	var p api.Problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// req is one request to send.
type req struct {
	Method string
	Path   string
	Body   any    // marshalled to JSON unless a string ([]byte and string are sent as is)
	CType  string // default application/json when Body is set
	Header map[string]string
	Token  string // Authorization: Bearer
}

func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	ctype := r.CType
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(buf)
	}
	if r.Body != nil && ctype == "" {
		ctype = "application/json"
	}
	hr, err := http.NewRequest(r.Method, e.http.URL+r.Path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" && ctype != "-" {
		hr.Header.Set("Content-Type", ctype)
	}
	for k, v := range r.Header {
		hr.Header.Set(k, v)
	}
	if r.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.Token)
	}
	res, err := e.http.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.Method, r.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := resp{Status: res.StatusCode, Header: res.Header, Body: b}
	// Remember every secret the server hands out, for the leak checks.
	if res.StatusCode < 300 && len(b) > 0 && b[0] == '{' {
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			e.rememberFrom(m)
		}
	}
	return out
}

func (e *env) rememberFrom(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case string:
			switch k {
			case "accessToken", "refreshToken", "apiKey", "key", "password", "username":
				e.remember(x)
			}
		case map[string]any:
			e.rememberFrom(x)
		}
	}
}

// expect checks status and, for errors, the problem code; it returns the response.
func (e *env) expect(r req, status int, code string) resp {
	e.t.Helper()
	res := e.do(r)
	if res.Status != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", r.Method, r.Path, res.Status, status, res.Body)
	}
	if code != "" {
		if p := res.Problem(e.t); p.Code != code {
			e.t.Fatalf("%s %s: code %q, want %q: %s", r.Method, r.Path, p.Code, code, res.Body)
		}
	}
	return res
}

// createUser makes an operator directly in the store, as `iotauth user create` does.
func (e *env) createUser(email, password, role string) store.User {
	e.t.Helper()
	h, err := passhash.HashPassword(password)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.st.Accounts.CreateUser(context.Background(), email, h, role, store.AuditEvent{Actor: "test", Action: "user_create"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.remember(password)
	return u
}

// tokens is a login's answer.
type tokens struct {
	Access, Refresh string
	ExpiresIn       float64
}

func (e *env) login(email, password string) tokens {
	e.t.Helper()
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]string{"email": email, "password": password}}, 200, "")
	m := res.JSON(e.t)
	return tokens{Access: m["accessToken"].(string), Refresh: m["refreshToken"].(string), ExpiresIn: m["expiresIn"].(float64)}
}

// admin creates an admin and logs in.
func (e *env) admin() tokens {
	e.t.Helper()
	e.createUser("admin@example.com", "correct horse battery", "admin")
	return e.login("admin@example.com", "correct horse battery")
}

// userWithRole creates a user of role and logs in.
func (e *env) userWithRole(role string) tokens {
	e.t.Helper()
	email := role + "@example.com"
	e.createUser(email, "password-of-"+role, role)
	return e.login(email, "password-of-"+role)
}

// provisioned is what POST /api/v1/provision/agent returned.
type provisioned struct {
	AgentUUID string `json:"agentUuid"`
	KeyID     string `json:"keyId"`
	APIKey    string `json:"apiKey"`
	MQTT      struct {
		Host     string `json:"host"`
		Port     int    `json:"port"`
		Username string `json:"username"`
		Password string `json:"password"`
		ClientID string `json:"clientId"`
	} `json:"mqtt"`
}

// provisioningKey creates a provisioning key as the given operator and returns it.
func (e *env) provisioningKey(tok string) string {
	e.t.Helper()
	res := e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: tok, Body: map[string]any{"name": "batch"}}, 201, "")
	return res.JSON(e.t)["key"].(string)
}

// provision registers an agent with a fresh provisioning key.
func (e *env) provision(tok, name string) provisioned {
	e.t.Helper()
	key := e.provisioningKey(tok)
	res := e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": name}}, 201, "")
	var p provisioned
	if err := json.Unmarshal(res.Body, &p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// fingerprint summarises every table whose change would matter, to prove a refused request changed
// nothing. The audit trail is left out on purpose: refusals are recorded there.
func (e *env) fingerprint() string {
	e.t.Helper()
	var b strings.Builder
	for _, table := range []string{"agents", "api_keys", "mqtt_credentials", "acl_rules", "users", "refresh_tokens", "provisioning_keys", "app_keys"} {
		var s string
		// last_used_at is left out: a broker records key use in the background every few seconds, which
		// would otherwise make a refused request look like a change now and then.
		if err := harness.QueryRow(e.t, e.dsn, `SELECT md5(COALESCE(string_agg((to_jsonb(t) - 'last_used_at')::text, ',' ORDER BY (to_jsonb(t) - 'last_used_at')::text), '')) FROM `+table+` t`).Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		b.WriteString(table + ":" + s + " ")
	}
	return b.String()
}

// count runs SELECT count(*) with a WHERE clause.
func (e *env) count(table, where string, args ...any) int {
	e.t.Helper()
	q := `SELECT count(*) FROM ` + table
	if where != "" {
		q += ` WHERE ` + where
	}
	var n int
	if err := harness.QueryRow(e.t, e.dsn, q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	harness.Exec(e.t, e.dsn, sql, args...)
}
