package store

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable reports whether err means PostgreSQL could not be reached or will not take work right
// now: the connection could not be made or broke (refused, reset, closed mid-query), or the server
// answered with a connection exception (class 08), is shutting down or starting up (57P01, 57P02,
// 57P03) or has no connection slot left (53300). Such a request is worth retrying later; it is not a
// bug. A deadline that ran out is the caller's to judge (context.DeadlineExceeded).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow, pgerrcode.TooManyConnections:
			return true
		}
		return pgerrcode.IsConnectionException(pg.Code)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false // a net.Error too, but the request's own deadline or cancellation
	}
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
