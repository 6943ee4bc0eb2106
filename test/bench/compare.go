package bench

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/test/harness"
)

// The comparison brokers of the cached connect storm: beside iotauth and the no-auth broker, in the same
// rotation, the same agents connect to
//   - iotauth with presence off (PresenceOff), which shows presence's share of a connect;
//   - the floor: iotauth's own C shim with a Go side that answers at once (test/bench/floor), i.e. what
//     entering Go costs on this machine, below which no Go plugin can go;
//   - Mosquitto's dynamic-security plugin (C, PBKDF2-SHA512 with 101 iterations on every connect), when
//     its .so is installed;
//   - mosquitto-go-auth with its postgres backend and warm go-cache, when GOAUTH_SO names its build
//     (docs/benchmarks.md says how to build it; it is never part of this repository).

// comparison is one comparison broker and the name its rows carry.
type comparison struct {
	name string
	b    *harness.Broker
}

// DynsecPlugin is where Debian and Ubuntu install Mosquitto's dynamic-security plugin.
const DynsecPlugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

// goAuthIterations is the PBKDF2 iteration count of the go-auth users the benchmark writes. Only a cache
// miss runs PBKDF2, and every measured connect is a hit (the cache is warmed with one connect per agent
// and outlives the run), so the count changes the warm-up time, not the figures: go-auth's own default
// of 100,000 would cost ~65 ms of the broker thread per agent to warm up.
const goAuthIterations = 1000

// comparisons starts the comparison brokers the configuration asks for, each warmed up with one connect
// per agent of pool. The caller stops them.
func (r *runner) comparisons(dsn string, pool []Agent) ([]comparison, error) {
	var out []comparison
	dir, err := os.MkdirTemp("", "iotauth-bench-cmp-")
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o755) // Mosquitto started as root reads its files as the mosquitto user
	r.cleanups = append(r.cleanups, func() { os.RemoveAll(dir) })
	if r.cfg.Floor {
		so, err := buildFloor(dir)
		if err != nil {
			return nil, err
		}
		b, err := r.launch(harness.BrokerConfig{Plugin: so})
		if err != nil {
			return nil, fmt.Errorf("floor broker: %w", err)
		}
		out = append(out, comparison{"floor (Go, answers at once)", b})
	}
	if r.cfg.PresenceOff {
		b, err := r.pluginBroker(dsn, [2]string{"presence", "false"})
		if err != nil {
			return nil, err
		}
		out = append(out, comparison{presenceOffName, b})
	}
	if r.cfg.Dynsec {
		if _, err := os.Stat(DynsecPlugin); err != nil {
			r.logf("dynamic-security plugin not installed (%s): not compared", DynsecPlugin)
		} else {
			conf := filepath.Join(dir, "dynamic-security.json")
			if err := writeDynsecConfig(conf, pool); err != nil {
				return nil, err
			}
			b, err := r.launch(harness.BrokerConfig{Plugin: DynsecPlugin, Options: [][2]string{{"config_file", conf}}})
			if err != nil {
				return nil, fmt.Errorf("dynamic-security broker: %w", err)
			}
			out = append(out, comparison{"dynamic-security", b})
		}
	}
	if r.cfg.GoAuthSO != "" {
		t0 := time.Now()
		lines, err := setupGoAuth(r.ctx, dsn, r.cfg.GoAuthSO, pool)
		if err != nil {
			return nil, fmt.Errorf("go-auth set-up: %w", err)
		}
		r.logf("go-auth: %d users in schema goauth in %v", len(pool), time.Since(t0).Round(time.Millisecond))
		// No Plugin: the harness then writes allow_anonymous true, which go-auth's lines override.
		b, err := r.launch(harness.BrokerConfig{Extra: lines})
		if err != nil {
			return nil, fmt.Errorf("go-auth broker (%s): %w", r.cfg.GoAuthSO, err)
		}
		out = append(out, comparison{"mosquitto-go-auth (warm)", b})
	}
	for _, c := range out {
		t0 := time.Now()
		// (len+7)/8 per worker: every agent at least once, so go-auth's every measured connect is a hit.
		if _, errs := connectLoop(c.b.Addr(), partition(pool, 8), nil, (len(pool)+7)/8); errs > 0 {
			return nil, fmt.Errorf("warm-up on %s (%s): %d connects failed; its log:\n%s", c.name, c.b.Addr(), errs, tail(c.b.Log(), 2000))
		}
		r.logf("%s warmed up in %v", c.name, time.Since(t0).Round(time.Millisecond))
	}
	return out, nil
}

// nameOf is " (name)" for a comparison broker, for error messages.
func nameOf(b *harness.Broker, others []comparison) string {
	for _, c := range others {
		if c.b == b {
			return " (" + c.name + ")"
		}
	}
	return ""
}

// logProblems returns up to n lines of a broker log that speak of a refusal, a failure, a warning or an
// error.
func logProblems(log string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "refus") || strings.Contains(low, "fail") || strings.Contains(low, "warn") ||
			strings.Contains(low, "error") || strings.Contains(low, "not authori") {
			if out = append(out, l); len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// buildFloor builds test/bench/floor into dir and returns the .so's path.
func buildFloor(dir string) (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	so := filepath.Join(dir, "floor.so")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", so, "./test/bench/floor")
	cmd.Dir = root
	// Go's build cache does not see the shim's .c files included from floor/shim.c: fold their hash into
	// the flags, as the Makefile does for the plugin.
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -DIOTAUTH_SHIM_HASH="+shimHash(filepath.Join(root, "c")))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the floor plugin (go build ./test/bench/floor): %v\n%s", err, out)
	}
	_ = os.Chmod(so, 0o644)
	return so, nil
}

func shimHash(dir string) string {
	h := sha256.New()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// writeDynsecConfig writes a dynamic-security configuration with one client per agent (username = API
// key, its MQTT password hashed as the plugin does: PBKDF2-SHA512, 12-byte salt, 101 iterations) and no
// roles: the storm only connects.
func writeDynsecConfig(path string, agents []Agent) error {
	type client struct {
		Username   string `json:"username"`
		Password   string `json:"password"`
		Salt       string `json:"salt"`
		Iterations int    `json:"iterations"`
	}
	clients := make([]client, len(agents))
	err := parallel(len(agents), func(i int) error {
		salt := make([]byte, 12)
		rand.Read(salt)
		key, err := pbkdf2.Key(sha512.New, agents[i].Password, salt, 101, 64)
		clients[i] = client{agents[i].Key, base64.StdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(salt), 101}
		return err
	})
	if err != nil {
		return err
	}
	b, err := json.Marshal(map[string]any{
		"defaultACLAccess": map[string]bool{"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
		"clients":          clients, "groups": []any{}, "roles": []any{},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// parallel runs f(0..n-1) on every core and returns the first error.
func parallel(n int, f func(int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// setupGoAuth gives mosquitto-go-auth the agents in its own tables (schema goauth of the agents'
// database, dropped and rebuilt): users with go-auth's PBKDF2 hash format and the ACL iotauth's default
// rule grants (agents/<uuid>/# read and write). It returns the broker configuration lines that load
// go-auth the way its README configures its postgres backend, with its go-cache on, at log level info
// (at debug it logs passwords).
func setupGoAuth(ctx context.Context, dsn, so string, agents []Agent) ([]string, error) {
	if _, err := os.Stat(so); err != nil {
		return nil, fmt.Errorf("GOAUTH_SO=%s: %w (build it as docs/benchmarks.md says, or unset GOAUTH_SO)", so, err)
	}
	hashes := make([]string, len(agents))
	err := parallel(len(agents), func(i int) error {
		salt := make([]byte, 16)
		rand.Read(salt)
		key, err := pbkdf2.Key(sha512.New, agents[i].Password, salt, goAuthIterations, 64)
		hashes[i] = fmt.Sprintf("PBKDF2$sha512$%d$%s$%s", goAuthIterations, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key))
		return err
	})
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS goauth CASCADE;
CREATE SCHEMA goauth;
CREATE TABLE goauth.users (id bigserial PRIMARY KEY, username text NOT NULL UNIQUE, password_hash text NOT NULL,
    is_admin boolean NOT NULL DEFAULT false);
CREATE TABLE goauth.acl (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES goauth.users ON DELETE CASCADE,
    topic text NOT NULL, rw int NOT NULL);`); err != nil {
			return err
		}
		users := make([][]any, len(agents))
		for i, a := range agents {
			users[i] = []any{int64(i + 1), a.Key, hashes[i]}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"goauth", "users"}, []string{"id", "username", "password_hash"}, pgx.CopyFromRows(users)); err != nil {
			return err
		}
		acl := make([][]any, len(agents))
		for i, a := range agents {
			acl[i] = []any{int64(i + 1), a.Filter(), int32(3)} // 3: read and write
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"goauth", "acl"}, []string{"user_id", "topic", "rw"}, pgx.CopyFromRows(acl)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT setval('goauth.users_id_seq', (SELECT max(id) FROM goauth.users));
CREATE INDEX ON goauth.acl (user_id); ANALYZE goauth.users; ANALYZE goauth.acl`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("go-auth tables: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, err
	}
	pass, _ := u.User.Password()
	if pass == "" {
		pass = "unused" // mandatory for go-auth; the throwaway cluster trusts loopback
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return []string{
		"allow_anonymous false",
		"auth_plugin " + so,
		"auth_opt_log_level info",
		"auth_opt_backends postgres",
		"auth_opt_hasher pbkdf2",
		"auth_opt_hasher_salt_size 16",
		fmt.Sprintf("auth_opt_hasher_iterations %d", goAuthIterations),
		"auth_opt_hasher_keylen 64",
		"auth_opt_hasher_algorithm sha512",
		"auth_opt_cache true",
		"auth_opt_cache_type go-cache",
		// Longer than any run: every measured connect is a warm hit, which is what is compared.
		"auth_opt_auth_cache_seconds 3600",
		"auth_opt_acl_cache_seconds 3600",
		"auth_opt_pg_host " + u.Hostname(),
		"auth_opt_pg_port " + port,
		"auth_opt_pg_dbname " + strings.TrimPrefix(u.Path, "/"),
		"auth_opt_pg_user " + u.User.Username(),
		"auth_opt_pg_password " + pass,
		"auth_opt_pg_sslmode disable",
		"auth_opt_pg_connect_tries 5",
		"auth_opt_pg_userquery SELECT password_hash FROM goauth.users WHERE username = $1 LIMIT 1",
		"auth_opt_pg_superquery SELECT count(*) FROM goauth.users WHERE username = $1 AND is_admin = true",
		"auth_opt_pg_aclquery SELECT a.topic FROM goauth.acl a JOIN goauth.users u ON u.id = a.user_id WHERE u.username = $1 AND (a.rw = $2 OR a.rw = 3)",
	}, nil
}

// Figures of the comparison rows. Targets match rows by these names (targets.go).
const (
	figConnectCPU   = "broker CPU per connect"
	figVsGoAuth     = "broker CPU per connect, iotauth vs mosquitto-go-auth (warm)"
	goAuthName      = "mosquitto-go-auth (warm)"
	presenceOffName = "iotauth with plugin_opt_presence false"
	figDeliveredCPU = "broker CPU per delivered msg"
)

// comparisonRows are the cached connect storm's rows for the comparison brokers: each one's broker CPU
// per connect and connects/s against no-auth, and iotauth against go-auth directly (per-round ratios).
func comparisonRows(load string, res map[*harness.Broker][]opResult, noauth, warm *harness.Broker, others []comparison) []Row {
	var rows []Row
	n := res[noauth]
	for _, c := range others {
		o := res[c.b]
		rows = append(rows,
			pair(load, figConnectCPU+", "+c.name, "dur", floats(o, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), nil),
			pair(load, "connects/s, "+c.name, "/s", floats(o, opResult.rate), floats(n, opResult.rate), nil),
		)
		if c.name == goAuthName {
			row := pair(load, figVsGoAuth, "dur", floats(res[warm], opResult.cpuPerOp), floats(o, opResult.cpuPerOp), ratioAtMost(0.95))
			row.Baseline = "go-auth"
			rows = append(rows, row)
		}
	}
	return rows
}

// publishComparisons are the comparison brokers that can run the publish loads: the floor and go-auth
// grant agents their namespace; the dynamic-security broker has no roles and denies publishing.
func publishComparisons(others []comparison) []comparison {
	var out []comparison
	for _, c := range others {
		if c.name != "dynamic-security" && c.name != presenceOffName { // presence does not touch publishing
			out = append(out, c)
		}
	}
	return out
}

// publishComparisonRows are a publish load's rows for the comparison brokers.
func publishComparisonRows(load string, res map[*harness.Broker][]opResult, noauth *harness.Broker, others []comparison) []Row {
	var rows []Row
	n := res[noauth]
	for _, c := range others {
		o := res[c.b]
		rows = append(rows,
			pair(load, figDeliveredCPU+", "+c.name, "dur", floats(o, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), nil),
			pair(load, "delivered msgs/s, "+c.name, "/s", floats(o, opResult.rate), floats(n, opResult.rate), nil),
		)
	}
	return rows
}
