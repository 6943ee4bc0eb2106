package store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// feedEvents records what a listener reports.
type feedEvents struct {
	connected chan bool
	failed    chan error
	changed   chan store.Change
}

// listen runs st.Listen with o until the test ends and returns what it reports.
func listen(t *testing.T, st *store.Store, o store.ListenOptions) *feedEvents {
	t.Helper()
	ev := &feedEvents{connected: make(chan bool, 16), failed: make(chan error, 1024), changed: make(chan store.Change, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		st.Listen(ctx, store.ListenHandler{
			Changed:   func(c store.Change) { ev.changed <- c },
			Connected: func(re bool) { ev.connected <- re },
			Failed: func(err error) {
				select {
				case ev.failed <- err:
				default:
				}
			},
		}, o)
	}()
	return ev
}

// waitConnected fails unless the listener reports Connected(reconnect) within d.
func (ev *feedEvents) waitConnected(t *testing.T, reconnect bool, d time.Duration) {
	t.Helper()
	select {
	case re := <-ev.connected:
		if re != reconnect {
			t.Fatalf("Connected(%v), want Connected(%v)", re, reconnect)
		}
	case err := <-ev.failed:
		t.Fatalf("Failed(%v) while waiting for Connected", err)
	case <-time.After(d):
		t.Fatalf("the feed was not reported up within %v", d)
	}
}

// waitFailed waits for a Failed with an error that is want, within d; Connected meanwhile fails the test.
func (ev *feedEvents) waitFailed(t *testing.T, want error, d time.Duration) error {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case re := <-ev.connected:
			t.Fatalf("Connected(%v): the feed was reported up while its probes are lost", re)
		case err := <-ev.failed:
			if errors.Is(err, want) {
				return err
			}
			t.Logf("Failed(%v), waiting for %v", err, want)
		case <-deadline:
			t.Fatalf("no Failed(%v) within %v", want, d)
		}
	}
}

// The probe makes the feed up; probes, this broker's and other brokers' (foreign nonces on the shared
// channel), never reach Changed nor take the feed down, while real changes do arrive.
func TestListenProbe(t *testing.T) {
	t.Parallel()
	d := newDB(t)
	a, err := d.st.Agents.CreateAgent(d.ctx, store.CreateAgentParams{Name: "probe"})
	wantErr(t, "CreateAgent", err, nil)
	ev := listen(t, d.st, store.ListenOptions{ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 10 * time.Second})
	ev.waitConnected(t, false, 30*time.Second)
	// Foreign probes and payloads that are no change, then many of our own probes, then a change.
	for _, p := range []string{`{"probe":"0123456789abcdef"}`, `{"probe":""}`, `not json`, `{}`} {
		if _, err := d.raw.Exec(d.ctx, "SELECT pg_notify($1, $2)", store.Channel, p); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // lets probes run (not what is asserted: that nothing but the change arrives)
	if _, err := d.st.Keys.RevokeAPIKey(d.ctx, a.KeyID, audit("key_revoke")); err != nil {
		t.Fatal(err)
	}
	want := secret.DigestOf(a.APIKey.Reveal())
	select {
	case c := <-ev.changed:
		if dg, ok := c.Digest(); c.Table != "api_keys" || !ok || dg != want || c.Agent != a.AgentUUID {
			t.Fatalf("Changed(%+v), want the key's revocation (no probe, no foreign payload)", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the revocation did not arrive within 30 s")
	}
	select {
	case err := <-ev.failed:
		t.Fatalf("Failed(%v) on a healthy feed", err)
	case re := <-ev.connected:
		t.Fatalf("Connected(%v) again on a healthy feed", re)
	default:
	}
}

// Through PgBouncer in transaction mode (plugin_opt_dsn at the pooler, no separate LISTEN DSN), LISTEN
// succeeds but no notification reaches it: the feed is never reported up, every attempt fails with
// ErrListenDeaf.
func TestListenDeafThroughPgBouncer(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	pooled := harness.StartPgBouncer(t, dsn)
	st := harness.OpenStore(t, pooled)
	ev := listen(t, st, store.ListenOptions{ProbeTimeout: time.Second})
	for range 2 {
		ev.waitFailed(t, store.ErrListenDeaf, 30*time.Second)
	}
}

// LISTEN on another database than the probes (and the writes) reach: never up, although other brokers'
// probes keep arriving on it (a foreign nonce is not an answer).
func TestListenDeafElsewhere(t *testing.T) {
	t.Parallel()
	here, there := newDB(t), newDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_, _ = here.raw.Exec(ctx, "SELECT pg_notify($1, $2)", store.Channel, `{"probe":"another-broker"}`)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	ev := listen(t, here.st, store.ListenOptions{ProbeVia: there.st, ProbeTimeout: time.Second})
	for range 2 {
		ev.waitFailed(t, store.ErrListenDeaf, 30*time.Second)
	}
}

// A LISTEN connection that stops delivering (frozen by a proxy: a paused server, a half-open connection)
// is noticed by its probes, well before the old 30 s idle ping: Failed(ErrListenStalled), then the feed
// reconnects (Connected(true)).
func TestListenStalledReconnects(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	direct := harness.OpenStore(t, dsn)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	fz := newFreezer(t, u.Host)
	u.Host = fz.addr()
	feed := harness.OpenStore(t, u.String())
	ev := listen(t, feed, store.ListenOptions{ProbeVia: direct, ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 2 * time.Second})
	ev.waitConnected(t, false, 30*time.Second)
	fz.freeze()
	ev.waitFailed(t, store.ErrListenStalled, 20*time.Second)
	ev.waitConnected(t, true, 30*time.Second)
}

// freezer forwards TCP connections to target; freeze makes the connections open at the time stop
// delivering in both directions without closing (what a paused server or a half-open connection looks
// like), while new connections are forwarded.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen map[*bool]bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, frozen: map[*bool]bool{}}
	t.Cleanup(f.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			stop := new(bool)
			f.mu.Lock()
			f.frozen[stop] = false
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go f.pipe(up, c, stop)
			go f.pipe(c, up, stop)
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

// pipe copies src to dst until either closes, dropping what arrives once frozen.
func (f *freezer) pipe(dst, src net.Conn, stop *bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			frozen := f.frozen[stop]
			f.mu.Unlock()
			if !frozen {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.frozen {
		f.frozen[k] = true
	}
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}
