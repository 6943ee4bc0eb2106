package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotauth/iotauth/backend/email"
)

// Sentinel errors of the operator-side aggregates.
var (
	// ErrConflict means a unique value (an email) is taken.
	ErrConflict = errors.New("already exists")
	// ErrLastAdmin refuses a change that would leave no enabled admin.
	ErrLastAdmin = errors.New("this is the last enabled admin")
)

// Operator roles.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
)

// User is an operator account. PasswordHash is an argon2id PHC string, never a password.
type User struct {
	ID                string
	Email             string
	Role              string
	Disabled          bool
	PasswordHash      string
	PasswordChangedAt time.Time
	TokensValidAfter  time.Time // access tokens issued (whole-second iat) at or before it are refused; see migration 003
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

const userColumns = `id::text, email, role, disabled, password_hash, password_changed_at, tokens_valid_after, created_at, updated_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.Role, &u.Disabled, &u.PasswordHash, &u.PasswordChangedAt, &u.TokensValidAfter, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return User{}, ErrNotFound
	}
	return u, err
}

// NormalizeEmail is the form emails are stored and looked up in: trimmed, NFKC and lower-cased
// (email.Canonical). Callers vet addresses with email.Normalize first.
func NormalizeEmail(addr string) string { return email.Canonical(addr) }

// CreateUser inserts an operator and the audit event recording it, in one transaction.
func (s Accounts) CreateUser(ctx context.Context, email, passwordHash, role string, audit AuditEvent) (User, error) {
	var u User
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING `+userColumns,
			NormalizeEmail(email), passwordHash, role))
		if err != nil {
			var pg *pgconn.PgError
			if errors.As(err, &pg) && pg.Code == pgerrcode.UniqueViolation {
				return ErrConflict
			}
			return fmt.Errorf("insert user: %w", checkViolation(err))
		}
		audit.Target = "user:" + u.ID
		return nil
	})
	return u, err
}

// UserByEmail finds an operator by email (case-insensitively).
func (s Accounts) UserByEmail(ctx context.Context, email string) (User, error) {
	return scanUser(s.idem().QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE lower(email) = $1`, NormalizeEmail(email)))
}

// UserByID finds an operator by id; a malformed id is ErrNotFound.
func (s Accounts) UserByID(ctx context.Context, id string) (User, error) {
	return scanUser(s.idem().QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1::uuid`, id))
}

// ListUsers returns one page of operators, oldest first; more reports whether another page follows.
func (s Accounts) ListUsers(ctx context.Context, p Page) (users []User, more bool, err error) {
	after, afterID := p.cursor()
	return listPage(ctx, s.idem(), "users", p, scanUser, `SELECT `+userColumns+` FROM users
 WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
 ORDER BY created_at, id LIMIT $3`, after, afterID)
}

// UserChange is a partial update; nil fields are left alone.
type UserChange struct {
	Role         *string
	Disabled     *bool
	PasswordHash *string
}

// UpdateUser applies ch in one transaction with its audit event. Disabling a user or changing their
// password revokes all their refresh-token families (docs/security.md, R4). A change that would leave no
// enabled admin is refused with ErrLastAdmin.
func (s Accounts) UpdateUser(ctx context.Context, id string, ch UserChange, audit AuditEvent) (User, error) {
	var u User
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		// Serialise changes to users so that two admins demoting each other cannot both succeed.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('iotauth.users'))`); err != nil {
			return err
		}
		cur, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1::uuid FOR UPDATE`, id))
		if err != nil {
			return err
		}
		losesAdmin := cur.Role == RoleAdmin && !cur.Disabled &&
			((ch.Role != nil && *ch.Role != RoleAdmin) || (ch.Disabled != nil && *ch.Disabled))
		if losesAdmin {
			var others int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled AND id <> $1::uuid`, id).Scan(&others); err != nil {
				return err
			}
			if others == 0 {
				return ErrLastAdmin
			}
		}
		u, err = scanUser(tx.QueryRow(ctx, `
UPDATE users SET role = COALESCE($2, role), disabled = COALESCE($3, disabled), password_hash = COALESCE($4, password_hash),
       password_changed_at = CASE WHEN $4::text IS NULL THEN password_changed_at ELSE now() END, updated_at = now()
 WHERE id = $1::uuid RETURNING `+userColumns, id, ch.Role, ch.Disabled, ch.PasswordHash))
		if err != nil {
			return fmt.Errorf("update user: %w", checkViolation(err))
		}
		if (ch.Disabled != nil && *ch.Disabled) || ch.PasswordHash != nil {
			if _, err := revokeUserTokens(ctx, tx, id); err != nil {
				return err
			}
		}
		audit.Target = "user:" + id
		return nil
	})
	return u, err
}
