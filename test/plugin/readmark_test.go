package plugin_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// The broker answers deliveries to application keys itself while their read mark is current
// (docs/decisions/0016-read-marks-for-admitted-subscriptions.md). These tests hold it to what Go decides:
// a change of the key's topics stops deliveries at once, before the session is closed, and a session that
// resumed subscriptions made under older topics gets only what its current topics allow.

// roundTrip makes c complete one exchange with the broker (a SUBSCRIBE and its SUBACK): a message the
// broker queued for c before has been written to c by then. A short drain follows for the client's
// handler goroutine.
func roundTrip(t *testing.T, c mqtt.Client) {
	t.Helper()
	if tok := c.Subscribe("barrier/none", 0, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("round trip: %v", tok.Error())
	}
}

// waitAudit waits for an audit event of this action and target (written by the plugin's background loop).
func (e *env) waitAudit(action, target string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := harness.QueryRow(e.t, e.dsn, `SELECT count(*) FROM audit_events WHERE action = $1 AND target = $2`,
			action, target).Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s audit event for %s", action, target)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAppKeyDeliveriesStopWhenTopicsShrink: an application key reads all telemetry, directly and through
// a shared subscription. Its topics shrink to one agent's. From the re-check on (the session_kick audit
// event), no message reaches the session, also while it is still connected: with
// per_listener_settings true, Mosquitto 2.0.11 to 2.0.14 deliver no TICK, so the kick never comes and
// the broker keeps asking about deliveries to the refused session. Reconnected, the key gets exactly its
// new topics, shared subscriptions included.
func TestAppKeyDeliveriesStopWhenTopicsShrink(t *testing.T) {
	t.Parallel()
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	e.b = harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin, Options: [][2]string{{"dsn", dsn}}, PerListener: true})
	a, b := e.agent("a"), e.agent("b")
	k := e.appKey("consumer", time.Time{}, "read agents/+/telemetry")
	bystander := e.appKey("bystander", time.Time{}, "read agents/+/telemetry")
	ac, bc := harness.MustConnect(t, e.b, a), harness.MustConnect(t, e.b, b)

	msgs, seen := make(chan string, 100), make(chan string, 100)
	c, _ := watchApp(t, e.b, k, "consumer")
	for f, code := range subscribeCodes(t, c, []string{"agents/+/telemetry", "$share/g/agents/+/telemetry"}, msgs) {
		if code >= 0x80 {
			t.Fatalf("subscription %q refused", f)
		}
	}
	by, _ := watchApp(t, e.b, bystander, "bystander")
	subscribeCodes(t, by, []string{"agents/+/telemetry"}, seen)

	publish(t, bc, b.Namespace()+"/telemetry", "before")
	expectMessage(t, seen, b.Namespace()+"/telemetry before")
	expectCopies(t, msgs, b.Namespace()+"/telemetry before") // direct and shared
	publish(t, ac, a.Namespace()+"/state", "private")
	publish(t, ac, a.Namespace()+"/telemetry", "before")
	expectMessage(t, seen, a.Namespace()+"/telemetry before")
	expectCopies(t, msgs, a.Namespace()+"/telemetry before") // and not a's state

	e.exec(`UPDATE app_keys SET topics = $2::jsonb WHERE id = $1`, k.ID,
		`[{"access":"read","pattern":"`+a.Namespace()+`/telemetry"}]`)
	e.waitAudit("session_kick", "app-key:"+k.ID)

	// b's telemetry is no longer the key's; nor, until the consumer reconnects, is a's (the session was
	// refused as a whole). The bystander receiving each message shows the broker has handled it.
	publish(t, bc, b.Namespace()+"/telemetry", "after")
	expectMessage(t, seen, b.Namespace()+"/telemetry after")
	publish(t, ac, a.Namespace()+"/telemetry", "after")
	expectMessage(t, seen, a.Namespace()+"/telemetry after")
	if c.IsConnectionOpen() {
		roundTrip(t, c)
	}
	expectNone(t, msgs, 500*time.Millisecond, "delivery to a session refused by the re-check")

	c.Disconnect(50)
	c, _ = watchApp(t, e.b, k, "consumer")
	codes := subscribeCodes(t, c, []string{"agents/+/telemetry", "$share/g/agents/+/telemetry",
		a.Namespace() + "/telemetry", "$share/g/" + a.Namespace() + "/telemetry"}, msgs)
	for f, code := range codes {
		want := f == a.Namespace()+"/telemetry" || f == "$share/g/"+a.Namespace()+"/telemetry"
		if granted := code < 0x80; granted != want {
			t.Errorf("after the change: SUBSCRIBE %q code %#x, want granted=%v", f, code, want)
		}
	}
	publish(t, bc, b.Namespace()+"/telemetry", "again")
	expectMessage(t, seen, b.Namespace()+"/telemetry again")
	publish(t, ac, a.Namespace()+"/telemetry", "again")
	expectCopies(t, msgs, a.Namespace()+"/telemetry again") // direct and shared; never b's
}

// TestResumedSessionGetsOnlyItsCurrentTopics: a persistent session (clean session false) subscribed to
// all telemetry under the key's old topics. The topics shrink while it is offline; it reconnects and
// Mosquitto hands it the old subscription without asking the plugin. Every delivery through it is
// decided by the key's current topics: the session did not start clean, so it has no read mark.
func TestResumedSessionGetsOnlyItsCurrentTopics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.agent("a"), e.agent("b")
	k := e.appKey("persistent consumer", time.Time{}, "read agents/+/telemetry")
	bystander := e.appKey("bystander", time.Time{}, "read agents/+/telemetry")
	ac, bc := harness.MustConnect(t, e.b, a), harness.MustConnect(t, e.b, b)
	seen := make(chan string, 100)
	by, _ := watchApp(t, e.b, bystander, "bystander")
	subscribeCodes(t, by, []string{"agents/+/telemetry"}, seen)

	msgs := make(chan string, 100)
	connect := func() mqtt.Client {
		o := harness.ClientOptions(e.b, k.Key, k.Password, "persistent-consumer").SetCleanSession(false)
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m.Topic() + " " + string(m.Payload()) })
		c, err := harness.ConnectWith(o)
		if err != nil {
			t.Fatalf("connect the persistent consumer: %v", err)
		}
		t.Cleanup(func() { c.Disconnect(50) })
		return c
	}
	c := connect()
	if code := subscribeCodes(t, c, []string{"agents/+/telemetry"}, msgs)["agents/+/telemetry"]; code >= 0x80 {
		t.Fatalf("subscription refused (%#x)", code)
	}
	publish(t, bc, b.Namespace()+"/telemetry", "before")
	expectMessage(t, seen, b.Namespace()+"/telemetry before")
	expectMessage(t, msgs, b.Namespace()+"/telemetry before")
	c.Disconnect(50)
	if !e.b.WaitLog("Client persistent-consumer disconnected", 5*time.Second) {
		t.Fatal("the broker did not log the consumer's disconnect")
	}

	e.exec(`UPDATE app_keys SET topics = $2::jsonb WHERE id = $1`, k.ID,
		`[{"access":"read","pattern":"`+a.Namespace()+`/telemetry"}]`)
	// The ended session is forgotten by the re-check; a reconnect with the old topics would be refused
	// only by chance of timing, so wait until the new topics are what a fresh connect gets.
	deadline := time.Now().Add(10 * time.Second)
	for {
		probe, _ := watchApp(t, e.b, k, "probe")
		code := subscribeCodes(t, probe, []string{"agents/+/telemetry"}, make(chan string, 10))["agents/+/telemetry"]
		probe.Disconnect(50)
		if code >= 0x80 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key's new topics never applied to a new connect")
		}
		time.Sleep(100 * time.Millisecond)
	}

	c = connect() // resumes the session: the broker keeps agents/+/telemetry for it
	publish(t, bc, b.Namespace()+"/telemetry", "after")
	expectMessage(t, seen, b.Namespace()+"/telemetry after")
	publish(t, ac, a.Namespace()+"/telemetry", "after")
	expectMessage(t, seen, a.Namespace()+"/telemetry after")
	expectMessage(t, msgs, a.Namespace()+"/telemetry after") // in order: b's, had it been delivered, came first
	roundTrip(t, c)
	expectNone(t, msgs, 500*time.Millisecond, "b's telemetry through a subscription made under the old topics")
}
