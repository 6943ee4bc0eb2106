package plugin_test

import (
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// memoAdmits counts the connects of agent a that the shim's connect memo admitted: Go logs them, at
// debug level, when it applies the queued admission.
func memoAdmits(b *harness.Broker, a harness.Agent) int {
	return strings.Count(b.Log(), "connect authorised agent="+a.UUID+" key="+a.KeyID+" memo=true")
}

// waitMemoAdmits waits up to 2 s for memoAdmits to reach want (the log line is written within a tick).
func waitMemoAdmits(t *testing.T, b *harness.Broker, a harness.Agent, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for memoAdmits(b, a) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := memoAdmits(b, a); n != want {
		t.Fatalf("%s: %d connects admitted by the memo, want %d", what, n, want)
	}
}

// The memo replays an admission only for the same key, password and client id: anything else is
// decided by Go, and a connect that did not match drops the memo entry until Go admits the agent again.
func TestMemoReplaysOnlyTheSameCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"}, [2]string{"preload", "false"})
	a := e.agent("a")
	b := e.agent("b")

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
	if err := e.st.Pool.QueryRow(t.Context(), `SELECT expires_at FROM api_keys WHERE id = $1`, a.KeyID).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the UPDATE's notification arrive before the memo is filled
	for i := 0; i < 2; i++ {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatalf("connect before the expiry: %v", err)
		}
	}
	waitMemoAdmits(t, e.b, a, 1, "before the expiry")
	time.Sleep(time.Until(expires) + 50*time.Millisecond)
	refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), "connect after the key expired")
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
	time.Sleep(200 * time.Millisecond)
	if n := memoAdmits(e.b, a); n != 0 {
		t.Fatalf("%d connects admitted by a disabled memo", n)
	}
	if n := strings.Count(e.b.Log(), "connect authorised agent="+a.UUID); n != 3 {
		t.Fatalf("%d connects authorised by Go, want 3", n)
	}
}
