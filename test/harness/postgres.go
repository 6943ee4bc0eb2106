// Package harness starts the real services iotauth's integration tests and benchmarks run against: a
// throwaway PostgreSQL cluster (initdb in a temporary directory, as the postgres user when running as
// root) and Mosquitto with the freshly built plugin, each on a free loopback port and torn down with the
// test. Nothing here fakes a server; when DATABASE_URL is set it is used instead of a new cluster.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/migrations"
)

// Postgres is a running cluster that tests may create databases in.
type Postgres struct {
	// AdminDSN connects to the maintenance database as a superuser.
	AdminDSN string
	dir      string
	bin      string
	port     int
	asUser   string // run pg_ctl as this user (postgres when we are root), or ""
	owned    bool   // we started it and may stop, pause and restart it

	mu       sync.Mutex
	template string // a migrated database to clone
}

// PostgresBinDir finds the server binaries (initdb, pg_ctl, postgres).
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve links (some images link a few tools into /usr/local/bin) to find pg_dump and friends.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("PostgreSQL server binaries not found: install postgresql (make deps does it) or set DATABASE_URL")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartPostgres starts a throwaway cluster, or adopts DATABASE_URL when set. Call Stop when done (a
// TestMain does it for the whole package).
func StartPostgres() (_ *Postgres, err error) {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		return &Postgres{AdminDSN: dsn}, nil
	}
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	asUser := ""
	if os.Geteuid() == 0 {
		asUser = "postgres"
	}
	// Clusters of test processes that were killed (a test timeout runs no cleanup) still run: stop them.
	reapStale("iotauth-pg-", func(dir string) {
		old := &Postgres{dir: dir, bin: bin, asUser: asUser, owned: true}
		_, _ = old.run("pg_ctl", "-D", old.dataDir(), "-m", "immediate", "-w", "stop")
	})
	dir, err := os.MkdirTemp("", "iotauth-pg-")
	if err != nil {
		return nil, err
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, owned: true, asUser: asUser}
	defer func() {
		if err != nil {
			p.Destroy()
		}
	}()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user (installed with postgresql): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := p.run("initdb", "-D", p.dataDir(), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	conf := "listen_addresses = '127.0.0.1'\n" +
		"unix_socket_directories = '" + dir + "'\n" +
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" +
		"max_connections = 300\nshared_buffers = 64MB\n" +
		"shared_preload_libraries = 'pg_stat_statements'\n" +
		"pg_stat_statements.track = all\n" +
		"log_min_messages = warning\n"
	f, err := os.OpenFile(filepath.Join(p.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return nil, err
	}
	if p.port, err = FreePort(); err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	p.AdminDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	return p, nil
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, tool)
	var cmd *exec.Cmd
	if p.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

// Start starts (or restarts after Stop) the cluster and waits until it accepts connections.
func (p *Postgres) Start() error {
	if !p.owned {
		return errors.New("cannot start a database given by DATABASE_URL")
	}
	out, err := p.run("pg_ctl", "-D", p.dataDir(), "-o", "-p "+strconv.Itoa(p.port), "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\nserver log:\n%s", err, out, tail(string(log), 2000))
	}
	return nil
}

// Stop stops the cluster (fast shutdown). The data directory stays for a later Start.
func (p *Postgres) Stop() error {
	if !p.owned {
		return nil
	}
	p.Resume()
	out, err := p.run("pg_ctl", "-D", p.dataDir(), "-m", "fast", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// Destroy stops the cluster and removes its files.
func (p *Postgres) Destroy() {
	if !p.owned {
		return
	}
	_ = p.Stop()
	_ = os.RemoveAll(p.dir)
}

// PIDs are the cluster's processes: the postmaster and its children (backends and helpers).
func (p *Postgres) PIDs() []int { return p.pids() }

func (p *Postgres) pids() []int {
	b, err := os.ReadFile(filepath.Join(p.dataDir(), "postmaster.pid"))
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return nil
	}
	pids := []int{pm}
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(pm)).Output()
	for _, f := range strings.Fields(string(out)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// Pause freezes every process of the cluster with SIGSTOP: connections stay open but nothing answers,
// the nastiest outage a client can see.
func (p *Postgres) Pause() {
	for _, pid := range p.pids() {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
}

// Resume undoes Pause.
func (p *Postgres) Resume() {
	for _, pid := range p.pids() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// Owned reports whether this cluster was started here (and so may be paused or stopped).
func (p *Postgres) Owned() bool { return p.owned }

// NewDatabase creates a fresh, migrated database and returns its DSN. It is dropped when the test ends.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	dsn, err := p.CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.dropDatabase(dsn) })
	return dsn
}

// CreateDatabase creates a fresh, migrated database (cloned from a migrated template) and returns its DSN.
func (p *Postgres) CreateDatabase(ctx context.Context) (string, error) {
	tmpl, err := p.migratedTemplate(ctx)
	if err != nil {
		return "", err
	}
	name := "iotauth_t_" + randHex(6)
	if err := p.exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl); err != nil {
		return "", fmt.Errorf("create test database: %w", err)
	}
	return p.dsnFor(name)
}

func (p *Postgres) migratedTemplate(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.template != "" {
		return p.template, nil
	}
	name := "iotauth_tmpl_" + randHex(6)
	if err := p.exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create template database: %w", err)
	}
	dsn, err := p.dsnFor(name)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil && p.owned {
		conn.Close(ctx)
		return "", fmt.Errorf("create pg_stat_statements: %w", err)
	}
	if _, _, err := migrations.Apply(ctx, conn); err != nil {
		conn.Close(ctx)
		return "", err
	}
	conn.Close(ctx)
	p.template = name
	return name, nil
}

func (p *Postgres) dsnFor(db string) (string, error) {
	u, err := url.Parse(p.AdminDSN)
	if err != nil {
		return "", fmt.Errorf("DATABASE_URL must be a postgres:// URL: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

func (p *Postgres) dropDatabase(dsn string) {
	u, err := url.Parse(dsn)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = p.exec(ctx, "DROP DATABASE IF EXISTS "+strings.TrimPrefix(u.Path, "/")+" WITH (FORCE)")
}

func (p *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.AdminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RunWithPostgres is a test package's TestMain body: it starts one cluster for the package, stores it in
// *pg, runs the tests and destroys the cluster. Use it as os.Exit(harness.RunWithPostgres(m, &pg)).
func RunWithPostgres(m *testing.M, pg **Postgres) int {
	p, err := StartPostgres()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start PostgreSQL for the tests:", err)
		return 1
	}
	*pg = p
	defer p.Destroy()
	return m.Run()
}
