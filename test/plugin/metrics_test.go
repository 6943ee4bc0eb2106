package plugin_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// scrape fetches the plugin's /metrics over HTTP and returns the text.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v\n%s", addr, resp.StatusCode, err, body)
	}
	return string(body)
}

// series parses the Prometheus text format into "name{labels}" -> value (labels as written, sorted by
// the client library).
func series(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// metricNames are the metric names in the text (sample names: histograms give _bucket, _sum, _count).
func metricNames(text string) map[string]bool {
	names := map[string]bool{}
	for s := range series(text) {
		name, _, _ := strings.Cut(s, "{")
		names[name] = true
	}
	return names
}

// waitSeries polls /metrics until series s has value want, or fails after d.
func waitSeries(t *testing.T, addr, s string, want float64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, ok := series(scrape(t, addr))[s]
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %t) after %v, want %v", s, got, ok, d, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricsBroker starts a broker with the plugin serving metrics on a free loopback port; it returns the
// broker and the metrics address.
func metricsBroker(t *testing.T, dsn string, opts ...[2]string) (*harness.Broker, string) {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := harness.PluginBroker(t, dsn, append([][2]string{{"metrics_listen", addr}}, opts...)...)
	// The log line is written once the plugin bound the port (during init).
	if !b.WaitLog("serving Prometheus metrics", 10*time.Second) {
		t.Fatalf("the plugin did not report serving metrics:\n%s", b.Log())
	}
	return b, addr
}

// TestMetricsCountConnectStorm: a small connect storm (good agents, wrong passwords, forged keys,
// garbage usernames, foreign client ids, an application key) and a revocation that kicks a live
// session; /metrics, scraped over HTTP from the broker's process, counts each event exactly, and holds
// no secret, key id, client id or agent uuid.
func TestMetricsCountConnectStorm(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	const nGood = 20
	var good []harness.Agent
	for i := range nGood {
		good = append(good, e.agent(fmt.Sprintf("good %d", i)))
	}
	victim, held := e.agent("victim"), e.agent("held")
	ap := e.appKey("dashboard", time.Time{}, "read agents/+/telemetry")
	// Everything exists before the broker starts: the preload holds all of it, and the only NOTIFY the
	// plugin sees is the revocation below.
	b, addr := metricsBroker(t, dsn)
	e.b = b
	waitSeries(t, addr, "iotauth_plugin_preload_credentials", nGood+3, 10*time.Second)

	_, lostVictim := watch(t, b, victim)
	harness.MustConnect(t, b, held)

	const (
		rounds      = 2 // each good agent connects and disconnects this often
		wrongPw     = 7
		forged      = 5
		garbage     = 4
		foreignCID  = 3
		appConnects = 2
	)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	do := func(n int, f func(i int) error) {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(i); err != nil {
					errs <- err
				}
			}()
		}
	}
	ok := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	notAuthorised := func(what string, err error) error {
		if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return fmt.Errorf("%s: %v, want CONNACK not authorised", what, err)
		}
		return nil
	}
	do(nGood, func(i int) error {
		for range rounds {
			if err := connectOnce(t, b, good[i].Key, good[i].Password, good[i].ClientID); err != nil {
				return ok("good agent", err)
			}
		}
		return nil
	})
	do(wrongPw, func(i int) error {
		return notAuthorised("wrong password", connectOnce(t, b, good[i].Key, "iotmp_wrong", good[i].ClientID))
	})
	do(forged, func(int) error {
		k, _ := secret.Generate(secret.APIKey)
		return notAuthorised("forged key", connectOnce(t, b, k.Reveal(), "iotmp_whatever", "agent-forged"))
	})
	do(garbage, func(i int) error {
		return notAuthorised("garbage", connectOnce(t, b, fmt.Sprintf("not-a-key-%d", i), "x", fmt.Sprintf("garbage-%d", i)))
	})
	do(foreignCID, func(i int) error {
		return notAuthorised("foreign client id", connectOnce(t, b, good[i].Key, good[i].Password, good[i+1].ClientID))
	})
	do(appConnects, func(i int) error {
		return ok("application key", connectOnce(t, b, ap.Key, ap.Password, fmt.Sprintf("dashboard-%d", i)))
	})
	do(1, func(int) error {
		return notAuthorised("application key, wrong password", connectOnce(t, b, ap.Key, "iotmp_wrong", "dashboard-x"))
	})
	do(1, func(int) error {
		k, _ := secret.Generate(secret.AppKey)
		return notAuthorised("forged application key", connectOnce(t, b, k.Reveal(), "iotmp_whatever", "dashboard-y"))
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// A revocation in plain SQL: one NOTIFY, one kick, and the reconnect is refused.
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, victim.KeyID)
	closedBy(t, lostVictim, 3*time.Second, "the revoked agent's session")
	refused(t, connectOnce(t, b, victim.Key, victim.Password, victim.ClientID), "reconnect after revocation")

	// Disconnects reach the broker after the clients return: wait for the live count to settle on the
	// one held session (generous deadline for a loaded machine).
	waitSeries(t, addr, `iotauth_plugin_sessions{state="live"}`, 1, 5*time.Second)
	// The apply time is recorded once the re-check finished, which races the kick it queued by microseconds.
	waitSeries(t, addr, `iotauth_plugin_notify_apply_seconds_count`, 1, 5*time.Second)
	text := scrape(t, addr)
	got := series(text)
	want := map[string]float64{
		`iotauth_plugin_connects_allowed_total{principal="agent"}`:                           nGood*rounds + 2, // + victim and held
		`iotauth_plugin_connects_allowed_total{principal="app"}`:                             appConnects,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="bad_password"}`:     wrongPw,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="unknown_key"}`:      forged,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="malformed"}`:        garbage,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="client_id"}`:        foreignCID,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="revoked"}`:          1,
		`iotauth_plugin_connects_refused_total{principal="app",reason="bad_password"}`:       1,
		`iotauth_plugin_connects_refused_total{principal="app",reason="unknown_key"}`:        1,
		`iotauth_plugin_connects_deferred_total`:                                             0,
		`iotauth_plugin_kicks_total{reason="revoked"}`:                                       1,
		`iotauth_plugin_notifications_total`:                                                 1,
		`iotauth_plugin_notify_apply_seconds_count`:                                          1,
		`iotauth_plugin_preload_credentials`:                                                 nGood + 3,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="not_found"}`:                forged + 1,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="found"}`:                    1, // the revoked key's reconnect
		`iotauth_plugin_db_lookup_duration_seconds_count{result="error"}`:                    0,
		`iotauth_plugin_db_errors_total`:                                                     0,
		`iotauth_plugin_db_fail_fast_windows_total`:                                          0,
		`iotauth_plugin_db_down`:                                                             0,
		`iotauth_plugin_stale_served_total`:                                                  0,
		`iotauth_plugin_sessions{state="live"}`:                                              1,
		`iotauth_plugin_cache_lookups_total{result="negative_hit"}`:                          0,
		`iotauth_plugin_cache_lookups_total{result="stale"}`:                                 0,
		`iotauth_plugin_cache_lookups_total{result="miss"}`:                                  forged + 1 + 1, // forged keys, the revoked key
		`iotauth_plugin_cache_lookups_total{result="hit"}`:                                   nGood*rounds + 2 + wrongPw + foreignCID + appConnects + 1,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="lookup_budget"}`:    0,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="unavailable"}`:      0,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="expired"}`:          0,
		`iotauth_plugin_connects_refused_total{principal="agent",reason="secret_client_id"}`: 0,
	}
	for s, w := range want {
		if g, ok := got[s]; !ok || g != w {
			t.Errorf("%s = %v (present %t), want %v", s, g, ok, w)
		}
	}
	// No refusal or kick is counted that the storm did not cause.
	sum := func(prefix string) float64 {
		var n float64
		for s, v := range got {
			if strings.HasPrefix(s, prefix) {
				n += v
			}
		}
		return n
	}
	if n := sum("iotauth_plugin_connects_refused_total{"); n != wrongPw+forged+garbage+foreignCID+1+2 {
		t.Errorf("refusals counted in all: %v, want %v", n, wrongPw+forged+garbage+foreignCID+1+2)
	}
	if n := sum("iotauth_plugin_kicks_total{"); n != 1 {
		t.Errorf("kicks counted in all: %v, want 1", n)
	}
	if v := got["iotauth_plugin_preload_duration_seconds"]; v <= 0 {
		t.Errorf("preload duration %v, want > 0", v)
	}

	t.Run("no secrets or identities", func(t *testing.T) {
		if m := secretPattern.FindString(text); m != "" {
			t.Errorf("/metrics holds a secret (%s…)", m[:8])
		}
		for _, p := range []string{"iotsk_", "iotmp_", "iotak_", "prov_"} {
			if strings.Contains(text, p) {
				t.Errorf("/metrics holds %q", p)
			}
		}
		var ids []string
		for _, a := range append(good, victim, held) {
			ids = append(ids, a.UUID, a.KeyID, a.ClientID, a.Key, a.Password)
		}
		ids = append(ids, ap.ID, ap.Key, ap.Password, "dashboard-", "not-a-key", "garbage-", "agent-forged")
		for _, id := range ids {
			if strings.Contains(text, id) {
				t.Errorf("/metrics holds an identity or secret %q", id)
			}
		}
		// Every label value of the plugin's series comes from a bounded enumeration.
		label := regexp.MustCompile(`(\w+)="([^"]*)"`)
		allowed := regexp.MustCompile(`^[a-z_]*$|^[0-9.e+Inf]+$`)
		for s := range got {
			if !strings.HasPrefix(s, "iotauth_plugin_") {
				continue
			}
			for _, m := range label.FindAllStringSubmatch(s, -1) {
				if !allowed.MatchString(m[2]) {
					t.Errorf("%s: label %s=%q is not an enumeration value", s, m[1], m[2])
				}
			}
		}
	})

	t.Run("dashboard uses these metrics", func(t *testing.T) {
		checkDashboard(t, metricNames(text))
	})

	t.Run("only GET /metrics", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second}
		for _, tt := range []struct {
			method, path string
			code         int
		}{{"GET", "/", 404}, {"GET", "/debug/pprof/", 404}, {"POST", "/metrics", 405}} {
			req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
			}
		}
	})
}

// checkDashboard fails when an expression of docs/grafana-dashboard.json uses an iotauth_plugin_ metric
// the plugin does not serve (histogram names with their _bucket/_sum/_count suffix).
func checkDashboard(t *testing.T, names map[string]bool) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	metric := regexp.MustCompile(`\b(iotauth_plugin_[a-z_]+|process_[a-z_]+|go_[a-z_]+)\b`)
	used := map[string]bool{}
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			ms := metric.FindAllString(tg.Expr, -1)
			if len(ms) == 0 {
				t.Errorf("panel %q: expression %q names no plugin metric", p.Title, tg.Expr)
			}
			for _, m := range ms {
				used[m] = true
				if !names[m] {
					t.Errorf("panel %q: %s is not served by the plugin", p.Title, m)
				}
			}
		}
	}
	if exprs == 0 {
		t.Fatal("the dashboard has no expressions")
	}
	var list []string
	for m := range used {
		list = append(list, m)
	}
	sort.Strings(list)
	t.Logf("dashboard uses %d metrics: %s", len(list), strings.Join(list, ", "))
}

// plugin_opt_metrics_listen: a malformed value or an address in use stops the broker at start with a
// line naming the option; off by default (nothing listens).
func TestMetricsListenStopsTheBrokerWhenBad(t *testing.T) {
	t.Parallel()
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.NewDatabase(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name, value, want string
	}{
		{"no port", "127.0.0.1", `plugin_opt_metrics_listen "127.0.0.1": use host:port`},
		{"port out of range", "127.0.0.1:99999", "port from 1 to 65535"},
		{"in use", busy.Addr().String(), "plugin_opt_metrics_listen " + busy.Addr().String() + ": cannot listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := harness.LaunchBroker(harness.BrokerConfig{Plugin: plugin, Options: [][2]string{{"dsn", dsn}, {"metrics_listen", tt.value}}})
			if err == nil {
				b.Close()
				t.Fatal("mosquitto started with a bad plugin_opt_metrics_listen")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start error does not name the problem %q:\n%v", tt.want, err)
			}
		})
	}
	t.Run("off by default", func(t *testing.T) {
		b := harness.PluginBroker(t, dsn)
		// Both lines are written by the same init: once "started" is in the log, the other would be too.
		if !b.WaitLog("started", 10*time.Second) {
			t.Fatalf("no start line:\n%s", b.Log())
		}
		if strings.Contains(b.Log(), "serving Prometheus metrics") {
			t.Fatal("the plugin serves metrics without plugin_opt_metrics_listen")
		}
	})
}

// With PostgreSQL paused, the metrics count the failed lookup, the fail-fast window it opens, the
// refusal (unavailable) and the stale entry served; every failure opens a window of its own (no lookup is
// made inside one), so the two counters agree. After PostgreSQL resumes, db_down returns to 0.
func TestMetricsCountPostgresOutage(t *testing.T) {
	t.Parallel()
	p := privatePostgres(t)
	dsn := p.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	cached := harness.CreateAgent(t, st, "cached")
	unseen := harness.CreateAgent(t, st, "unseen")
	b, addr := metricsBroker(t, dsn, [2]string{"preload", "false"}, [2]string{"db_timeout", "200ms"},
		[2]string{"cache_ttl", "1s"}, [2]string{"stale_grace", "10m"})
	// Until the change feed listens, the plugin caches nothing it looks up (a change could be missed).
	if !b.WaitLog("credential change feed listening", 10*time.Second) {
		t.Fatal("the change feed did not start")
	}
	if err := connectOnce(t, b, cached.Key, cached.Password, cached.ClientID); err != nil {
		t.Fatal(err)
	}
	// While LISTEN is up an entry past cache_ttl is still trusted (docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md), and a paused
	// server does not end LISTEN: end it now, so that the entry, fetched before LISTEN came back, is stale.
	harness.Exec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'mosquitto-iotauth' AND pid <> pg_backend_pid()`)
	if !b.WaitLog("credential change feed reconnected", 15*time.Second) {
		t.Fatal("the change feed did not reconnect")
	}
	time.Sleep(1100 * time.Millisecond) // past cache_ttl: the entry is stale, usable only while PostgreSQL is down

	p.Pause()
	resumed := false
	defer func() {
		if !resumed {
			p.Resume()
		}
	}()
	refused(t, connectOnce(t, b, unseen.Key, unseen.Password, unseen.ClientID), "unseen agent during the outage")
	if err := connectOnce(t, b, cached.Key, cached.Password, cached.ClientID); err != nil {
		t.Fatalf("cached agent during the outage (stale_grace 10m): %v", err)
	}
	got := series(scrape(t, addr))
	for s, w := range map[string]float64{
		`iotauth_plugin_connects_refused_total{principal="agent",reason="unavailable"}`: 1,
		`iotauth_plugin_connects_allowed_total{principal="agent"}`:                      2,
		`iotauth_plugin_stale_served_total`:                                             1,
		`iotauth_plugin_cache_lookups_total{result="stale"}`:                            1,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="found"}`:               1, // the first connect
	} {
		if g := got[s]; g != w {
			t.Errorf("%s = %v, want %v", s, g, w)
		}
	}
	errs, windows := got["iotauth_plugin_db_errors_total"], got["iotauth_plugin_db_fail_fast_windows_total"]
	// One failure, or two when the machine was slow enough for the first window (1 s) to end before the
	// cached agent's connect.
	if errs < 1 || errs > 2 || windows != errs || got[`iotauth_plugin_db_lookup_duration_seconds_count{result="error"}`] != errs {
		t.Errorf("db errors %v, fail-fast windows %v, lookups with result error %v: want 1 or 2, all equal",
			errs, windows, got[`iotauth_plugin_db_lookup_duration_seconds_count{result="error"}`])
	}

	p.Resume()
	resumed = true
	// The background probe ends the window once PostgreSQL answers (it probes every second).
	waitSeries(t, addr, "iotauth_plugin_db_down", 0, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for connectOnce(t, b, unseen.Key, unseen.Password, unseen.ClientID) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the unseen agent is still refused 10 s after PostgreSQL resumed")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// With defer_unknown, a username that is not an iotauth key is handed to the next plugin (none here:
// Mosquitto refuses it) and counted as deferred, not as a refusal of the plugin's.
func TestMetricsCountDeferred(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	b, addr := metricsBroker(t, dsn, [2]string{"defer_unknown", "true"})
	for i := range 3 {
		refused(t, connectOnce(t, b, "someone-else", "their-password", fmt.Sprintf("other-%d", i)), "deferred username")
	}
	got := series(scrape(t, addr))
	if g := got["iotauth_plugin_connects_deferred_total"]; g != 3 {
		t.Errorf("deferred %v, want 3", g)
	}
	for s, v := range got {
		if strings.HasPrefix(s, "iotauth_plugin_connects_refused_total{") && v != 0 {
			t.Errorf("%s = %v, want 0 (deferred, not refused by the plugin)", s, v)
		}
	}
}
