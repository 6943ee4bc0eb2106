// Package failover_test runs iotauth against a replicated PostgreSQL — a primary and a pg_basebackup
// standby, both throwaway clusters on loopback — with the real API binary and real brokers given
// libpq multi-host DSNs, and fails the primary over: acknowledged revocations must survive, brokers
// must catch up within a second of the new primary being reachable, and nothing a client was told
// succeeded may be lost.
package failover_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

const (
	jwtSecret     = "failover-test-secret-0123456789abcdef-xyz"
	adminEmail    = "admin@example.com"
	adminPassword = "correct horse battery staple"
)

// api is a running `iotauth serve`, logged in as an admin.
type api struct {
	t     *testing.T
	base  string
	token string
	logs  *harness.Buffer
}

// startAPI creates the admin in the database (through adminDSN, the primary), starts `iotauth serve`
// on dsn with env added, waits until it is ready and logs in. It is killed when the test ends.
func startAPI(t *testing.T, adminDSN, dsn string, env ...string) *api {
	t.Helper()
	st := harness.OpenStore(t, adminDSN)
	h, err := passhash.HashPassword(adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Accounts.CreateUser(context.Background(), adminEmail, h, "admin", store.AuditEvent{Actor: "test", Action: "user_create"}); err != nil {
		t.Fatal(err)
	}
	bin, err := harness.BinPath()
	if err != nil {
		t.Fatal(err)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	a := &api{t: t, base: "http://" + addr, logs: &harness.Buffer{}}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "JWT_SECRET=" + jwtSecret,
		"LISTEN_ADDR=" + addr, "METRICS_ADDR=off", "LOG_FORMAT=text"}, env...)
	cmd.Stdout, cmd.Stderr = a.logs, a.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("iotauth serve's log:\n%s", tail(a.logs.String(), 6000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(a.base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("iotauth serve exited:\n%s", a.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("iotauth serve not ready within 30s:\n%s", a.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var pair struct{ AccessToken string }
	if r := a.call("POST", "/api/v1/auth/login", map[string]string{"email": adminEmail, "password": adminPassword}, &pair); r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	a.token = pair.AccessToken
	return a
}

// reply is an HTTP answer.
type reply struct {
	status     int
	code       string // the problem's code
	retryAfter string
	body       string
	at         time.Time // when it arrived
}

// call sends one request as the admin and decodes a JSON answer into out (when not nil). A transport
// error is status 0.
func (a *api) call(method, path string, body, out any) reply {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	client := http.Client{Timeout: 30 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return reply{body: err.Error(), at: time.Now()}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	rep := reply{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), at: time.Now()}
	var p struct{ Code string }
	if json.Unmarshal(b, &p) == nil {
		rep.code = p.Code
	}
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return rep
}

// revoke revokes an API key over REST.
func (a *api) revoke(keyID string) reply {
	a.t.Helper()
	return a.call("DELETE", "/api/v1/auth/api-keys/"+keyID, nil, nil)
}

func (r reply) ok() bool { return r.status >= 200 && r.status < 300 }

// broker starts Mosquitto with the plugin on dsn, and waits for its change feed.
func broker(t *testing.T, dsn string, opts ...[2]string) *harness.Broker {
	t.Helper()
	b := harness.PluginBroker(t, dsn, opts...)
	if !b.WaitLog("credential change feed listening", 20*time.Second) {
		t.Fatalf("the plugin never listened for credential changes:\n%s", b.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker %d's log:\n%s", b.Port, tail(b.Log(), 6000))
		}
	})
	return b
}

// watch connects a with a lost-connection callback; the channel receives when the session closed.
func watch(t *testing.T, b *harness.Broker, a harness.Agent) <-chan time.Time {
	t.Helper()
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(b, a.Key, a.Password, a.ClientID)
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("connect %s to broker %d: %v", a.UUID, b.Port, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return lost
}

// closedWithin waits up to d for a watched session to close and returns when it did.
func closedWithin(t *testing.T, lost <-chan time.Time, d time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-lost:
		return at
	case <-time.After(d):
		t.Fatalf("%s: session still open after %v", what, d)
		return time.Time{}
	}
}

// connectErr connects once and disconnects; nil means the broker admitted the client.
func connectErr(b *harness.Broker, user, pass, cid string) error {
	c, err := harness.Connect(b, user, pass, cid)
	if c != nil {
		c.Disconnect(10)
	}
	return err
}

func notAuthorised(err error) bool { return errors.Is(err, packets.ErrorRefusedNotAuthorised) }

// eventually polls cond every 50 ms for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// gate is a TCP forwarder to target that refuses connections until opened: a new primary that some
// brokers cannot reach yet (a network partition healing, a load balancer that has not switched).
type gate struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, addr: "127.0.0.1:" + strconv.Itoa(port), target: target}
	t.Cleanup(g.close)
	return g
}

// open starts forwarding; it returns when the port accepts connections.
func (g *gate) open() {
	g.t.Helper()
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.forward(c)
		}
	}()
}

func (g *gate) forward(c net.Conn) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", g.target, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
	}
}

// revokedOn reports whether key keyID is revoked in the database dsn names.
func revokedOn(t *testing.T, dsn, keyID string) bool {
	t.Helper()
	var revoked bool
	if err := harness.QueryRowErr(dsn, `SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1`, keyID).Scan(&revoked); err != nil {
		t.Fatal(err)
	}
	return revoked
}

// dbOn is the DSN of database db on cluster p alone.
func dbOn(p *harness.Postgres, db string) string {
	return strings.Replace(p.AdminDSN, "/postgres?", "/"+db+"?", 1)
}
