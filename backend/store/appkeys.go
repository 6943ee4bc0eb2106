package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// Rights an application key may hold on the REST API (docs/app-keys.md). Users, roles and application keys
// themselves need an admin's access token: no right reaches them.
const (
	RightAgentsRead     = "agents:read"
	RightAgentsWrite    = "agents:write"
	RightKeysWrite      = "keys:write"
	RightProvisionWrite = "provision:write"
	RightAuditRead      = "audit:read"
	RightLicenseRead    = "license:read"
	RightPublish        = "publish"
	RightTokenExchange  = "token:exchange"
)

// AppRights lists every application key right, in the order the documentation gives them.
func AppRights() []string {
	return []string{RightAgentsRead, RightAgentsWrite, RightKeysWrite, RightProvisionWrite, RightAuditRead,
		RightLicenseRead, RightPublish, RightTokenExchange}
}

// AppTopic is one MQTT topic grant of an application key: access is read, write or readwrite; pattern
// a topic filter that may use + and #.
type AppTopic struct {
	Access  string `json:"access"`
	Pattern string `json:"pattern"`
}

// AppKey is a stored application key: metadata and display prefix, never the key or its password.
type AppKey struct {
	ID         string
	Name       string
	Prefix     string
	Rights     []string
	Topics     []AppTopic
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
	CreatedBy  *string
	CreatedAt  time.Time
}

// NewAppKeyParams describe a new application key. The caller validates rights and topics; the database
// checks them again.
type NewAppKeyParams struct {
	Name      string
	Kind      secret.Kind // secret.AppKey unless the deployment uses test keys
	Rights    []string
	Topics    []AppTopic
	Expires   time.Time // zero: never
	CreatedBy string    // the admin's user id; "" for the CLI
}

// AppKeyPage selects one page of application keys in (created_at, id) order, after a cursor.
type AppKeyPage = Page

const appKeyColumns = `id::text, name, prefix, rights, topics, expires_at, revoked_at, last_used_at, created_by::text, created_at`

func scanAppKey(row pgx.Row) (AppKey, error) {
	var k AppKey
	err := row.Scan(&k.ID, &k.Name, &k.Prefix, &k.Rights, &k.Topics, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt, &k.CreatedBy, &k.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return AppKey{}, ErrNotFound
	}
	if k.Topics == nil {
		k.Topics = []AppTopic{}
	}
	if k.Rights == nil {
		k.Rights = []string{}
	}
	return k, err
}

// CreateAppKey issues an application key and its MQTT password, with its audit event, and returns both
// plaintexts (shown once).
func (s Keys) CreateAppKey(ctx context.Context, p NewAppKeyParams, audit AuditEvent) (k AppKey, key, password secret.Secret, err error) {
	if p.Kind.Prefix() == "" {
		p.Kind = secret.AppKey
	}
	if p.Rights == nil {
		p.Rights = []string{}
	}
	if p.Topics == nil {
		p.Topics = []AppTopic{}
	}
	if key, err = secret.Generate(p.Kind); err != nil {
		return AppKey{}, "", "", err
	}
	if password, err = secret.Generate(secret.MQTTPassword); err != nil {
		return AppKey{}, "", "", err
	}
	// Sent as JSON text, which both of pgx's protocols pass to jsonb as is (the simple protocol, needed
	// behind a transaction-pooling PgBouncer, cannot encode a Go struct for jsonb).
	topics, err := json.Marshal(p.Topics)
	if err != nil {
		return AppKey{}, "", "", fmt.Errorf("encode topics: %w", err)
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
		k, err = scanAppKey(tx.QueryRow(ctx, `INSERT INTO app_keys (name, digest, prefix, rights, topics, mqtt_password_hash, expires_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+appKeyColumns,
			p.Name, d[:], secret.DisplayPrefix(p.Kind, key.Reveal()), p.Rights, string(topics),
			passhash.SHA256Hex(password.Reveal()), expires, createdBy))
		if err != nil {
			return fmt.Errorf("insert application key: %w", checkViolation(err))
		}
		audit.Target = "app-key:" + k.ID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["rights"] = k.Rights
		audit.Detail["topics"] = k.Topics
		return nil
	})
	if err != nil {
		return AppKey{}, "", "", err
	}
	return k, key, password, nil
}

// ListAppKeys returns one page of application keys, oldest first; more reports whether another page
// follows.
func (s Keys) ListAppKeys(ctx context.Context, p AppKeyPage) (keys []AppKey, more bool, err error) {
	after, afterID := p.cursor()
	return listPage(ctx, s.idem(), "application keys", p, scanAppKey, `SELECT `+appKeyColumns+` FROM app_keys
 WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
 ORDER BY created_at, id LIMIT $3`, after, afterID)
}

// RevokeAppKey revokes an application key with its audit event. The trigger on app_keys announces it to
// every broker, which closes the key's sessions. Revoking a revoked key changes nothing and succeeds.
func (s Keys) RevokeAppKey(ctx context.Context, id string, audit AuditEvent) (AppKey, error) {
	var k AppKey
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		k, err = scanAppKey(tx.QueryRow(ctx, `UPDATE app_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1::uuid RETURNING `+appKeyColumns, id))
		if err != nil {
			return err
		}
		audit.Target = "app-key:" + id
		return nil
	})
	return k, err
}

// AppKeyByDigest returns the application key stored under a digest, for authenticating a REST call.
// It is read from the database on every call: a revoke bites at once.
func (s Keys) AppKeyByDigest(ctx context.Context, d secret.Digest) (AppKey, error) {
	return scanAppKey(s.idem().QueryRow(ctx, `SELECT `+appKeyColumns+` FROM app_keys WHERE digest = $1`, d[:]))
}

// TouchAppKey records that an application key was used on the REST API, at most once a minute per key.
func (s Keys) TouchAppKey(ctx context.Context, id string) error {
	_, err := s.idem().Exec(ctx, `UPDATE app_keys SET last_used_at = now() WHERE id = $1::uuid AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, id)
	return err
}
