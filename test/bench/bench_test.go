package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

func pluginPath(t *testing.T) string {
	t.Helper()
	p, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSmoke runs every load at a tiny size against real brokers and checks that each figure is there
// and sane. It asserts no timing ratio: those belong to `make bench` on a quiet machine.
func TestSmoke(t *testing.T) {
	cfg := QuickConfig()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Env{Postgres: pg, Plugin: pluginPath(t), Log: &log}, cfg)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, log.String())
	}
	// Broker CPU is sampled from /proc in clock ticks (10 ms here): the smoke loads are far too short
	// for it, and a figure of 0 ticks on either side is a fair measurement, not a failure. For those
	// rows the smoke test asserts only that the row exists and holds no impossible value (negative or
	// infinite); TestProcStats proves the sampling itself. Rates, counts and latencies are asserted.
	want := []struct {
		load, figure string
		positive     bool // plugin value must be > 0 (and finite)
		noAuth       bool // a no-auth value must be present too
	}{
		{"1 connect storm, 8 clients, cached", "broker CPU per connect", false, true},
		{"1 connect storm, 8 clients, cached", "connects/s", true, true},
		{"1 connect storm, 8 clients, cached", "CONNACK latency p99", true, true},
		{"1 connect storm, 8 clients, cold (cache_size 0)", "connects/s", true, true},
		{"1 connect storm, 8 clients, cached", "connects/s, floor (Go, answers at once)", true, true},
		{"1 connect storm, 8 clients, cached", "connects/s, dynamic-security", true, true},
		{"2 publish QoS 0, 4 agents echo", "delivered msgs/s, floor (Go, answers at once)", true, true},
		{"1m connect storm, 8 clients, cached, metrics on", "broker CPU per connect", false, true},
		{"1m connect storm, 8 clients, cached, metrics on", "connects/s, metrics on vs off", true, true},
		{"3 reconnect storm, 200 agents", "time until all connected, preload on, metrics on", true, true},
		{"3 reconnect storm, 200 agents", "broker CPU for the storm, metrics on vs off", true, true},
		{"2 publish QoS 0, 4 agents echo", "delivered msgs/s", true, true},
		{"2 publish QoS 0, 4 agents echo", "broker CPU per delivered msg", false, true},
		{"2 publish QoS 1, 4 agents echo", "delivered msgs/s", true, true},
		{"2 publish QoS 1, 4 agents echo", "end-to-end latency p99", true, true},
		{"2c fan-in QoS 0, 4 agents → 1 application subscriber (agents/+/telemetry)", "delivered msgs/s", true, true},
		{"2c fan-in QoS 0, 4 agents → 1 application subscriber (agents/+/telemetry)", "broker CPU per delivered msg", false, true},
		{"3 reconnect storm, 200 agents", "time until all connected, preload on", true, true},
		{"3 reconnect storm, 200 agents", "time until all connected, preload off", true, true},
		{"4 flood: 4 garbage clients + 2 real", "real agents' CONNACK p99", true, true},
		{"4 flood: 4 garbage clients + 2 real", "flood connects answered/s", true, true},
		{"4d forged keys: 4 clients + 2 real", "real agents' CONNACK p99", true, true},
		{"4d forged keys: 4 clients + 2 real", "DB lookups/s caused by forged keys", false, false},
		{"4b 4 clients send wrong passwords", "connected agent's publish RTT p99", true, true},
		{"4c api_keys locked 600ms, 2 clients with unknown keys", "connected agent's publish RTT max", true, false},
		{"5 revocation, 10 keys, 2 brokers", "revoke → session closed p99, broker A", true, false},
		{"5 revocation, 10 keys, 2 brokers", "revoke → session closed p99, broker B", true, false},
		{"6 memory (preload on)", "RSS with 2k cached credentials", true, true},
		{"6 memory (preload on)", "bytes per cached credential (2k)", true, false},
		{"7 short-lived credentials: 80 connects by 4 clients, one credential each", "broker CPU per connect", true, true},
		{"7 short-lived credentials: 80 connects by 4 clients, one credential each", "connects/s", true, true},
		{"7r short-lived credentials: the same 80 connects again, each credential already verified", "connects/s", true, true},
		{"9 intermittent agents: 200 agents by 8 clients, each reconnecting after more than cache_ttl (2s)", "connects/s", true, true},
		{"9 intermittent agents: 200 agents by 8 clients, each reconnecting after more than cache_ttl (2s)", "connect-path lookups per connect", false, false},
		{"8 presence: connect storm, 8 clients, cached", "broker CPU per connect, presence on vs off", false, true},
		{"8 presence: connect storm, 8 clients, cached", "connects/s, presence on vs off", true, true},
		{"8b presence churn: 64 agents connect and disconnect for 500ms, 4 clients", "sessions (connect + disconnect)", true, false},
		{"8b presence churn: 64 agents connect and disconnect for 500ms, 4 clients", "presence write lag p99 (histogram_quantile)", true, false},
		{"8b presence churn: 64 agents connect and disconnect for 500ms, 4 clients", "presence statements to PostgreSQL", true, false},
	}
	for _, w := range want {
		row, ok := rep.Row(w.load, w.figure)
		if !ok {
			t.Errorf("no row %q / %q", w.load, w.figure)
			continue
		}
		if strings.Contains(w.figure, "CPU") {
			for _, v := range []float64{row.Plugin, row.NoAuth, row.Ratio} {
				if v < 0 || math.IsInf(v, -1) {
					t.Errorf("%s / %s: impossible CPU figure %+v", w.load, w.figure, row)
				}
			}
			continue
		}
		if math.IsNaN(row.Plugin) || math.IsInf(row.Plugin, 0) || row.Plugin < 0 || (w.positive && row.Plugin == 0) {
			t.Errorf("%s / %s: plugin value %v", w.load, w.figure, row.Plugin)
		}
		if w.noAuth && (math.IsNaN(row.NoAuth) || row.NoAuth <= 0 || math.IsNaN(row.Ratio)) {
			t.Errorf("%s / %s: no-auth value %v, ratio %v", w.load, w.figure, row.NoAuth, row.Ratio)
		}
	}
	for _, c := range []struct{ load, figure string }{
		{"4 flood: 4 garbage clients + 2 real", "DB lookups caused by the flood"},
		{"5 revocation, 10 keys, 2 brokers", "sessions not closed within 10 s, broker A"},
		{"5 revocation, 10 keys, 2 brokers", "sessions not closed within 10 s, broker B"},
		{"7 short-lived credentials: 80 connects by 4 clients, one credential each", "database statements during the connects"},
	} {
		row, ok := rep.Row(c.load, c.figure)
		if !ok || row.Plugin != 0 || row.Verdict != Pass {
			t.Errorf("%s / %s: want 0, got %+v (found %v)", c.load, c.figure, row, ok)
		}
	}
	var text, md bytes.Buffer
	rep.WriteText(&text)
	rep.WriteMarkdown(&md)
	if !strings.Contains(md.String(), "| load | figure | plugin | no-auth | ratio | target | result |") ||
		strings.Count(md.String(), "\n| ") != len(rep.Rows)+2+len(rep.TargetResults())+2 {
		t.Errorf("markdown table malformed:\n%s", md.String())
	}
	// Every target has its line; the smoke run has all the loads, so none is "not run" (go-auth aside).
	for _, r := range rep.TargetResults() {
		if !strings.Contains(text.String(), r.Name) || (r.Verdict == NotRun && r.Name != "cached connect vs go-auth") {
			t.Errorf("target %s: %s (%s)", r.Name, r.Verdict, r.Value)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s\nprogress:\n%s", text.String(), log.String())
	}
}

// TestClientNoAuth exercises the load client's every packet against a real broker without auth.
func TestClientNoAuth(t *testing.T) {
	b := harness.StartBroker(t, harness.BrokerConfig{Quiet: true})
	c, err := Dial(b.Addr(), ConnectOptions{ClientID: "bench-client", KeepAlive: 30, CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g, err := c.Subscribe(3, "bench/#", 1, 5*time.Second); err != nil || g != 1 {
		t.Fatalf("subscribe: granted %d, %v", g, err)
	}
	if err := c.Ping(5 * time.Second); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// Sizes on both sides of the 1-, 2- and 3-byte remaining-length boundaries.
	for i, size := range []int{0, 100, 200, 16300, 16400, 70000} {
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		qos := byte(i % 2)
		id := uint16(100 + i)
		if err := c.Publish("bench/x", payload, qos, id); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		gotMsg, gotAck := false, qos == 0
		for !gotMsg || !gotAck {
			h, body, err := c.ReadPacket()
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			switch PacketType(h) {
			case PacketPuback:
				if len(body) != 2 || uint16(body[0])<<8|uint16(body[1]) != id {
					t.Fatalf("PUBACK for the wrong id: %x", body)
				}
				gotAck = true
			case PacketPublish:
				m, err := ParsePublish(h, body)
				if err != nil || m.Topic != "bench/x" || !bytes.Equal(m.Payload, payload) || m.QoS != qos {
					t.Fatalf("size %d: got topic %q, %d bytes, qos %d, %v", size, m.Topic, len(m.Payload), m.QoS, err)
				}
				if qos > 0 {
					if err := c.Puback(m.ID); err != nil {
						t.Fatal(err)
					}
					_ = c.Flush()
				}
				gotMsg = true
			default:
				t.Fatalf("unexpected packet type %d", PacketType(h))
			}
		}
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
}

// TestClientPlugin checks the client against the plugin: bulk-created agents connect, are confined to
// their namespace and see their own messages; a wrong password is refused with CONNACK 5.
func TestClientPlugin(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	var agents []Agent
	if err := Populate(ctx, dsn, 3, func(a Agent) { agents = append(agents, a) }); err != nil {
		t.Fatal(err)
	}
	b := harness.StartBroker(t, harness.BrokerConfig{Plugin: pluginPath(t), Options: [][2]string{{"dsn", dsn}}, Quiet: true})
	a := agents[1]
	c, err := Dial(b.Addr(), agentOptions(a))
	if err != nil {
		t.Fatalf("bulk-created agent cannot connect: %v", err)
	}
	defer c.Close()
	if g, err := c.Subscribe(1, "#", 0, 5*time.Second); err != nil || g != 0x80 {
		t.Fatalf("subscribe # : granted %#x, %v (want a refusal)", g, err)
	}
	if g, err := c.Subscribe(2, a.Filter(), 1, 5*time.Second); err != nil || g != 1 {
		t.Fatalf("subscribe own namespace: granted %#x, %v", g, err)
	}
	if err := c.Publish(agents[2].Topic(), []byte("not mine"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(a.Topic(), []byte("mine"), 0, 0); err != nil {
		t.Fatal(err)
	}
	_ = c.Flush()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, body, err := c.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ParsePublish(h, body); err != nil || m.Topic != a.Topic() || string(m.Payload) != "mine" {
		t.Fatalf("got %q %q, %v", m.Topic, m.Payload, err)
	}
	bad := agentOptions(agents[0])
	bad.Password = agents[2].Password
	_, err = Dial(b.Addr(), bad)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != 5 || !errors.Is(err, ErrRefused) {
		t.Fatalf("wrong password: got %v, want CONNACK 5", err)
	}
	if err := c.Ping(5 * time.Second); err != nil {
		t.Fatalf("the good session was disturbed: %v", err)
	}
}

func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	deadline := time.Now().Add(2 * time.Second)
	start, err := ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	for x := 0; time.Now().Before(deadline); x++ {
		if cpu, _ := ProcessCPU(pid); cpu-start >= 50*time.Millisecond {
			break
		}
	}
	if cpu, _ := ProcessCPU(pid); cpu-start < 50*time.Millisecond {
		t.Fatalf("spinning 2 s used only %v of CPU by /proc", cpu-start)
	}
	if SelfCPU() <= 0 {
		t.Fatal("getrusage reports no CPU")
	}
	if rss, err := RSS(pid); err != nil || rss < 1<<20 {
		t.Fatalf("RSS %d, %v", rss, err)
	}
}

func TestQuantileAndMedian(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if q := quantile(d, 0.5); q != 5 {
		t.Errorf("p50 = %v", q)
	}
	if q := quantile(d, 0.99); q != 10 {
		t.Errorf("p99 = %v", q)
	}
	if m := median([]float64{3, math.NaN(), 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	r := pair("l", "f", "dur", []float64{2, 4, 3}, []float64{2, 2, 2}, ratioAtMost(1.05))
	if r.Ratio != 1.5 || r.Verdict != Fail || r.Plugin != 3 || r.NoAuth != 2 || r.RatioMin != 1 || r.RatioMax != 2 {
		t.Errorf("pair: %+v", r)
	}
	if c := r.cells()[4]; c != "1.500 (1.00–2.00)" {
		t.Errorf("ratio cell %q, want the median and the range of the per-round ratios", c)
	}
}
