package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// NewAgent is what CreateAgent makes: the agent's uuid, the id of its first key and the two secrets,
// which exist in plaintext only here and in the one response that shows them.
type NewAgent struct {
	AgentUUID    string
	KeyID        string
	APIKey       secret.Secret
	MQTTPassword secret.Secret
}

// CreateAgentParams describe a new agent.
type CreateAgentParams struct {
	Name    string
	KeyName string      // name of the first API key; defaults to Name
	KeyKind secret.Kind // secret.APIKey unless the deployment uses test keys
	Expires time.Time   // zero: the key never expires
}

// CreateAgent inserts an agent, its first API key and its MQTT credentials in one transaction.
func (s Agents) CreateAgent(ctx context.Context, p CreateAgentParams) (NewAgent, error) {
	var out NewAgent
	err := s.tx(ctx, false, func(tx pgx.Tx) error {
		var err error
		out, err = CreateAgentTx(ctx, tx, p)
		return err
	})
	return out, Classify(err)
}

// CreateAgentTx is CreateAgent inside a caller's transaction, for callers that must consume a
// provisioning key or check a device limit in the same transaction.
func CreateAgentTx(ctx context.Context, tx pgx.Tx, p CreateAgentParams) (NewAgent, error) {
	if p.KeyKind.Prefix() == "" {
		p.KeyKind = secret.APIKey
	}
	if p.KeyName == "" {
		p.KeyName = p.Name
	}
	key, err := secret.Generate(p.KeyKind)
	if err != nil {
		return NewAgent{}, err
	}
	pw, err := secret.Generate(secret.MQTTPassword)
	if err != nil {
		return NewAgent{}, err
	}
	out := NewAgent{APIKey: key, MQTTPassword: pw}
	if err := tx.QueryRow(ctx, `INSERT INTO agents (name) VALUES ($1) RETURNING uuid::text`, p.Name).Scan(&out.AgentUUID); err != nil {
		return NewAgent{}, fmt.Errorf("insert agent: %w", checkViolation(err))
	}
	d := secret.DigestOf(key.Reveal())
	var expires *time.Time
	if !p.Expires.IsZero() {
		expires = &p.Expires
	}
	if err := tx.QueryRow(ctx, `INSERT INTO api_keys (agent_uuid, name, digest, prefix, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id::text`,
		out.AgentUUID, p.KeyName, d[:], secret.DisplayPrefix(p.KeyKind, key.Reveal()), expires).Scan(&out.KeyID); err != nil {
		return NewAgent{}, fmt.Errorf("insert api key: %w", checkViolation(err))
	}
	if _, err := tx.Exec(ctx, `INSERT INTO mqtt_credentials (agent_uuid, password_hash) VALUES ($1, $2)`,
		out.AgentUUID, passhash.SHA256Hex(pw.Reveal())); err != nil {
		return NewAgent{}, fmt.Errorf("insert mqtt credentials: %w", err)
	}
	return out, nil
}

// ErrInvalid wraps a value the database refused by a CHECK constraint (for example an empty name).
var ErrInvalid = errors.New("invalid value")

func checkViolation(err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == pgerrcode.CheckViolation {
		return fmt.Errorf("%s: %w", pg.ConstraintName, ErrInvalid)
	}
	return err
}

// SetAgentStatus sets an agent's status (active, disabled or decommissioned).
func (s Agents) SetAgentStatus(ctx context.Context, agentUUID, status string) error {
	var tag pgconn.CommandTag
	err := s.tx(ctx, true, func(tx pgx.Tx) error {
		var err error
		tag, err = tx.Exec(ctx, `UPDATE agents SET status = $2, updated_at = now() WHERE uuid = $1::uuid`, agentUUID, status)
		return err
	})
	if isInvalidText(err) {
		return ErrNotFound
	}
	if err != nil {
		return Classify(fmt.Errorf("set agent status: %w", checkViolation(err)))
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// isInvalidText reports PostgreSQL's "invalid input syntax" (22P02), which a malformed uuid argument
// causes; callers treat it as not found.
func isInvalidText(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == pgerrcode.InvalidTextRepresentation
}

// CreateAgentAudited is CreateAgent with its audit event in the same transaction; the event's Target
// and Detail (key id, name) are filled in from what was made. Never a secret.
func (s Agents) CreateAgentAudited(ctx context.Context, p CreateAgentParams, audit AuditEvent) (NewAgent, error) {
	var out NewAgent
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		var err error
		if out, err = CreateAgentTx(ctx, tx, p); err != nil {
			return err
		}
		audit.Target = "agent:" + out.AgentUUID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["keyId"], audit.Detail["name"] = out.KeyID, p.Name
		return nil
	})
	return out, err
}

// UpdateAgentStatus is SetAgentStatus with its audit event (Target set to the agent) in the same
// transaction.
func (s Agents) UpdateAgentStatus(ctx context.Context, agentUUID, status string, audit AuditEvent) error {
	return s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE agents SET status = $2, updated_at = now() WHERE uuid = $1::uuid`, agentUUID, status)
		if isInvalidText(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("set agent status: %w", checkViolation(err))
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		audit.Target = "agent:" + agentUUID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["status"] = status
		return nil
	})
}
