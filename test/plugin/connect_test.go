package plugin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// A provisioned agent connects with key, password and agent-<uuid>, and publishes and
// subscribes in its namespace, over MQTT 3.1.1 (paho, mosquitto_pub/sub) and MQTT 5 (mosquitto_rr).
func TestAgentRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("gateway-01")

	c := harness.MustConnect(t, e.b, a)
	ec := subscribeEcho(t, c, a)
	if _, err := ec.roundTrip(t, c, a, 5*time.Second); err != nil {
		t.Fatalf("paho MQTT 3.1.1 round trip: %v", err)
	}

	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, code := harness.CLI(t, "mosquitto_rr", append(harness.CLIArgs(e.b, a.Key, a.Password, a.ClientID),
			"-V", v, "-t", a.Namespace()+"/req", "-e", a.Namespace()+"/req", "-m", "hello-"+v, "-W", "5")...)
		if code != 0 || !strings.Contains(out, "hello-"+v) {
			t.Fatalf("mosquitto_rr %s: exit %d, output %q", v, code, out)
		}
	}

	// mosquitto_sub (MQTT 5) as another agent receives what mosquitto_pub (MQTT 3.1.1) sends into its
	// inbox from the first agent, which an extra acl_rules row allows.
	other := e.agent("gateway-02")
	e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'write', 'agents/' || $2 || '/inbox')`, a.UUID, other.UUID)
	c.Disconnect(50) // the rule applies from the next session on
	subOut := make(chan string, 1)
	go func() {
		out, _ := harness.CLI(t, "mosquitto_sub", append(harness.CLIArgs(e.b, other.Key, other.Password, other.ClientID),
			"-V", "mqttv5", "-t", other.Namespace()+"/inbox", "-C", "1", "-W", "10")...)
		subOut <- out
	}()
	if !e.b.WaitLog("Sending SUBACK to "+other.ClientID, 5*time.Second) {
		t.Fatal("mosquitto_sub did not subscribe")
	}
	out, code := harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, a.Key, a.Password, a.ClientID),
		"-V", "mqttv311", "-q", "1", "-t", other.Namespace()+"/inbox", "-m", "via-cli")...)
	if code != 0 {
		t.Fatalf("mosquitto_pub: exit %d: %s", code, out)
	}
	if got := <-subOut; strings.TrimSpace(got) != "via-cli" {
		t.Fatalf("mosquitto_sub got %q, want via-cli", got)
	}
}

// Every kind of bad credential gets CONNACK "not authorised", never a dropped socket.
func TestRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("good")
	b := e.agent("other")
	revoked := e.agent("revoked")
	if _, err := e.st.Keys.RevokeAPIKey(context.Background(), revoked.KeyID, store.AuditEvent{Actor: "test", Action: "api_key_revoke"}); err != nil {
		t.Fatal(err)
	}
	disabled := e.agent("disabled")
	if err := e.st.Agents.SetAgentStatus(context.Background(), disabled.UUID, "disabled"); err != nil {
		t.Fatal(err)
	}
	expiredNew, err := e.st.Agents.CreateAgent(context.Background(), store.CreateAgentParams{Name: "expired", Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	expired := harness.Agent{UUID: expiredNew.AgentUUID, Key: expiredNew.APIKey.Reveal(), Password: expiredNew.MQTTPassword.Reveal(), ClientID: "agent-" + expiredNew.AgentUUID}
	unknown, _ := secret.Generate(secret.APIKey)
	flipped := []byte(a.Key)
	flipped[15] ^= 1
	long := a.Key + strings.Repeat("x", 250)

	tests := []struct {
		name, user, pass, cid string
	}{
		{"wrong password", a.Key, b.Password, a.ClientID},
		{"unknown key", unknown.Reveal(), a.Password, a.ClientID},
		{"malformed key", "iotsk_live_short", a.Password, a.ClientID},
		{"checksum fails", string(flipped), a.Password, a.ClientID},
		{"mqtt password as username", a.Password, a.Password, a.ClientID},
		{"revoked key", revoked.Key, revoked.Password, revoked.ClientID},
		{"expired key", expired.Key, expired.Password, expired.ClientID},
		{"disabled agent", disabled.Key, disabled.Password, disabled.ClientID},
		{"another agent's client id", a.Key, a.Password, b.ClientID},
		{"client id with suffix", a.Key, a.Password, a.ClientID + "-2"},
		{"no credentials", "", "", a.ClientID},
		{"username without password", a.Key, "", a.ClientID},
		{"username with +", a.Key[:20] + "+" + a.Key[21:], a.Password, a.ClientID},
		{"username with #", "#", a.Password, a.ClientID},
		{"client id with /", a.Key, a.Password, "agent-" + a.UUID + "/x"},
		{"client id with +", a.Key, a.Password, "agent-+"},
		{"username over 256 bytes", long, a.Password, a.ClientID},
		{"client id over 256 bytes", a.Key, a.Password, strings.Repeat("c", 300)},
		{"plugin's own username", "iotauth-agent:" + a.UUID, a.Password, a.ClientID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := harness.Connect(e.b, tt.user, tt.pass, tt.cid)
			if c != nil {
				c.Disconnect(10)
			}
			refused(t, err, tt.name)
		})
	}

	// The same refusals through the command-line clients, over MQTT 3.1.1 and MQTT 5.
	// CONNACK return code 5 (MQTT 3.1.1) and reason code 0x87 = 135 (MQTT 5) are "not authorised".
	for v, want := range map[string]int{"mqttv311": 5, "mqttv5": 135} {
		out, code := harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, a.Key, "wrong", a.ClientID), "-V", v, "-t", a.Namespace()+"/x", "-m", "x")...)
		if code != want || !strings.Contains(strings.ToLower(out), "not authori") {
			t.Fatalf("mosquitto_pub %s with a wrong password: exit %d, output %q; want exit %d and not authorised", v, code, out, want)
		}
	}

	// The good agent still works after all that.
	harness.MustConnect(t, e.b, a)
}

// Malformed and checksum-failing keys are refused without a single database query.
func TestMalformedKeysCauseNoQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"})
	a := e.agent("a")
	before := e.lookups()
	for i := 0; i < 50; i++ {
		k, _ := secret.Generate(secret.APIKey)
		bad := []byte(k.Reveal())
		bad[20] = map[bool]byte{true: 'A', false: 'B'}[bad[20] != 'A'] // checksum no longer matches
		for _, user := range []string{string(bad), "iotsk_live_" + strings.Repeat("0", 10), "prov_" + k.Reveal()[11:], "admin"} {
			c, err := harness.Connect(e.b, user, a.Password, a.ClientID)
			if c != nil {
				c.Disconnect(10)
			}
			refused(t, err, user)
		}
	}
	if after := e.lookups(); after != before {
		t.Fatalf("malformed keys caused %d credential queries, want 0", after-before)
	}
}

// Paho MQTT 5 sessions are covered by the CLI tools above; this checks a clean MQTT 3.1.1 persistent
// session keeps working across reconnects (the broker keeps the renamed identity for it).
func TestPersistentSessionQueuedDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("persistent")
	sender := e.agent("sender")
	e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'write', 'agents/' || $2 || '/inbox')`, sender.UUID, a.UUID)

	o := harness.ClientOptions(e.b, a.Key, a.Password, a.ClientID).SetCleanSession(false)
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Subscribe(a.Namespace()+"/inbox", 1, nil)
	tok.WaitTimeout(5 * time.Second)
	c.Disconnect(50)

	s := harness.MustConnect(t, e.b, sender)
	if tok := s.Publish(a.Namespace()+"/inbox", 1, false, "queued"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	got := make(chan string, 1)
	o = harness.ClientOptions(e.b, a.Key, a.Password, a.ClientID).SetCleanSession(false)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	c, err = harness.ConnectWith(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(50)
	select {
	case m := <-got:
		if m != "queued" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message queued for the offline persistent session was not delivered")
	}
}
