package bench

import (
	"fmt"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// intermittentTTL is the plugin's cache_ttl in the intermittent load: short, so that a round's agents
// all reconnect after more than it without the benchmark waiting 5 minutes (the default) between rounds.
const intermittentTTL = 2 * time.Second

// intermittent is the load of devices that connect now and then (a cellular sensor every 15 minutes):
// StormAgents agents, each connecting once per round (connect, CONNACK, DISCONNECT) by the first of
// ConnectWorkers clients, and every round starts more than cache_ttl after that broker's previous one
// ended, so every connect finds the agent's cache entry older than cache_ttl. The plugin broker runs
// with defaults but cache_ttl (preload on, LISTEN up); the no-auth broker takes the same connects, and so
// does a plugin broker with cache_ttl 1h (every entry fresh: the cached connect of these agents), which
// tells what being past cache_ttl costs apart from what any cached connect costs.
// Besides the broker's CPU per connect it counts the connect path's lookups during the plugin's rounds:
// with LISTEN up they should be none (docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md).
func (r *runner) intermittent() error {
	cfg := r.cfg
	workers := 8
	if len(cfg.ConnectWorkers) > 0 {
		workers = cfg.ConnectWorkers[0]
	}
	if cfg.StormAgents < workers {
		return fmt.Errorf("%d intermittent agents for %d clients: at least one each", cfg.StormAgents, workers)
	}
	dsn, agents, err := r.agentsDB(cfg.StormAgents)
	if err != nil {
		return err
	}
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	plug, err := r.pluginBroker(dsn, [2]string{"cache_ttl", intermittentTTL.String()})
	if err != nil {
		return err
	}
	fresh, err := r.pluginBroker(dsn, [2]string{"cache_ttl", "1h"})
	if err != nil {
		return err
	}
	parts := partition(agents, workers)
	per := len(agents) / workers
	// pass connects every agent once; ended is when each broker's last pass ended.
	ended := map[*harness.Broker]time.Time{}
	pass := func(b *harness.Broker) (opResult, error) {
		// Every agent's previous connect on b was in b's previous pass: wait until that is over cache_ttl.
		if wait := time.Until(ended[b].Add(intermittentTTL + 250*time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
		m, err := startMeter(b.Pid())
		if err != nil {
			return opResult{}, err
		}
		lats, errs := connectLoop(b.Addr(), parts, nil, per)
		s, err := m.stop()
		ended[b] = time.Now()
		if err != nil {
			return opResult{}, err
		}
		if errs > 0 {
			return opResult{}, fmt.Errorf("intermittent connects on %s: %d failed", b.Addr(), errs)
		}
		o := opResult{sample: s, lat: mergeSorted(lats)}
		o.ops = len(o.lat)
		return o, nil
	}
	// Warm-up: one pass each (the plugin's entries are then at least as old as this pass).
	brokers := []*harness.Broker{noauth, plug, fresh}
	for _, b := range brokers {
		if _, err := pass(b); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	res := map[*harness.Broker][]opResult{}
	var lookups []float64
	for round := range cfg.Rounds {
		for _, b := range order(brokers, round) {
			n0, err := lookupCalls(r.ctx, dsn)
			if err != nil {
				return err
			}
			o, err := pass(b)
			if err != nil {
				return err
			}
			n1, err := lookupCalls(r.ctx, dsn)
			if err != nil {
				return err
			}
			if b == plug {
				lookups = append(lookups, float64(n1-n0)/float64(max(o.ops, 1)))
			}
			res[b] = append(res[b], o)
		}
	}
	n, p := res[noauth], res[plug]
	load := fmt.Sprintf("9 intermittent agents: %d agents by %d clients, each reconnecting after more than cache_ttl (%v)", len(agents), workers, intermittentTTL)
	r.add(
		pair(load, "broker CPU per connect", "dur", floats(p, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), ratioAtMost(1.10)),
		pair(load, "connects/s", "/s", floats(p, opResult.rate), floats(n, opResult.rate), nil),
		pair(load, "CONNACK latency p99", "dur", floats(p, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
		single(load, "connect-path lookups per connect", "", lookups, nil),
		pair(load, "broker CPU per connect, every entry fresh (cache_ttl 1h)", "dur", floats(res[fresh], opResult.cpuPerOp), floats(n, opResult.cpuPerOp), nil),
		vsFresh(pair(load, "broker CPU per connect, past cache_ttl vs fresh", "dur", floats(p, opResult.cpuPerOp), floats(res[fresh], opResult.cpuPerOp), nil)),
	)
	for _, b := range brokers {
		b.Stop()
	}
	return nil
}

// vsFresh marks a row whose base is the plugin with fresh entries, not the no-auth broker.
func vsFresh(r Row) Row {
	r.Baseline = "plugin, cache_ttl 1h"
	return r
}

func init() {
	RegisterTarget(RatioAtMost("intermittent agents", 1.10, Match{LoadPrefix: "9 intermittent", Figure: figConnectCPU}))
}
