// Package plugin_test proves the connect path end to end: a real Mosquitto 2.0.11 loading the freshly
// built mosquitto-iotauth.so, a real throwaway PostgreSQL, and real MQTT clients (Eclipse paho and the
// mosquitto_pub/sub/rr tools). Nothing here is mocked.
package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

// env is one test's world: a fresh database, a store on it and a broker with the plugin.
type env struct {
	t   *testing.T
	dsn string
	st  *store.Store
	b   *harness.Broker
}

func newEnv(t *testing.T, opts ...[2]string) *env {
	t.Helper()
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	if opts == nil {
		opts = [][2]string{}
	}
	e.b = harness.PluginBroker(t, dsn, opts...)
	// Registered after the broker's own cleanup, so it runs first, while the log is still there.
	t.Cleanup(func() {
		if m := secretPattern.FindString(e.b.Log()); m != "" {
			t.Errorf("the broker's log holds a plaintext secret (%s…)", m[:8])
		}
	})
	return e
}

// newHooksEnv is newEnv with the test-hook build of the plugin (see plugin/testhooks_on.go): deliberate
// panics on magic inputs.
func newHooksEnv(t *testing.T, opts ...[2]string) *env {
	t.Helper()
	plugin, err := harness.PluginPath(true)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin, Options: append([][2]string{{"dsn", dsn}}, opts...)})
	return e
}

// observeWills connects an observer for agent a (client id observer-<uuid>; needs clientid any) and
// returns it with a channel that receives the wills published on <namespace>/status.
func observeWills(t *testing.T, b *harness.Broker, a harness.Agent) (mqtt.Client, <-chan string) {
	t.Helper()
	obs := a
	obs.ClientID = "observer-" + a.UUID
	c := harness.MustConnect(t, b, obs)
	wills := make(chan string, 1)
	if tok := c.Subscribe(a.Namespace()+"/status", 1, func(_ mqtt.Client, m mqtt.Message) { wills <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c, wills
}

// expectWill waits a second for a will on wills and fails the test unless it came exactly when
// delivered says it should.
func expectWill(t *testing.T, wills <-chan string, delivered bool) {
	t.Helper()
	select {
	case w := <-wills:
		if !delivered {
			t.Errorf("will %q was delivered, want it refused", w)
		}
	case <-time.After(time.Second):
		if delivered {
			t.Errorf("the will was not delivered")
		}
	}
}

func (e *env) agent(name string) harness.Agent {
	e.t.Helper()
	return harness.CreateAgent(e.t, e.st, name)
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	harness.Exec(e.t, e.dsn, sql, args...)
}

// lookups counts the single-key credential lookups (the connect path's query, not preload or batch
// re-checks) this test's database has executed (pg_stat_statements).
func (e *env) lookups() int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE '%FROM api_keys k%'
		  AND query LIKE '%k.digest = $1%'`).Scan(&n)
	if err != nil {
		e.t.Fatalf("count lookups (needs pg_stat_statements): %v", err)
	}
	return n
}

// refused asserts a connect was answered with CONNACK "not authorised" (not a dropped socket).
func refused(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: connect accepted, want CONNACK not authorised", what)
	}
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("%s: connect failed with %v, want CONNACK not authorised", what, err)
	}
}

// watch connects a with a lost-connection callback and returns the client and a channel that receives
// the time the connection was lost.
func watch(t *testing.T, b *harness.Broker, a harness.Agent) (mqtt.Client, <-chan time.Time) {
	t.Helper()
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(b, a.Key, a.Password, a.ClientID)
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("connect %s: %v", a.UUID, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, lost
}

// closedBy waits up to d for a session watched with watch to be closed and returns when it was; the test
// fails, naming what, if it is still open.
func closedBy(t *testing.T, lost <-chan time.Time, d time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-lost:
		return at
	case <-time.After(d):
		t.Fatalf("%s: still open after %v", what, d)
		return time.Time{}
	}
}

// stillOpenAfter fails the test, naming what, if a session watched with watch is closed within d.
func stillOpenAfter(t *testing.T, lost <-chan time.Time, d time.Duration, what string) {
	t.Helper()
	select {
	case <-lost:
		t.Fatalf("%s: closed", what)
	case <-time.After(d):
	}
}

// roundTrip publishes on the agent's namespace and waits for its own subscription to deliver it,
// returning how long that took.
type echo struct {
	ch chan string
}

func subscribeEcho(t *testing.T, c mqtt.Client, a harness.Agent) *echo {
	t.Helper()
	e := &echo{ch: make(chan string, 100)}
	tok := c.Subscribe(a.Namespace()+"/echo", 1, func(_ mqtt.Client, m mqtt.Message) { e.ch <- string(m.Payload()) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[a.Namespace()+"/echo"]; code >= 0x80 {
		t.Fatalf("own namespace subscription refused (%#x)", code)
	}
	return e
}

func (e *echo) roundTrip(t *testing.T, c mqtt.Client, a harness.Agent, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	msg := fmt.Sprintf("ping-%d", time.Now().UnixNano())
	start := time.Now()
	tok := c.Publish(a.Namespace()+"/echo", 1, false, msg)
	deadline := time.After(timeout)
	for {
		select {
		case got := <-e.ch:
			if got == msg {
				tok.WaitTimeout(timeout)
				return time.Since(start), nil
			}
		case <-deadline:
			return 0, fmt.Errorf("no echo within %v", timeout)
		}
	}
}

// containsSecret reports whether text contains any plaintext secret of the given agents.
func containsSecret(text string, agents ...harness.Agent) bool {
	for _, a := range agents {
		if strings.Contains(text, a.Key) || strings.Contains(text, a.Password) || strings.Contains(text, a.Key[11:]) {
			return true
		}
	}
	return false
}

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
