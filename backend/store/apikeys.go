package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// ErrDecommissioned means the agent was decommissioned and takes no new credentials.
var ErrDecommissioned = errors.New("agent is decommissioned")

// Rights a device API key may carry.
const (
	RightMQTT        = "mqtt"
	RightDeviceState = "device_state"
)

// APIKey is a stored device API key: metadata and display prefix, never the key.
type APIKey struct {
	ID         string
	AgentUUID  string
	Name       string
	Prefix     string
	Rights     []string
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
	CreatedAt  time.Time
}

// NewKeyParams describe an extra API key for an existing agent.
type NewKeyParams struct {
	AgentUUID string
	Name      string
	Kind      secret.Kind // secret.APIKey unless the deployment uses test keys
	Expires   time.Time   // zero: never
	Rights    []string    // nil: mqtt and device_state
}

const apiKeyColumns = `id::text, agent_uuid::text, name, prefix, rights, expires_at, revoked_at, last_used_at, created_at`

func scanAPIKey(row pgx.Row) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.AgentUUID, &k.Name, &k.Prefix, &k.Rights, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt, &k.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return APIKey{}, ErrNotFound
	}
	return k, err
}

// CreateAPIKey issues a new key for an agent that exists and is not decommissioned, with its audit event,
// and returns it with the plaintext (shown once).
func (s Keys) CreateAPIKey(ctx context.Context, p NewKeyParams, audit AuditEvent) (APIKey, secret.Secret, error) {
	if p.Kind.Prefix() == "" {
		p.Kind = secret.APIKey
	}
	if p.Rights == nil {
		p.Rights = []string{RightMQTT, RightDeviceState}
	}
	key, err := secret.Generate(p.Kind)
	if err != nil {
		return APIKey{}, "", err
	}
	d := secret.DigestOf(key.Reveal())
	var expires *time.Time
	if !p.Expires.IsZero() {
		expires = &p.Expires
	}
	var k APIKey
	err = s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM agents WHERE uuid = $1::uuid FOR SHARE`, p.AgentUUID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("find agent: %w", err)
		}
		if status == "decommissioned" {
			return ErrDecommissioned
		}
		k, err = scanAPIKey(tx.QueryRow(ctx, `INSERT INTO api_keys (agent_uuid, name, digest, prefix, rights, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING `+apiKeyColumns, p.AgentUUID, p.Name, d[:], secret.DisplayPrefix(p.Kind, key.Reveal()), p.Rights, expires))
		if err != nil {
			return fmt.Errorf("insert api key: %w", checkViolation(err))
		}
		audit.Target = "api-key:" + k.ID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["agentUuid"] = p.AgentUUID
		return nil
	})
	if err != nil {
		return APIKey{}, "", err
	}
	return k, key, nil
}

// ListAPIKeys returns one page of device API keys, newest first, optionally of one agent ("" for all);
// more reports whether another page follows.
func (s Keys) ListAPIKeys(ctx context.Context, agentUUID string, p Page) (keys []APIKey, more bool, err error) {
	after, afterID := p.cursor()
	var agent *string
	if agentUUID != "" {
		agent = &agentUUID
	}
	return listPage(ctx, s.idem(), "api keys", p, scanAPIKey, `SELECT `+apiKeyColumns+` FROM api_keys
 WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2::uuid))
   AND ($3::uuid IS NULL OR agent_uuid = $3::uuid)
 ORDER BY created_at DESC, id DESC LIMIT $4`, after, afterID, agent)
}

// RevokeAPIKey revokes a key with its audit event. The trigger on api_keys announces it to every broker,
// which closes the sessions that used it. Revoking a revoked key changes nothing and succeeds.
func (s Keys) RevokeAPIKey(ctx context.Context, id string, audit AuditEvent) (APIKey, error) {
	var k APIKey
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		k, err = scanAPIKey(tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1::uuid RETURNING `+apiKeyColumns, id))
		if err != nil {
			return err
		}
		audit.Target = "api-key:" + id
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["agentUuid"] = k.AgentUUID
		return nil
	})
	return k, err
}

// TouchAPIKey records that a key was used, at most once a minute per key so that polling does not turn
// every read into a write.
func (s Keys) TouchAPIKey(ctx context.Context, id string) error {
	_, err := s.idem().Exec(ctx, `UPDATE api_keys SET last_used_at = now() WHERE id = $1::uuid AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, id)
	return err
}
