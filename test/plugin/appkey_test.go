package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// app is an application key as a test uses it.
type app struct {
	ID, Key, Password string
}

// appKey creates an application key with these topics ("access pattern" each) through the store.
func (e *env) appKey(name string, expires time.Time, topics ...string) app {
	e.t.Helper()
	p := store.NewAppKeyParams{Name: name, Expires: expires}
	for _, s := range topics {
		access, pattern, _ := strings.Cut(s, " ")
		p.Topics = append(p.Topics, store.AppTopic{Access: access, Pattern: pattern})
	}
	k, key, pw, err := e.st.Keys.CreateAppKey(context.Background(), p, store.AuditEvent{Actor: "test", Action: "app_key_create"})
	if err != nil {
		e.t.Fatal(err)
	}
	return app{ID: k.ID, Key: key.Reveal(), Password: pw.Reveal()}
}

// watchApp connects an application key with a client id and returns the client and a channel that
// receives the time the connection was lost.
func watchApp(t *testing.T, b *harness.Broker, a app, clientID string) (mqtt.Client, <-chan time.Time) {
	t.Helper()
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(b, a.Key, a.Password, clientID)
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("connect application key as %s: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, lost
}

// subscribeCodes subscribes to each filter on its own and returns the SUBACK code of each.
func subscribeCodes(t *testing.T, c mqtt.Client, filters []string, got chan<- string) map[string]byte {
	t.Helper()
	out := map[string]byte{}
	for _, f := range filters {
		tok := c.Subscribe(f, 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() + " " + string(m.Payload()) })
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %q: %v", f, tok.Error())
		}
		// paho keys a shared subscription's result by its inner filter: take the one result there is.
		for _, code := range tok.(*mqtt.SubscribeToken).Result() {
			out[f] = code
		}
	}
	return out
}

func publish(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", topic, tok.Error())
	}
}

// expectCopies waits for want on ch and then drains it for a moment: every message must be want
// (overlapping and shared subscriptions deliver one or more copies).
func expectCopies(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	expectMessage(t, ch, want)
	for {
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("received %q, want %q", got, want)
			}
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// expectMessage waits for want on ch; expectNone fails if anything arrives within d.
func expectMessage(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("received %q, want %q", got, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%q was not delivered", want)
	}
}

func expectNone(t *testing.T, ch <-chan string, d time.Duration, what string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("%s: %q was delivered", what, got)
	case <-time.After(d):
	}
}

// TestAppKeyReadsTelemetry is application keys (docs/app-keys.md) on the broker: an application key connects like an agent (key as
// username, its own password, any client id but agent-…), gets exactly its topics (docs/security.md, A2:
// subscriptions only as subsets of read grants, $share checked on its inner filter, $ topics denied,
// no wildcard publish), may hold several connections, and never shows its key in the broker's log.
func TestAppKeyReadsTelemetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("sensor")
	other := e.agent("other sensor")
	k := e.appKey("telemetry-consumer", time.Time{}, "read agents/+/telemetry", "write agents/+/cmd")

	agentMsgs := make(chan string, 10)
	ac := harness.MustConnect(t, e.b, a)
	defer ac.Disconnect(50)
	if codes := subscribeCodes(t, ac, []string{a.Namespace() + "/cmd"}, agentMsgs); codes[a.Namespace()+"/cmd"] >= 0x80 {
		t.Fatal("the agent's own command subscription was refused")
	}

	appMsgs := make(chan string, 10)
	c1, _ := watchApp(t, e.b, k, "consumer-1")
	c2, _ := watchApp(t, e.b, k, "consumer-2") // several connections per key
	codes := subscribeCodes(t, c1, []string{
		"agents/+/telemetry", "agents/" + a.UUID + "/telemetry", "$share/workers/agents/+/telemetry",
		"agents/#", "agents/+/+", "#", "agents/+/telemetry/#", "agents/+/cmd", "$SYS/#",
		"$share/workers/agents/#", "$share/workers/$SYS/#",
	}, appMsgs)
	for f, code := range codes {
		granted := code < 0x80
		want := f == "agents/+/telemetry" || f == "agents/"+a.UUID+"/telemetry" || f == "$share/workers/agents/+/telemetry"
		if granted != want {
			t.Errorf("SUBSCRIBE %q: code %#x, want granted=%v", f, code, want)
		}
	}
	if code := subscribeCodes(t, c2, []string{"$share/workers/agents/+/telemetry"}, appMsgs)["$share/workers/agents/+/telemetry"]; code >= 0x80 {
		t.Errorf("second connection's shared subscription refused (%#x)", code)
	}

	// Agent telemetry reaches the consumer.
	publish(t, ac, a.Namespace()+"/telemetry", "21.5")
	expectCopies(t, appMsgs, a.Namespace()+"/telemetry 21.5")
	oc := harness.MustConnect(t, e.b, other)
	defer oc.Disconnect(50)
	publish(t, oc, other.Namespace()+"/telemetry", "7")
	expectCopies(t, appMsgs, other.Namespace()+"/telemetry 7")
	// An agent's other topics are not the consumer's.
	publish(t, ac, a.Namespace()+"/state", "private")
	expectNone(t, appMsgs, 300*time.Millisecond, "agent state to the consumer")

	// The consumer commands an agent; it cannot write where it may only read, nor publish a wildcard.
	publish(t, c2, a.Namespace()+"/cmd", "reboot")
	expectMessage(t, agentMsgs, a.Namespace()+"/cmd reboot")
	publish(t, c2, a.Namespace()+"/telemetry", "forged")
	expectNone(t, appMsgs, 500*time.Millisecond, "telemetry forged by a read-only key")
	c2.Publish("agents/+/cmd", 1, false, "wildcard").WaitTimeout(time.Second)
	expectNone(t, agentMsgs, 500*time.Millisecond, "a wildcard publish")

	// docs/security.md, A3: never an agent's client id; the agent's session is not disturbed.
	for _, id := range []string{a.ClientID, "agent-" + k.ID, "agent-x"} {
		c, err := harness.Connect(e.b, k.Key, k.Password, id)
		if c != nil {
			c.Disconnect(10)
		}
		refused(t, err, "application key with client id "+id)
	}
	if !ac.IsConnectionOpen() {
		t.Fatal("the agent's session was disturbed by an application key using its client id")
	}
	publish(t, ac, a.Namespace()+"/telemetry", "22")
	expectCopies(t, appMsgs, a.Namespace()+"/telemetry 22")

	// Wrong password, and the agent's password with the app key: refused.
	for _, pw := range []string{a.Password, "iotmp_wrong"} {
		c, err := harness.Connect(e.b, k.Key, pw, "consumer-3")
		if c != nil {
			c.Disconnect(10)
		}
		refused(t, err, "application key with a wrong password")
	}
	// Every refused use is audited (written by the plugin's background loop once a second).
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := harness.QueryRow(t, e.dsn, `SELECT count(*) FROM audit_events WHERE action = 'app_key_refused'
			AND target = $1 AND outcome = 'failure' AND detail ->> 'via' = 'mqtt'`, "app-key:"+k.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refused connects audited, want 5", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if log := e.b.Log(); strings.Contains(log, k.Key) || !strings.Contains(log, "iotauth-app:"+k.ID) {
		t.Error("M10: the broker log shows the application key, or not the session's iotauth-app name")
	}
}

// TestAppKeyRevokedOrExpiredKicked is A4 (docs/security.md) for application keys: a revoke (REST's store call,
// the CLI, plain SQL) or an expiry closes every session of the key on both brokers sharing the database
// within 1 s, reconnects are refused, and other keys' sessions stay.
func TestAppKeyRevokedOrExpiredKicked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := harness.PluginBroker(t, e.dsn)
	tests := []struct {
		name   string
		revoke func(k app)
	}{
		{"store revoke", func(k app) {
			if _, err := e.st.Keys.RevokeAppKey(context.Background(), k.ID, store.AuditEvent{Actor: "test", Action: "app_key_revoke"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"cli revoke", func(k app) { e.iotauthCLI("app-key", "revoke", k.ID) }},
		{"sql expiry", func(k app) { e.exec(`UPDATE app_keys SET expires_at = now() WHERE id = $1`, k.ID) }},
		{"sql delete", func(k app) { e.exec(`DELETE FROM app_keys WHERE id = $1`, k.ID) }},
		{"sql topics change", func(k app) {
			e.exec(`UPDATE app_keys SET topics = '[{"access":"read","pattern":"nothing"}]' WHERE id = $1`, k.ID)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := e.appKey(tt.name, time.Time{}, "read agents/+/telemetry")
			bystander := e.appKey(tt.name+" bystander", time.Time{}, "read agents/+/telemetry")
			_, lost1 := watchApp(t, e.b, k, "svc-a")
			_, lost2 := watchApp(t, second, k, "svc-b")
			_, lost3 := watchApp(t, e.b, k, "svc-c")
			_, lostBy := watchApp(t, e.b, bystander, "svc-bystander")
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			tt.revoke(k)
			for i, lost := range []<-chan time.Time{lost1, lost2, lost3} {
				at := closedBy(t, lost, 3*time.Second, fmt.Sprintf("session %d of the revoked key", i+1))
				if d := at.Sub(start); d > time.Second {
					t.Errorf("session %d closed after %v, want ≤ 1s", i+1, d)
				}
			}
			if tt.name != "sql topics change" {
				for _, b := range []*harness.Broker{e.b, second} {
					c, err := harness.Connect(b, k.Key, k.Password, "svc-again")
					if c != nil {
						c.Disconnect(10)
					}
					refused(t, err, "reconnect after "+tt.name)
				}
			}
			select {
			case <-lostBy:
				t.Fatal("another application key's session was closed")
			default:
			}
		})
	}

	// A key that simply runs out: the once-a-second expiry scan closes its sessions on both brokers.
	t.Run("natural expiry", func(t *testing.T) {
		expires := time.Now().Add(2 * time.Second)
		k := e.appKey("short-lived", expires, "read agents/+/telemetry")
		_, lost1 := watchApp(t, e.b, k, "short-a")
		_, lost2 := watchApp(t, second, k, "short-b")
		for i, lost := range []<-chan time.Time{lost1, lost2} {
			at := closedBy(t, lost, 5*time.Second, fmt.Sprintf("session %d of the expired key", i+1))
			if d := at.Sub(expires); d > 1100*time.Millisecond || d < 0 {
				t.Errorf("session %d closed %v after the expiry, want within 1 s", i+1, d)
			}
		}
	})
}

// TestCLIAppKey: `iotauth app-key create` prints the same JSON as the REST API, with credentials that
// connect as printed; list shows prefixes only; revoke closes the session.
func TestCLIAppKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := e.iotauthCLI("app-key", "create", "--name", "cli-consumer", "--right", "agents:read",
		"--topic", "read:agents/+/telemetry", "--expires-at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	var created struct {
		ID, Key, Prefix, Name string
		Rights                []string
		Topics                []store.AppTopic
		ExpiresAt             *time.Time
		MQTT                  struct{ Username, Password string }
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	if created.MQTT.Username != created.Key || created.Name != "cli-consumer" || len(created.Rights) != 1 ||
		len(created.Topics) != 1 || created.ExpiresAt == nil || !strings.HasPrefix(created.Key, created.Prefix) {
		t.Fatalf("unexpected output (secrets elided): id %s name %s rights %v topics %v", created.ID, created.Name, created.Rights, created.Topics)
	}
	k := app{ID: created.ID, Key: created.Key, Password: created.MQTT.Password}
	_, lost := watchApp(t, e.b, k, "cli-consumer-1")
	list := e.iotauthCLI("app-key", "list")
	if !strings.Contains(list, created.ID) || !strings.Contains(list, created.Prefix) || strings.Contains(list, created.Key) {
		t.Fatalf("list does not show the key's id and prefix, or shows the key:\n%s", list)
	}
	e.iotauthCLI("app-key", "revoke", created.ID)
	closedBy(t, lost, 3*time.Second, "the CLI-revoked key's session")
	bin, err := harness.BinPath()
	if err != nil {
		t.Fatal(err)
	}
	if out, code := harness.CLI(t, bin, "app-key", "create", "--name", "x", "--topic", "read:$SYS/#"); code == 0 || !strings.Contains(out, "--topic") {
		t.Fatalf("a $ topic was accepted (exit %d): %s", code, out)
	}
}

// TestAppKeyCorruptRows is M14 (docs/security.md) for application keys: a row that plain SQL made untrustworthy
// (a $ topic, a topic without a pattern, an unknown access, a malformed password hash) refuses that key,
// logs it, and does not disturb the broker or other keys.
func TestAppKeyCorruptRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	good := e.appKey("good", time.Time{}, "read agents/+/telemetry")
	for _, tt := range []struct{ name, sql string }{
		{"$ topic", `UPDATE app_keys SET topics = '[{"access":"read","pattern":"$SYS/#"}]' WHERE id = $1`},
		{"no pattern", `UPDATE app_keys SET topics = '[{"access":"read"}]' WHERE id = $1`},
		{"unknown access", `UPDATE app_keys SET topics = '[{"access":"all","pattern":"#"}]' WHERE id = $1`},
		{"malformed hash", `UPDATE app_keys SET mqtt_password_hash = 'sha256$nothex' WHERE id = $1`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := e.appKey(tt.name, time.Time{}, "read agents/+/telemetry")
			e.exec(tt.sql, k.ID)
			c, err := harness.Connect(e.b, k.Key, k.Password, "corrupt-"+strings.ReplaceAll(tt.name, " ", "-"))
			if c != nil {
				c.Disconnect(10)
			}
			refused(t, err, tt.name)
		})
	}
	c, err := harness.Connect(e.b, good.Key, good.Password, "good-1")
	if err != nil {
		t.Fatalf("a sound key was refused after corrupt ones: %v", err)
	}
	c.Disconnect(10)
}

// appLookups counts the single-key application-key lookups (the app connect path's query) this test's
// database has executed (pg_stat_statements).
func (e *env) appLookups() int64 {
	e.t.Helper()
	var n int64
	if err := harness.QueryRow(e.t, e.dsn, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE '%FROM app_keys k%'
		  AND query LIKE '%k.digest = $1%'`).Scan(&n); err != nil {
		e.t.Fatalf("count lookups (needs pg_stat_statements): %v", err)
	}
	return n
}

// TestAppKeyPreloadSIGHUPAndLastUsed: application keys are preloaded like device keys (the first
// connects after a start need no query), a SIGHUP keeps their sessions (the plugin recognises its own
// iotauth-app names, and a client presenting one itself is refused), and their use is recorded.
func TestAppKeyPreloadSIGHUPAndLastUsed(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	k := e.appKey("preloaded", time.Time{}, "read agents/+/telemetry")
	before := e.appLookups()
	e.b = harness.PluginBroker(t, dsn)
	c, lost := watchApp(t, e.b, k, "svc-1")
	if n := e.appLookups() - before; n != 0 {
		t.Fatalf("the first connect after a start caused %d application-key lookups, want 0 (preloaded)", n)
	}
	if err := e.b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e.b.WaitLog("Reloading config", 3*time.Second) {
		t.Fatal("broker did not reload on SIGHUP")
	}
	stillOpenAfter(t, lost, 1500*time.Millisecond, "application session after SIGHUP")
	if !c.IsConnectionOpen() {
		t.Fatal("application session closed by SIGHUP")
	}
	imp, err := harness.Connect(e.b, "iotauth-app:"+k.ID, k.Password, "impostor")
	if imp != nil {
		imp.Disconnect(10)
	}
	refused(t, err, "a client presenting the plugin's own iotauth-app name")
	deadline := time.Now().Add(10 * time.Second)
	for e.countRows(`SELECT count(*) FROM app_keys WHERE id = $1 AND last_used_at IS NOT NULL`, k.ID) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the application key's use was not recorded in last_used_at")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) countRows(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := harness.QueryRow(e.t, e.dsn, sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}
