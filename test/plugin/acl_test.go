package plugin_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// Subscriptions that could reach outside the agent's namespace are refused in SUBACK, and
// publishing into another agent's namespace is delivered to no one.
func TestSubscriptionsOutsideNamespaceRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	b := e.agent("b")
	c := harness.MustConnect(t, e.b, a)

	tests := []struct {
		filter string
		ok     bool
	}{
		{a.Namespace() + "/#", true},
		{a.Namespace() + "/+/status", true},
		{a.Namespace(), true},
		{"#", false},
		{"+/#", false},
		{"+", false},
		{"agents/#", false},
		{"agents/+/telemetry", false},
		{"agents/+/#", false},
		{b.Namespace() + "/#", false},
		{b.Namespace() + "/cmd", false},
		{"$SYS/#", false},
		{"$SYS/broker/clients/connected", false},
		{"$CONTROL/#", false},
	}
	for _, tt := range tests {
		tok := c.Subscribe(tt.filter, 1, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %q: %v", tt.filter, tok.Error())
		}
		code := tok.(*mqtt.SubscribeToken).Result()[tt.filter]
		if granted := code < 0x80; granted != tt.ok {
			t.Errorf("SUBSCRIBE %q: SUBACK %#x, want granted=%v", tt.filter, code, tt.ok)
		}
	}

	out, _ := harness.CLI(t, "mosquitto_sub", append(harness.CLIArgs(e.b, b.Key, b.Password, b.ClientID), "-t", "#", "-W", "3")...)
	if want := "All subscription requests were denied."; !strings.Contains(out, want) {
		t.Errorf("mosquitto_sub -t '#': output %q, want %q", out, want)
	}
}

func TestPublishIntoOtherNamespaceNotDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	b := e.agent("b")
	ca := harness.MustConnect(t, e.b, a)
	cb := harness.MustConnect(t, e.b, b)
	got := make(chan string, 10)
	tok := cb.Subscribe(b.Namespace()+"/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	tok.WaitTimeout(5 * time.Second)

	// a writes into b's namespace (denied), next to it (a prefix of a's own uuid is no namespace), and
	// into $SYS; b sees none of it.
	for _, topic := range []string{b.Namespace() + "/cmd", b.Namespace() + "/telemetry", a.Namespace() + "x", "$SYS/x", "agents"} {
		if tok := ca.Publish(topic, 1, false, "intrusion"); !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("publish timed out")
		}
	}
	// b's own publish arrives, proving the subscription works and that a's messages were not merely slow.
	cb.Publish(b.Namespace()+"/self", 1, false, "mine").WaitTimeout(5 * time.Second)
	select {
	case m := <-got:
		if m != b.Namespace()+"/self mine" {
			t.Fatalf("b received %q from another agent", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b's own message did not arrive")
	}
	select {
	case m := <-got:
		t.Fatalf("b received %q", m)
	case <-time.After(300 * time.Millisecond):
	}
	if !e.b.WaitLog("Denied PUBLISH from "+a.ClientID, 2*time.Second) {
		t.Fatal("broker did not log the denied publish")
	}
}

// M2: A's credentials with B's client id are refused, and B's live session is not disturbed (no
// session takeover).
func TestClientIDCollisionDoesNotTakeOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	b := e.agent("b")
	_, lost := watch(t, e.b, b)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		_, code := harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, a.Key, a.Password, b.ClientID), "-V", v, "-t", b.Namespace()+"/x", "-m", "x")...)
		if code == 0 {
			t.Fatalf("%s: A connected with B's client id", v)
		}
	}
	stillOpenAfter(t, lost, 500*time.Millisecond, "B's session, after others used its client id")
}

// M10 with `clientid any`: a client id carrying the key would be printed by Mosquitto on every line
// about the client, so it is refused; any other client id works.
func TestClientIDAnyRefusesKeysAsIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"})
	a := e.agent("a")
	c, err := harness.Connect(e.b, a.Key, a.Password, a.Key)
	if c != nil {
		c.Disconnect(10)
	}
	refused(t, err, "the API key as client id")
	c, err = harness.Connect(e.b, a.Key, a.Password, "gateway-01")
	if err != nil {
		t.Fatalf("clientid any with a plain id: %v", err)
	}
	c.Disconnect(10)
}

// Mosquitto fires DISCONNECT and then checks the will's topic with an ACL check on the same client. The
// check is answered from the ended session's own rules (not from the client's name), for a plain agent
// and for one with extra acl_rules alike.
func TestWillCheckSeesTheEndedSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"})
	plain := e.agent("plain will")
	custom := e.agent("custom will")
	e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'read', 'broadcast/#')`, custom.UUID)
	for _, tc := range []struct {
		a         harness.Agent
		delivered bool
	}{{plain, true}, {custom, true}} {
		c, wills := observeWills(t, e.b, tc.a)
		dying := "dying-" + tc.a.UUID
		sub := exec.Command("mosquitto_sub", append(harness.CLIArgs(e.b, tc.a.Key, tc.a.Password, dying),
			"-t", tc.a.Namespace()+"/x", "--will-topic", tc.a.Namespace()+"/status", "--will-payload", "gone")...)
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		if !e.b.WaitLog("as "+dying, 5*time.Second) {
			_ = sub.Process.Kill()
			t.Fatalf("mosquitto_sub %s did not connect", dying)
		}
		_ = sub.Process.Kill() // no DISCONNECT packet: the broker sends the will
		_ = sub.Wait()
		if !e.b.WaitLog("Client "+dying+" closed its connection", 5*time.Second) {
			t.Fatalf("the broker did not notice %s leave", dying)
		}
		expectWill(t, wills, tc.delivered)
		c.Disconnect(50)
	}
}

// A revoked agent's delayed will is refused: the agent's key is revoked while its will waits out its
// delay, and the re-check that the revocation starts refuses the ended session, so the broker's will
// check (made when the delay is over) is denied. Without revocation the same will is delivered.
func TestDelayedWillOfARevokedAgentIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, revoke := range []bool{false, true} {
		dying := e.agent(fmt.Sprintf("delayed will, revoke %v", revoke))
		observer := e.agent(fmt.Sprintf("observer, revoke %v", revoke))
		e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'read', $2)`, observer.UUID, dying.Namespace()+"/status")
		obs := harness.MustConnect(t, e.b, observer)
		wills := make(chan string, 1)
		if tok := obs.Subscribe(dying.Namespace()+"/status", 1, func(_ mqtt.Client, m mqtt.Message) { wills <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		sub := exec.Command("mosquitto_sub", append(harness.CLIArgs(e.b, dying.Key, dying.Password, dying.ClientID),
			"-V", "5", "-x", "3600", "-t", dying.Namespace()+"/x", "--will-topic", dying.Namespace()+"/status",
			"--will-payload", "ok", "--will-retain", "-D", "will", "will-delay-interval", "2")...)
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		if !e.b.WaitLog("as "+dying.ClientID, 5*time.Second) {
			_ = sub.Process.Kill()
			t.Fatalf("mosquitto_sub %s did not connect", dying.ClientID)
		}
		_ = sub.Process.Kill() // no DISCONNECT packet: the will is due in 2 s
		_ = sub.Wait()
		if !e.b.WaitLog("Client "+dying.ClientID+" closed its connection", 5*time.Second) {
			t.Fatalf("the broker did not notice %s leave", dying.ClientID)
		}
		if revoke {
			e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, dying.KeyID)
			if !e.b.WaitLog("refusing the will and queued messages of an ended session", 2*time.Second) {
				t.Fatal("the revocation did not reach the ended session before its will was due")
			}
		}
		select {
		case w := <-wills:
			if revoke {
				t.Errorf("the delayed will %q of a revoked agent was published", w)
			}
		case <-time.After(5 * time.Second):
			if !revoke {
				t.Errorf("the delayed will of an agent in good standing was not published")
			}
		}
		obs.Disconnect(50)
	}
}
