// Package blockconn provides a net.Conn whose reads and writes are plain blocking system calls, for a
// database connection used from a thread that must not wait through Go's network poller.
//
// The plugin looks up credentials it has not cached on Mosquitto's own thread, which runs Go on a
// goroutine locked to it. With an ordinary net.Conn, waiting for PostgreSQL's answer parks that goroutine.
// Another thread then wakes in the poller when the answer arrives and hands the goroutine back to the
// locked thread, which costs several thread switches per query. A blocking read lets the kernel wake the
// broker thread directly.
//
// Deadlines are enforced by the kernel: poll(2) before each read (its timer is precise, unlike
// SO_RCVTIMEO's, which stays as a backstop) and SO_SNDTIMEO for writes. While a deadline is set with
// SetDeadline, each read and write may block only for the time left to it (to the millisecond, rounded
// up), retries after a signal or a partial write included; without one, each is bounded by a
// per-operation timeout. A deadline in the past aborts: the socket is shut down, which also ends a read
// blocked in another goroutine, and the connection is unusable afterwards. That is how pgx interrupts an
// operation whose context ends.
package blockconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dialer dials blocking connections.
type Dialer struct {
	// Timeout bounds connection establishment and, as the new connection's initial deadline, the
	// protocol's own setup after it (TLS, authentication). Clear that deadline with SetDeadline(time.Time{})
	// once the connection is ready (pgx: in AfterConnect); then OpTimeout applies.
	Timeout time.Duration
	// OpTimeout bounds every read and write while no deadline is set. Zero means no bound.
	OpTimeout time.Duration
}

// DialContext connects like net.Dialer, then takes the socket out of Go's poller and makes it blocking.
func (d Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.Timeout}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn, err := fromConn(c, d.OpTimeout, d.Timeout)
	c.Close() // conn holds its own descriptor
	if err != nil {
		return nil, fmt.Errorf("make database socket blocking: %w", err)
	}
	return conn, nil
}

// fromConn duplicates c's socket into a blocking Conn.
func fromConn(c net.Conn, opTimeout, setup time.Duration) (*Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	// O_NONBLOCK belongs to the open file, shared with the poller's descriptor: c must not be used again.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	conn := &Conn{fd: fd, local: c.LocalAddr(), remote: c.RemoteAddr(), opTimeout: opTimeout}
	if setup > 0 {
		conn.deadline = time.Now().Add(setup)
	}
	return conn, nil
}

// Conn is a connected socket in blocking mode. Reads and writes may run in different goroutines, as
// net.Conn allows; each blocks its thread.
type Conn struct {
	fd            int
	local, remote net.Addr
	opTimeout     time.Duration

	mu       sync.Mutex
	inflight int  // reads and writes in progress; the descriptor is closed when the last one ends
	closed   bool // Close was called
	aborted  bool // a deadline passed: the socket is shut down
	applied  time.Duration
	deadline time.Time
}

// ErrClosed is returned by operations on a closed Conn.
var ErrClosed = net.ErrClosed

// begin registers an operation, sets the kernel timeout for it and returns the descriptor to use and
// the time by which the operation must end (zero: no bound). It fails once the Conn is closed or aborted.
func (c *Conn) begin() (fd int, end time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return -1, end, ErrClosed
	case c.aborted:
		return -1, end, os.ErrDeadlineExceeded
	}
	now := time.Now()
	timeout := c.opTimeout
	if !c.deadline.IsZero() {
		left := c.deadline.Sub(now)
		if left <= 0 {
			c.abortLocked()
			return -1, end, os.ErrDeadlineExceeded
		}
		timeout = roundUp(left)
	}
	if err := c.applyTimeoutLocked(timeout); err != nil {
		return -1, end, err
	}
	if timeout > 0 {
		end = now.Add(timeout)
	}
	c.inflight++
	return c.fd, end, nil
}

// rearm sets the kernel timeout for retrying an operation (after a signal or a partial write) that must
// end by end, so that retries do not restart the clock.
func (c *Conn) rearm(end time.Time) error {
	if end.IsZero() {
		return nil
	}
	left := time.Until(end)
	if left <= 0 {
		return unix.EAGAIN // reported as a timeout by end
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applyTimeoutLocked(roundUp(left))
}

// roundUp rounds d up to a whole millisecond, so that the kernel timeout changes (a system call) only
// when a millisecond has passed.
func roundUp(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// end finishes an operation and closes the descriptor if Close came in meanwhile. It turns the
// system call's error into what net.Conn callers expect.
func (c *Conn) end(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.closed && c.inflight == 0 && c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	switch {
	case err == nil:
		return nil
	case c.aborted || errors.Is(err, unix.EAGAIN):
		return os.ErrDeadlineExceeded
	case c.closed:
		return ErrClosed
	}
	return err
}

// Read reads like read(2), retrying on EINTR; 0 bytes for a non-empty b is io.EOF (or the reason the
// socket was shut down).
func (c *Conn) Read(b []byte) (int, error) {
	fd, end, err := c.begin()
	if err != nil {
		return 0, err
	}
	var n int
	for {
		// The kernel keeps SO_RCVTIMEO in jiffies on a coarse timer wheel (tens of milliseconds late
		// at 250 ms); poll's timer is precise, so the wait for data runs there.
		if err = waitReadable(fd, end); err != nil {
			break
		}
		n, err = unix.Read(fd, b)
		if err != unix.EINTR {
			break
		}
		if err = c.rearm(end); err != nil {
			break
		}
	}
	if n < 0 {
		n = 0
	}
	err = c.end(err)
	if err == nil && n == 0 && len(b) > 0 {
		c.mu.Lock()
		aborted := c.aborted
		c.mu.Unlock()
		if aborted {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, io.EOF
	}
	return n, err
}

// waitReadable waits until fd has data (or an end of stream) or end passes (unix.EAGAIN); a zero end
// waits for the data only. Retries after a signal keep to end.
func waitReadable(fd int, end time.Time) error {
	if end.IsZero() {
		return nil
	}
	for {
		left := time.Until(end)
		if left <= 0 {
			return unix.EAGAIN
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(roundUp(left)/time.Millisecond))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case n == 0:
			return unix.EAGAIN
		}
		return nil
	}
}

// Write writes all of b (MSG_NOSIGNAL: a closed peer is an error, never a SIGPIPE in the broker).
func (c *Conn) Write(b []byte) (int, error) {
	fd, end, err := c.begin()
	if err != nil {
		return 0, err
	}
	written := 0
	for written < len(b) {
		var n int
		n, err = unix.SendmsgN(fd, b[written:], nil, nil, unix.MSG_NOSIGNAL)
		if err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		if err == nil {
			written += n
		}
		if written < len(b) {
			if err = c.rearm(end); err != nil {
				break
			}
		}
	}
	return written, c.end(err)
}

// Close shuts the socket down, which ends operations blocked in other goroutines, and closes it once
// they have returned.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.closed = true
	if c.fd < 0 {
		return nil
	}
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	if c.inflight == 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	return nil
}

// LocalAddr is the address the connection was dialled from.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the address the connection was dialled to.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline bounds later reads and writes by t, in place of the per-operation timeout. A t that has
// passed aborts the connection at once, including an operation blocked in another goroutine. The zero t
// restores the per-operation timeout.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.deadline = t
	if !t.IsZero() && !time.Now().Before(t) {
		c.abortLocked()
	}
	return nil
}

// SetReadDeadline and SetWriteDeadline set the one deadline both directions share; pgx sets both at once.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.SetDeadline(t) }

// SetWriteDeadline: see SetReadDeadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }

func (c *Conn) abortLocked() {
	if !c.aborted && c.fd >= 0 {
		c.aborted = true
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// applyTimeoutLocked sets SO_RCVTIMEO and SO_SNDTIMEO to d (rounded up to a microsecond; 0 means no
// timeout), skipping the system calls when they already hold it.
func (c *Conn) applyTimeoutLocked(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	if d == c.applied || c.fd < 0 {
		return nil
	}
	tv := unix.NsecToTimeval(((d + time.Microsecond - 1) / time.Microsecond * time.Microsecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set socket read timeout: %w", err)
	}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("set socket write timeout: %w", err)
	}
	c.applied = d
	return nil
}
