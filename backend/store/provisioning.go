package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// ErrDeviceLimit means registering one more agent would exceed the licensed device limit.
var ErrDeviceLimit = errors.New("device limit reached")

// ProvisioningKey is a stored provisioning key: never the key itself, only its display prefix.
type ProvisioningKey struct {
	ID        string
	Name      string
	Prefix    string
	ExpiresAt time.Time
	CreatedBy string // "" when the creator was deleted
	CreatedAt time.Time
}

// CreateProvisioningKey generates a provisioning key, stores its digest and returns it with the
// plaintext, which exists only in this one answer. createdBy is a user id or "".
func (s Keys) CreateProvisioningKey(ctx context.Context, name string, expires time.Time, createdBy string, audit AuditEvent) (ProvisioningKey, secret.Secret, error) {
	key, err := secret.Generate(secret.ProvisioningKey)
	if err != nil {
		return ProvisioningKey{}, "", err
	}
	d := secret.DigestOf(key.Reveal())
	var by *string
	if createdBy != "" {
		by = &createdBy
	}
	pk := ProvisioningKey{Name: name, Prefix: secret.DisplayPrefix(secret.ProvisioningKey, key.Reveal()), CreatedBy: createdBy}
	err = s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO provisioning_keys (name, digest, prefix, expires_at, created_by) VALUES ($1, $2, $3, $4, $5::uuid)
RETURNING id::text, expires_at, created_at`, name, d[:], pk.Prefix, expires, by).Scan(&pk.ID, &pk.ExpiresAt, &pk.CreatedAt)
		if err != nil {
			return fmt.Errorf("insert provisioning key: %w", checkViolation(err))
		}
		audit.Target = "provisioning-key:" + pk.ID
		return nil
	})
	if err != nil {
		return ProvisioningKey{}, "", err
	}
	return pk, key, nil
}

// ListProvisioningKeys returns one page of the unredeemed provisioning keys, newest first (expired ones
// included, so that an operator sees them and can delete them); more reports whether another page follows.
func (s Keys) ListProvisioningKeys(ctx context.Context, p Page) (keys []ProvisioningKey, more bool, err error) {
	after, afterID := p.cursor()
	return listPage(ctx, s.idem(), "provisioning keys", p, func(r pgx.Row) (ProvisioningKey, error) {
		var k ProvisioningKey
		err := r.Scan(&k.ID, &k.Name, &k.Prefix, &k.ExpiresAt, &k.CreatedBy, &k.CreatedAt)
		return k, err
	}, `SELECT id::text, name, prefix, expires_at, COALESCE(created_by::text, ''), created_at FROM provisioning_keys
 WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2::uuid))
 ORDER BY created_at DESC, id DESC LIMIT $3`, after, afterID)
}

// DeleteProvisioningKey deletes an unredeemed provisioning key.
func (s Keys) DeleteProvisioningKey(ctx context.Context, id string, audit AuditEvent) error {
	return s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM provisioning_keys WHERE id = $1::uuid`, id)
		if isInvalidText(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("delete provisioning key: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		audit.Target = "provisioning-key:" + id
		return nil
	})
}

// Redemption describes one self-registration with a provisioning key.
type Redemption struct {
	// Digest is the SHA-256 digest of the presented provisioning key.
	Digest secret.Digest
	// Agent describes the agent to create.
	Agent CreateAgentParams
	// MaxDevices caps the number of agents that are not decommissioned, when Limited.
	MaxDevices int
	Limited    bool
	// Audit is recorded in the same transaction; its Target is set to the new agent.
	Audit AuditEvent
}

// Redeemed is what a redemption made.
type Redeemed struct {
	NewAgent
	ProvisioningKeyID string
}

// RedeemProvisioningKey consumes a provisioning key and creates an agent with it, all or nothing, in one
// transaction (docs/security.md, P1, P2, P4):
//   - the key is consumed with DELETE … RETURNING, so of many concurrent redemptions exactly one finds it;
//     an unknown, expired or already redeemed key is ErrNotFound;
//   - when a device limit applies, an advisory lock serialises registrations and the count of agents
//     that are not decommissioned is compared before the insert (ErrDeviceLimit);
//   - any later failure rolls back the delete, so the key stays usable and no half-made agent remains.
func (s Agents) RedeemProvisioningKey(ctx context.Context, r Redemption) (Redeemed, error) {
	var out Redeemed
	err := s.withAudit(ctx, &r.Audit, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `DELETE FROM provisioning_keys WHERE digest = $1 AND expires_at > now() RETURNING id::text`, r.Digest[:]).Scan(&out.ProvisioningKeyID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("consume provisioning key: %w", err)
		}
		if r.Limited {
			if err := checkDeviceLimit(ctx, tx, r.MaxDevices); err != nil {
				return err
			}
		}
		a, err := CreateAgentTx(ctx, tx, r.Agent)
		if err != nil {
			return err
		}
		out.NewAgent = a
		r.Audit.Target = "agent:" + a.AgentUUID
		if r.Audit.Detail == nil {
			r.Audit.Detail = map[string]any{}
		}
		r.Audit.Detail["provisioningKeyId"] = out.ProvisioningKeyID
		r.Audit.Detail["keyId"] = a.KeyID
		return nil
	})
	if err != nil {
		return Redeemed{}, err
	}
	return out, nil
}

// deviceLimitLock is the advisory lock key that serialises agent registrations under a device limit.
const deviceLimitLock = `SELECT pg_advisory_xact_lock(hashtext('iotauth.device_limit'))`

// checkDeviceLimit takes the registration lock (held to the end of tx) and refuses one more agent when
// max are already registered.
func checkDeviceLimit(ctx context.Context, tx pgx.Tx, max int) error {
	if _, err := tx.Exec(ctx, deviceLimitLock); err != nil {
		return fmt.Errorf("lock device count: %w", err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM agents WHERE status <> 'decommissioned'`).Scan(&n); err != nil {
		return fmt.Errorf("count agents: %w", err)
	}
	if n >= max {
		return fmt.Errorf("%d of %d devices registered: %w", n, max, ErrDeviceLimit)
	}
	return nil
}

// CountAgents returns how many agents are not decommissioned (the number the device limit counts).
func (s Agents) CountAgents(ctx context.Context) (int, error) {
	var n int
	err := s.idem().QueryRow(ctx, `SELECT count(*) FROM agents WHERE status <> 'decommissioned'`).Scan(&n)
	return n, err
}
