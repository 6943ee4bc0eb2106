package plugin_test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// memoAdmits counts the connects of agent a that the shim's connect memo admitted: Go logs how many, at
// debug level, when it collects them (on a tick, within a second).
func memoAdmits(b *harness.Broker, a harness.Agent) int {
	re := regexp.MustCompile(`connects admitted by the memo agent=` + a.UUID + ` key=` + a.KeyID + ` count=(\d+)`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(b.Log(), -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

// waitMemoAdmits waits up to 3 s for memoAdmits to reach want (Go collects the counts within a second).
func waitMemoAdmits(t *testing.T, b *harness.Broker, a harness.Agent, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for memoAdmits(b, a) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := memoAdmits(b, a); n != want {
		t.Fatalf("%s: %d connects admitted by the memo, want %d", what, n, want)
	}
}

// settle waits until the broker's plugin has handled every credential change committed so far (needs
// log_level debug). Creating agents notifies the plugin, and each notification empties the whole memo: a
// test that fills the memo first waits for them. Notifications arrive in commit order, so it sends one
// of its own, for an agent that does not exist, and waits for the plugin to log it.
func settle(t *testing.T, dsn string, b *harness.Broker) {
	t.Helper()
	marker := fmt.Sprintf("settle-%d", time.Now().UnixNano())
	harness.Exec(t, dsn, `SELECT pg_notify('iotauth_credentials', json_build_object('table', 'agents', 'op', 'UPDATE', 'agent', $1::text)::text)`, marker)
	if !b.WaitLog("credential change handled agent="+marker, 3*time.Second) {
		t.Fatal("the plugin did not handle a credential change within 3 s")
	}
}

// The memo replays an admission only for the same key, password and client id: anything else is
// decided by Go, and a connect that did not match drops the memo entry until Go admits the agent again.
func TestMemoReplaysOnlyTheSameCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a := e.agent("a")
	b := e.agent("b")
	settle(t, e.dsn, e.b)

	mustConnect := func(what string) {
		t.Helper()
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	bad := []struct {
		what           string
		key, pass, cid string
	}{
		{"wrong password", a.Key, "iotmp_wrong", a.ClientID},
		{"another agent's client id", a.Key, a.Password, b.ClientID},
		{"another agent's password", a.Key, b.Password, a.ClientID},
		{"another agent's key", b.Key, a.Password, a.ClientID},
	}
	for i, v := range bad {
		// Two connects, one replayed: the first is decided by Go, because the refusal before dropped the
		// agent's memo entry (only a refusal for a's own key can), and records it again.
		mustConnect("first connect")
		mustConnect("second connect")
		waitMemoAdmits(t, e.b, a, i+1, "before: "+v.what)
		refused(t, connectOnce(t, e.b, v.key, v.pass, v.cid), v.what)
	}

	// A memo-admitted session is a full session: it publishes in its namespace and nowhere else.
	c, _ := watch(t, e.b, a)
	waitMemoAdmits(t, e.b, a, len(bad)+1, "the watched session (another key's refusal left a's entry alone)")
	ec := subscribeEcho(t, c, a)
	if _, err := ec.roundTrip(t, c, a, 3*time.Second); err != nil {
		t.Fatalf("round trip of a memo-admitted session: %v", err)
	}
	tok := c.Subscribe(b.Namespace()+"/#", 1, nil)
	if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[b.Namespace()+"/#"]; code < 0x80 {
		t.Fatalf("a memo-admitted session subscribed to another agent's topics (granted %#x)", code)
	}
}

// A change to any credential empties the memo: the revoked key is refused at once, even right after it
// was replayed, and a session the memo admitted is closed like any other.
func TestMemoForgetsOnRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	for i := 0; i < 5; i++ {
		a := e.agent("a")
		settle(t, e.dsn, e.b) // the revoke of the round before, and this agent's creation
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
		// Admitted by the memo; revoked while the admission may still be queued for Go (it is applied
		// within a tick): the session must be closed all the same.
		_, lost := watch(t, e.b, a)
		e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
		closedBy(t, lost, time.Second, "a memo-admitted session of a revoked key")
		waitMemoAdmits(t, e.b, a, 1, "the watched session")
		refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "reconnect with the revoked key")
	}
}

// The memo never outlives the key: a connect after the key's expiry is refused although the credential
// is still fresh in the cache and nothing notified the plugin.
func TestMemoStopsAtKeyExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a := e.agent("a")
	e.exec(`UPDATE api_keys SET expires_at = now() + interval '2 seconds' WHERE id = $1`, a.KeyID)
	var expires time.Time
	if err := harness.QueryRow(t, e.dsn, `SELECT expires_at FROM api_keys WHERE id = $1`, a.KeyID).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	settle(t, e.dsn, e.b)
	for i := 0; i < 2; i++ {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatalf("connect before the expiry: %v", err)
		}
	}
	waitMemoAdmits(t, e.b, a, 1, "before the expiry")
	time.Sleep(time.Until(expires) + 50*time.Millisecond)
	refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "connect after the key expired")
	time.Sleep(1200 * time.Millisecond) // Go reports the memo's admissions within a second
	if n := memoAdmits(e.b, a); n != 1 {
		t.Fatalf("%d connects admitted by the memo, want 1", n)
	}
}

// With connect_memo 0 every connect is decided in Go.
func TestMemoOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"}, [2]string{"connect_memo", "0"})
	a := e.agent("a")
	for i := 0; i < 3; i++ {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
	}
	if !e.b.WaitLog("connect_memo=0", time.Second) {
		t.Fatal("the start line does not say the memo is off")
	}
	time.Sleep(1200 * time.Millisecond) // Go would report the memo's admissions within a second
	if n := memoAdmits(e.b, a); n != 0 {
		t.Fatalf("%d connects admitted by a disabled memo", n)
	}
	if n := strings.Count(e.b.Log(), "connect authorised agent="+a.UUID); n != 3 {
		t.Fatalf("%d connects authorised by Go, want 3", n)
	}
}

// With the test build's queue of 4 events, memo admissions and disconnects overflow it: a memo admission
// that finds it full goes to Go, which applies the queue first. Every session, however it was admitted,
// is known to Go: revoking the agents closes all of them.
func TestMemoAdmissionsThroughAFullQueue(t *testing.T) {
	t.Parallel()
	e := newHooksEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	st, b := e.st, e.b
	var agents []harness.Agent
	for i := 0; i < 10; i++ {
		agents = append(agents, harness.CreateAgent(t, st, "full queue"))
	}
	settle(t, e.dsn, b)
	for _, a := range agents {
		if err := connectOnce(t, b, a.Key, a.Password, a.ClientID); err != nil { // Go admits and records it
			t.Fatal(err)
		}
	}
	var losts []<-chan time.Time
	for _, a := range agents {
		_, lost := watch(t, b, a)
		losts = append(losts, lost)
	}
	replayed := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		replayed = 0
		for _, a := range agents {
			replayed += memoAdmits(b, a)
		}
		if replayed > 0 && strings.Contains(b.Log(), "applied queued events count=4") {
			break
		}
	}
	if replayed == 0 || !strings.Contains(b.Log(), "applied queued events count=4") {
		t.Fatalf("the memo admitted %d of the watched sessions and the queue never filled: the test did not exercise it", replayed)
	}
	for _, a := range agents {
		harness.Exec(t, e.dsn, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	}
	for i, lost := range losts {
		closedBy(t, lost, 2*time.Second, "session "+agents[i].UUID+" of a revoked key")
	}
}

// A connect the memo admitted counts as a use of the key (last_used_at), even when the client left
// before Go ran and so never saw the session.
func TestMemoRecordsKeyUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a := e.agent("a")
	settle(t, e.dsn, e.b)
	lastUsed := func() *time.Time {
		var used *time.Time
		if err := harness.QueryRow(t, e.dsn, `SELECT last_used_at FROM api_keys WHERE id = $1`, a.KeyID).Scan(&used); err != nil {
			t.Fatal(err)
		}
		return used
	}
	waitUsed := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(12 * time.Second); lastUsed() == nil; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("last_used_at not recorded within 12 s of %s", what)
			}
		}
	}
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatal(err)
	}
	waitUsed("a connect decided by Go")
	e.exec(`UPDATE api_keys SET last_used_at = NULL WHERE id = $1`, a.KeyID)
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatal(err)
	}
	waitMemoAdmits(t, e.b, a, 1, "the second connect")
	waitUsed("a connect admitted by the memo")
}

// A client the memo admitted that dies before Go ever ran (its admission voided by its own DISCONNECT)
// leaves Go in the same state as one Go admitted: Mosquitto's will check right after the DISCONNECT sees
// the session ended, so the will of an agent with extra rules is refused while a plain agent's goes out
// (compare TestWillCheckSeesTheEndedSession, whose clients Go admits).
func TestWillCheckAfterAMemoAdmission(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"}, [2]string{"clientid", "any"})
	plain := e.agent("plain will")
	custom := e.agent("custom will")
	e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'read', 'broadcast/#')`, custom.UUID)
	settle(t, e.dsn, e.b)
	for _, tc := range []struct {
		a         harness.Agent
		delivered bool
	}{{plain, true}, {custom, false}} {
		c, wills := observeWills(t, e.b, tc.a)
		// Go admits the agent once under its own client id, which the memo then admits again: a
		// mosquitto_pub waiting on stdin sends nothing that would make Go run before it dies.
		if err := connectOnce(t, e.b, tc.a.Key, tc.a.Password, tc.a.ClientID); err != nil {
			t.Fatal(err)
		}
		before := memoAdmits(e.b, tc.a)
		connected := strings.Count(e.b.Log(), "as "+tc.a.ClientID+" (")
		pub := exec.Command("mosquitto_pub", append(harness.CLIArgs(e.b, tc.a.Key, tc.a.Password, tc.a.ClientID),
			"-l", "-t", tc.a.Namespace()+"/x", "--will-topic", tc.a.Namespace()+"/status", "--will-payload", "gone")...)
		stdin, err := pub.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); strings.Count(e.b.Log(), "as "+tc.a.ClientID+" (") == connected; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				_ = pub.Process.Kill()
				t.Fatal("mosquitto_pub did not connect")
			}
		}
		_ = pub.Process.Kill() // no DISCONNECT packet: the broker sends the will
		_ = pub.Wait()
		_ = stdin.Close()
		waitMemoAdmits(t, e.b, tc.a, before+1, "the dying client")
		expectWill(t, wills, tc.delivered)
		c.Disconnect(50)
	}
}

// A takeover between two connects the memo admitted under one client id: the DISCONNECT of the old
// client voids only its own admission, and the new session is known to Go, so a revoke closes it.
func TestMemoTakeoverThenRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a := e.agent("a")
	settle(t, e.dsn, e.b)
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatal(err)
	}
	_, oldLost := watch(t, e.b, a)
	_, newLost := watch(t, e.b, a) // same client id: Mosquitto closes the first
	closedBy(t, oldLost, 2*time.Second, "the session taken over")
	waitMemoAdmits(t, e.b, a, 2, "both sessions")
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	closedBy(t, newLost, time.Second, "the session that took over, after the revoke")
}

// A DISCONNECT voids only its own client's queued admission: with two memo admissions queued, the first
// client leaving must leave the second one's session known to Go, so that revoking it closes it.
func TestMemoDisconnectVoidsOnlyItsOwnAdmission(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a, b := e.agent("a"), e.agent("b")
	settle(t, e.dsn, e.b)
	for _, x := range []harness.Agent{a, b} {
		if err := connectOnce(t, e.b, x.Key, x.Password, x.ClientID); err != nil {
			t.Fatal(err)
		}
	}
	ca, _ := watch(t, e.b, a)
	_, bLost := watch(t, e.b, b)
	ca.Disconnect(0) // most likely before Go's next tick applies either admission
	waitMemoAdmits(t, e.b, b, 1, "b's session")
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, b.KeyID)
	closedBy(t, bLost, time.Second, "b's memo-admitted session after a's disconnect and b's revoke")
}
