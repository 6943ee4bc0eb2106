// Package presence_test proves presence end to end (docs/presence.md): real Mosquitto brokers loading the
// freshly built plugin, a real throwaway PostgreSQL, real MQTT clients, and the REST API over HTTP.
package presence_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/token"
	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

// env is one test's world: a fresh database, the REST API on a loopback listener with an admin's token.
type env struct {
	t     *testing.T
	dsn   string
	st    *store.Store
	http  *httptest.Server
	admin string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dsn: pg.NewDatabase(t)}
	e.st = harness.OpenStore(t, e.dsn)
	tm, err := token.New(token.Config{Secret: []byte("presence-test-secret-9fQ2xLm8WvZ4pR7kN1bY6cJ0")})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Store: e.st, Tokens: tm, Logger: slog.New(slog.DiscardHandler), MQTTHost: "127.0.0.1",
		MQTTPort: 1883, MaxConcurrentHashes: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(srv)
	t.Cleanup(e.http.Close)
	h, err := passhash.HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Accounts.CreateUser(context.Background(), "admin@example.com", h, "admin", store.AuditEvent{Actor: "test", Action: "user_create"}); err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"accessToken"`
	}
	e.call("POST", "/api/v1/auth/login", map[string]string{"email": "admin@example.com", "password": "correct horse battery"}, 200, &login)
	e.admin = login.AccessToken
	return e
}

// call sends a request as the admin and decodes a JSON answer of the wanted status into out.
func (e *env) call(method, path string, body any, want int, out any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.http.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.admin != "" {
		req.Header.Set("Authorization", "Bearer "+e.admin)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// broker starts Mosquitto with the plugin, a broker id and a presence timeout.
func (e *env) broker(id string, timeout string, opts ...[2]string) *harness.Broker {
	e.t.Helper()
	b := harness.PluginBroker(e.t, e.dsn, append([][2]string{{"broker_id", id}, {"presence_timeout", timeout}}, opts...)...)
	if !b.WaitLog("presence recording", 10*time.Second) {
		e.t.Fatalf("broker %s did not start recording presence:\n%s", id, b.Log())
	}
	return b
}

type presence struct {
	Online   bool `json:"online"`
	Sessions []struct {
		Broker        string    `json:"broker"`
		ClientID      string    `json:"clientId"`
		Protocol      string    `json:"protocol"`
		RemoteAddress string    `json:"remoteAddress"`
		ConnectedAt   time.Time `json:"connectedAt"`
	} `json:"sessions"`
	LastConnectedAt      *time.Time `json:"lastConnectedAt"`
	LastDisconnectedAt   *time.Time `json:"lastDisconnectedAt"`
	LastDisconnectReason *string    `json:"lastDisconnectReason"`
}

func (e *env) presence(agent string) presence {
	e.t.Helper()
	var a struct {
		Presence *presence `json:"presence"`
	}
	e.call("GET", "/api/v1/agents/"+agent, nil, 200, &a)
	if a.Presence == nil {
		e.t.Fatal("GET /api/v1/agents/{uuid} has no presence")
	}
	return *a.Presence
}

// waitPresence polls the agent's presence until ok holds, within d; it fails the test with the last
// answer otherwise.
func (e *env) waitPresence(agent string, d time.Duration, what string, ok func(presence) bool) presence {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := e.presence(agent)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(p)
			e.t.Fatalf("agent %s: not %s within %v: %s", agent, what, d, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func reason(p presence) string {
	if p.LastDisconnectReason == nil {
		return ""
	}
	return *p.LastDisconnectReason
}

func offlineWith(r string) func(presence) bool {
	return func(p presence) bool { return !p.Online && reason(p) == r }
}

func onlineOn(n int) func(presence) bool {
	return func(p presence) bool { return p.Online && len(p.Sessions) == n }
}

// restDeadline is how soon a session's start or end must read in REST (docs/presence.md), with a margin
// for a loaded machine: the poll itself is the measurement, so a failure means a real delay.
const restDeadline = 2 * time.Second

func TestConnectAndCleanDisconnectReadInREST(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-one", "30s")
	a := harness.CreateAgent(t, e.st, "one")
	if p := e.presence(a.UUID); p.Online || p.LastConnectedAt != nil || len(p.Sessions) != 0 {
		t.Fatalf("a new agent reads %+v", p)
	}
	c, err := harness.Connect(b, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	p := e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	s := p.Sessions[0]
	if s.Broker != "b-one" || s.ClientID != a.ClientID || s.Protocol != "mqtt3.1.1" || s.RemoteAddress != "127.0.0.1" || p.LastConnectedAt == nil {
		t.Fatalf("live session %+v", p)
	}
	// The list and the summary agree.
	var list struct {
		Items []struct {
			UUID   string `json:"uuid"`
			Online *bool  `json:"online"`
		} `json:"items"`
	}
	e.call("GET", "/api/v1/agents?online=true", nil, 200, &list)
	if len(list.Items) != 1 || list.Items[0].UUID != a.UUID || list.Items[0].Online == nil || !*list.Items[0].Online {
		t.Fatalf("?online=true: %+v", list.Items)
	}
	e.call("GET", "/api/v1/agents?online=false", nil, 200, &list)
	if len(list.Items) != 0 {
		t.Fatalf("?online=false lists the online agent: %+v", list.Items)
	}
	e.call("GET", "/api/v1/agents?online=maybe", nil, 400, nil)
	c.Disconnect(100)
	p = e.waitPresence(a.UUID, restDeadline, "offline after DISCONNECT", offlineWith("client"))
	if p.LastDisconnectedAt == nil || p.LastDisconnectedAt.Before(*p.LastConnectedAt) {
		t.Fatalf("times %+v", p)
	}
	e.call("GET", "/api/v1/agents?online=false", nil, 200, &list)
	if len(list.Items) != 1 || *list.Items[0].Online {
		t.Fatalf("?online=false after the disconnect: %+v", list.Items)
	}
}

func TestKickedRevokedReadsWithItsReason(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-kick", "30s")
	a := harness.CreateAgent(t, e.st, "kicked")
	harness.MustConnect(t, b, a)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	if _, err := e.st.Keys.RevokeAPIKey(context.Background(), a.KeyID, store.AuditEvent{Actor: "test", Action: "api_key_revoke"}); err != nil {
		t.Fatal(err)
	}
	e.waitPresence(a.UUID, 5*time.Second, "kicked", offlineWith("kicked_revoked"))
}

func TestDisabledAgentReadsKickedDisabled(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-dis", "30s")
	a := harness.CreateAgent(t, e.st, "disabled")
	harness.MustConnect(t, b, a)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	e.call("PATCH", "/api/v1/agents/"+a.UUID, map[string]string{"status": "disabled"}, 200, nil)
	e.waitPresence(a.UUID, 5*time.Second, "kicked", offlineWith("kicked_disabled"))
	var sum map[string]any
	e.call("GET", "/api/v1/agents/summary", nil, 200, &sum)
	if sum["total"] != 1.0 || sum["online"] != 0.0 || sum["offline"] != 1.0 || sum["disabled"] != 1.0 || sum["neverConnected"] != 0.0 {
		t.Fatalf("summary %v", sum)
	}
}

func TestTakeoverOnOneBrokerAndSessionsOnTwo(t *testing.T) {
	e := newEnv(t)
	b1 := e.broker("b-a", "30s")
	b2 := e.broker("b-b", "30s")
	a := harness.CreateAgent(t, e.st, "mover")
	harness.CreateAgent(t, e.st, "never") // counted in neverConnected

	// Same client id twice on one broker: the first session is taken over.
	c1, err := harness.Connect(b1, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Disconnect(50)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	c2, err := harness.Connect(b1, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Disconnect(50)
	e.waitPresence(a.UUID, restDeadline, "taken over", func(p presence) bool {
		return onlineOn(1)(p) && reason(p) == "takeover"
	})

	// The agent moves to the second broker while the first still holds it: both show, then one.
	c3, err := harness.Connect(b2, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Disconnect(50)
	p := e.waitPresence(a.UUID, restDeadline, "on both brokers", onlineOn(2))
	brokers := map[string]bool{}
	for _, s := range p.Sessions {
		brokers[s.Broker] = true
	}
	if !brokers["b-a"] || !brokers["b-b"] {
		t.Fatalf("sessions %+v", p.Sessions)
	}
	var sum struct {
		Total, Online, Offline, NeverConnected int
		ByBroker                               map[string]int `json:"byBroker"`
	}
	e.call("GET", "/api/v1/agents/summary", nil, 200, &sum)
	if sum.Total != 2 || sum.Online != 1 || sum.Offline != 1 || sum.NeverConnected != 1 || sum.ByBroker["b-a"] != 1 || sum.ByBroker["b-b"] != 1 {
		t.Fatalf("summary %+v", sum)
	}
	c2.Disconnect(100)
	p = e.waitPresence(a.UUID, restDeadline, "on the second broker only", onlineOn(1))
	if p.Sessions[0].Broker != "b-b" {
		t.Fatalf("left %+v", p.Sessions)
	}

	// The sessions list: the live one first, then the ended ones newest first, in pages.
	type item struct {
		Broker         string     `json:"broker"`
		DisconnectedAt *time.Time `json:"disconnectedAt"`
		Reason         *string    `json:"reason"`
		ConnectedAt    time.Time  `json:"connectedAt"`
	}
	var page struct {
		Items      []item `json:"items"`
		NextCursor string `json:"nextCursor"`
	}
	var all []item
	path := "/api/v1/agents/" + a.UUID + "/sessions?limit=2"
	for {
		e.call("GET", path, nil, 200, &page)
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			break
		}
		path = "/api/v1/agents/" + a.UUID + "/sessions?limit=2&cursor=" + page.NextCursor
		page.NextCursor = ""
	}
	if len(all) != 3 || all[0].Broker != "b-b" || all[0].DisconnectedAt != nil || all[0].Reason != nil {
		t.Fatalf("sessions %+v", all)
	}
	if *all[1].Reason != "client" || *all[2].Reason != "takeover" || !all[1].ConnectedAt.After(all[2].ConnectedAt) {
		t.Fatalf("ended sessions not newest first with their reasons: %+v %+v", all[1], all[2])
	}
	e.call("GET", "/api/v1/agents/"+a.UUID+"/sessions?cursor=nonsense", nil, 400, nil)
	e.call("GET", "/api/v1/agents/00000000-0000-4000-8000-000000000000/sessions", nil, 404, nil)
}

func TestKilledBrokerReadsOfflineAfterItsTimeoutAndRestartClosesAtOnce(t *testing.T) {
	e := newEnv(t)
	short := e.broker("b-short", "2s")
	long := e.broker("b-long", "60s")
	a := harness.CreateAgent(t, e.st, "on-short")
	l := harness.CreateAgent(t, e.st, "on-long")
	harness.MustConnect(t, short, a)
	harness.MustConnect(t, long, l)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	e.waitPresence(l.UUID, restDeadline, "online", onlineOn(1))

	// kill -9: no end is written; the broker's own 2 s timeout makes its sessions read offline.
	killed := time.Now()
	if err := short.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !short.Wait(10 * time.Second) {
		t.Fatal("the broker survived SIGKILL")
	}
	e.waitPresence(a.UUID, 2*time.Second+10*time.Second, "offline after the broker's timeout", offlineWith("broker_lost"))
	if time.Since(killed) < time.Second {
		t.Fatalf("read offline %v after the kill: before any timeout could pass (the kill was not what ended it?)", time.Since(killed))
	}

	// The other broker's 60 s timeout keeps its session online after a kill...
	if err := long.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	long.Wait(10 * time.Second)
	time.Sleep(2500 * time.Millisecond) // past the short timeout: the long one must still hold
	if p := e.presence(l.UUID); !p.Online {
		t.Fatalf("a broker with a 60 s timeout read offline 2.5 s after its kill: %+v", p)
	}
	// ...until it starts again: its previous start's sessions close before it accepts.
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	p := e.presence(l.UUID)
	if p.Online || reason(p) != "broker_lost" {
		t.Fatalf("after the restart (listener up): %+v", p)
	}
}

// events subscribes an application key with read on iotauth/presence/agents/+ and returns the events.
func subscribeEvents(t *testing.T, e *env, b *harness.Broker) (<-chan map[string]any, mqtt.Client, appKey) {
	t.Helper()
	k := createAppKey(t, e, "watcher", []store.AppTopic{{Access: "read", Pattern: "iotauth/presence/agents/+"}})
	ch := make(chan map[string]any, 16)
	c, err := harness.Connect(b, k.Key, k.Password, "watcher")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe("iotauth/presence/agents/+", 1, func(_ mqtt.Client, m mqtt.Message) {
		var ev map[string]any
		if err := json.Unmarshal(m.Payload(), &ev); err != nil {
			t.Errorf("event %q is not JSON: %v", m.Payload(), err)
			return
		}
		ev["topic"] = m.Topic()
		ev["qos"] = float64(m.Qos())
		ev["retained"] = m.Retained()
		ch <- ev
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if code := tok.(*mqtt.SubscribeToken).Result()["iotauth/presence/agents/+"]; code != 1 {
		t.Fatalf("SUBACK %d for the presence events", code)
	}
	return ch, c, k
}

type appKey struct{ ID, Key, Password string }

func createAppKey(t *testing.T, e *env, name string, topics []store.AppTopic) appKey {
	t.Helper()
	k, key, pw, err := e.st.Keys.CreateAppKey(context.Background(), store.NewAppKeyParams{Name: name, Topics: topics},
		store.AuditEvent{Actor: "test", Action: "app_key_create"})
	if err != nil {
		t.Fatal(err)
	}
	return appKey{ID: k.ID, Key: key.Reveal(), Password: pw.Reveal()}
}

func nextEvent(t *testing.T, ch <-chan map[string]any) map[string]any {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no presence event within 10 s")
	}
	return nil
}

func TestLifecycleEventsReachAnApplicationKey(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-ev", "30s")
	ch, _, _ := subscribeEvents(t, e, b)
	a := harness.CreateAgent(t, e.st, "evented")
	c, err := harness.Connect(b, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, ch)
	if ev["event"] != "connected" || ev["agentUuid"] != a.UUID || ev["clientId"] != a.ClientID || ev["broker"] != "b-ev" ||
		ev["topic"] != "iotauth/presence/agents/"+a.UUID || ev["qos"] != 1.0 || ev["retained"] != false {
		t.Fatalf("connected event %v", ev)
	}
	if _, ok := ev["reason"]; ok {
		t.Fatalf("a connected event with a reason: %v", ev)
	}
	at, err := time.Parse(time.RFC3339Nano, ev["at"].(string))
	if err != nil || !strings.HasSuffix(ev["at"].(string), "Z") || len(ev["at"].(string)) != len("2006-01-02T15:04:05.000Z") ||
		time.Since(at) > time.Minute || time.Since(at) < -time.Minute {
		t.Fatalf("at %v (%v)", ev["at"], err)
	}
	c.Disconnect(100)
	ev = nextEvent(t, ch)
	if ev["event"] != "disconnected" || ev["reason"] != "client" || ev["agentUuid"] != a.UUID {
		t.Fatalf("disconnected event %v", ev)
	}
	for k := range ev {
		switch k {
		case "event", "agentUuid", "clientId", "broker", "at", "reason", "topic", "qos", "retained":
		default:
			t.Fatalf("event field %q: events carry only the documented fields", k)
		}
	}
	// An application key's own sessions are not published.
	k2 := createAppKey(t, e, "other-service", []store.AppTopic{{Access: "read", Pattern: "x/#"}})
	c2, err := harness.Connect(b, k2.Key, k2.Password, "svc-2")
	if err != nil {
		t.Fatal(err)
	}
	c2.Disconnect(50)
	// A marker agent's event arrives after anything the service's connect would have published.
	m := harness.CreateAgent(t, e.st, "marker")
	harness.MustConnect(t, b, m)
	if ev := nextEvent(t, ch); ev["agentUuid"] != m.UUID {
		t.Fatalf("an event other than the marker's: %v", ev)
	}
}

func TestNoClientPublishesUnderPresence(t *testing.T) {
	e := newEnv(t)
	// Agents get readwrite on everything: the presence topics must still refuse their publishes.
	b := e.broker("b-pub", "30s", [2]string{"acl", "readwrite #"})
	ch, _, _ := subscribeEvents(t, e, b)
	a := harness.CreateAgent(t, e.st, "spoofer")
	ca := harness.MustConnect(t, b, a)
	if ev := nextEvent(t, ch); ev["event"] != "connected" || ev["agentUuid"] != a.UUID {
		t.Fatalf("event %v", ev)
	}
	w := createAppKey(t, e, "bridge-like", []store.AppTopic{{Access: "write", Pattern: "#"}})
	cw, err := harness.Connect(b, w.Key, w.Password, "writer")
	if err != nil {
		t.Fatal(err)
	}
	defer cw.Disconnect(50)
	fake := `{"event":"disconnected","agentUuid":"` + a.UUID + `","reason":"client"}`
	for _, c := range []mqtt.Client{ca, cw} {
		if tok := c.Publish("iotauth/presence/agents/"+a.UUID, 1, false, fake); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	// The broker acknowledges a denied QoS 1 publish and drops it. The next event the watcher sees must be
	// a real one: a marker agent's connect, published after both publishes were handled.
	m := harness.CreateAgent(t, e.st, "marker")
	harness.MustConnect(t, b, m)
	if ev := nextEvent(t, ch); ev["agentUuid"] != m.UUID || ev["event"] != "connected" {
		t.Fatalf("a client's publish under iotauth/presence/ reached a subscriber: %v", ev)
	}
	if n := strings.Count(b.Log(), "Denied PUBLISH from "); n < 2 {
		t.Fatalf("the broker logged %d denied publishes, want 2:\n%s", n, b.Log())
	}

	// An application key with write there is refused at creation, naming the topic.
	var prob map[string]any
	e.call("POST", "/api/v1/auth/app-keys", map[string]any{"name": "spoof", "topics": []map[string]string{
		{"access": "readwrite", "pattern": "iotauth/presence/agents/+"}}}, 400, &prob)
	if !strings.Contains(fmt.Sprint(prob), "iotauth/presence/agents/+") {
		t.Fatalf("the 400 does not name the topic: %v", prob)
	}
	e.call("POST", "/api/v1/auth/app-keys", map[string]any{"name": "watch", "topics": []map[string]string{
		{"access": "read", "pattern": "iotauth/presence/agents/+"}}}, 201, nil)
}

func TestBrokerShutdownClosesItsSessions(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-stop", "60s")
	a := harness.CreateAgent(t, e.st, "stopped")
	harness.MustConnect(t, b, a)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	b.Stop() // SIGTERM: the plugin's cleanup writes the ends before the broker exits
	if p := e.presence(a.UUID); p.Online || reason(p) != "broker_shutdown" {
		t.Fatalf("after a clean stop (60 s timeout, so no heartbeat could explain it): %+v", p)
	}
}

// scrape reads the plugin's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// metricValue is the value of the first sample line starting with name (0 when absent).
func metricValue(body, name string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func TestWriteLagMetric(t *testing.T) {
	e := newEnv(t)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := e.broker("b-metrics", "30s", [2]string{"metrics_listen", addr})
	if !b.WaitLog("serving Prometheus metrics", 10*time.Second) {
		t.Fatal("no metrics listener")
	}
	if n := metricValue(scrape(t, addr), "iotauth_plugin_presence_write_lag_seconds_count"); n != 0 {
		t.Fatalf("write lag observed %v rows before any session", n)
	}
	a := harness.CreateAgent(t, e.st, "measured")
	c := harness.MustConnect(t, b, a)
	e.waitPresence(a.UUID, restDeadline, "online", onlineOn(1))
	c.Disconnect(100)
	e.waitPresence(a.UUID, restDeadline, "offline", offlineWith("client"))
	body := scrape(t, addr)
	if n := metricValue(body, "iotauth_plugin_presence_write_lag_seconds_count"); n != 2 {
		t.Fatalf("write lag count %v after one connect and one disconnect, want 2", n)
	}
	if s := metricValue(body, "iotauth_plugin_presence_write_lag_seconds_sum"); s <= 0 || s > 10 {
		t.Fatalf("write lag sum %v s", s)
	}
	if v := metricValue(body, `iotauth_plugin_sessions{state="live"}`); v != 0 {
		t.Fatalf("live sessions gauge %v after the disconnect", v)
	}
}

// A PostgreSQL outage: the starts and ends that happen meanwhile wait in the plugin's queue and read
// right once it answers again.
func TestDatabasePauseKeepsQueuedStartsAndEnds(t *testing.T) {
	if !pg.Owned() {
		t.Fatal("this test pauses PostgreSQL: it needs the cluster the tests started")
	}
	e := newEnv(t)
	ids := [3]harness.Agent{}
	for i := range ids {
		ids[i] = harness.CreateAgent(t, e.st, fmt.Sprint("paused-", i))
	}
	// Preloaded at start: the connects during the outage are decided from the cache.
	b := e.broker("b-pause", "30s")
	if !b.WaitLog("preload", 10*time.Second) {
		t.Fatal("no preload")
	}
	c0 := harness.MustConnect(t, b, ids[0])
	e.waitPresence(ids[0].UUID, restDeadline, "online", onlineOn(1))
	pg.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			pg.Resume()
		}
	})
	c0.Disconnect(100)
	harness.MustConnect(t, b, ids[1])
	if !b.WaitLog("cannot write sessions to PostgreSQL", 20*time.Second) {
		t.Fatal("the plugin never noticed the outage")
	}
	pg.Resume()
	resumed = true
	e.waitPresence(ids[0].UUID, 15*time.Second, "offline after the outage", offlineWith("client"))
	e.waitPresence(ids[1].UUID, 15*time.Second, "online after the outage", onlineOn(1))
	if p := e.presence(ids[2].UUID); p.Online || p.LastConnectedAt != nil {
		t.Fatalf("an agent that never connected: %+v", p)
	}
}

// An outage longer than the queue: records are dropped and counted, and once PostgreSQL answers the
// plugin reconciles from its live sessions, so that the state equals the truth: who is connected reads
// online, who left reads offline (reason error where the end itself was dropped).
func TestDatabaseOutageBeyondTheQueueReconciles(t *testing.T) {
	if !pg.Owned() {
		t.Fatal("this test pauses PostgreSQL: it needs the cluster the tests started")
	}
	e := newEnv(t)
	agents := make([]harness.Agent, 8)
	for i := range agents {
		agents[i] = harness.CreateAgent(t, e.st, fmt.Sprint("churn-", i))
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := e.broker("b-churn", "60s", [2]string{"presence_queue", "3"}, [2]string{"metrics_listen", addr})
	if !b.WaitLog("preload", 10*time.Second) || !b.WaitLog("serving Prometheus metrics", 10*time.Second) {
		t.Fatal("no preload or metrics")
	}
	clients := make([]mqtt.Client, len(agents))
	for i := 0; i < 4; i++ { // 0..3 online before the outage
		clients[i] = harness.MustConnect(t, b, agents[i])
	}
	for i := 0; i < 4; i++ {
		e.waitPresence(agents[i].UUID, restDeadline, "online", onlineOn(1))
	}
	const reconciled = "reconciled PostgreSQL with the live sessions"
	before := strings.Count(b.Log(), reconciled) // a queue of 3 may already have overflowed above
	pg.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			pg.Resume()
		}
	})
	// During the outage: 0 and 1 leave, 4..7 arrive, 5 leaves again: 7 records for a queue of 3.
	clients[0].Disconnect(100)
	clients[1].Disconnect(100)
	for i := 4; i < 8; i++ {
		clients[i] = harness.MustConnect(t, b, agents[i])
	}
	clients[5].Disconnect(100)
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(scrape(t, addr), "iotauth_plugin_presence_dropped_total") < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped records not counted:\n%s", scrape(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	pg.Resume()
	resumed = true
	// The state converges to the truth (a reconcile may have started before the last drop: another follows).
	want := []bool{false, false, true, true, true, false, true, true}
	matches := func() string {
		for i, on := range want {
			p := e.presence(agents[i].UUID)
			// Agent 5 came and went within the outage: its whole session may be among the dropped records.
			ended := reason(p) == "client" || reason(p) == "error" || (i == 5 && p.LastConnectedAt == nil)
			if p.Online != on || (on && len(p.Sessions) != 1) || (!on && !ended) {
				return fmt.Sprintf("agent %d: want online %v: %+v", i, on, p)
			}
		}
		return ""
	}
	deadline = time.Now().Add(20 * time.Second)
	for m := matches(); m != ""; m = matches() {
		if time.Now().After(deadline) {
			t.Fatalf("the state did not converge after the outage: %s", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(b.Log(), reconciled) == before {
		t.Fatal("the state converged without a reconcile: the outage dropped nothing?")
	}
}

// TestPresenceTopicsNeverOnTheFastPath: with agents' rules exactly one namespace per agent under the
// presence topics (readwrite iotauth/presence/agents/%u/#), the broker would answer their publishes
// itself from the per-client mark (c/iotauth_marks.c) and Go would never be asked; the plugin must not
// mark such a namespace, so an agent still cannot publish a fake event on its own event topic.
func TestPresenceTopicsNeverOnTheFastPath(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-fast", "30s", [2]string{"acl", "readwrite iotauth/presence/agents/%u/#"})
	ch, _, _ := subscribeEvents(t, e, b)
	a := harness.CreateAgent(t, e.st, "fast-spoofer")
	ca := harness.MustConnect(t, b, a)
	if ev := nextEvent(t, ch); ev["event"] != "connected" || ev["agentUuid"] != a.UUID {
		t.Fatalf("event %v", ev)
	}
	fake := `{"event":"disconnected","agentUuid":"` + a.UUID + `","reason":"client"}`
	if tok := ca.Publish("iotauth/presence/agents/"+a.UUID, 1, false, fake); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	m := harness.CreateAgent(t, e.st, "fast-marker")
	harness.MustConnect(t, b, m)
	if ev := nextEvent(t, ch); ev["agentUuid"] != m.UUID || ev["event"] != "connected" {
		t.Fatalf("an agent's publish on its own event topic reached a subscriber: %v", ev)
	}
	if !strings.Contains(b.Log(), "Denied PUBLISH from ") {
		t.Fatalf("the broker did not deny the agent's publish under iotauth/presence/:\n%s", b.Log())
	}
}
