package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// PublishableKey is a stored publishable key (schema 007): metadata and display prefix, never the key.
type PublishableKey struct {
	ID         string
	Name       string
	Prefix     string
	Origins    []string
	Topics     []AppTopic
	Providers  []string
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
	CreatedBy  *string
	CreatedAt  time.Time
}

// Active reports whether the key may be used at now.
func (k PublishableKey) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// NewPublishableKeyParams describe a new publishable key. The caller validates them; the database
// checks them again.
type NewPublishableKeyParams struct {
	Name      string
	Kind      secret.Kind // secret.PublishableKey unless the deployment uses test keys
	Origins   []string
	Topics    []AppTopic
	Providers []string
	Expires   time.Time // zero: never
	CreatedBy string    // the admin's user id; "" for the CLI
}

const pkColumns = `id::text, name, prefix, origins, topics, providers, expires_at, revoked_at, last_used_at, created_by::text, created_at`

func scanPublishableKey(row pgx.Row) (PublishableKey, error) {
	var k PublishableKey
	err := row.Scan(&k.ID, &k.Name, &k.Prefix, &k.Origins, &k.Topics, &k.Providers, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt, &k.CreatedBy, &k.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return PublishableKey{}, ErrNotFound
	}
	return k, err
}

// CreatePublishableKey issues a publishable key with its audit event and returns its plaintext (shown
// once).
func (s Keys) CreatePublishableKey(ctx context.Context, p NewPublishableKeyParams, audit AuditEvent) (k PublishableKey, key secret.Secret, err error) {
	if p.Kind.Prefix() == "" {
		p.Kind = secret.PublishableKey
	}
	if key, err = secret.Generate(p.Kind); err != nil {
		return PublishableKey{}, "", err
	}
	topics, err := json.Marshal(p.Topics)
	if err != nil {
		return PublishableKey{}, "", fmt.Errorf("encode topics: %w", err)
	}
	d := secret.DigestOf(key.Reveal())
	var expires *time.Time
	if !p.Expires.IsZero() {
		expires = &p.Expires
	}
	var createdBy *string
	if p.CreatedBy != "" {
		createdBy = &p.CreatedBy
	}
	err = s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		k, err = scanPublishableKey(tx.QueryRow(ctx, `INSERT INTO publishable_keys (name, digest, prefix, origins, topics, providers, expires_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+pkColumns,
			p.Name, d[:], secret.DisplayPrefix(p.Kind, key.Reveal()), p.Origins, string(topics), p.Providers, expires, createdBy))
		if err != nil {
			return fmt.Errorf("insert publishable key: %w", checkViolation(err))
		}
		audit.Target = "pk:" + k.ID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["origins"] = k.Origins
		audit.Detail["topics"] = k.Topics
		audit.Detail["providers"] = k.Providers
		return nil
	})
	if err != nil {
		return PublishableKey{}, "", err
	}
	return k, key, nil
}

// ListPublishableKeys returns one page of publishable keys, oldest first; more reports whether another
// page follows. It pages as ListAppKeys does.
func (s Keys) ListPublishableKeys(ctx context.Context, p AppKeyPage) (keys []PublishableKey, more bool, err error) {
	after, afterID := p.cursor()
	return listPage(ctx, s.idem(), "publishable keys", p, scanPublishableKey, `SELECT `+pkColumns+` FROM publishable_keys
 WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
 ORDER BY created_at, id LIMIT $3`, after, afterID)
}

// RevokePublishableKey revokes a publishable key with its audit event, and denies "pk:<id>" in the same
// transaction so that every broker closes the sessions of the credentials it led to (docs/security.md, A4).
// Revoking a revoked key renews the denial and succeeds.
func (s Keys) RevokePublishableKey(ctx context.Context, id string, audit AuditEvent) (PublishableKey, error) {
	var k PublishableKey
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		k, err = scanPublishableKey(tx.QueryRow(ctx, `UPDATE publishable_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1::uuid RETURNING `+pkColumns, id))
		if err != nil {
			return err
		}
		audit.Target = "pk:" + k.ID
		return DenySubject(ctx, tx, "pk:"+k.ID, "publishable key revoked")
	})
	return k, err
}

// PublishableKeyByDigest returns the publishable key stored under a digest, read on every exchange so a
// revoke bites at once.
func (s Keys) PublishableKeyByDigest(ctx context.Context, d secret.Digest) (PublishableKey, error) {
	return scanPublishableKey(s.idem().QueryRow(ctx, `SELECT `+pkColumns+` FROM publishable_keys WHERE digest = $1`, d[:]))
}

// OriginListed reports whether some active publishable key lists origin (the CORS preflight of the
// token exchange, which carries no key).
func (s Keys) OriginListed(ctx context.Context, origin string) (bool, error) {
	var ok bool
	err := s.idem().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM publishable_keys WHERE origins @> ARRAY[$1::text]
 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))`, origin).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up a CORS origin: %w", err)
	}
	return ok, nil
}

// TouchPublishableKey records that a publishable key was used, at most once a minute per key.
func (s Keys) TouchPublishableKey(ctx context.Context, id string) error {
	_, err := s.idem().Exec(ctx, `UPDATE publishable_keys SET last_used_at = now() WHERE id = $1::uuid AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, id)
	return err
}
