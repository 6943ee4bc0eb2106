package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsoleSession is the server-side state of one operator console session. The browser holds a random
// id; only its SHA-256 digest is stored. Triggers (migration 010) delete a user's sessions when the user
// is disabled or changes password, role or email, and a family's sessions when the refresh family is
// revoked, whoever makes the change.
type ConsoleSession struct {
	Digest     []byte
	UserID     string
	Family     string // the refresh family of the sign-in; revoked at sign-out
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // the absolute end, fixed at sign-in
}

// CreateConsoleSession records a new session (at sign-in) and removes the sessions whose absolute
// lifetime has passed, so that the table does not grow with abandoned ones.
func (s Accounts) CreateConsoleSession(ctx context.Context, cs ConsoleSession) error {
	return Classify(s.tx(ctx, false, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE expires_at <= $1`, cs.CreatedAt); err != nil {
			return fmt.Errorf("remove ended console sessions: %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO console_sessions (digest, user_id, family, created_at, last_seen_at, expires_at)
VALUES ($1, $2::uuid, $3::uuid, $4, $4, $5)`, cs.Digest, cs.UserID, cs.Family, cs.CreatedAt, cs.ExpiresAt)
		if isInvalidText(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("record console session: %w", checkViolation(err))
		}
		return nil
	}))
}

// TouchConsoleSession returns the live session with this digest and records now as its last use. A
// session is live while now is before its absolute end and within idle of its last use, and its user
// is enabled; any other (or an unknown digest) is ErrNotFound, and an ended one is deleted.
func (s Accounts) TouchConsoleSession(ctx context.Context, digest []byte, now time.Time, idle time.Duration) (ConsoleSession, error) {
	cs := ConsoleSession{Digest: digest}
	err := s.pool.QueryRow(ctx, `
UPDATE console_sessions c SET last_seen_at = greatest(c.last_seen_at, $2)
  FROM users u
 WHERE c.digest = $1 AND u.id = c.user_id AND NOT u.disabled
   AND c.expires_at > $2 AND c.last_seen_at > $2 - make_interval(secs => $3)
RETURNING c.user_id::text, c.family::text, c.created_at, c.last_seen_at, c.expires_at`,
		digest, now, idle.Seconds()).Scan(&cs.UserID, &cs.Family, &cs.CreatedAt, &cs.LastSeenAt, &cs.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, derr := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE digest = $1`, digest); derr != nil {
			return ConsoleSession{}, fmt.Errorf("remove an ended console session: %w", derr)
		}
		return ConsoleSession{}, ErrNotFound
	}
	if err != nil {
		return ConsoleSession{}, fmt.Errorf("read console session: %w", err)
	}
	return cs, nil
}

// EndConsoleSession deletes the session with this digest and revokes its refresh family, with audit
// (sign-out), in one transaction. An unknown digest is ErrNotFound and writes nothing.
func (s Accounts) EndConsoleSession(ctx context.Context, digest []byte, audit AuditEvent) error {
	return s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var user, fam string
		err := tx.QueryRow(ctx, `DELETE FROM console_sessions WHERE digest = $1 RETURNING user_id::text, family::text`, digest).Scan(&user, &fam)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("end console session: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1::uuid AND revoked_at IS NULL`, fam); err != nil {
			return fmt.Errorf("revoke refresh family: %w", err)
		}
		audit.Actor, audit.Target = "user:"+user, "refresh-family:"+fam
		return nil
	})
}
