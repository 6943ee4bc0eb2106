package plugin_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// iotauthCLI runs the built iotauth binary against the test's database.
func (e *env) iotauthCLI(args ...string) string {
	e.t.Helper()
	bin, err := harness.BinPath()
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), "DATABASE_URL="+e.dsn)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("iotauth %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Revoking a key, disabling an agent or changing its MQTT password — by the CLI or by plain
// SQL — closes the live session within 1 s, and the reconnect is refused; on two brokers at once.
func TestRevocationKicksOnEveryBroker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := harness.PluginBroker(t, e.dsn)

	tests := []struct {
		name   string
		revoke func(a harness.Agent)
	}{
		{"cli key revoke", func(a harness.Agent) { e.iotauthCLI("key", "revoke", a.KeyID) }},
		{"cli agent disable", func(a harness.Agent) { e.iotauthCLI("agent", "disable", a.UUID) }},
		{"cli password rotation", func(a harness.Agent) { e.iotauthCLI("agent", "rotate-password", a.UUID) }},
		{"sql key revoke", func(a harness.Agent) { e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID) }},
		{"sql key delete", func(a harness.Agent) { e.exec(`DELETE FROM api_keys WHERE id = $1`, a.KeyID) }},
		{"sql key expiry", func(a harness.Agent) {
			e.exec(`UPDATE api_keys SET expires_at = now() WHERE id = $1`, a.KeyID)
		}},
		{"sql agent disable", func(a harness.Agent) { e.exec(`UPDATE agents SET status = 'disabled' WHERE uuid = $1`, a.UUID) }},
		{"sql agent delete", func(a harness.Agent) { e.exec(`DELETE FROM agents WHERE uuid = $1`, a.UUID) }},
		{"sql password change", func(a harness.Agent) {
			e.exec(`UPDATE mqtt_credentials SET password_hash = 'sha256$' || repeat('0', 64) WHERE agent_uuid = $1`, a.UUID)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.agent(tt.name)
			bystander := e.agent(tt.name + " bystander")
			_, lost1 := watch(t, e.b, a)
			_, lost2 := watch(t, second, a)
			_, lostBy := watch(t, e.b, bystander)
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			tt.revoke(a)
			for i, lost := range []<-chan time.Time{lost1, lost2} {
				at := closedBy(t, lost, 3*time.Second, fmt.Sprintf("the revoked agent's session on broker %d", i+1))
				if d := at.Sub(start); d > time.Second {
					t.Errorf("broker %d closed the session after %v, want ≤ 1s", i+1, d)
				}
			}
			for _, b := range []*harness.Broker{e.b, second} {
				c, err := harness.Connect(b, a.Key, a.Password, a.ClientID)
				if c != nil {
					c.Disconnect(10)
				}
				refused(t, err, "reconnect after "+tt.name)
			}
			select {
			case <-lostBy:
				t.Fatal("an unrelated agent was disconnected")
			default:
			}
		})
	}
}

// A change that does not revoke anything (a new key for the agent, a name change) leaves sessions alone.
func TestHarmlessChangesDoNotKick(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	_, lost := watch(t, e.b, a)
	e.exec(`UPDATE agents SET name = 'renamed', target_state = '{"fw":"2"}' WHERE uuid = $1`, a.UUID)
	e.exec(`INSERT INTO api_keys (agent_uuid, name, digest, prefix) VALUES ($1, 'second', decode(repeat('ab', 32), 'hex'), 'iotsk_live_x')`, a.UUID)
	e.exec(`UPDATE api_keys SET last_used_at = now() WHERE id = $1`, a.KeyID)
	stillOpenAfter(t, lost, 1500*time.Millisecond, "session after a change that revoked nothing")
}

// A TRUNCATE fires no row trigger; the statement trigger makes every broker re-check every session.
func TestTruncateKicks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("a")
	_, lost := watch(t, e.b, a)
	e.exec(`TRUNCATE api_keys`)
	closedBy(t, lost, 3*time.Second, "session after TRUNCATE api_keys")
}

// 'infinity' is a legal expiry written by plain SQL: the key never expires, and the row does not break
// batch re-checks of other sessions (a revocation in the same batch still kicks).
func TestInfiniteExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"})
	forever := e.agent("forever")
	victim := e.agent("victim")
	e.exec(`UPDATE api_keys SET expires_at = 'infinity' WHERE id = $1`, forever.KeyID)
	_, lostForever := watch(t, e.b, forever)
	_, lostVictim := watch(t, e.b, victim)
	e.exec(`UPDATE api_keys SET expires_at = '-infinity' WHERE id = $1`, victim.KeyID)
	closedBy(t, lostVictim, 3*time.Second, "session of a key expired at '-infinity'")
	e.b.Signal(syscall.SIGHUP) // re-check every session in one batch
	stillOpenAfter(t, lostForever, 1500*time.Millisecond, "session of a key expiring at 'infinity'")
	refused(t, connectOnce(t, e.b, victim.Key, victim.Password, victim.ClientID), "-infinity key")
}

// With clientid any one agent may hold several sessions. Revoking its key closes every one still open,
// also after sessions in the middle of the broker's per-agent list have gone.
func TestRevocationKicksEverySessionOfAnAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"})
	a := e.agent("many sessions")
	var lost []<-chan time.Time
	for i, id := range []string{"gw-1", "gw-2", "gw-3", "gw-4"} {
		b := a
		b.ClientID = id
		c, l := watch(t, e.b, b)
		if i == 1 || i == 2 {
			c.Disconnect(50)
			if !e.b.WaitLog("Client "+id+" disconnected", 5*time.Second) {
				t.Fatalf("the broker did not log %s's disconnect", id)
			}
			continue
		}
		lost = append(lost, l)
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	for i, l := range lost {
		at := closedBy(t, l, 3*time.Second, fmt.Sprintf("session %d of the revoked agent", i+1))
		if d := at.Sub(start); d > time.Second {
			t.Errorf("session %d closed after %v, want ≤ 1s", i+1, d)
		}
	}
}

// Twenty sessions of one agent end, one stays open. Revoking the agent then closes the one session still
// open and kicks nothing else: the ended sessions are only refused their wills and queued messages.
func TestEndedSessionsAreNotKicked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"})
	st, b := e.st, e.b
	a := harness.CreateAgent(t, st, "ended sessions")
	var gone []mqtt.Client
	for i := 1; i <= 20; i++ {
		g := a
		g.ClientID = fmt.Sprintf("gone-%d", i)
		c, _ := watch(t, b, g)
		gone = append(gone, c)
	}
	open := a
	open.ClientID = "still-open"
	_, lost := watch(t, b, open)
	for _, c := range gone {
		c.Disconnect(0)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; i <= 20; i++ {
		// paho's Disconnect(0) may close the socket before its DISCONNECT packet goes out.
		for log := b.Log(); !strings.Contains(log, fmt.Sprintf("Client gone-%d disconnected", i)) &&
			!strings.Contains(log, fmt.Sprintf("Client gone-%d closed its connection", i)); log = b.Log() {
			if time.Now().After(deadline) {
				t.Fatalf("the broker did not log gone-%d's disconnect", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	harness.Exec(t, e.dsn, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	closedBy(t, lost, 3*time.Second, "the open session of the revoked agent")
	// Every kick the re-check queued is carried out, and logged, on the same tick.
	if !b.WaitLog("client=still-open", 3*time.Second) {
		t.Fatal("the kick of the open session was not logged")
	}
	for _, line := range strings.Split(b.Log(), "\n") {
		if strings.Contains(line, "disconnecting agent") && !strings.Contains(line, "still-open") {
			t.Errorf("kick of a session that had already ended: %s", line)
		}
	}
}
