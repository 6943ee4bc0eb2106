// Package bench is iotauth's benchmark harness (`make bench`): it drives a real Mosquitto with the
// plugin and, in the same run, the same Mosquitto with allow_anonymous and no plugin, with a minimal MQTT
// 3.1.1 client on raw sockets, and reports every figure as a plugin/no-auth ratio with medians over
// repeated rounds. The machine is small and shared, so the primary figure is the broker's own CPU time
// per connect and per delivered message (from /proc/<pid>/stat); throughput, latency and the load tool's
// own CPU are reported beside it. Every load is bounded in count and time and uses loopback only.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/test/harness"
)

// Config sizes a run. DefaultConfig is the full `make bench`; QuickConfig runs everything in seconds.
type Config struct {
	// Rounds is how many times each plugin/no-auth pair is measured (medians are taken over them).
	Rounds int
	// ConnectWorkers are the concurrencies of the connect storm; ConnectDur is each interval and
	// ConnectPool how many distinct agents the workers share out.
	ConnectWorkers []int
	ConnectDur     time.Duration
	ConnectPool    int
	// PublishAgents connections publish to their own namespace for PublishDur, with PublishWindow
	// messages in flight each; then they publish telemetry for PublishDur to one application subscriber
	// on agents/+/telemetry (the fan-in load, part of "publish").
	PublishAgents int
	PublishWindow int
	PublishDur    time.Duration
	// StormAgents reconnect after a broker restart, at most StormConc connects in flight.
	StormAgents  int
	StormConc    int
	StormTimeout time.Duration
	// FloodWorkers send garbage usernames while LegitWorkers connect real agents, for FloodDur.
	FloodWorkers int
	LegitWorkers int
	FloodDur     time.Duration
	// HammerWorkers send wrong passwords while one agent probes its publish round trip for ProbeDur.
	HammerWorkers int
	ProbeDur      time.Duration
	// LockDur is how long api_keys is locked while an agent probes its round trip.
	LockDur time.Duration
	// RevokeAgents are revoked per round, each connected to two brokers on one database.
	RevokeAgents int
	// MemSizes are the credential counts whose RSS is measured (ascending).
	MemSizes []int
	// TokenConnects connects with short-lived credentials, one credential each, by TokenWorkers clients.
	TokenConnects, TokenWorkers int
	// ChurnAgents connect and disconnect for ChurnDur, by ChurnWorkers clients, on a broker recording
	// presence (part of "presence", with a connect storm on brokers with presence on and off).
	ChurnAgents, ChurnWorkers int
	ChurnDur                  time.Duration
	// Only restricts the run to these loads (connect, publish, storm, flood, revoke, memory, token, presence,
	// intermittent); empty
	// runs all.
	Only []string
	// Floor and Dynsec add to the cached connect storm the floor plugin (iotauth's shim with a Go side that
	// answers at once) and Mosquitto's dynamic-security plugin; GoAuthSO, when set, mosquitto-go-auth
	// built at that path (compare.go). The floor and go-auth also join the agents' publish loads.
	// PresenceOff adds iotauth with plugin_opt_presence false to the cached connect storm.
	Floor, Dynsec, PresenceOff bool
	GoAuthSO                   string
	// Metrics adds, to the cached connect storm and the reconnect storm, a plugin broker that serves
	// Prometheus metrics (plugin_opt_metrics_listen, scraped every second) beside the one without, in
	// the same rotation against the same no-auth broker.
	Metrics bool
}

// DefaultConfig is the full benchmark (about 10 minutes on 2 cores).
func DefaultConfig() Config {
	return Config{
		Rounds: 3, ConnectWorkers: []int{8, 32}, ConnectDur: 4 * time.Second, ConnectPool: 2000,
		PublishAgents: 32, PublishWindow: 8, PublishDur: 4 * time.Second,
		StormAgents: 10000, StormConc: 64, StormTimeout: 60 * time.Second,
		FloodWorkers: 8, LegitWorkers: 4, FloodDur: 4 * time.Second,
		HammerWorkers: 8, ProbeDur: 4 * time.Second, LockDur: 5 * time.Second,
		RevokeAgents: 200, MemSizes: []int{100_000, 1_000_000}, TokenConnects: 1000, TokenWorkers: 8,
		ChurnAgents: 2000, ChurnWorkers: 16, ChurnDur: 60 * time.Second, Floor: true, Dynsec: true, PresenceOff: true,
	}
}

// QuickConfig runs every load at a tiny size (seconds in all): for the smoke test and -quick.
func QuickConfig() Config {
	return Config{
		Rounds: 1, ConnectWorkers: []int{8}, ConnectDur: 400 * time.Millisecond, ConnectPool: 64,
		PublishAgents: 4, PublishWindow: 4, PublishDur: 400 * time.Millisecond,
		StormAgents: 200, StormConc: 32, StormTimeout: 20 * time.Second,
		FloodWorkers: 4, LegitWorkers: 2, FloodDur: 400 * time.Millisecond,
		HammerWorkers: 4, ProbeDur: 400 * time.Millisecond, LockDur: 600 * time.Millisecond,
		RevokeAgents: 10, MemSizes: []int{2000}, Metrics: true, TokenConnects: 80, TokenWorkers: 4,
		ChurnAgents: 64, ChurnWorkers: 4, ChurnDur: 500 * time.Millisecond, Floor: true, Dynsec: true,
	}
}

func (c Config) runs(load string) bool {
	if len(c.Only) == 0 {
		return true
	}
	for _, l := range c.Only {
		if l == load {
			return true
		}
	}
	return false
}

// Env is what a run needs from outside: a PostgreSQL cluster to create databases in and the plugin.
type Env struct {
	Postgres *harness.Postgres
	Plugin   string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

type runner struct {
	env Env
	cfg Config
	ctx context.Context
	rep *Report
	// brokers to stop when the run ends
	brokers []*harness.Broker
	// scrapers of the brokers that serve metrics
	scrapers []*scraper
	// cleanups run when the run ends (after the brokers stopped)
	cleanups []func()
}

func (r *runner) logf(format string, args ...any) {
	if r.env.Log != nil {
		fmt.Fprintf(r.env.Log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// brokerExtra is appended to every broker's configuration, plugin and no-auth alike. Without
// TCP_NODELAY Mosquitto's small writes (a PUBACK, then the delivery) meet the client's delayed ACK and
// QoS 1 round trips quantise to 40 ms: the benchmark would measure Nagle's algorithm, not the broker.
var brokerExtra = []string{"set_tcp_nodelay true"}

func (r *runner) launch(c harness.BrokerConfig) (*harness.Broker, error) {
	c.Quiet = true
	c.Extra = append(c.Extra, brokerExtra...)
	b, err := harness.LaunchBroker(c)
	if err != nil {
		return nil, err
	}
	r.brokers = append(r.brokers, b)
	return b, nil
}

func (r *runner) pluginBroker(dsn string, opts ...[2]string) (*harness.Broker, error) {
	return r.launch(harness.BrokerConfig{Plugin: r.env.Plugin, Options: append([][2]string{{"dsn", dsn}}, opts...)})
}

func (r *runner) add(rows ...Row) {
	for _, row := range rows {
		r.rep.Rows = append(r.rep.Rows, row)
		r.logf("%s", strings.Join(row.cells(), " | "))
	}
}

// Run executes the configured loads and returns the report. Brokers it starts are stopped before it
// returns; the databases it creates stay in the cluster (which the caller throws away).
func Run(ctx context.Context, env Env, cfg Config) (*Report, error) {
	raiseFileLimit()
	r := &runner{env: env, cfg: cfg, ctx: ctx, rep: &Report{}}
	defer func() {
		r.stopScrapers("interrupted run")
		for _, b := range r.brokers {
			b.Stop()
			os.RemoveAll(b.Dir)
		}
		for _, f := range r.cleanups {
			f()
		}
	}()
	start := time.Now()
	r.rep.Machine = machine(ctx, env.Postgres.AdminDSN)
	steps := []struct {
		name string
		fn   func() error
	}{
		{"connect", r.connectAndPublish}, {"storm", r.storm}, {"flood", r.flood},
		{"revoke", r.revoke}, {"memory", r.memory}, {"token", r.tokens}, {"presence", r.presence},
		{"intermittent", r.intermittent},
	}
	for _, s := range steps {
		if s.name != "connect" && !cfg.runs(s.name) {
			continue
		}
		if err := s.fn(); err != nil {
			return r.rep, fmt.Errorf("%s: %w", s.name, err)
		}
		if err := ctx.Err(); err != nil {
			return r.rep, err
		}
	}
	r.rep.Took = time.Since(start)
	return r.rep, nil
}

// raiseFileLimit lifts the soft open-files limit to the hard one. Setting it explicitly (rather than
// relying on the Go runtime's own raise) also makes child processes — the brokers — inherit it, which a
// 10,000-client storm needs.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func machine(ctx context.Context, adminDSN string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now()}
	if out, err := exec.Command("nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			m.CPUs = n
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	out, _ := exec.Command("mosquitto", "-h").CombinedOutput()
	m.Mosquitto, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	if conn, err := pgx.Connect(ctx, adminDSN); err == nil {
		var v string
		if conn.QueryRow(ctx, "SHOW server_version").Scan(&v) == nil {
			m.Postgres = "PostgreSQL " + strings.Fields(v)[0]
		}
		conn.Close(ctx)
	}
	return m
}

// agentsDB creates a database with n agents and returns its DSN and the agents.
func (r *runner) agentsDB(n int) (string, []Agent, error) {
	dsn, err := r.env.Postgres.CreateDatabase(r.ctx)
	if err != nil {
		return "", nil, err
	}
	agents := make([]Agent, 0, n)
	t0 := time.Now()
	err = Populate(r.ctx, dsn, n, func(a Agent) { agents = append(agents, a) })
	r.logf("created %d agents in %v", n, time.Since(t0).Round(time.Millisecond))
	return dsn, agents, err
}

// order rotates the brokers each round so that drift on the shared machine spreads evenly.
func order[T any](xs []T, round int) []T {
	out := make([]T, 0, len(xs))
	for i := range xs {
		out = append(out, xs[(i+round)%len(xs)])
	}
	return out
}

func floats[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func (r *runner) connectAndPublish() error {
	cfg := r.cfg
	if !cfg.runs("connect") && !cfg.runs("publish") {
		return nil
	}
	dsn, agents, err := r.agentsDB(max(cfg.ConnectPool, cfg.PublishAgents))
	if err != nil {
		return err
	}
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	warm, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	pool := agents[:cfg.ConnectPool]
	// Warm up both brokers (and the plugin's cache, whether or not preload finished) with one pass.
	for _, b := range []*harness.Broker{noauth, warm} {
		if _, errs := connectLoop(b.Addr(), partition(pool, 8), nil, cfg.ConnectPool/8); errs > 0 {
			return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
		}
	}
	others, err := r.comparisons(dsn, pool)
	if err != nil {
		return err
	}
	if cfg.runs("connect") {
		cold, err := r.pluginBroker(dsn, [2]string{"cache_size", "0"})
		if err != nil {
			return err
		}
		var metered *harness.Broker
		if cfg.Metrics {
			if metered, err = r.metricsBroker(dsn); err != nil {
				return err
			}
			if _, errs := connectLoop(metered.Addr(), partition(pool, 8), nil, cfg.ConnectPool/8); errs > 0 {
				return fmt.Errorf("warm-up on %s: %d connects failed", metered.Addr(), errs)
			}
		}
		if err := r.connect(dsn, pool, noauth, warm, cold, metered, others); err != nil {
			return err
		}
		cold.Stop()
		if metered != nil {
			r.stopScrapers("connect storm")
			metered.Stop()
		}
	}
	if cfg.runs("publish") {
		if err := r.publish(agents[:cfg.PublishAgents], noauth, warm, publishComparisons(others)); err != nil {
			return err
		}
		if err := r.fanIn(dsn, agents[:cfg.PublishAgents], noauth, warm); err != nil {
			return err
		}
	}
	noauth.Stop()
	warm.Stop()
	for _, c := range others {
		c.b.Stop()
	}
	return nil
}

// connect runs the connect storms; metered, when not nil, is warm's twin serving metrics; others are
// the comparison brokers (compare.go).
func (r *runner) connect(dsn string, pool []Agent, noauth, warm, cold, metered *harness.Broker, others []comparison) error {
	cfg := r.cfg
	for _, workers := range cfg.ConnectWorkers {
		res := map[*harness.Broker][]opResult{}
		var pgPerLookup, pgCPUPerLookup []float64
		// machine is the CPU per connect of everything on the machine that takes part: broker, load tool
		// and PostgreSQL's processes. On two cores a storm saturates both, so connects/s follows it.
		machine := map[*harness.Broker][]float64{}
		brokers := []*harness.Broker{noauth, warm, cold}
		if metered != nil {
			brokers = append(brokers, metered)
		}
		for _, c := range others {
			brokers = append(brokers, c.b)
		}
		for round := range cfg.Rounds {
			for _, b := range order(brokers, round) {
				n0, t0, err := lookupStats(r.ctx, dsn)
				if err != nil {
					return err
				}
				pg0 := snapshotCPU(r.env.Postgres.PIDs())
				o, err := connectStorm(b, pool, workers, cfg.ConnectDur)
				if err != nil {
					return err
				}
				pgCPU := snapshotCPU(r.env.Postgres.PIDs()).since(pg0)
				machine[b] = append(machine[b], float64(o.cpu+o.self+pgCPU)/float64(max(o.ops, 1)))
				if b == cold {
					n1, t1, err := lookupStats(r.ctx, dsn)
					if err != nil {
						return err
					}
					if n1 > n0 {
						pgPerLookup = append(pgPerLookup, float64(t1-t0)/float64(n1-n0))
						pgCPUPerLookup = append(pgCPUPerLookup, float64(pgCPU)/float64(n1-n0))
					}
				}
				// Without a cache every connect waits for PostgreSQL: on a loaded machine some answers come
				// after db_timeout and the plugin refuses (it fails closed). That is counted, not fatal.
				if o.errs > 0 && b != cold {
					return fmt.Errorf("connect storm on %s%s: %d connects failed (first: %v); its log's warnings and errors:\n%s", b.Addr(), nameOf(b, others), o.errs, o.firstErr, logProblems(b.Log(), 10))
				}
				res[b] = append(res[b], o)
				time.Sleep(200 * time.Millisecond)
			}
		}
		n, w, c := res[noauth], res[warm], res[cold]
		load := fmt.Sprintf("1 connect storm, %d clients, cached", workers)
		r.add(
			pair(load, "broker CPU per connect", "dur", floats(w, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), ratioAtMost(1.08)),
			pair(load, "connects/s", "/s", floats(w, opResult.rate), floats(n, opResult.rate), ratioAtLeast(0.95)),
			pair(load, "CONNACK latency p50", "dur", floats(w, func(o opResult) float64 { return o.p(0.5) }), floats(n, func(o opResult) float64 { return o.p(0.5) }), nil),
			pair(load, "CONNACK latency p99", "dur", floats(w, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), ratioAtMost(1.1)),
			pair(load, "load tool CPU (cores)", "", floats(w, opResult.selfShare), floats(n, opResult.selfShare), nil),
			pair(load, "machine CPU per connect (broker + load tool + PostgreSQL)", "dur", machine[warm], machine[noauth], nil),
		)
		r.add(comparisonRows(load, res, noauth, warm, others)...)
		if metered != nil {
			m := res[metered]
			load := fmt.Sprintf("1m connect storm, %d clients, cached, metrics on", workers)
			r.add(
				pair(load, "broker CPU per connect", "dur", floats(m, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), nil),
				pair(load, "connects/s", "/s", floats(m, opResult.rate), floats(n, opResult.rate), nil),
				pair(load, "CONNACK latency p99", "dur", floats(m, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
				vsMetricsOff(pair(load, "broker CPU per connect, metrics on vs off", "dur", floats(m, opResult.cpuPerOp), floats(w, opResult.cpuPerOp), nil)),
				vsMetricsOff(pair(load, "connects/s, metrics on vs off", "/s", floats(m, opResult.rate), floats(w, opResult.rate), nil)),
			)
		}
		load = fmt.Sprintf("1 connect storm, %d clients, cold (cache_size 0)", workers)
		r.add(
			pair(load, "broker CPU per connect", "dur", floats(c, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), nil),
			pair(load, "connects/s", "/s", floats(c, opResult.rate), floats(n, opResult.rate), ratioAtLeast(0.7)),
			pair(load, "CONNACK latency p99", "dur", floats(c, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
			single(load, "PostgreSQL execution time per lookup", "dur", pgPerLookup, nil),
			single(load, "PostgreSQL CPU per lookup (all its processes)", "dur", pgCPUPerLookup, nil),
			single(load, "connects refused (PostgreSQL slower than db_timeout)", "", floats(c, func(o opResult) float64 { return float64(o.errs) }), nil),
			pair(load, "machine CPU per connect (broker + load tool + PostgreSQL)", "dur", machine[cold], machine[noauth], nil),
		)
	}
	return nil
}

func (r *runner) publish(agents []Agent, noauth, warm *harness.Broker, others []comparison) error {
	cfg := r.cfg
	brokers := []*harness.Broker{noauth, warm}
	for _, c := range others {
		brokers = append(brokers, c.b)
	}
	for _, qos := range []byte{0, 1} {
		res := map[*harness.Broker][]opResult{}
		for round := range cfg.Rounds {
			for _, b := range order(brokers, round) {
				o, err := publishLoad(b, agents, qos, cfg.PublishWindow, cfg.PublishDur)
				if err != nil {
					return fmt.Errorf("publish QoS %d on %s: %w", qos, b.Addr(), err)
				}
				res[b] = append(res[b], o)
				time.Sleep(200 * time.Millisecond)
			}
		}
		n, w := res[noauth], res[warm]
		load := fmt.Sprintf("2 publish QoS %d, %d agents echo", qos, len(agents))
		r.add(
			pair(load, "broker CPU per delivered msg", "dur", floats(w, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), ratioAtMost(1.05)),
			pair(load, "delivered msgs/s", "/s", floats(w, opResult.rate), floats(n, opResult.rate), ratioAtLeast(0.95)),
			pair(load, "end-to-end latency p99", "dur", floats(w, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
			pair(load, "load tool CPU (cores)", "", floats(w, opResult.selfShare), floats(n, opResult.selfShare), nil),
		)
		r.add(publishComparisonRows(load, res, noauth, others)...)
	}
	return nil
}

func (r *runner) storm() error {
	cfg := r.cfg
	dsn, agents, err := r.agentsDB(cfg.StormAgents)
	if err != nil {
		return err
	}
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	on, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	off, err := r.pluginBroker(dsn, [2]string{"preload", "false"})
	if err != nil {
		return err
	}
	brokers := []*harness.Broker{noauth, on, off}
	var metered *harness.Broker
	if cfg.Metrics {
		if metered, err = r.metricsBroker(dsn); err != nil {
			return err
		}
		brokers = append(brokers, metered)
	}
	res := map[*harness.Broker][]stormResult{}
	for round := range cfg.Rounds {
		for _, b := range order(brokers, round) {
			s, err := reconnectStorm(b, agents, cfg.StormConc, cfg.StormTimeout)
			if err != nil {
				return fmt.Errorf("reconnect storm on %s: %w", b.Addr(), err)
			}
			res[b] = append(res[b], s)
			time.Sleep(300 * time.Millisecond)
		}
	}
	took := func(s stormResult) float64 { return float64(s.took) }
	cpu := func(s stormResult) float64 { return float64(s.cpu) }
	retries := func(s stormResult) float64 { return float64(s.retries) }
	load := fmt.Sprintf("3 reconnect storm, %d agents", len(agents))
	r.add(
		pair(load, "time until all connected, preload on", "dur", floats(res[on], took), floats(res[noauth], took), ratioAtMost(1.2)),
		pair(load, "broker CPU for the storm, preload on", "dur", floats(res[on], cpu), floats(res[noauth], cpu), nil),
		pair(load, "time until all connected, preload off", "dur", floats(res[off], took), floats(res[noauth], took), nil),
		pair(load, "broker CPU for the storm, preload off", "dur", floats(res[off], cpu), floats(res[noauth], cpu), nil),
		single(load, "connects refused and retried, preload on", "", floats(res[on], retries), nil),
		single(load, "connects refused and retried, preload off", "", floats(res[off], retries), nil),
	)
	if metered != nil {
		m := res[metered]
		r.add(
			pair(load, "time until all connected, preload on, metrics on", "dur", floats(m, took), floats(res[noauth], took), nil),
			pair(load, "broker CPU for the storm, preload on, metrics on", "dur", floats(m, cpu), floats(res[noauth], cpu), nil),
			vsMetricsOff(pair(load, "time until all connected, metrics on vs off", "dur", floats(m, took), floats(res[on], took), nil)),
			vsMetricsOff(pair(load, "broker CPU for the storm, metrics on vs off", "dur", floats(m, cpu), floats(res[on], cpu), nil)),
		)
	}
	r.stopScrapers("reconnect storm")
	for _, b := range brokers {
		b.Stop()
	}
	return nil
}

func (r *runner) flood() error {
	cfg := r.cfg
	n := max(cfg.ConnectPool, cfg.HammerWorkers*4+1)
	dsn, agents, err := r.agentsDB(n)
	if err != nil {
		return err
	}
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	warm, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	legit, probe, hammer := agents[1:len(agents)/2], agents[0], agents[len(agents)/2:]
	for _, b := range []*harness.Broker{noauth, warm} {
		if _, errs := connectLoop(b.Addr(), partition(legit, 4), nil, len(legit)/4); errs > 0 {
			return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
		}
	}

	// 4a: garbage usernames at full speed while real agents connect.
	res, err := r.floodRounds(dsn, []*harness.Broker{noauth, warm}, legit, floodOptions)
	if err != nil {
		return err
	}
	load := fmt.Sprintf("4 flood: %d garbage clients + %d real", cfg.FloodWorkers, cfg.LegitWorkers)
	p99, rate := floodRound.p99, floodRound.rate
	perAnswered := func(f floodRound) float64 { return float64(f.legit.cpu) / float64(f.legit.ops+f.flood) }
	r.add(
		single(load, "DB lookups caused by the flood", "", floats(res[warm], func(f floodRound) float64 { return float64(f.queries) }),
			valueAtMost(0, "0")),
		pair(load, "real agents' CONNACK p99", "dur", floats(res[warm], p99), floats(res[noauth], p99), ratioAtMost(1.1)),
		pair(load, "flood connects answered/s", "/s", floats(res[warm], rate), floats(res[noauth], rate), nil),
		pair(load, "broker CPU per answered connect (real + flood)", "dur", floats(res[warm], perAnswered), floats(res[noauth], perAnswered), nil),
	)

	// 4d: well-formed keys that no database holds (CRC32 is public), at full speed, while real agents
	// connect: the plugin may look up at most unknown_key_lookups of them a second.
	const budget = 200
	forgedBroker, err := r.pluginBroker(dsn, [2]string{"unknown_key_lookups", fmt.Sprint(budget)})
	if err != nil {
		return err
	}
	if _, errs := connectLoop(forgedBroker.Addr(), partition(legit, 4), nil, len(legit)/4); errs > 0 {
		return fmt.Errorf("warm-up on %s: %d connects failed", forgedBroker.Addr(), errs)
	}
	forged, err := r.floodRounds(dsn, []*harness.Broker{noauth, forgedBroker}, legit, forgedOptions)
	if err != nil {
		return err
	}
	load = fmt.Sprintf("4d forged keys: %d clients + %d real", cfg.FloodWorkers, cfg.LegitWorkers)
	perSecond := func(f floodRound) float64 { return float64(f.queries) / f.legit.wall.Seconds() }
	r.add(
		// The budget's burst (as many as a second's worth) comes on top of its rate once per round.
		single(load, "DB lookups/s caused by forged keys", "/s", floats(forged[forgedBroker], perSecond),
			valueAtMost(float64(budget)+float64(budget)/cfg.FloodDur.Seconds(), fmt.Sprintf("bound %d/s + burst", budget))),
		pair(load, "real agents' CONNACK p99", "dur", floats(forged[forgedBroker], p99), floats(forged[noauth], p99), ratioAtMost(1.1)),
		pair(load, "forged connects answered/s", "/s", floats(forged[forgedBroker], rate), floats(forged[noauth], rate), nil),
	)

	// 4b: a connected agent's publish round trip, idle and while clients hammer wrong passwords.
	pace := 2 * time.Millisecond
	idle := map[*harness.Broker][]float64{}
	busy := map[*harness.Broker][]float64{}
	for round := range cfg.Rounds {
		for _, b := range order([]*harness.Broker{noauth, warm}, round) {
			lat, err := probeRTT(b, probe, cfg.ProbeDur, pace, nil)
			if err != nil {
				return err
			}
			idle[b] = append(idle[b], quantile(lat, 0.99))
			lat, err = probeRTT(b, probe, cfg.ProbeDur, pace, func(stop <-chan struct{}) {
				wrongPasswordLoop(b.Addr(), hammer, cfg.HammerWorkers, stop)
			})
			if err != nil {
				return err
			}
			busy[b] = append(busy[b], quantile(lat, 0.99))
		}
	}
	load = fmt.Sprintf("4b %d clients send wrong passwords", cfg.HammerWorkers)
	row := pair(load, "connected agent's publish RTT p99 (vs idle)", "dur", busy[warm], idle[warm], ratioAtMost(2))
	row.Baseline = "idle"
	r.add(row)
	row = pair(load, "same on the no-auth broker (wrong passwords accepted)", "dur", busy[noauth], idle[noauth], nil)
	row.Baseline = "idle"
	r.add(row)
	// On a small machine the hammering clients alone saturate the cores; this row separates what the
	// plugin adds from what the load itself costs.
	r.add(pair(load, "publish RTT p99 under the hammer, plugin vs no-auth", "dur", busy[warm], busy[noauth], nil))

	// 4c: api_keys locked: every lookup waits out the DB deadline; connected agents must not.
	var maxes, p99s []float64
	deadline := 250 * time.Millisecond
	for range cfg.Rounds {
		locked := make(chan struct{})
		lockErr := make(chan error, 1)
		lat, err := probeRTT(warm, probe, cfg.LockDur, pace, func(stop <-chan struct{}) {
			go func() { lockErr <- lockTable(r.ctx, dsn, cfg.LockDur, locked) }()
			select {
			case <-locked:
			case <-stop:
				return
			}
			unknownKeyLoop(warm.Addr(), 2, stop)
		})
		if err != nil {
			return err
		}
		if err := <-lockErr; err != nil {
			return fmt.Errorf("lock api_keys: %w", err)
		}
		p99s = append(p99s, quantile(lat, 0.99))
		maxes = append(maxes, float64(lat[len(lat)-1]))
	}
	load = fmt.Sprintf("4c api_keys locked %v, 2 clients with unknown keys", cfg.LockDur)
	r.add(
		single(load, "connected agent's publish RTT p99", "dur", p99s, valueBelow(float64(deadline), "< db_timeout 250 ms")),
		single(load, "connected agent's publish RTT max", "dur", maxes, valueBelow(float64(deadline)*1.1, "< 1.1 × db_timeout")),
	)
	noauth.Stop()
	warm.Stop()
	return nil
}

func (r *runner) revoke() error {
	cfg := r.cfg
	dsn, agents, err := r.agentsDB(cfg.RevokeAgents * cfg.Rounds)
	if err != nil {
		return err
	}
	a, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	b, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	var p99 [2][]float64
	var maxes [2][]float64
	var missed [2]float64
	for round := range cfg.Rounds {
		batch := agents[round*cfg.RevokeAgents : (round+1)*cfg.RevokeAgents]
		lat, miss, err := revocation(r.ctx, dsn, []*harness.Broker{a, b}, batch, 10*time.Second)
		if err != nil {
			return err
		}
		for i := range 2 {
			missed[i] += float64(miss[i])
			p99[i] = append(p99[i], quantile(lat[i], 0.99))
			if len(lat[i]) > 0 {
				maxes[i] = append(maxes[i], float64(lat[i][len(lat[i])-1]))
			}
		}
	}
	load := fmt.Sprintf("5 revocation, %d keys, 2 brokers", cfg.RevokeAgents)
	for i, name := range []string{"broker A", "broker B"} {
		r.add(
			single(load, "revoke → session closed p99, "+name, "dur", p99[i], valueBelow(float64(time.Second), "< 1 s")),
			single(load, "revoke → session closed max, "+name, "dur", maxes[i], nil),
			single(load, "sessions not closed within 10 s, "+name, "", []float64{missed[i]}, valueAtMost(0, "0")),
		)
	}
	a.Stop()
	b.Stop()
	return nil
}

func (r *runner) memory() error {
	cfg := r.cfg
	if len(cfg.MemSizes) == 0 {
		return nil
	}
	dsn, err := r.env.Postgres.CreateDatabase(r.ctx)
	if err != nil {
		return err
	}
	largest := cfg.MemSizes[len(cfg.MemSizes)-1]
	opts := [][2]string{{"cache_size", strconv.Itoa(largest)}}
	measure := func() (int64, error) {
		before, err := preloadCalls(r.ctx, dsn)
		if err != nil {
			return 0, err
		}
		b, err := r.pluginBroker(dsn, opts...)
		if err != nil {
			return 0, err
		}
		defer b.Stop()
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			n, err := preloadCalls(r.ctx, dsn)
			if err != nil {
				return 0, err
			}
			if n > before {
				break
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("preload did not finish within 5 minutes")
			}
		}
		return waitStableRSS(b.Pid(), 30*time.Second)
	}
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	base, err := RSS(noauth.Pid())
	noauth.Stop()
	if err != nil {
		return err
	}
	empty, err := measure()
	if err != nil {
		return err
	}
	load := "6 memory (preload on)"
	row := pair(load, "RSS with an empty credential table", "B", []float64{float64(empty)}, []float64{float64(base)}, nil)
	r.add(row)
	have := 0
	for _, n := range cfg.MemSizes {
		t0 := time.Now()
		if err := Populate(r.ctx, dsn, n-have, nil); err != nil {
			return err
		}
		r.logf("added %d credentials in %v", n-have, time.Since(t0).Round(time.Millisecond))
		have = n
		rss, err := measure()
		if err != nil {
			return err
		}
		per := float64(rss-empty) / float64(n)
		r.add(
			pair(load, fmt.Sprintf("RSS with %s cached credentials", count(n)), "B", []float64{float64(rss)}, []float64{float64(base)}, nil),
			single(load, fmt.Sprintf("bytes per cached credential (%s)", count(n)), "B", []float64{per}, valueAtMost(300, "≤ 300 B")),
		)
	}
	return nil
}

// vsMetricsOff marks a row whose baseline is the same plugin broker without metrics.
func vsMetricsOff(r Row) Row {
	r.Baseline = "metrics off"
	return r
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// Soak runs one load for d against one broker — the plugin broker, or the no-auth broker when noAuth is
// set — so that a profiler can be attached to it: ready gets the broker's pid before the load starts.
// load is connect (cached connects, 8 clients), publish0 or publish1. When logPath is set the broker's
// log and its stderr (where GODEBUG=gctrace=1 or schedtrace output of the plugin's Go runtime lands) are
// written there at the end.
func Soak(ctx context.Context, env Env, load string, d time.Duration, noAuth bool, pluginOpts [][2]string, logPath string, ready func(pid int)) (string, error) {
	raiseFileLimit()
	r := &runner{env: env, ctx: ctx, rep: &Report{}}
	defer func() {
		for _, b := range r.brokers {
			b.Stop()
			os.RemoveAll(b.Dir)
		}
	}()
	dsn, agents, err := r.agentsDB(2000)
	if err != nil {
		return "", err
	}
	var b *harness.Broker
	if noAuth {
		b, err = r.launch(harness.BrokerConfig{})
	} else {
		b, err = r.pluginBroker(dsn, pluginOpts...)
	}
	if err != nil {
		return "", err
	}
	if _, errs := connectLoop(b.Addr(), partition(agents, 8), nil, len(agents)/8); errs > 0 {
		return "", fmt.Errorf("warm-up: %d connects failed", errs)
	}
	ready(b.Pid())
	var o opResult
	switch load {
	case "connect":
		o, err = connectStorm(b, agents, 8, d)
	case "publish0", "publish1":
		o, err = publishLoad(b, agents[:32], load[7]-'0', 8, d)
	default:
		return "", fmt.Errorf("unknown load %q: use connect, publish0 or publish1", load)
	}
	if err != nil {
		return "", err
	}
	if logPath != "" {
		if err := os.WriteFile(logPath, []byte(b.Log()), 0o644); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s: %d ops in %v, %.0f/s, broker CPU %v (%s per op), p99 %s, load tool %.2f cores",
		load, o.ops, o.wall.Round(time.Millisecond), o.rate(), o.cpu, formatDur(o.cpuPerOp()), formatDur(o.p(0.99)), o.selfShare()), nil
}

// floodRound is one round of a flood load on one broker: the real agents' connects, the flood connects
// answered, and the credential lookups PostgreSQL ran meanwhile.
type floodRound struct {
	legit   opResult
	flood   int
	queries int64
}

func (f floodRound) p99() float64  { return f.legit.p(0.99) }
func (f floodRound) rate() float64 { return float64(f.flood) / f.legit.wall.Seconds() }

// floodRounds runs cfg.Rounds rounds on each broker, alternating: workers send the CONNECTs options
// makes at full speed while the real agents connect for FloodDur.
func (r *runner) floodRounds(dsn string, brokers []*harness.Broker, legit []Agent, options func(int) ConnectOptions) (map[*harness.Broker][]floodRound, error) {
	cfg := r.cfg
	res := map[*harness.Broker][]floodRound{}
	for round := range cfg.Rounds {
		for _, b := range order(brokers, round) {
			before, err := lookupCalls(r.ctx, dsn)
			if err != nil {
				return nil, err
			}
			stop := make(chan struct{})
			floods := make(chan int, 1)
			go func() { floods <- connectLoopOf(b.Addr(), cfg.FloodWorkers, options, stop) }()
			o, err := connectStorm(b, legit, cfg.LegitWorkers, cfg.FloodDur)
			close(stop)
			f := <-floods
			if err != nil {
				return nil, err
			}
			time.Sleep(100 * time.Millisecond)
			after, err := lookupCalls(r.ctx, dsn)
			if err != nil {
				return nil, err
			}
			res[b] = append(res[b], floodRound{legit: o, flood: f, queries: after - before})
			time.Sleep(200 * time.Millisecond)
		}
	}
	return res, nil
}
