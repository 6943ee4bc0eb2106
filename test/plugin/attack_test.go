package plugin_test

// Defects found by an outside attack run, each reproduced against the real broker.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// A flood of well-formed keys that no database holds must not push real agents out of the cache: once
// PostgreSQL is down, the preloaded agents still connect. (The "does not exist" answers were kept in
// the same LRU as the credentials: 100 forged keys evicted 10 agents from a cache of 20.)
func TestForgedKeyFloodKeepsRealAgentsCached(t *testing.T) {
	t.Parallel()
	p := privatePostgres(t)
	dsn := p.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	var agents []harness.Agent
	for i := 0; i < 10; i++ {
		agents = append(agents, harness.CreateAgent(t, st, "real"))
	}
	b := harness.PluginBroker(t, dsn, [2]string{"cache_size", "20"}, [2]string{"db_timeout", "200ms"})
	if !b.WaitLog("preloaded credentials count=10", 10*time.Second) {
		t.Fatal("the plugin did not preload the 10 agents")
	}
	for i := 0; i < 100; i++ {
		forged, _ := secret.Generate(secret.APIKey)
		refused(t, connectOnce(t, b, forged.Reveal(), "iotmp_whatever", "forged"), "forged key")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if err := connectOnce(t, b, a.Key, a.Password, a.ClientID); err != nil {
			t.Fatalf("preloaded agent refused with PostgreSQL down after a forged-key flood: %v", err)
		}
	}
}

// With defer_unknown, the plugin shares the broker with Mosquitto's own password and ACL files: a
// password-file user gets exactly its acl_file rights (its checks are deferred, not denied), while
// agents stay inside their namespace.
func TestDeferUnknownWithPasswordAndACLFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Mosquitto started as root drops to the mosquitto user, which must be able to read the files.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pwfile, aclfile := filepath.Join(dir, "passwords"), filepath.Join(dir, "acl")
	if out, err := runCmd("mosquitto_passwd", "-b", "-c", pwfile, "backend", "backend-secret"); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	if err := os.Chmod(pwfile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclfile, []byte("user backend\ntopic readwrite agents/#\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	b := harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin,
		Options: [][2]string{{"dsn", dsn}, {"defer_unknown", "true"}},
		Extra:   []string{"password_file " + pwfile, "acl_file " + aclfile}})
	a := harness.CreateAgent(t, st, "deferred neighbour")

	backend, err := harness.Connect(b, "backend", "backend-secret", "backend-1")
	if err != nil {
		t.Fatalf("password-file user refused: %v", err)
	}
	defer backend.Disconnect(10)
	got := make(chan string, 4)
	tok := backend.Subscribe("agents/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe agents/# for the password-file user: %v", tok.Error())
	}
	if codes := tok.(*mqtt.SubscribeToken).Result(); codes["agents/#"] == 0x80 {
		t.Fatal("the password-file user's subscription to agents/# was refused: its check was denied, not deferred")
	}

	agent := harness.MustConnect(t, b, a)
	defer agent.Disconnect(10)
	cmds := make(chan string, 1)
	if tok := agent.Subscribe(a.Namespace()+"/cmd", 1, func(_ mqtt.Client, m mqtt.Message) { cmds <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("agent subscribe: %v", tok.Error())
	}
	if tok := agent.Publish(a.Namespace()+"/telemetry", 1, false, "21.5"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("agent publish: %v", tok.Error())
	}
	select {
	case topic := <-got:
		if topic != a.Namespace()+"/telemetry" {
			t.Fatalf("the password-file user got %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the password-file user did not receive the agent's telemetry")
	}
	if tok := backend.Publish(a.Namespace()+"/cmd", 1, false, "reboot"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("password-file user's publish: %v", tok.Error())
	}
	select {
	case cmd := <-cmds:
		if cmd != "reboot" {
			t.Fatalf("agent got %q", cmd)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the password-file user's command did not reach the agent: its publish was denied")
	}
	// The agent is still confined to its namespace.
	tok = agent.Subscribe("agents/#", 1, func(mqtt.Client, mqtt.Message) {})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("agent subscribe: %v", tok.Error())
	}
	if codes := tok.(*mqtt.SubscribeToken).Result(); codes["agents/#"] != 0x80 {
		t.Fatalf("an agent was granted agents/# (SUBACK %#x)", codes["agents/#"])
	}
}

// With clientid any, an agent cannot take over another agent's client id: not while that session is
// connected (which would disconnect it), and not while it is offline with a persistent session (whose
// queued messages would be handed over). The owner keeps its id.
func TestClientIDAnyRefusesAnotherAgentsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"clientid", "any"})
	owner, thief := e.agent("owner"), e.agent("thief")
	persistent := func(a harness.Agent) (mqtt.Client, error) {
		o := harness.ClientOptions(e.b, a.Key, a.Password, "shared-gateway").SetCleanSession(false)
		return harness.ConnectWith(o)
	}
	c, err := persistent(owner)
	if err != nil {
		t.Fatal(err)
	}
	_, err = persistent(thief)
	refused(t, err, "another agent with a live session's client id")
	if !c.IsConnected() {
		t.Fatal("the owner was disconnected by another agent's connect")
	}
	c.Disconnect(50)
	if !e.b.WaitLog("Client shared-gateway disconnected", 5*time.Second) {
		t.Fatal("the owner's disconnect was not logged")
	}
	_, err = persistent(thief)
	refused(t, err, "another agent with an offline persistent session's client id")
	c, err = persistent(owner)
	if err != nil {
		t.Fatalf("the owner could not resume its own session: %v", err)
	}
	c.Disconnect(10)
}

// One topic length limit for publishes, deliveries and subscriptions: an agent can publish to and
// subscribe to its own 1024-byte topic, and neither to a 1025-byte one.
func TestOneTopicLengthLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("long topics")
	c := harness.MustConnect(t, e.b, a)
	defer c.Disconnect(10)
	topic := func(n int) string {
		p := a.Namespace() + "/"
		return p + strings.Repeat("x", n-len(p))
	}
	got := make(chan string, 4)
	if tok := c.Subscribe(a.Namespace()+"/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for _, tc := range []struct {
		n  int
		ok bool
	}{{1025, false}, {1024, true}} {
		tok := c.Subscribe(topic(tc.n), 1, func(mqtt.Client, mqtt.Message) {})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %d: %v", tc.n, tok.Error())
		}
		if granted := tok.(*mqtt.SubscribeToken).Result()[topic(tc.n)] != 0x80; granted != tc.ok {
			t.Errorf("subscription to a %d-byte topic granted: %v, want %v", tc.n, granted, tc.ok)
		}
		if tok := c.Publish(topic(tc.n), 1, false, "x"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", tc.n, tok.Error())
		}
	}
	// Deliveries come in order: the 1024-byte publish arrives, and nothing came before it.
	select {
	case tp := <-got:
		if len(tp) != 1024 {
			t.Fatalf("delivered a %d-byte topic first; a 1025-byte publish must be refused", len(tp))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the 1024-byte publish was not delivered")
	}
}

// Forged keys (well-formed, checksum and all, in no database) cost at most unknown_key_lookups queries a
// second; beyond that they are refused without PostgreSQL. A key created during the flood is announced by
// NOTIFY and gets in at once, whatever the flood has spent.
func TestForgedKeysSpendABoundedLookupBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, [2]string{"unknown_key_lookups", "2"}, [2]string{"log_level", "debug"})
	before := e.lookups()
	start := time.Now()
	for i := 0; i < 60; i++ {
		forged, _ := secret.Generate(secret.APIKey)
		refused(t, connectOnce(t, e.b, forged.Reveal(), "iotmp_whatever", "forged"), "forged key")
	}
	elapsed := time.Since(start)
	spent := e.lookups() - before
	if limit := 2 + 2*int64(elapsed/time.Second+1); spent > limit || spent < 1 {
		t.Fatalf("60 forged keys in %v caused %d lookups, want 1 to %d (burst 2, then 2 a second)", elapsed, spent, limit)
	}
	if !e.b.WaitLog("too many lookups of unknown keys", time.Second) {
		t.Fatal("the budget's refusals were not logged with their reason")
	}

	// A flood keeps spending the budget while an agent is provisioned and connects.
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for {
			select {
			case <-stop:
				return
			default:
			}
			forged, _ := secret.Generate(secret.APIKey)
			c, _ := harness.Connect(e.b, forged.Reveal(), "iotmp_whatever", "forged")
			if c != nil {
				c.Disconnect(0)
			}
		}
	}()
	defer func() { close(stop); <-flooded }()
	a := e.agent("provisioned during a flood")
	if !e.b.WaitLog("credential change handled agent="+a.UUID, 5*time.Second) {
		t.Fatal("the new key's notification was not handled")
	}
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatalf("an agent provisioned during a forged-key flood was refused: %v", err)
	}
}
