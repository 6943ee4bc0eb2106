package api_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iotauth/iotauth/test/harness"
)

// session is an MQTT connection made from a provisioning answer's mqtt block, exactly as given.
type session struct {
	c    mqtt.Client
	lost chan time.Time
}

func connectWith(t *testing.T, host string, port int, username, password, clientID string) (*session, error) {
	t.Helper()
	s := &session{lost: make(chan time.Time, 1)}
	o := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://%s:%d", host, port)).
		SetClientID(clientID).SetUsername(username).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).SetProtocolVersion(4).
		SetConnectionLostHandler(func(mqtt.Client, error) {
			select {
			case s.lost <- time.Now():
			default:
			}
		})
	c, err := harness.ConnectWith(o)
	if err != nil {
		return nil, err
	}
	s.c = c
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return s, nil
}

func connectAgent(t *testing.T, p provisioned) (*session, error) {
	t.Helper()
	return connectWith(t, p.MQTT.Host, p.MQTT.Port, p.MQTT.Username, p.MQTT.Password, p.MQTT.ClientID)
}

// roundTrip subscribes to the agent's own namespace, publishes there and waits for the message.
func roundTrip(t *testing.T, s *session, uuid string) {
	t.Helper()
	got := make(chan string, 1)
	topic := "agents/" + uuid + "/telemetry"
	if tok := s.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := s.c.Publish(topic, 1, false, "21.5C"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "21.5C" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own message never arrived")
	}
}

// waitKicked asserts the session is closed by the broker within 1 s of since.
func waitKicked(t *testing.T, s *session, since time.Time, what string) {
	t.Helper()
	select {
	case at := <-s.lost:
		d := at.Sub(since)
		t.Logf("%s: session closed %s after the REST call returned", what, d.Round(time.Millisecond))
		if d > time.Second {
			t.Fatalf("%s: session closed after %s, want within 1 s", what, d)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%s: session still open 3 s later", what)
	}
}

func refused(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: reconnect accepted", what)
	}
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("%s: reconnect failed for another reason: %v", what, err)
	}
}

// TestEndToEndRevocationKicks is M8 end to end (docs/security.md, through REST): an agent provisioned
// over REST connects to Mosquitto with the plugin using exactly its mqtt block, and is disconnected
// within 1 s when an admin revokes its key over REST; reconnecting is refused. Password rotation and
// decommission take effect the same way.
func TestEndToEndRevocationKicks(t *testing.T) {
	e := newEnv(t, withBroker)
	adm := e.admin()

	// Revoke the API key.
	a := e.provision(adm.Access, "e2e-a")
	if a.MQTT.Port != e.broker.Port || a.MQTT.Username != a.APIKey || a.MQTT.ClientID != "agent-"+a.AgentUUID {
		t.Fatalf("mqtt block does not point at the broker: %+v", a.MQTT.Port)
	}
	s, err := connectAgent(t, a)
	if err != nil {
		t.Fatalf("agent could not connect with its mqtt block: %v", err)
	}
	roundTrip(t, s, a.AgentUUID)
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + a.KeyID, Token: adm.Access}, 204, "")
	waitKicked(t, s, time.Now(), "key revoke")
	_, err = connectAgent(t, a)
	refused(t, err, "key revoke")

	// Rotate the MQTT password: the old session goes, the old password is refused, the new one works.
	b := e.provision(adm.Access, "e2e-b")
	sb, err := connectAgent(t, b)
	if err != nil {
		t.Fatal(err)
	}
	res := e.expect(req{Method: "POST", Path: "/api/v1/agents/" + b.AgentUUID + "/mqtt-password", Token: adm.Access}, 200, "")
	waitKicked(t, sb, time.Now(), "password rotation")
	_, err = connectAgent(t, b)
	refused(t, err, "old password")
	nb, err := connectWith(t, b.MQTT.Host, b.MQTT.Port, b.MQTT.Username, res.JSON(t)["password"].(string), b.MQTT.ClientID)
	if err != nil {
		t.Fatalf("new password refused: %v", err)
	}
	roundTrip(t, nb, b.AgentUUID)

	// Decommission: kicked and refused.
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + b.AgentUUID, Token: adm.Access}, 204, "")
	waitKicked(t, nb, time.Now(), "decommission")
	_, err = connectWith(t, b.MQTT.Host, b.MQTT.Port, b.MQTT.Username, res.JSON(t)["password"].(string), b.MQTT.ClientID)
	refused(t, err, "decommission")

	// The broker never logged a key or password it was given.
	if log := e.broker.Log(); secretPattern.MatchString(log) || strings.Contains(log, a.APIKey) || strings.Contains(log, b.MQTT.Password) {
		t.Fatal("the broker log holds a secret")
	}
}
