package harness

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyName is the standby's cluster_name, which its WAL receiver reports as application_name and
// synchronous_standby_names names.
const StandbyName = "iotauth_standby"

// ReplicaPair is a primary and a streaming standby made from it with pg_basebackup -R, both throwaway
// clusters on loopback ports. With Sync, the primary names the standby in synchronous_standby_names
// (FIRST 1), so that a commit asking for remote confirmation waits for it; the primary's default
// synchronous_commit is local, so that nothing else does (docs/operations.md, "High availability").
type ReplicaPair struct {
	Primary, Standby *Postgres
	Sync             bool
}

// HAPrimarySettings are the settings the pair's primary runs with, beyond the harness's defaults:
// what docs/operations.md documents as tested.
func HAPrimarySettings(sync bool) string {
	s := "wal_level = replica\nsynchronous_commit = local\n"
	if sync {
		s += "synchronous_standby_names = 'FIRST 1 (" + StandbyName + ")'\n"
	}
	return s
}

// StartReplicaPair starts a primary and a standby streaming from it, destroyed when the test ends.
// It waits until the standby streams (and, with sync, is the synchronous one).
func StartReplicaPair(t testing.TB, sync bool) *ReplicaPair {
	t.Helper()
	if os.Getenv("DATABASE_URL") != "" {
		t.Fatal("failover tests start clusters of their own: unset DATABASE_URL")
	}
	primary, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(primary.Destroy)
	if err := primary.appendConf(HAPrimarySettings(sync)); err != nil {
		t.Fatal(err)
	}
	if out, err := primary.run("pg_ctl", "-D", primary.dataDir(), "-w", "reload"); err != nil {
		t.Fatalf("pg_ctl reload: %v\n%s", err, out)
	}
	standby, err := primary.baseBackup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(standby.Destroy)
	pair := &ReplicaPair{Primary: primary, Standby: standby, Sync: sync}
	pair.WaitStreaming(t, 60*time.Second)
	return pair
}

// baseBackup makes a standby of p with pg_basebackup -R (which writes primary_conninfo and
// standby.signal) on a port of its own, and starts it.
func (p *Postgres) baseBackup() (_ *Postgres, err error) {
	dir, err := os.MkdirTemp("", "iotauth-pg-")
	if err != nil {
		return nil, err
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Postgres{dir: dir, bin: p.bin, owned: true, asUser: p.asUser}
	defer func() {
		if err != nil {
			s.Destroy()
		}
	}()
	if p.asUser != "" {
		u, err := user.Lookup(p.asUser)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := s.run("pg_basebackup", "-D", s.dataDir(), "-R", "-X", "stream", "--no-sync",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres"); err != nil {
		return nil, fmt.Errorf("pg_basebackup: %v\n%s", err, out)
	}
	// Later lines win: the standby's own socket folder, its name, and no synchronous standby of its
	// own once promoted (nothing would confirm its commits).
	if err := s.appendConf("unix_socket_directories = '" + dir + "'\ncluster_name = '" + StandbyName + "'\nsynchronous_standby_names = ''\n"); err != nil {
		return nil, err
	}
	if s.port, err = FreePort(); err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	s.AdminDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return s, nil
}

func (p *Postgres) appendConf(conf string) error {
	f, err := os.OpenFile(filepath.Join(p.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Port is the cluster's TCP port on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// WaitStreaming waits until the primary's WAL sender streams to the standby (as its synchronous
// standby, with Sync).
func (r *ReplicaPair) WaitStreaming(t testing.TB, bound time.Duration) {
	t.Helper()
	want := "async"
	if r.Sync {
		want = "sync"
	}
	deadline := time.Now().Add(bound)
	for {
		var state string
		err := QueryRowErr(r.Primary.AdminDSN, `SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'`, StandbyName).Scan(&state)
		if err == nil && state == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby does not stream to the primary as %s within %s (state %q, err %v)", want, bound, state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DSN is a libpq multi-host URL of database db on hosts (each a Postgres or a "127.0.0.1:port"
// string) that connects only to the one taking writes (target_session_attrs=read-write).
func DSN(db string, hosts ...any) string {
	var hs []string
	for _, h := range hosts {
		switch h := h.(type) {
		case *Postgres:
			hs = append(hs, "127.0.0.1:"+strconv.Itoa(h.port))
		case string:
			hs = append(hs, h)
		}
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: strings.Join(hs, ","), Path: "/" + db,
		RawQuery: "sslmode=disable&target_session_attrs=read-write&connect_timeout=2"}
	return u.String()
}

// DatabaseName is the database a DSN names.
func DatabaseName(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// Kill stops the cluster the hard way (pg_ctl stop -m immediate: every process quits at once, no
// checkpoint), as a crashed machine would.
func (p *Postgres) Kill() error {
	p.Resume()
	if out, err := p.run("pg_ctl", "-D", p.dataDir(), "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop -m immediate: %v\n%s", err, out)
	}
	return nil
}

// Promote promotes a standby (pg_ctl promote) and waits until it takes writes.
func (p *Postgres) Promote() error {
	if out, err := p.run("pg_ctl", "-D", p.dataDir(), "-w", "-t", "60", "promote"); err != nil {
		return fmt.Errorf("pg_ctl promote: %v\n%s", err, out)
	}
	return nil
}

// WALReceiverPID is the pid of a standby's WAL receiver (0 when none runs).
func (p *Postgres) WALReceiverPID(t testing.TB) int {
	t.Helper()
	var pid int
	if err := QueryRowErr(p.AdminDSN, `SELECT coalesce(max(pid), 0) FROM pg_stat_wal_receiver`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// Freeze stops process pid (SIGSTOP) until the returned function resumes it; the test's end resumes it
// in any case. Used on a standby's WAL receiver to make it lag.
func Freeze(t testing.TB, pid int) (thaw func()) {
	t.Helper()
	if pid <= 0 {
		t.Fatal("no process to freeze")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thaw = func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(thaw)
	return thaw
}

// QueryRowErr runs one query on a connection of its own and returns its row; errors, including the
// connection's, come from Scan.
func QueryRowErr(dsn, sql string, args ...any) pgx.Row {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		cancel()
		return errRow{err}
	}
	return &closingRow{row: conn.QueryRow(ctx, sql, args...), done: func() { conn.Close(context.Background()); cancel() }}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type closingRow struct {
	row  pgx.Row
	done func()
}

func (r *closingRow) Scan(dest ...any) error {
	defer r.done()
	return r.row.Scan(dest...)
}
