// Command iotauth-bench runs iotauth's benchmark (`make bench`): the plugin broker against a no-auth
// Mosquitto in the same run, on a throwaway PostgreSQL, printing a table of plugin/no-auth ratios and
// writing it as Markdown. It exits 1 when a figure misses its target, 2 when the run itself failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iotauth/iotauth/test/bench"
	"github.com/iotauth/iotauth/test/harness"
)

func main() {
	os.Exit(run())
}

func run() int {
	def := bench.DefaultConfig()
	quick := flag.Bool("quick", false, "tiny sizes: every load runs in a few seconds (sizes given by other flags still apply)")
	out := flag.String("out", "", "write the table as Markdown to this file")
	rounds := flag.Int("rounds", def.Rounds, "rounds per plugin/no-auth pair (medians are taken over them)")
	workers := flag.String("connect-workers", ints(def.ConnectWorkers), "connect storm concurrencies, comma-separated")
	connectDur := flag.Duration("connect-dur", def.ConnectDur, "connect storm interval per broker and round")
	pool := flag.Int("connect-pool", def.ConnectPool, "distinct agents the connect storm workers share out")
	pubAgents := flag.Int("publish-agents", def.PublishAgents, "agents publishing (each to its own namespace, subscribed to it)")
	pubWindow := flag.Int("publish-window", def.PublishWindow, "messages in flight per publishing agent")
	pubDur := flag.Duration("publish-dur", def.PublishDur, "publish interval per broker, QoS and round")
	storm := flag.Int("storm-agents", def.StormAgents, "agents reconnecting after a broker restart")
	stormConc := flag.Int("storm-conc", def.StormConc, "connects in flight during the reconnect storm")
	floodDur := flag.Duration("flood-dur", def.FloodDur, "flood interval per broker and round")
	floodWorkers := flag.Int("flood-workers", def.FloodWorkers, "clients sending garbage usernames")
	probeDur := flag.Duration("probe-dur", def.ProbeDur, "round-trip probe interval (idle and under wrong passwords)")
	lockDur := flag.Duration("lock-dur", def.LockDur, "how long api_keys is locked in the lock test")
	revoke := flag.Int("revoke-agents", def.RevokeAgents, "keys revoked per round")
	mem := flag.String("mem-sizes", ints(def.MemSizes), "credential counts whose broker RSS is measured, ascending, comma-separated (empty: skip)")
	tokConnects := flag.Int("token-connects", def.TokenConnects, "connects with short-lived credentials (one credential each) per broker and round")
	tokWorkers := flag.Int("token-workers", def.TokenWorkers, "clients making the short-lived credential connects")
	churnAgents := flag.Int("churn-agents", def.ChurnAgents, "agents connecting and disconnecting in the presence churn load")
	churnWorkers := flag.Int("churn-workers", def.ChurnWorkers, "clients making the presence churn load's connects")
	churnDur := flag.Duration("churn-dur", def.ChurnDur, "how long the presence churn load lasts")
	only := flag.String("only", "", "run only these loads: connect, publish (with the application fan-in), storm, flood, revoke, memory, token, presence, intermittent (comma-separated)")
	goauth := flag.String("goauth", os.Getenv("GOAUTH_SO"), "mosquitto-go-auth's go-auth.so: compare it in the cached connect storm and the publish loads (default $GOAUTH_SO; docs/benchmarks.md says how to build it)")
	noCompare := flag.Bool("no-compare", false, "leave out the comparison brokers of the cached connect storm (floor, dynamic-security, iotauth with presence off)")
	withMetrics := flag.Bool("metrics", def.Metrics, "also run the cached connect storm and the reconnect storm against a plugin broker serving metrics (plugin_opt_metrics_listen, scraped every second), beside the one without")
	soak := flag.String("soak", "", "instead of the benchmark, run one load (connect, publish0, publish1) for -soak-dur against one broker and print its pid first, to attach perf or pprof")
	soakDur := flag.Duration("soak-dur", 20*time.Second, "how long -soak runs")
	soakNoAuth := flag.Bool("soak-noauth", false, "-soak the no-auth broker instead of the plugin")
	soakOpts := flag.String("soak-opts", "", "extra plugin options for -soak, as key=value,key=value")
	soakLog := flag.String("soak-log", "", "write the soaked broker's log and stderr here (set GODEBUG=gctrace=1,schedtrace=1000 to see the plugin's Go runtime)")
	brokerEnv := flag.String("broker-env", "", "environment for the brokers only, as KEY=VAL,KEY=VAL (for example GOMAXPROCS=1 or GODEBUG=gctrace=1 for the plugin's Go runtime); the load tool is started before it applies")
	flag.Parse()
	for _, kv := range strings.Split(*brokerEnv, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			// The Go runtime read its own settings at start: this reaches only the processes started from here on.
			os.Setenv(k, v)
		}
	}
	if *soak != "" {
		return runSoak(*soak, *soakDur, *soakNoAuth, *soakOpts, *soakLog)
	}

	cfg := def
	if *quick {
		cfg = bench.QuickConfig()
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	apply := func(name string, f func()) {
		if set[name] || !*quick {
			f()
		}
	}
	apply("rounds", func() { cfg.Rounds = *rounds })
	apply("connect-workers", func() {
		if v, e := parseInts(*workers); e != nil {
			err = e
		} else {
			cfg.ConnectWorkers = v
		}
	})
	apply("connect-dur", func() { cfg.ConnectDur = *connectDur })
	apply("connect-pool", func() { cfg.ConnectPool = *pool })
	apply("publish-agents", func() { cfg.PublishAgents = *pubAgents })
	apply("publish-window", func() { cfg.PublishWindow = *pubWindow })
	apply("publish-dur", func() { cfg.PublishDur = *pubDur })
	apply("storm-agents", func() { cfg.StormAgents = *storm })
	apply("storm-conc", func() { cfg.StormConc = *stormConc })
	apply("flood-dur", func() { cfg.FloodDur = *floodDur })
	apply("flood-workers", func() { cfg.FloodWorkers = *floodWorkers })
	apply("probe-dur", func() { cfg.ProbeDur = *probeDur })
	apply("lock-dur", func() { cfg.LockDur = *lockDur })
	apply("revoke-agents", func() { cfg.RevokeAgents = *revoke })
	apply("mem-sizes", func() {
		if v, e := parseInts(*mem); e != nil {
			err = e
		} else {
			cfg.MemSizes = v
		}
	})
	apply("metrics", func() { cfg.Metrics = *withMetrics })
	apply("token-connects", func() { cfg.TokenConnects = *tokConnects })
	apply("token-workers", func() { cfg.TokenWorkers = *tokWorkers })
	apply("churn-agents", func() { cfg.ChurnAgents = *churnAgents })
	apply("churn-workers", func() { cfg.ChurnWorkers = *churnWorkers })
	apply("churn-dur", func() { cfg.ChurnDur = *churnDur })
	cfg.GoAuthSO = *goauth
	if *noCompare {
		cfg.Floor, cfg.Dynsec, cfg.PresenceOff = false, false, false
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if err == nil {
		err = validate(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}

	plugin, err := harness.PluginPath(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(os.Stderr, "starting a throwaway PostgreSQL...")
	pg, err := harness.StartPostgres()
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	defer pg.Destroy()

	rep, err := bench.Run(ctx, bench.Env{Postgres: pg, Plugin: plugin, Log: os.Stderr}, cfg)
	if rep != nil {
		rep.Command = command()
		if rep.Took == 0 {
			rep.Took = time.Since(rep.Machine.Date)
		}
		fmt.Println()
		rep.WriteText(os.Stdout)
		if *out != "" {
			if werr := writeMarkdown(*out, rep); werr != nil {
				fmt.Fprintln(os.Stderr, "iotauth-bench:", werr)
				return 2
			}
			fmt.Printf("written to %s\n", *out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	if len(rep.Failed()) > 0 || bench.TargetsFailed(rep.TargetResults()) > 0 {
		return 1
	}
	return 0
}

func runSoak(load string, d time.Duration, noAuth bool, opts, logPath string) int {
	var kv [][2]string
	for _, p := range strings.Split(opts, ",") {
		if k, v, ok := strings.Cut(p, "="); ok {
			kv = append(kv, [2]string{k, v})
		}
	}
	plugin, err := harness.PluginPath(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	pg, err := harness.StartPostgres()
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	defer pg.Destroy()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Soak(ctx, bench.Env{Postgres: pg, Plugin: plugin, Log: os.Stderr}, load, d, noAuth, kv, logPath, func(pid int) {
		fmt.Printf("broker pid %d\n", pid)
		time.Sleep(time.Second)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "iotauth-bench:", err)
		return 2
	}
	fmt.Println(res)
	return 0
}

func validate(c bench.Config) error {
	switch {
	case c.Rounds < 1 || c.Rounds > 50:
		return fmt.Errorf("-rounds %d: use 1 to 50", c.Rounds)
	case len(c.ConnectWorkers) == 0:
		return fmt.Errorf("-connect-workers: give at least one concurrency")
	case c.ConnectPool < 1 || c.PublishAgents < 1 || c.StormAgents < 1 || c.RevokeAgents < 1:
		return fmt.Errorf("agent counts must be positive")
	case c.TokenWorkers < 1 || c.TokenConnects < c.TokenWorkers:
		return fmt.Errorf("-token-workers %d, -token-connects %d: use at least one worker and one connect per worker", c.TokenWorkers, c.TokenConnects)
	case c.ChurnWorkers < 1 || c.ChurnAgents < c.ChurnWorkers:
		return fmt.Errorf("-churn-workers %d, -churn-agents %d: use at least one worker and one agent per worker", c.ChurnWorkers, c.ChurnAgents)
	case c.StormAgents > 15000:
		return fmt.Errorf("-storm-agents %d: each agent holds a socket in the tool and in the broker; use at most 15000", c.StormAgents)
	case c.PublishWindow < 1 || c.PublishWindow > 20:
		return fmt.Errorf("-publish-window %d: use 1 to 20 (Mosquitto's default max_inflight_messages is 20)", c.PublishWindow)
	}
	for _, l := range c.Only {
		switch l {
		case "connect", "publish", "storm", "flood", "revoke", "memory", "token", "presence", "intermittent":
		default:
			return fmt.Errorf("-only %q: use connect, publish, storm, flood, revoke, memory, token, presence or intermittent", l)
		}
	}
	for _, w := range c.ConnectWorkers {
		if w < 1 || w > c.ConnectPool {
			return fmt.Errorf("-connect-workers %d: use 1 to -connect-pool (%d), so that workers never share an agent", w, c.ConnectPool)
		}
	}
	for i, n := range c.MemSizes {
		if n < 1 || (i > 0 && n <= c.MemSizes[i-1]) {
			return fmt.Errorf("-mem-sizes: give positive, ascending counts")
		}
	}
	return nil
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// command is how this run was invoked, for the report: `make bench` runs it through go run.
func command() string {
	args := os.Args[1:]
	cmd := "go run ./test/bench/cmd/iotauth-bench " + strings.Join(args, " ")
	if os.Getenv("MAKELEVEL") != "" {
		cmd = "make bench (" + strings.TrimSpace(cmd) + ")"
	}
	return strings.TrimSpace(cmd)
}

func writeMarkdown(path string, rep *bench.Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rep.WriteMarkdown(f)
	return f.Close()
}
