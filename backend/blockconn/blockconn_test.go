package blockconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// peer starts a loopback listener and returns a blocking connection to it and the server's side.
func peer(t *testing.T, opTimeout time.Duration) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	nc, err := Dialer{Timeout: time.Second, OpTimeout: opTimeout}.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Time{}) // the connection is set up: from now on opTimeout applies
	var srv net.Conn
	select {
	case srv = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close() })
	return c, srv
}

// within fails the test when f does not return within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func TestRoundTrip(t *testing.T) {
	c, srv := peer(t, time.Second)
	if c.LocalAddr().String() != srv.RemoteAddr().String() || c.RemoteAddr().String() != srv.LocalAddr().String() {
		t.Fatalf("addresses: %v→%v, server sees %v→%v", c.LocalAddr(), c.RemoteAddr(), srv.RemoteAddr(), srv.LocalAddr())
	}
	big := bytes.Repeat([]byte("0123456789"), 200000) // larger than the socket buffers: partial writes
	go func() {
		buf := make([]byte, len(big))
		if _, err := io.ReadFull(srv, buf); err == nil {
			srv.Write(buf[:10])
		}
	}()
	if n, err := c.Write(big); err != nil || n != len(big) {
		t.Fatalf("write: %d, %v", n, err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "0123456789" {
		t.Fatalf("read: %q, %v", got, err)
	}
	srv.Close()
	if n, err := c.Read(got); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %d, %v; want 0, EOF", n, err)
	}
}

func TestTimeouts(t *testing.T) {
	cases := []struct {
		name  string
		setup func(c *Conn)
		want  time.Duration // how long the read should block
	}{
		{"per-operation timeout", func(c *Conn) {}, 600 * time.Millisecond},
		{"deadline shorter than the timeout", func(c *Conn) { c.SetDeadline(time.Now().Add(30 * time.Millisecond)) }, 30 * time.Millisecond},
		{"deadline longer than the timeout", func(c *Conn) { c.SetDeadline(time.Now().Add(1200 * time.Millisecond)) }, 1200 * time.Millisecond},
		{"deadline cleared restores the timeout", func(c *Conn) {
			c.SetDeadline(time.Now().Add(time.Hour))
			if _, err := c.Write([]byte("x")); err != nil { // applies the hour to the socket
				t.Fatal(err)
			}
			c.SetDeadline(time.Time{})
		}, 600 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _ := peer(t, 600*time.Millisecond)
			tc.setup(c)
			start := time.Now()
			var err error
			within(t, 5*time.Second, "read", func() { _, err = c.Read(make([]byte, 1)) })
			took := time.Since(start)
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read with nothing to read: %v, want a timeout", err)
			}
			// Bounded both ways, with room for a loaded machine on the late side.
			if took < tc.want*8/10 || took > tc.want+300*time.Millisecond {
				t.Fatalf("read gave up after %v, want about %v", took, tc.want)
			}
		})
	}
}

// A deadline in the past, set from another goroutine, ends a read that is blocked in the kernel: that is
// how pgx cancels an operation whose context ended. The connection is unusable afterwards.
func TestPastDeadlineAbortsBlockedRead(t *testing.T) {
	c, _ := peer(t, time.Minute)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.SetDeadline(time.Now())
	}()
	var err error
	within(t, 5*time.Second, "blocked read", func() { _, err = c.Read(make([]byte, 1)) })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("aborted read: %v, want a deadline error", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the abort: %v, want a deadline error", err)
	}
}

// Close from another goroutine ends a blocked read, and writes to a closed peer fail instead of raising
// SIGPIPE (which would kill the broker).
func TestCloseAndClosedPeer(t *testing.T) {
	// Go ignores SIGPIPE on sockets unless asked: asking makes one observable here.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)

	c, srv := peer(t, time.Minute)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}()
	var err error
	within(t, 5*time.Second, "blocked read", func() { _, err = c.Read(make([]byte, 1)) })
	if err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	srv.Close()

	c2, srv2 := peer(t, time.Second)
	srv2.Close()
	time.Sleep(20 * time.Millisecond)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ { // the first write may be accepted before the reset arrives
		_, werr = c2.Write(bytes.Repeat([]byte("x"), 4096))
	}
	if werr == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
	select {
	case <-sigpipe:
		t.Fatal("a write to a closed peer raised SIGPIPE, which would kill a broker that does not ignore it")
	case <-time.After(50 * time.Millisecond):
	}
}

// A new connection's deadline is Dialer.Timeout, not OpTimeout, until it is cleared: the protocol's setup
// (TLS, authentication) may take longer than one operation of the ready connection may.
func TestSetupDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if s, err := ln.Accept(); err == nil {
			time.Sleep(100 * time.Millisecond)
			s.Write([]byte("hello"))
			time.Sleep(time.Second)
			s.Close()
		}
	}()
	nc, err := Dialer{Timeout: 2 * time.Second, OpTimeout: 20 * time.Millisecond}.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(nc, buf); err != nil {
		t.Fatalf("read 100 ms into the setup (op timeout 20 ms, setup 2 s): %v", err)
	}
	nc.SetDeadline(time.Time{})
	start := time.Now()
	if _, err := nc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("read after setup: %v after %v, want a timeout after about 20 ms", err, time.Since(start))
	}
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := (Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", addr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
}
