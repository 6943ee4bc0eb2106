package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/test/harness"
)

// presence measures what recording presence (docs/presence.md) costs the broker: a cached connect storm
// on two plugin brokers that differ only in plugin_opt_presence, side by side in every round, and a churn
// load (agents connecting and disconnecting) on a broker serving metrics, for the write lag and the
// statements presence sends PostgreSQL.
func (r *runner) presence() error {
	cfg := r.cfg
	dsn, agents, err := r.agentsDB(max(cfg.ConnectPool, cfg.ChurnAgents))
	if err != nil {
		return err
	}
	on, err := r.pluginBroker(dsn)
	if err != nil {
		return err
	}
	off, err := r.pluginBroker(dsn, [2]string{"presence", "false"})
	if err != nil {
		return err
	}
	// Presence without its MQTT lifecycle events: what recording alone costs, without the broker's own
	// work of publishing two messages per session.
	quiet, err := r.pluginBroker(dsn, [2]string{"presence_events", "false"})
	if err != nil {
		return err
	}
	brokers := []*harness.Broker{on, off, quiet}
	pool := agents[:cfg.ConnectPool]
	for _, b := range brokers {
		if _, errs := connectLoop(b.Addr(), partition(pool, 8), nil, cfg.ConnectPool/8); errs > 0 {
			return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
		}
	}
	workers := cfg.ConnectWorkers[0]
	res := map[*harness.Broker][]opResult{}
	main := map[*harness.Broker][]float64{}
	for round := range cfg.Rounds {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		for _, b := range order(brokers, round) {
			t0, err := ThreadCPU(b.Pid(), b.Pid())
			if err != nil {
				return err
			}
			o, err := connectStorm(b, pool, workers, cfg.ConnectDur)
			if err != nil {
				return err
			}
			t1, err := ThreadCPU(b.Pid(), b.Pid())
			if err != nil {
				return err
			}
			if o.errs > 0 {
				return fmt.Errorf("connect storm on %s: %d connects failed", b.Addr(), o.errs)
			}
			res[b] = append(res[b], o)
			main[b] = append(main[b], float64(t1-t0)/float64(max(o.ops, 1)))
			time.Sleep(200 * time.Millisecond)
		}
	}
	load := fmt.Sprintf("8 presence: connect storm, %d clients, cached", workers)
	r.add(
		vsPresenceOff(pair(load, "broker CPU per connect, presence on vs off", "dur", floats(res[on], opResult.cpuPerOp), floats(res[off], opResult.cpuPerOp), ratioAtMost(1.03))),
		vsPresenceOff(pair(load, "broker main-thread CPU per connect, presence on vs off", "dur", main[on], main[off], nil)),
		vsPresenceOff(pair(load, "connects/s, presence on vs off", "/s", floats(res[on], opResult.rate), floats(res[off], opResult.rate), nil)),
		vsPresenceOff(pair(load, "CONNACK latency p99, presence on vs off", "dur", floats(res[on], func(o opResult) float64 { return o.p(0.99) }), floats(res[off], func(o opResult) float64 { return o.p(0.99) }), nil)),
		vsPresenceOff(pair(load, "broker CPU per connect, presence on without events vs off", "dur", floats(res[quiet], opResult.cpuPerOp), floats(res[off], opResult.cpuPerOp), nil)),
		vsPresenceOff(pair(load, "broker main-thread CPU per connect, presence on without events vs off", "dur", main[quiet], main[off], nil)),
	)
	for _, b := range brokers {
		b.Stop()
	}
	if err := r.churn(dsn, agents[:cfg.ChurnAgents]); err != nil {
		return err
	}
	return r.presenceStorm()
}

// presenceStorm restarts two plugin brokers that differ only in plugin_opt_presence, side by side in every
// round, and has cfg.StormAgents agents reconnect to each (the reconnect storm of load 3). It reports the
// time until all are connected, on vs off, and for presence on the statements on the presence tables
// PostgreSQL ran from the broker's start until every session was written (the registration that closes
// the previous start's sessions included; the previous start's shutdown not), and how long after the last
// CONNACK the last session was written.
func (r *runner) presenceStorm() error {
	cfg := r.cfg
	dsn, agents, err := r.agentsDB(cfg.StormAgents)
	if err != nil {
		return err
	}
	const id = "bench-presence-storm"
	on, err := r.pluginBroker(dsn, [2]string{"broker_id", id})
	if err != nil {
		return err
	}
	off, err := r.pluginBroker(dsn, [2]string{"presence", "false"})
	if err != nil {
		return err
	}
	defer on.Stop()
	defer off.Stop()
	res := map[*harness.Broker][]stormResult{}
	var statements, written []float64
	for round := range cfg.Rounds {
		for _, b := range order([]*harness.Broker{on, off}, round) {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			b.Stop() // the previous round's shutdown writes its sessions' ends: not the storm's
			st0, err := presenceStatements(r.ctx, dsn)
			if err != nil {
				return err
			}
			s, err := reconnectStorm(b, agents, cfg.StormConc, cfg.StormTimeout)
			if err != nil {
				return fmt.Errorf("reconnect storm on %s: %w", b.Addr(), err)
			}
			done := time.Now()
			res[b] = append(res[b], s)
			if b == on {
				// reconnectStorm closed the connections once all were up: every start and end is queued.
				if err := waitSessionsWritten(r.ctx, dsn, id, len(agents), 30*time.Second); err != nil {
					return err
				}
				written = append(written, float64(time.Since(done)))
				st1, err := presenceStatements(r.ctx, dsn)
				if err != nil {
					return err
				}
				statements = append(statements, float64(st1-st0))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	took := func(s stormResult) float64 { return float64(s.took) }
	cpu := func(s stormResult) float64 { return float64(s.cpu) }
	load := fmt.Sprintf("8c presence: reconnect storm, %d agents, %d in flight", len(agents), cfg.StormConc)
	r.add(
		vsPresenceOff(pair(load, "time until all connected, presence on vs off", "dur", floats(res[on], took), floats(res[off], took), ratioAtMost(1.05))),
		vsPresenceOff(pair(load, "broker CPU for the storm, presence on vs off", "dur", floats(res[on], cpu), floats(res[off], cpu), nil)),
		single(load, "presence statements to PostgreSQL, start to all sessions written", "", statements, valueAtMost(200, "≤ 200")),
		single(load, "from the last connection's close until all starts and ends were written", "dur", written, nil),
	)
	return nil
}

// waitSessionsWritten polls until broker id's current start has n sessions in PostgreSQL, all ended (the
// storm's clients connected and closed), within d.
func waitSessionsWritten(ctx context.Context, dsn, id string, n int, d time.Duration) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(d)
	for {
		var total, ended int
		err := conn.QueryRow(ctx, `SELECT count(*), count(disconnected_at) FROM presence_sessions s
  JOIN presence_brokers b ON b.broker_id = s.broker_id AND b.incarnation = s.incarnation WHERE s.broker_id = $1`, id).Scan(&total, &ended)
		if err != nil {
			return err
		}
		if total >= n && ended >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("presence storm: %d sessions written (%d ended) within %v; want %d", total, ended, d, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// churn has agents connect and disconnect for cfg.ChurnDur against a presence broker that serves
// metrics, then waits until every session start and end is written and reads the write lag histogram.
func (r *runner) churn(dsn string, agents []Agent) error {
	cfg := r.cfg
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	b, err := r.pluginBroker(dsn, [2]string{"metrics_listen", fmt.Sprintf("127.0.0.1:%d", port)})
	if err != nil {
		return err
	}
	defer b.Stop()
	if _, errs := connectLoop(b.Addr(), partition(agents, 8), nil, len(agents)/8); errs > 0 {
		return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
	}
	// Let the warm-up's rows be written, then count only the churn's.
	lag0, err := waitLagSettled(metricsURL, 0, 10*time.Second)
	if err != nil {
		return err
	}
	st0, err := presenceStatements(r.ctx, dsn)
	if err != nil {
		return err
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	o, err := connectStorm(b, agents, cfg.ChurnWorkers, cfg.ChurnDur)
	if err != nil {
		return err
	}
	if o.errs > 0 {
		return fmt.Errorf("churn on %s: %d connects failed", b.Addr(), o.errs)
	}
	// Every connect queued a start and an end: wait (bounded) until all of them were committed.
	lag, err := waitLagSettled(metricsURL, lag0.count+2*int64(o.ops), 30*time.Second)
	if err != nil {
		return err
	}
	st1, err := presenceStatements(r.ctx, dsn)
	if err != nil {
		return err
	}
	churned := lag.since(lag0)
	load := fmt.Sprintf("8b presence churn: %d agents connect and disconnect for %v, %d clients", len(agents), cfg.ChurnDur, cfg.ChurnWorkers)
	r.add(
		single(load, "sessions (connect + disconnect)", "", []float64{float64(o.ops)}, nil),
		single(load, "presence write lag p99 (histogram_quantile)", "dur", []float64{churned.quantile(0.99) * float64(time.Second)}, valueBelow(float64(time.Second), "< 1 s")),
		single(load, "presence statements to PostgreSQL", "", []float64{float64(st1 - st0)}, nil),
		single(load, "session starts and ends per statement", "", []float64{float64(churned.count) / math.Max(float64(st1-st0), 1)}, nil),
	)
	return nil
}

// vsPresenceOff marks a row whose baseline is the same plugin broker with plugin_opt_presence false.
func vsPresenceOff(r Row) Row {
	r.Baseline = "presence off"
	return r
}

// histogram is a Prometheus histogram as scraped: cumulative counts per upper bound, ascending.
type histogram struct {
	bounds []float64
	counts []int64
	count  int64
}

// since is h less an earlier scrape of the same histogram.
func (h histogram) since(from histogram) histogram {
	out := histogram{bounds: h.bounds, counts: make([]int64, len(h.counts)), count: h.count - from.count}
	for i := range h.counts {
		out.counts[i] = h.counts[i]
		if i < len(from.counts) {
			out.counts[i] -= from.counts[i]
		}
	}
	return out
}

// quantile estimates quantile q as Prometheus's histogram_quantile does: linearly within the bucket that
// holds it (+Inf when beyond the last bound, NaN when empty). It is as precise as the buckets.
func (h histogram) quantile(q float64) float64 {
	if h.count <= 0 {
		return math.NaN()
	}
	rank := q * float64(h.count)
	lower, below := 0.0, int64(0)
	for i, c := range h.counts {
		if float64(c) >= rank {
			in := c - below
			if in <= 0 {
				return h.bounds[i]
			}
			return lower + (h.bounds[i]-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = h.bounds[i], c
	}
	return math.Inf(1)
}

const lagSeries = "iotauth_plugin_presence_write_lag_seconds"

// scrapeLag reads the write lag histogram from a broker's metrics.
func scrapeLag(url string) (histogram, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return histogram{}, err
	}
	defer resp.Body.Close()
	var h histogram
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, lagSeries+`_bucket{le="`):
			rest := strings.TrimPrefix(line, lagSeries+`_bucket{le="`)
			le, val, ok := strings.Cut(rest, `"} `)
			if !ok || le == "+Inf" {
				continue
			}
			bound, err1 := strconv.ParseFloat(le, 64)
			n, err2 := strconv.ParseFloat(val, 64)
			if err1 != nil || err2 != nil {
				return histogram{}, fmt.Errorf("unparsable metrics line %q", line)
			}
			h.bounds, h.counts = append(h.bounds, bound), append(h.counts, int64(n))
		case strings.HasPrefix(line, lagSeries+"_count "):
			n, err := strconv.ParseFloat(strings.TrimPrefix(line, lagSeries+"_count "), 64)
			if err != nil {
				return histogram{}, fmt.Errorf("unparsable metrics line %q", line)
			}
			h.count, found = int64(n), true
		}
	}
	if err := sc.Err(); err != nil {
		return histogram{}, err
	}
	if !found {
		return histogram{}, fmt.Errorf("GET %s: no %s series (is presence on?)", url, lagSeries)
	}
	return h, nil
}

// waitLagSettled polls the write lag histogram until it counts at least want rows and stops growing
// (two equal scrapes 300 ms apart), within d.
func waitLagSettled(url string, want int64, d time.Duration) (histogram, error) {
	deadline := time.Now().Add(d)
	prev := int64(-1)
	for {
		h, err := scrapeLag(url)
		if err != nil {
			return h, err
		}
		if h.count >= want && h.count == prev {
			return h, nil
		}
		if time.Now().After(deadline) {
			return h, fmt.Errorf("presence wrote %d session starts and ends within %v; want %d", h.count, d, want)
		}
		prev = h.count
		time.Sleep(300 * time.Millisecond)
	}
}

// presenceStatements is how many statements on the presence tables PostgreSQL has executed in the
// database at dsn (pg_stat_statements): batches, heartbeats and registrations.
func presenceStatements(ctx context.Context, dsn string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query LIKE '%presence\_%' AND query NOT LIKE '%pg_stat_statements%'`).Scan(&n)
	return n, err
}

func init() {
	RegisterTarget(RatioAtMost("presence cost", 1.03, Match{LoadPrefix: "8 presence: connect storm", Figure: "broker CPU per connect, presence on vs off"}))
	RegisterTarget(RatioAtMost("presence reconnect storm", 1.05, Match{LoadPrefix: "8c presence", Figure: "time until all connected, presence on vs off"}))
	RegisterTarget(ValueAtMost("presence statements", 200, false, "", Match{LoadPrefix: "8c presence", Figure: "presence statements to PostgreSQL, start to all sessions written"}))
}
