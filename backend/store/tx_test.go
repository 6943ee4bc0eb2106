package store

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestConnBroken: what counts as a dead connection, worth dropping the pool's others and repeating a
// statement that is safe to repeat; timeouts and ordinary server errors are not.
func TestConnBroken(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("begin: %w", io.ErrUnexpectedEOF), true},
		{io.EOF, true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{&net.OpError{Op: "write", Err: syscall.EPIPE}, true},
		{&pgconn.PgError{Code: "57P01"}, true}, // terminating connection due to administrator command
		{&pgconn.PgError{Code: "25006"}, true}, // read-only transaction: a primary that became a standby
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "57014"}, false}, // query cancelled
		{&net.OpError{Op: "read", Err: errTimeout{}}, false},
		{errors.New("something else"), false},
	} {
		if got := connBroken(tc.err); got != tc.want {
			t.Errorf("connBroken(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// TestListenRetryStaysUnderASecond: however long the database is gone, the change feed tries again
// within half a second, so that it reconnects within a second of a new primary being reachable.
func TestListenRetryStaysUnderASecond(t *testing.T) {
	base := listenRetryMin
	var longest time.Duration
	for range 1000 {
		var wait time.Duration
		wait, base = listenRetry(base)
		if wait < listenRetryMin {
			t.Fatalf("wait %v below the minimum", wait)
		}
		longest = max(longest, wait)
	}
	if longest > 500*time.Millisecond {
		t.Fatalf("a retry waited %v, want at most 500ms", longest)
	}
}

func TestParseDurableLevel(t *testing.T) {
	for _, v := range []string{"remote_apply", "on", "remote_write", "off"} {
		if got, err := ParseDurableLevel(v); err != nil || got != v {
			t.Errorf("%q: %q, %v", v, got, err)
		}
	}
	for _, v := range []string{"", "local", "REMOTE_APPLY", "remote_apply; DROP TABLE x"} {
		if _, err := ParseDurableLevel(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}
