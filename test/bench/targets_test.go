package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

// row makes a report row as pair and single do: a ratio (NaN for none) and a plugin value.
func row(load, figure string, plugin, ratio float64, v Verdict) Row {
	return Row{Load: load, Figure: figure, Plugin: plugin, NoAuth: math.NaN(), Ratio: ratio, Verdict: v}
}

func results(rep *Report) map[string]TargetResult {
	out := map[string]TargetResult{}
	for _, r := range Evaluate(rep, builtinTargets()) {
		out[r.Name] = r
	}
	return out
}

// Every built-in target against a report that meets it, then against one that misses it by a hair, and
// against one that does not hold its rows.
func TestEvaluateTargets(t *testing.T) {
	good := &Report{Rows: []Row{
		row("1 connect storm, 8 clients, cached", figConnectCPU, 40e3, 1.06, Pass),
		row("1 connect storm, 32 clients, cached", figConnectCPU, 40e3, 1.07, Pass),
		row("1 connect storm, 8 clients, cached", figConnectCPU+", floor (Go, answers at once)", 38e3, 1.03, Info),
		row("1 connect storm, 8 clients, cold (cache_size 0)", figConnectCPU, 100e3, 2.6, Info), // not cached: ignored
		row("1 connect storm, 8 clients, cached", figVsGoAuth, 40e3, 0.90, Pass),
		row("1 connect storm, 32 clients, cached", figVsGoAuth, 40e3, 0.95, Pass),
		row("2 publish QoS 0, 32 agents echo", figDeliveredCPU, 5e3, 1.01, Pass),
		row("2 publish QoS 1, 32 agents echo", figDeliveredCPU, 9e3, 1.05, Pass),
		row("2 publish QoS 1, 32 agents echo", figDeliveredCPU+", mosquitto-go-auth (warm)", 18e3, 1.9, Info), // a comparison
		row("2c fan-in QoS 0, 32 agents → 1 application subscriber (agents/+/telemetry)", figDeliveredCPU, 5e3, 1.04, Pass),
		row("3 reconnect storm, 10000 agents", "time until all connected, preload on", 5e9, 1.2, Pass),
		row("5 revocation, 200 keys, 2 brokers", "revoke → session closed p99, broker A", float64(300*time.Millisecond), math.NaN(), Pass),
		row("5 revocation, 200 keys, 2 brokers", "revoke → session closed p99, broker B", float64(999*time.Millisecond), math.NaN(), Pass),
		row("4d forged keys: 8 clients + 4 real", "DB lookups/s caused by forged keys", 210, math.NaN(), Pass),
		row("6 memory (preload on)", "bytes per cached credential (100k)", 280, math.NaN(), Pass),
		row("6 memory (preload on)", "bytes per cached credential (1M)", 300, math.NaN(), Pass),
		row("7r short-lived credentials: the same 1000 connects again, each credential already verified", figConnectCPU, 50e3, 1.19, Pass),
	}}
	got := results(good)
	for _, name := range []string{"fan-in", "cached connect", "cached connect vs go-auth", "token reconnect", "publish QoS 0/1",
		"reconnect storm", "revocation p99", "flood bounded", "memory per credential"} {
		if r, ok := got[name]; !ok || r.Verdict != Pass {
			t.Errorf("%s: %+v, want pass", name, r)
		}
	}
	// The worst row is what is shown: 32 clients' 1.07, not 8 clients' 1.06; QoS 1's 1.05.
	if v := got["cached connect"].Value; v != "1.07×" {
		t.Errorf("cached connect shows %q, want the worst ratio 1.07×", v)
	}
	if v := got["publish QoS 0/1"].Value; v != "1.05×" {
		t.Errorf("publish shows %q, want 1.05×", v)
	}
	if v := got["cached connect vs go-auth"].Value; v != "-5 %" {
		t.Errorf("vs go-auth shows %q, want -5 %%", v)
	}
	if v := got["memory per credential"].Value; v != "300 B" {
		t.Errorf("memory shows %q, want 300 B", v)
	}

	// Each figure just past its goal fails its target (and only its target).
	bad := map[string]func(r *Row){
		"cached connect":            func(r *Row) { r.Ratio = 1.081 },
		"cached connect vs go-auth": func(r *Row) { r.Ratio = 0.951 },
		"publish QoS 0/1":           func(r *Row) { r.Ratio = 1.051 },
		"fan-in":                    func(r *Row) { r.Ratio = 1.0501 },
		"reconnect storm":           func(r *Row) { r.Ratio = 1.21 },
		"revocation p99":            func(r *Row) { r.Plugin = float64(time.Second) },
		"flood bounded":             func(r *Row) { r.Verdict = Fail },
		"memory per credential":     func(r *Row) { r.Plugin = 301 },
		"token reconnect":           func(r *Row) { r.Ratio = 1.3 },
	}
	which := map[string]int{ // the row each change applies to
		"cached connect": 1, "cached connect vs go-auth": 5, "publish QoS 0/1": 7, "fan-in": 9, "reconnect storm": 10,
		"revocation p99": 12, "flood bounded": 13, "memory per credential": 15, "token reconnect": 16,
	}
	for name, change := range bad {
		rep := &Report{Rows: append([]Row(nil), good.Rows...)}
		change(&rep.Rows[which[name]])
		for n, r := range results(rep) {
			want := Pass
			if n == name {
				want = Fail
			}
			if r.Verdict != want {
				t.Errorf("%s changed: target %s is %s (%s), want %s", name, n, r.Verdict, r.Value, want)
			}
		}
	}

	// No rows: every target is "not run", none fails; go-auth's says how to run it.
	empty := Evaluate(&Report{}, builtinTargets())
	if TargetsFailed(empty) != 0 {
		t.Errorf("an empty report fails %d targets", TargetsFailed(empty))
	}
	for _, r := range empty {
		if r.Verdict != NotRun {
			t.Errorf("%s on an empty report: %s", r.Name, r.Verdict)
		}
	}
	if v := results(&Report{})["cached connect vs go-auth"].Value; !strings.Contains(v, "GOAUTH_SO") {
		t.Errorf("go-auth target without go-auth shows %q, want a hint at GOAUTH_SO", v)
	}
	// A measured figure without a value (NaN) fails rather than passes.
	nan := &Report{Rows: []Row{row("5 revocation, 1 keys, 2 brokers", "revoke → session closed p99, broker A", math.NaN(), math.NaN(), Fail)}}
	if r := results(nan)["revocation p99"]; r.Verdict != Fail {
		t.Errorf("revocation without a value: %s", r.Verdict)
	}
	nan = &Report{Rows: []Row{row("1 connect storm, 8 clients, cached", figConnectCPU, 1, math.NaN(), Fail)}}
	if r := results(nan)["cached connect"]; r.Verdict != Fail {
		t.Errorf("cached connect without a ratio: %s", r.Verdict)
	}
}

// A registered target is evaluated after the built-in ones and printed as a line of the summary.
func TestRegisterTarget(t *testing.T) {
	saved := targets
	t.Cleanup(func() { targets = saved })
	targets = nil // only this test's own registration besides the built-in ones
	RegisterTarget(RatioAtMost("intermittent", 1.10, Match{LoadPrefix: "9 intermittent", Figure: figConnectCPU}))
	ts := Targets()
	if last := ts[len(ts)-1]; last.Name != "intermittent" || len(ts) != len(builtinTargets())+1 {
		t.Fatalf("registered target not last: %d targets, last %q", len(ts), last.Name)
	}
	rep := &Report{Rows: []Row{row("9 intermittent agents, 10000 agents", figConnectCPU, 1, 1.12, Pass)}}
	rs := rep.TargetResults()
	var out bytes.Buffer
	WriteTargets(&out, rs)
	line := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "intermittent") {
			line = strings.Join(strings.Fields(l), " ")
		}
	}
	if line != "intermittent 1.12× ≤ 1.10× FAIL" {
		t.Errorf("summary line %q, want %q\n%s", line, "intermittent 1.12× ≤ 1.10× FAIL", out.String())
	}
	if TargetsFailed(rs) != 1 {
		t.Errorf("%d targets failed, want 1 (the registered one)", TargetsFailed(rs))
	}
}
