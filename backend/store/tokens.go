package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrTokenReused means a refresh token that was already spent was presented again; its whole family has
// been revoked (docs/security.md, R2).
var ErrTokenReused = errors.New("refresh token reused; family revoked")

// RefreshToken is the stored state of one refresh token (the JWT itself is never stored).
type RefreshToken struct {
	JTI             string
	Family          string
	UserID          string
	ExpiresAt       time.Time
	FamilyExpiresAt time.Time
}

// CreateRefreshToken records the first token of a new family (at login).
func (s Accounts) CreateRefreshToken(ctx context.Context, t RefreshToken) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO refresh_tokens (jti, family, user_id, expires_at, family_expires_at) VALUES ($1, $2, $3, $4, $5)`,
		t.JTI, t.Family, t.UserID, t.ExpiresAt, t.FamilyExpiresAt)
	if err != nil {
		return Classify(fmt.Errorf("record refresh token: %w", err))
	}
	return nil
}

// Rotated is the outcome of a successful rotation: the new token's row and the user, as the database
// has them now (role included, docs/security.md, J8).
type Rotated struct {
	Token RefreshToken
	User  User
}

// RotateRefreshToken spends the token oldJTI of userID and records newJTI in the same family, in one
// transaction. The spend is a conditional UPDATE, so of many concurrent rotations of one token exactly
// one succeeds (R1). The new token expires after ttl from now but never after the family's absolute
// end, which rotation does not move (R3). A spent token presented again revokes its family and returns
// ErrTokenReused (R2); an unknown, expired or revoked token, or one whose user is gone or disabled,
// returns ErrNotFound.
func (s Accounts) RotateRefreshToken(ctx context.Context, userID, oldJTI, newJTI string, now time.Time, ttl time.Duration) (Rotated, error) {
	var out Rotated
	// Not durable: a rotation gives a new token, and a 503 after it had committed would make the client
	// repeat the spent token, which revokes its family (R2).
	err := s.tx(ctx, false, func(tx pgx.Tx) error {
		var fam string
		var famEnd time.Time
		err := tx.QueryRow(ctx, `
UPDATE refresh_tokens t SET used_at = now()
  FROM users u
 WHERE t.jti = $1::uuid AND t.user_id = $2::uuid AND u.id = t.user_id AND NOT u.disabled AND t.created_at > u.tokens_valid_after
   AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now() AND t.family_expires_at > now()
RETURNING t.family::text, t.family_expires_at`, oldJTI, userID).Scan(&fam, &famEnd)
		if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("spend refresh token: %w", err)
		}
		u, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1::uuid`, userID))
		if err != nil {
			return err
		}
		exp := now.Add(ttl).Truncate(time.Second)
		if famEnd.Before(exp) {
			exp = famEnd.Truncate(time.Second)
		}
		out = Rotated{Token: RefreshToken{JTI: newJTI, Family: fam, UserID: userID, ExpiresAt: exp, FamilyExpiresAt: famEnd}, User: u}
		_, err = tx.Exec(ctx, `INSERT INTO refresh_tokens (jti, family, user_id, expires_at, family_expires_at) VALUES ($1, $2, $3, $4, $5)`,
			newJTI, fam, userID, exp, famEnd)
		if err != nil {
			return fmt.Errorf("record refresh token: %w", err)
		}
		return nil
	})
	if !errors.Is(err, ErrNotFound) {
		return out, Classify(err)
	}
	// Why did the spend fail? A token that was already used is a replay: revoke the whole family.
	var fam string
	var used bool
	qerr := s.idem().QueryRow(ctx, `SELECT family::text, used_at IS NOT NULL FROM refresh_tokens WHERE jti = $1::uuid AND user_id = $2::uuid`, oldJTI, userID).Scan(&fam, &used)
	if qerr != nil || !used {
		return Rotated{}, ErrNotFound
	}
	if err := s.RevokeFamily(ctx, fam); err != nil {
		return Rotated{}, err
	}
	return Rotated{}, ErrTokenReused
}

// RevokeFamily revokes every token of a refresh family (logout, replay).
func (s Accounts) RevokeFamily(ctx context.Context, family string) error {
	err := s.tx(ctx, true, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1::uuid AND revoked_at IS NULL`, family)
		return err
	})
	if isInvalidText(err) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke refresh family: %w", err)
	}
	return nil
}

// RefreshFamilyOf returns the family and user of a stored refresh token.
func (s Accounts) RefreshFamilyOf(ctx context.Context, jti string) (family, userID string, err error) {
	err = s.idem().QueryRow(ctx, `SELECT family::text, user_id::text FROM refresh_tokens WHERE jti = $1::uuid`, jti).Scan(&family, &userID)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return "", "", ErrNotFound
	}
	return family, userID, err
}

func revokeUserTokens(ctx context.Context, db DBTX, userID string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1::uuid AND revoked_at IS NULL`, userID)
	if err != nil {
		return 0, fmt.Errorf("revoke refresh tokens: %w", err)
	}
	return tag.RowsAffected(), nil
}
