package plugin_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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

// resumable is a consumer client that can resume its session: connect (clean or not) and subscribe, as
// MQTT 3.1.1 (paho.mqtt.golang) or MQTT 5 (paho.golang) does it. Received messages go to msgs as
// "topic payload".
type resumable struct {
	connect   func(clean bool)
	subscribe func(filter string) (granted bool)
	close     func()
}

func resumable311(t *testing.T, b *harness.Broker, k app, clientID string, msgs chan<- string) *resumable {
	var c mqtt.Client
	r := &resumable{}
	r.connect = func(clean bool) {
		o := harness.ClientOptions(b, k.Key, k.Password, clientID).SetCleanSession(clean)
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m.Topic() + " " + string(m.Payload()) })
		var err error
		if c, err = harness.ConnectWith(o); err != nil {
			t.Fatalf("connect %s: %v", clientID, err)
		}
		t.Cleanup(func() { c.Disconnect(50) })
	}
	r.subscribe = func(filter string) bool {
		tok := c.Subscribe(filter, 1, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %q: %v", filter, tok.Error())
		}
		return tok.(*mqtt.SubscribeToken).Result()[filter] < 0x80
	}
	r.close = func() { c.Disconnect(50) }
	return r
}

// resumable5 connects with a session expiry of 5 minutes, so that the broker keeps the session.
func resumable5(t *testing.T, b *harness.Broker, k app, clientID string, msgs chan<- string) *resumable {
	var c *paho.Client
	r := &resumable{}
	r.connect = func(clean bool) {
		conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(p paho.PublishReceived) (bool, error) {
				msgs <- p.Packet.Topic + " " + string(p.Packet.Payload)
				return true, nil
			},
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		expiry := uint32(300)
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, Username: k.Key, UsernameFlag: true,
			Password: []byte(k.Password), PasswordFlag: true, KeepAlive: 30, CleanStart: clean,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
			conn.Close()
			t.Fatalf("connect %s over MQTT 5: %v", clientID, err)
		}
		cc := c
		t.Cleanup(func() { cc.Disconnect(&paho.Disconnect{}) })
	}
	r.subscribe = func(filter string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if sa == nil || len(sa.Reasons) != 1 {
			t.Fatalf("subscribe %q over MQTT 5: %v", filter, err)
		}
		return sa.Reasons[0] < 0x80
	}
	r.close = func() { c.Disconnect(&paho.Disconnect{}) }
	return r
}

// TestResumedSessionGetsOnlyItsCurrentTopics: a persistent session (clean session false in MQTT 3.1.1,
// clean start false with a session expiry in MQTT 5) subscribed to all telemetry under the key's old
// topics. The topics shrink while it is offline; it reconnects and Mosquitto hands it the old subscription
// without asking the plugin. Every delivery through it is decided by the key's current topics: the session
// did not start clean, so it has no read mark.
func TestResumedSessionGetsOnlyItsCurrentTopics(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		resumable func(*testing.T, *harness.Broker, app, string, chan<- string) *resumable
	}{{"mqtt311", resumable311}, {"mqtt5", resumable5}} {
		t.Run(tt.name, func(t *testing.T) {
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
			c := tt.resumable(t, e.b, k, "persistent-consumer", msgs)
			c.connect(false)
			if !c.subscribe("agents/+/telemetry") {
				t.Fatal("subscription refused")
			}
			publish(t, bc, b.Namespace()+"/telemetry", "before")
			expectMessage(t, seen, b.Namespace()+"/telemetry before")
			expectMessage(t, msgs, b.Namespace()+"/telemetry before")
			c.close()
			if !e.b.WaitLog("Client persistent-consumer disconnected", 5*time.Second) {
				t.Fatal("the broker did not log the consumer's disconnect")
			}

			e.exec(`UPDATE app_keys SET topics = $2::jsonb WHERE id = $1`, k.ID,
				`[{"access":"read","pattern":"`+a.Namespace()+`/telemetry"}]`)
			// Wait until the new topics are what a fresh connect gets.
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

			c.connect(false) // resumes the session: the broker keeps agents/+/telemetry for it
			publish(t, bc, b.Namespace()+"/telemetry", "after")
			expectMessage(t, seen, b.Namespace()+"/telemetry after")
			publish(t, ac, a.Namespace()+"/telemetry", "after")
			expectMessage(t, seen, a.Namespace()+"/telemetry after")
			expectMessage(t, msgs, a.Namespace()+"/telemetry after") // in order: b's, had it been delivered, came first
			c.subscribe("barrier/none")                              // a round trip with the broker
			expectNone(t, msgs, 500*time.Millisecond, "b's telemetry through a subscription made under the old topics")
		})
	}
}
