package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotauth/iotauth/test/harness"
)

// session is how a test client connects: MQTT 3.1.1 (clean session or not) or MQTT 5 (clean start or
// not, with a session expiry interval in seconds).
type session struct {
	v5     bool
	clean  bool
	expiry uint32 // MQTT 5 only
}

func (s session) String() string {
	if s.v5 {
		return fmt.Sprintf("MQTT 5 (clean start %v, session expiry %ds)", s.clean, s.expiry)
	}
	return fmt.Sprintf("MQTT 3.1.1 (clean session %v)", s.clean)
}

// errNotAuthorised is a refused CONNACK, whatever the protocol.
var errNotAuthorised = errors.New("CONNACK not authorised")

// connectAs connects with s and returns a function that disconnects cleanly (a DISCONNECT packet), or
// errNotAuthorised (wrapped) for a refused CONNACK.
func connectAs(t *testing.T, b *harness.Broker, s session, user, pass, clientID string) (disconnect func(), err error) {
	t.Helper()
	if !s.v5 {
		o := harness.ClientOptions(b, user, pass, clientID).SetCleanSession(s.clean)
		c, err := harness.ConnectWith(o)
		if err != nil {
			if strings.Contains(err.Error(), "not Authorized") {
				return nil, fmt.Errorf("%w: %v", errNotAuthorised, err)
			}
			return nil, err
		}
		return func() { c.Disconnect(50) }, nil
	}
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := s.expiry
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true, Password: []byte(pass),
		PasswordFlag: true, KeepAlive: 30, CleanStart: s.clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		conn.Close()
		if ack != nil && ack.ReasonCode == 0x87 {
			return nil, fmt.Errorf("%w: %v", errNotAuthorised, err)
		}
		return nil, err
	}
	return func() { c.Disconnect(&paho.Disconnect{}) }, nil
}

// disconnected disconnects a client cleanly and waits until the broker has handled it (its log line).
func disconnected(t *testing.T, b *harness.Broker, disconnect func(), clientID string) {
	t.Helper()
	before := strings.Count(b.Log(), "Client "+clientID+" disconnected.")
	disconnect()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(b.Log(), "Client "+clientID+" disconnected.") == before {
		if time.Now().After(deadline) {
			t.Fatalf("the broker did not log the disconnect of %s", clientID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Whatever the client id template, an application key may never use a client id the template gives an
// agent, not even with a session the broker would keep, and the agent always gets in with its own id.
// (With a template without a literal prefix, %u or %u-dev, an application key could take the agent's
// exact id; every MQTT 5 session was then held as possibly persistent, locking the agent out.)
func TestAppKeyCannotTakeOrHoldAnAgentsClientID(t *testing.T) {
	t.Parallel()
	for _, tmpl := range []string{"%u", "%u-dev", "dev-%u"} {
		t.Run(tmpl, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, [2]string{"clientid", tmpl})
			k := e.appKey("squatter", time.Time{}, "read agents/+/telemetry")
			for _, s := range []session{{v5: false, clean: true}, {v5: false, clean: false}, {v5: true, clean: true}, {v5: true, clean: false, expiry: 3600}} {
				a := e.agent("owner")
				id := strings.Replace(tmpl, "%u", a.UUID, 1)
				disconnect, err := connectAs(t, e.b, s, k.Key, k.Password, id)
				if err == nil {
					disconnected(t, e.b, disconnect, id)
					t.Errorf("%v: an application key connected with agent %s's client id %q", s, a.UUID, id)
				} else if !errors.Is(err, errNotAuthorised) {
					t.Fatalf("%v: application key: %v, want CONNACK not authorised", s, err)
				}
				for _, as := range []session{s, {v5: true, clean: true}, {v5: false, clean: true}} {
					disconnect, err := connectAs(t, e.b, as, a.Key, a.Password, id)
					if err != nil {
						t.Fatalf("after an application key tried its client id with %v, the agent was refused with %v: %v", s, as, err)
					}
					disconnected(t, e.b, disconnect, id)
				}
			}
		})
	}
}

// With clientid any, a client id is held against other principals only while the broker may keep the
// session that used it: an agent reconnects with its usual id after an application key or another agent
// used it and disconnected cleanly (MQTT 3.1.1 or 5), and after a kept MQTT 5 session's hold has passed
// (plugin_opt_mqtt5_session_hold). A session the broker keeps is still not taken over meanwhile.
func TestClientIDAnyEndedSessionsHoldOnlyWhatTheBrokerKeeps(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"}, [2]string{"mqtt5_session_hold", "3s"})
	owner, other := e.agent("owner"), e.agent("another device")
	k := e.appKey("dashboard", time.Time{}, "read agents/+/telemetry")
	principals := []struct {
		name      string
		key, pass string
	}{{"an application key", k.Key, k.Password}, {"another agent", other.Key, other.Password}}
	clean := []session{{v5: false, clean: true}, {v5: true, clean: true}, {v5: true, clean: true, expiry: 0}}
	for i, p := range principals {
		for j, s := range clean {
			id := fmt.Sprintf("gateway-%d-%d", i, j)
			disconnect, err := connectAs(t, e.b, s, p.key, p.pass, id)
			if err != nil {
				t.Fatalf("%s with %v: %v", p.name, s, err)
			}
			disconnected(t, e.b, disconnect, id)
			for _, as := range []session{{v5: false, clean: true}, {v5: true, clean: true}, {v5: false, clean: false}} {
				disconnect, err := connectAs(t, e.b, as, owner.Key, owner.Password, id)
				if err != nil {
					t.Fatalf("%s used %q with %v and disconnected; the agent's %v connect was refused: %v", p.name, id, s, as, err)
				}
				disconnected(t, e.b, disconnect, id)
			}
		}
	}

	// A kept MQTT 5 session (it resumes, and asks for an expiry) holds its id for the hold, then not.
	id := "kept-session"
	disconnect, err := connectAs(t, e.b, session{v5: true, clean: false, expiry: 2}, other.Key, other.Password, id)
	if err != nil {
		t.Fatal(err)
	}
	disconnected(t, e.b, disconnect, id)
	ended := time.Now()
	if _, err := connectAs(t, e.b, session{v5: true, clean: false}, owner.Key, owner.Password, id); !errors.Is(err, errNotAuthorised) {
		t.Fatalf("another agent resumed a kept MQTT 5 session at once: %v, want CONNACK not authorised", err)
	}
	for {
		disconnect, err := connectAs(t, e.b, session{v5: true, clean: true}, owner.Key, owner.Password, id)
		if err == nil {
			if held := time.Since(ended); held < 2*time.Second {
				t.Fatalf("the kept session's id was free after %v, before its hold of 3s", held)
			}
			disconnect()
			break
		}
		if !errors.Is(err, errNotAuthorised) || time.Since(ended) > 20*time.Second {
			t.Fatalf("the agent was still refused the id %v after a kept MQTT 5 session's hold (3s) passed: %v", time.Since(ended), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
