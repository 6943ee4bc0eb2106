package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// withBridge gives the env's API a real publish bridge to its broker (use with withBroker), built on
// the env's own store; *out is the bridge, closed when the test ends.
func withBridge(t *testing.T, out **bridge.Bridge, mod func(*api.Config)) func(*envOptions) {
	return withConfig(func(c *api.Config) {
		b, err := bridge.New(bridge.Config{BrokerURL: "tcp://127.0.0.1:" + strconv.Itoa(c.MQTTPort),
			Issuer: bridge.StoreIssuer{Store: c.Store, Kind: secret.AppKey}, Logger: c.Logger})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for !b.Connected() && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if !b.Connected() {
			t.Fatal("the publish bridge did not connect to the broker within 15 s")
		}
		c.Publisher = b
		if mod != nil {
			mod(c)
		}
		*out = b
	})
}

// subscriber connects an agent (paho, MQTT 3.1.1, its own credentials) and subscribes at QoS 1 to
// filter; messages arrive on the returned channel.
func subscriber(t *testing.T, b *harness.Broker, a harness.Agent, filter string) <-chan mqtt.Message {
	t.Helper()
	got := make(chan mqtt.Message, 100)
	c := harness.MustConnect(t, b, a)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { got <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return got
}

// receive waits (up to 10 s: a loaded 2-core machine) for the next message.
func receive(t *testing.T, got <-chan mqtt.Message) mqtt.Message {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message arrived within 10 s")
		return nil
	}
}

func pubBody(topic, payload string, qos int) map[string]any {
	return map[string]any{"topic": topic, "payload": payload, "qos": qos}
}

// TestPublishBridge is B1 (docs/security.md) against the real broker: an application key with the publish
// right and a write grant on agents/+/cmd/# publishes to an agent's topic and the agent itself (a real
// paho client with its own credentials) receives it: QoS 1 answers 200 after the PUBACK, QoS 0 202;
// base64 arrives byte-exact. Topics outside the grants, keys without the right, operators' tokens,
// publishable keys, $ topics, wildcards, oversized payloads and a spent rate are refused with their own
// answers, and every publish is audited with topic and size but never the payload.
func TestPublishBridge(t *testing.T) {
	var br *bridge.Bridge
	e := newEnv(t, withBroker, withBridge(t, &br, func(c *api.Config) {
		c.PublishMaxPayload = 1024
		c.PublishRate, c.PublishBurst = 0.01, 40
	}))
	adm := e.admin()
	a := harness.CreateAgent(t, e.st, "gw")
	e.remember(a.Key, a.Password)
	got := subscriber(t, e.broker, a, a.Namespace()+"/cmd/#")
	k := e.createAppKey(adm.Access, map[string]any{"name": "ops", "rights": []string{"publish"},
		"topics": []map[string]string{{"access": "write", "pattern": "agents/+/cmd/#"}}})
	e.remember(k.Key, k.Password)

	const secretPayload = "reboot-now-7Qx2"
	res := e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd/reboot", secretPayload, 1)}, 200, "")
	if m := res.JSON(t); m["status"] != "acknowledged" || m["size"].(float64) != float64(len(secretPayload)) {
		t.Fatalf("QoS 1 answer: %s", res.Body)
	}
	if m := receive(t, got); m.Topic() != a.Namespace()+"/cmd/reboot" || string(m.Payload()) != secretPayload {
		t.Fatalf("received %s %q", m.Topic(), m.Payload())
	}
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", "zero", 0)}, 202, "")
	if m := receive(t, got); string(m.Payload()) != "zero" {
		t.Fatalf("QoS 0 received %q", m.Payload())
	}
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0, 'x'}
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: map[string]any{
		"topic": a.Namespace() + "/cmd/bin", "payload": base64.StdEncoding.EncodeToString(binary), "encoding": "base64", "qos": 1}}, 200, "")
	if m := receive(t, got); !bytes.Equal(m.Payload(), binary) {
		t.Fatalf("base64 payload arrived as %x, want %x", m.Payload(), binary)
	}

	// Refusals.
	other := harness.CreateAgent(t, e.st, "other")
	for _, tc := range []struct {
		name   string
		r      req
		status int
		code   string
		field  string
	}{
		{"outside the grants", req{Token: k.Key, Body: pubBody(a.Namespace()+"/telemetry", "x", 1)}, 403, api.CodeTopicNotGranted, "topic"},
		{"$SYS", req{Token: k.Key, Body: pubBody("$SYS/x", "x", 1)}, 400, "validation_failed", "topic"},
		{"+", req{Token: k.Key, Body: pubBody("a/+", "x", 1)}, 400, "validation_failed", "topic"},
		{"#", req{Token: k.Key, Body: pubBody("a/#", "x", 1)}, 400, "validation_failed", "topic"},
		{"bad base64", req{Token: k.Key, Body: map[string]any{"topic": a.Namespace() + "/cmd", "payload": "%%%", "encoding": "base64", "qos": 1}}, 400, "validation_failed", "payload"},
		{"payload over the cap", req{Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", strings.Repeat("p", 1025), 1)}, 413, "body_too_large", "payload"},
		{"body over the limit", req{Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", strings.Repeat("p", 64<<10), 1)}, 413, "body_too_large", ""},
	} {
		tc.r.Method, tc.r.Path = "POST", "/api/v1/publish"
		res := e.expect(tc.r, tc.status, tc.code)
		if p := res.Problem(t); p.Field != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, p.Field, tc.field)
		}
	}
	noRight := e.createAppKey(adm.Access, map[string]any{"name": "reader", "rights": []string{"agents:read"},
		"topics": []map[string]string{{"access": "write", "pattern": "#"}}})
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: noRight.Key, Body: pubBody(other.Namespace()+"/cmd", "x", 1)}, 403, "missing_right")
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: adm.Access, Body: pubBody(other.Namespace()+"/cmd", "x", 1)}, 403, "forbidden")
	pk, _ := secret.Generate(secret.PublishableKey)
	e.remember(pk.Reveal())
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: pk.Reveal(), Body: pubBody(other.Namespace()+"/cmd", "x", 1)}, 403, "publishable_key_exchange_only")
	select {
	case m := <-got:
		t.Fatalf("a refused publish was delivered: %s", m.Topic())
	default:
	}

	// The audit trail: every publish that reached the bridge, with topic and size, never the payload.
	if n := e.count("audit_events", "action = 'mqtt_publish' AND outcome = 'success' AND actor = $1", "app-key:"+k.ID); n != 3 {
		t.Errorf("%d successful publishes audited, want 3", n)
	}
	var detail string
	if err := harness.QueryRow(t, e.dsn, `SELECT detail::text FROM audit_events WHERE action = 'mqtt_publish' AND target = $1`, "mqtt-topic:"+a.Namespace()+"/cmd/reboot").Scan(&detail); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	_ = json.Unmarshal([]byte(detail), &d)
	if d["topic"] != a.Namespace()+"/cmd/reboot" || d["size"] != float64(len(secretPayload)) || d["qos"] != float64(1) {
		t.Errorf("audit detail %s", detail)
	}
	if n := e.count("audit_events", "action = 'mqtt_publish' AND outcome = 'failure' AND detail->>'reason' = 'topic not granted'"); n != 1 {
		t.Errorf("%d refused topics audited, want 1", n)
	}
	if n := e.count("audit_events", "strpos(detail::text, $1) > 0", secretPayload); n != 0 {
		t.Errorf("B1: %d audit events hold the payload", n)
	}
	if strings.Contains(e.logs.String(), secretPayload) {
		t.Error("the server logged a payload")
	}

	// The rate (burst 40, refill 1 per 100 s): within 40 more calls the key gets 429 with Retry-After.
	for i := 0; ; i++ {
		res := e.do(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", "x", 0)})
		if res.Status == 429 {
			if p := res.Problem(t); p.Code != api.CodePublishRateLimited || res.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without its code or Retry-After: %v %s", res.Header, res.Body)
			}
			break
		}
		if res.Status != 202 || i > 40 {
			t.Fatalf("call %d: %d %s, want 202 until the burst is spent, then 429", i, res.Status, res.Body)
		}
	}
	// The bridge's own key: no REST rights, write on #, an expiry, named for what it is.
	var name, rights, topics string
	var expires time.Time
	if err := harness.QueryRow(t, e.dsn, `SELECT name, rights::text, topics::text, expires_at FROM app_keys WHERE id = $1`, br.AppKeyID()).Scan(&name, &rights, &topics, &expires); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, bridge.KeyNamePrefix) || rights != "{}" || !strings.Contains(topics, `"#"`) || time.Until(expires) > 25*time.Hour || time.Until(expires) < 23*time.Hour {
		t.Fatalf("the bridge's key: %q %s %s %v", name, rights, topics, expires)
	}
}

// TestPublishBridgeBrokerOutage: while the broker is frozen (SIGSTOP: the TCP connection stays up but
// no PUBACK comes) QoS 1 answers 504 publish_timeout after PUBLISH_TIMEOUT, never 200, while QoS 0 is
// sent (202). With the broker stopped the route answers 503 broker_unavailable with Retry-After
// (nothing published); after the broker restarts the bridge reconnects by itself and publishing works
// again (bounded wait).
func TestPublishBridgeBrokerOutage(t *testing.T) {
	var br *bridge.Bridge
	e := newEnv(t, withBroker, withBridge(t, &br, func(c *api.Config) { c.PublishTimeout = time.Second }))
	adm := e.admin()
	a := harness.CreateAgent(t, e.st, "gw")
	e.remember(a.Key, a.Password)
	k := e.createAppKey(adm.Access, map[string]any{"name": "ops", "rights": []string{"publish"},
		"topics": []map[string]string{{"access": "write", "pattern": "agents/+/cmd/#"}}})
	body := pubBody(a.Namespace()+"/cmd", "x", 1)
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: body}, 200, "")

	if err := e.broker.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: body}, 504, api.CodePublishTimeout)
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("504 after %v, before the 1 s PUBLISH_TIMEOUT: the answer did not wait for the PUBACK", d)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", "x", 0)}, 202, "")
	if err := e.broker.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if n := e.count("audit_events", "action = 'mqtt_publish' AND outcome = 'failure' AND detail->>'reason' = 'publish_timeout'"); n != 1 {
		t.Errorf("%d timed-out publishes audited, want 1", n)
	}

	e.broker.Stop()
	// The bridge notices the closed connection at once; allow 10 s on a loaded machine.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := e.do(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: body})
		if res.Status == 503 {
			if p := res.Problem(t); p.Code != api.CodeBrokerUnavailable || res.Header.Get("Retry-After") == "" {
				t.Fatalf("503 without broker_unavailable or Retry-After: %v %s", res.Header, res.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d %s 10 s after the broker stopped", res.Status, res.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.count("audit_events", "action = 'mqtt_publish' AND outcome = 'failure' AND detail->>'reason' = 'broker_unavailable'"); n < 1 {
		t.Error("the failed publish is not audited")
	}

	if err := e.broker.Start(); err != nil {
		t.Fatal(err)
	}
	got := subscriber(t, e.broker, a, a.Namespace()+"/cmd")
	// Reconnect backoff is at most 5 s; allow 30 s on a loaded machine.
	deadline = time.Now().Add(30 * time.Second)
	for {
		res := e.do(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", "back", 1)})
		if res.Status == 200 {
			break
		}
		if res.Status != 503 || time.Now().After(deadline) {
			t.Fatalf("after the restart: %d %s", res.Status, res.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := receive(t, got); string(m.Payload()) != "back" {
		t.Fatalf("received %q after the restart", m.Payload())
	}
}

// TestPublishBridgeServe runs `iotauth serve` as a real process with PUBLISH_BROKER_URL: it creates its
// own application key (no REST rights, write on #, expiring), publishes for a caller's key to an agent
// that receives the message, revokes its key on SIGTERM, and logs no secret. Without PUBLISH_BROKER_URL
// the route answers 503 saying how to configure it.
func TestPublishBridgeServe(t *testing.T) {
	bin := binary(t)
	dsn := pg.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	b := harness.PluginBroker(t, dsn)
	a := harness.CreateAgent(t, st, "gw")
	k, key, pw, err := st.Keys.CreateAppKey(context.Background(), store.NewAppKeyParams{Name: "ops", Rights: []string{store.RightPublish},
		Topics: []store.AppTopic{{Access: "write", Pattern: "agents/+/cmd/#"}}}, store.AuditEvent{Actor: "test", Action: "app_key_create"})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{a.Key, a.Password, key.Reveal(), pw.Reveal(), string(hsSecret)}

	run := func(extra ...string) (base string, logs *syncBuffer, stop func()) {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		logs = &syncBuffer{}
		cmd := exec.Command(bin, "serve")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "JWT_SECRET=" + string(hsSecret),
			"LISTEN_ADDR=" + addr, "METRICS_ADDR=off"}, extra...)
		cmd.Stdout, cmd.Stderr = logs, logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		base = "http://" + addr
		deadline := time.Now().Add(20 * time.Second)
		for {
			if res, err := http.Get(base + "/readyz"); err == nil {
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
		return base, logs, func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("serve exited with %v:\n%s", err, logs.String())
				}
			case <-time.After(40 * time.Second):
				t.Fatal("serve did not stop on SIGTERM")
			}
		}
	}
	post := func(base string, body any) (int, http.Header, []byte) {
		buf, _ := json.Marshal(body)
		hr, _ := http.NewRequest("POST", base+"/api/v1/publish", bytes.NewReader(buf))
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("Authorization", "Bearer "+key.Reveal())
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out bytes.Buffer
		_, _ = out.ReadFrom(res.Body)
		return res.StatusCode, res.Header, out.Bytes()
	}

	// Not configured: 503 naming the setting.
	base, logs, stop := run()
	if status, h, body := post(base, pubBody(a.Namespace()+"/cmd", "x", 1)); status != 503 || !strings.Contains(string(body), "PUBLISH_BROKER_URL") || h.Get("Retry-After") == "" {
		t.Fatalf("without a broker URL: %d %s", status, body)
	}
	stop()
	checkLogs := func(l string) {
		t.Helper()
		if m := secretPattern.FindString(l); m != "" {
			t.Fatalf("serve logged a secret-shaped string starting %.8q", m)
		}
		for _, s := range secrets {
			if strings.Contains(l, s) {
				t.Fatalf("serve logged a secret starting %.6q", s)
			}
		}
	}
	checkLogs(logs.String())

	base, logs, stop = run("PUBLISH_BROKER_URL="+b.URL(), "PUBLISH_MAX_PAYLOAD=4096")
	var bridgeID string
	if err := harness.QueryRow(t, dsn, `SELECT id::text FROM app_keys WHERE name LIKE 'iotauth-publish-bridge %' AND revoked_at IS NULL AND rights = '{}' AND topics = '[{"access":"write","pattern":"#"}]' AND expires_at > now()`).Scan(&bridgeID); err != nil {
		t.Fatalf("serve created no bridge key of its own: %v\n%s", err, logs.String())
	}
	got := subscriber(t, b, a, a.Namespace()+"/cmd/#")
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, _, body := post(base, pubBody(a.Namespace()+"/cmd/x", "from serve", 1))
		if status == 200 {
			break
		}
		if status != 503 || time.Now().After(deadline) {
			t.Fatalf("publish through serve: %d %s\n%s", status, body, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := receive(t, got); string(m.Payload()) != "from serve" {
		t.Fatalf("received %q", m.Payload())
	}
	if status, _, body := post(base, pubBody(a.Namespace()+"/cmd/x", strings.Repeat("p", 4097), 1)); status != 413 {
		t.Fatalf("PUBLISH_MAX_PAYLOAD not applied: %d %s", status, body)
	}
	stop()
	var revoked bool
	if err := harness.QueryRow(t, dsn, `SELECT revoked_at IS NOT NULL FROM app_keys WHERE id = $1`, bridgeID).Scan(&revoked); err != nil || !revoked {
		t.Fatalf("the bridge's key is not revoked after a clean shutdown (%v):\n%s", err, logs.String())
	}
	var audited int
	if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM audit_events WHERE action = 'mqtt_publish' AND actor = $1`, "app-key:"+k.ID).Scan(&audited); err != nil || audited < 1 {
		t.Fatalf("publishes through serve not audited: %d %v", audited, err)
	}
	checkLogs(logs.String())
}

// TestPublishBridgeRenewsARefusedKey: when the broker refuses the bridge's key (here an admin revoked
// it: the broker closes the session within a second and refuses the reconnect), the bridge issues
// itself a new key, moves to a new session and revokes the old key; publishing works again within a
// bounded time. This is the same path as the scheduled renewal before the key expires.
func TestPublishBridgeRenewsARefusedKey(t *testing.T) {
	var br *bridge.Bridge
	e := newEnv(t, withBroker, withBridge(t, &br, nil))
	adm := e.admin()
	a := harness.CreateAgent(t, e.st, "gw")
	e.remember(a.Key, a.Password)
	k := e.createAppKey(adm.Access, map[string]any{"name": "ops", "rights": []string{"publish"},
		"topics": []map[string]string{{"access": "write", "pattern": "agents/+/cmd/#"}}})
	got := subscriber(t, e.broker, a, a.Namespace()+"/cmd")
	first := br.AppKeyID()
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + first, Token: adm.Access}, 204, "")
	// Kick within 1 s, a refused reconnect, a new key and session: allow 30 s on a loaded machine.
	deadline := time.Now().Add(30 * time.Second)
	for br.AppKeyID() == first || !br.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("the bridge still uses its revoked key after 30 s:\n%s", e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(a.Namespace()+"/cmd", "renewed", 1)}, 200, "")
	if m := receive(t, got); string(m.Payload()) != "renewed" {
		t.Fatalf("received %q", m.Payload())
	}
	if n := e.count("app_keys", "name LIKE 'iotauth-publish-bridge %' AND revoked_at IS NULL"); n != 1 {
		t.Fatalf("%d live bridge keys, want exactly the new one", n)
	}
}
