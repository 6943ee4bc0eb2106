package plugin_test

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// The API key never reaches Mosquitto's log (the plugin renames the client), nor the MQTT
// password; a SIGHUP keeps valid sessions connected.
func TestKeyNeverInBrokerLogAndSIGHUPKeepsSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"log_level", "debug"})
	a := e.agent("a")
	b := e.agent("b")
	c, lost := watch(t, e.b, a)
	ec := subscribeEcho(t, c, a)
	refused(t, connectOnce(t, e.b, b.Key, "iotmp_wrong", b.ClientID), "wrong password")
	refused(t, connectOnce(t, e.b, b.Key, b.Password, a.ClientID), "wrong client id")
	if !e.b.WaitLog("u'iotauth-agent:"+a.UUID+"'", 2*time.Second) {
		t.Fatal("the connect log line does not show the plugin's identity for the agent")
	}

	if err := e.b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e.b.WaitLog("Reloading config", 3*time.Second) {
		t.Fatal("broker did not reload on SIGHUP")
	}
	stillOpenAfter(t, lost, 1500*time.Millisecond, "valid session after SIGHUP")
	if _, err := ec.roundTrip(t, c, a, 3*time.Second); err != nil {
		t.Fatalf("session after SIGHUP: %v", err)
	}
	if log := e.b.Log(); containsSecret(log, a, b) {
		t.Fatal("a plaintext key or MQTT password appears in the broker's log")
	}
}

// A SIGHUP re-check refuses a session whose credentials changed while the plugin could not
// be told (kick_on_revoke off), proving re-checks consult the credentials, not a blind allow.
func TestSIGHUPRechecksCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"kick_on_revoke", "false"})
	a := e.agent("a")
	_, lost := watch(t, e.b, a)
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, a.KeyID)
	stillOpenAfter(t, lost, 500*time.Millisecond, "revoked session with kick_on_revoke false")
	e.b.Signal(syscall.SIGHUP)
	closedBy(t, lost, 3*time.Second, "session of a revoked key after the SIGHUP re-check")
}

// A panic in Go code behind an export denies that one request, is logged, and the broker
// keeps serving. Uses the test-hook build of the plugin.
func TestPanicDeniesOneRequest(t *testing.T) {
	t.Parallel()
	// Two rules keep publish checks in Go (the C fast path handles the single-namespace default).
	e := newHooksEnv(t, [2]string{"acl", "readwrite agents/%u/#; read broadcast/#"})
	st, b := e.st, e.b
	a := harness.CreateAgent(t, st, "a")

	refused(t, connectOnce(t, b, "iotauth-test-panic", "x", a.ClientID), "panicking connect")
	if !b.WaitLog("internal error in basic auth", 2*time.Second) {
		t.Fatal("panic in basic auth was not logged")
	}
	c := harness.MustConnect(t, b, a)
	ec := subscribeEcho(t, c, a)
	c.Publish("iotauth/test/panic", 1, false, "boom").WaitTimeout(2 * time.Second)
	if !b.WaitLog("internal error in acl check", 2*time.Second) {
		t.Fatal("panic in the ACL check was not logged")
	}
	if _, err := ec.roundTrip(t, c, a, 3*time.Second); err != nil {
		t.Fatalf("broker after two panics: %v", err)
	}
	if !b.Alive() {
		t.Fatal("broker died")
	}
}

// A corrupt row denies that agent, is logged once, and never panics or affects others.
func TestCorruptRowsDenyAndLogOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"})
	good := e.agent("good")
	e.exec(`ALTER TABLE agents ALTER COLUMN status DROP NOT NULL`)
	e.exec(`ALTER TABLE api_keys ALTER COLUMN rights DROP NOT NULL`)
	tests := []struct {
		name    string
		corrupt func(a harness.Agent)
	}{
		{"malformed password hash", func(a harness.Agent) {
			e.exec(`UPDATE mqtt_credentials SET password_hash = 'sha256$nothex' WHERE agent_uuid = $1`, a.UUID)
		}},
		{"unknown hash scheme", func(a harness.Agent) {
			e.exec(`UPDATE mqtt_credentials SET password_hash = 'md5$abc' WHERE agent_uuid = $1`, a.UUID)
		}},
		{"NULL status", func(a harness.Agent) { e.exec(`UPDATE agents SET status = NULL WHERE uuid = $1`, a.UUID) }},
		{"NULL in rights", func(a harness.Agent) {
			e.exec(`UPDATE api_keys SET rights = ARRAY['mqtt', NULL] WHERE id = $1`, a.KeyID)
		}},
		{"malformed acl rule", func(a harness.Agent) {
			e.exec(`INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1, 'read', 'a/#/b')`, a.UUID)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.agent(tt.name)
			tt.corrupt(a)
			for i := 0; i < 3; i++ {
				refused(t, connectOnce(t, e.b, a.Key, a.Password, a.ClientID), tt.name)
			}
			// The plugin writes its queued log lines on the next tick (every 50 ms while it has some): a
			// duplicate, queued before the last CONNACK, would be written by the tick after the first line.
			if !e.b.WaitLog("agent="+a.UUID, 3*time.Second) {
				t.Fatal("the refusal of a corrupt row was not logged")
			}
			time.Sleep(150 * time.Millisecond)
			n := 0
			for _, l := range strings.Split(e.b.Log(), "\n") {
				if strings.Contains(l, "fix the row in PostgreSQL") && strings.Contains(l, a.UUID) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("corrupt row logged %d times, want once", n)
			}
		})
	}
	if err := connectOnce(t, e.b, good.Key, good.Password, good.ClientID); err != nil {
		t.Fatalf("a good agent is affected by others' corrupt rows: %v", err)
	}
	if !e.b.Alive() {
		t.Fatal("broker died")
	}
}

// An unknown key and a wrong password for a known key are refused in the same time within
// noise, both when answered from the cache and when each needs a query. Before each probe the agent
// connects once, so that its credential is cached and its session live.
func TestUnknownKeyAndWrongPasswordTakeTheSameTime(t *testing.T) {
	e := newEnv(t, [2]string{"preload", "false"}, [2]string{"negative_ttl", "10m"})
	a := e.agent("a")
	unknown, _ := secret.Generate(secret.APIKey)
	measure := func(user string) time.Duration {
		start := time.Now()
		refused(t, connectOnce(t, e.b, user, "iotmp_wrong", a.ClientID), "timing probe")
		return time.Since(start)
	}
	measure(a.Key)
	measure(unknown.Reveal()) // both now cached: one positive, one negative
	var known, unk []time.Duration
	for i := 0; i < 60; i++ {
		if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatal(err)
		}
		known = append(known, measure(a.Key))
		unk = append(unk, measure(unknown.Reveal()))
	}
	mk, mu := median(known), median(unk)
	t.Logf("median refusal: wrong password %v, unknown key %v", mk, mu)
	slack := 2 * time.Millisecond
	if mu > mk*3/2+slack || mk > mu*3/2+slack {
		t.Fatalf("refusal times differ beyond noise: wrong password %v, unknown key %v", mk, mu)
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// A flood of random well-formed keys keeps the broker's memory bounded by cache_size and
// does not stall connected agents.
func TestRandomKeyFloodBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"preload", "false"}, [2]string{"cache_size", "200"}, [2]string{"negative_ttl", "10m"})
	a := e.agent("a")
	c := harness.MustConnect(t, e.b, a)
	ec := subscribeEcho(t, c, a)
	rssBefore := rss(t, e.b.Pid())
	const floodN = 1500
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < floodN/4; i++ {
				k, _ := secret.Generate(secret.APIKey)
				cl, err := harness.Connect(e.b, k.Reveal(), "iotmp_x", "agent-"+strconv.Itoa(i))
				if cl != nil {
					cl.Disconnect(0)
				}
				if err == nil {
					t.Error("random key accepted")
					return
				}
			}
		}()
	}
	var worst time.Duration
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		default:
		}
		d, err := ec.roundTrip(t, c, a, 3*time.Second)
		if err != nil {
			t.Fatalf("connected agent during the flood: %v", err)
		}
		worst = max(worst, d)
		time.Sleep(20 * time.Millisecond)
	}
	grown := rss(t, e.b.Pid()) - rssBefore
	t.Logf("flood of %d random keys: worst round trip %v, broker RSS grew %d KiB", floodN, worst, grown)
	if worst > time.Second {
		t.Errorf("a connected agent's round trip took %v during the flood", worst)
	}
	if grown > 64*1024 {
		t.Errorf("broker RSS grew by %d KiB during the flood; the cache should bound it", grown)
	}
}

// rss reads a process's resident set size in KiB.
func rss(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
