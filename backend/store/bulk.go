package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/uuid"
)

// BulkAgents describes a batch of agents made at once (factory provisioning): Count agents named
// NamePrefix followed by a zero-padded number from 1, each with a device API key and an MQTT password,
// as CreateAgent makes one.
type BulkAgents struct {
	Count      int
	NamePrefix string
	KeyKind    secret.Kind // secret.APIKey unless the deployment uses test keys
	Expires    time.Time   // zero: the keys never expire
	// BatchSize is how many agents one transaction makes (default 1000).
	BatchSize int
	// MaxDevices caps the agents that are not decommissioned, when Limited: every batch takes the
	// registration lock and checks the count (as RedeemProvisioningKey does); the whole Count is checked
	// before the first batch, so that a shortfall creates nothing.
	MaxDevices int
	Limited    bool
	// Audit is the event template: one event per agent (Target agent:<uuid>, Detail name and key id) is
	// written in each batch's transaction.
	Audit AuditEvent
}

// BulkAgent is one agent of a bulk creation, with its secrets in plaintext (only here and in the output
// they are written to).
type BulkAgent struct {
	NewAgent
	Name string
}

// CreateAgentsBulk makes p.Count agents in transactions of p.BatchSize, each with COPY into agents,
// api_keys, mqtt_credentials and audit_events. After each batch commits, emit receives its agents (to
// print their secrets); an error from emit stops the creation. It returns how many agents were
// committed, also on error: batches already committed stay. A device limit that a batch would pass is
// ErrDeviceLimit (wrapped), before or after earlier batches committed.
func (s Agents) CreateAgentsBulk(ctx context.Context, p BulkAgents, emit func([]BulkAgent) error) (created int, err error) {
	if p.Count < 1 {
		return 0, fmt.Errorf("count %d: %w", p.Count, ErrInvalid)
	}
	if p.KeyKind.Prefix() == "" {
		p.KeyKind = secret.APIKey
	}
	if p.BatchSize <= 0 {
		p.BatchSize = 1000
	}
	if p.Limited {
		n, err := s.CountAgents(ctx)
		if err != nil {
			return 0, fmt.Errorf("count agents: %w", err)
		}
		if n+p.Count > p.MaxDevices {
			return 0, fmt.Errorf("%d of %d devices registered, no room for %d more: %w", n, p.MaxDevices, p.Count, ErrDeviceLimit)
		}
	}
	width := len(strconv.Itoa(p.Count))
	for created < p.Count {
		n := min(p.BatchSize, p.Count-created)
		batch, err := newBulkBatch(p, created, n, width)
		if err != nil {
			return created, err
		}
		if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return copyBulkBatch(ctx, tx, p, batch) }); err != nil {
			return created, err
		}
		created += n
		out := make([]BulkAgent, n)
		for i := range batch {
			out[i] = batch[i].BulkAgent
		}
		if err := emit(out); err != nil {
			return created, err
		}
	}
	return created, nil
}

// bulkRow is one agent of a batch as the COPYs need it.
type bulkRow struct {
	BulkAgent
	uuid, keyID [16]byte
	digest      secret.Digest
	prefix      string
	hash        string
	audit       []byte
}

func newUUID() ([16]byte, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return u, err
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u, nil
}

func newBulkBatch(p BulkAgents, offset, n, width int) ([]bulkRow, error) {
	rows := make([]bulkRow, n)
	for i := range rows {
		r := &rows[i]
		var err error
		if r.uuid, err = newUUID(); err != nil {
			return nil, err
		}
		if r.keyID, err = newUUID(); err != nil {
			return nil, err
		}
		if r.APIKey, err = secret.Generate(p.KeyKind); err != nil {
			return nil, err
		}
		if r.MQTTPassword, err = secret.Generate(secret.MQTTPassword); err != nil {
			return nil, err
		}
		r.AgentUUID, r.KeyID = uuid.Format(r.uuid), uuid.Format(r.keyID)
		r.Name = fmt.Sprintf("%s%0*d", p.NamePrefix, width, offset+i+1)
		r.digest = secret.DigestOf(r.APIKey.Reveal())
		r.prefix = secret.DisplayPrefix(p.KeyKind, r.APIKey.Reveal())
		r.hash = passhash.SHA256Hex(r.MQTTPassword.Reveal())
		detail := map[string]any{"name": r.Name, "keyId": r.KeyID, "bulk": true}
		for k, v := range p.Audit.Detail {
			detail[k] = v
		}
		if r.audit, err = json.Marshal(detail); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

func copyBulkBatch(ctx context.Context, tx pgx.Tx, p BulkAgents, rows []bulkRow) error {
	if p.Limited {
		if _, err := tx.Exec(ctx, deviceLimitLock); err != nil {
			return fmt.Errorf("lock device count: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM agents WHERE status <> 'decommissioned'`).Scan(&n); err != nil {
			return fmt.Errorf("count agents: %w", err)
		}
		if n+len(rows) > p.MaxDevices {
			return fmt.Errorf("%d of %d devices registered, no room for the next %d: %w", n, p.MaxDevices, len(rows), ErrDeviceLimit)
		}
	}
	var expires *time.Time
	if !p.Expires.IsZero() {
		expires = &p.Expires
	}
	copies := []struct {
		table string
		cols  []string
		row   func(r *bulkRow) []any
	}{
		{"agents", []string{"uuid", "name"}, func(r *bulkRow) []any { return []any{r.uuid, r.Name} }},
		{"api_keys", []string{"id", "agent_uuid", "name", "digest", "prefix", "expires_at"}, func(r *bulkRow) []any {
			return []any{r.keyID, r.uuid, r.Name, r.digest[:], r.prefix, expires}
		}},
		{"mqtt_credentials", []string{"agent_uuid", "password_hash"}, func(r *bulkRow) []any { return []any{r.uuid, r.hash} }},
		{"audit_events", []string{"actor", "action", "target", "outcome", "remote_addr", "detail"}, func(r *bulkRow) []any {
			return []any{p.Audit.Actor, p.Audit.Action, "agent:" + r.AgentUUID, OutcomeSuccess, p.Audit.RemoteAddr, r.audit}
		}},
	}
	for _, c := range copies {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return c.row(&rows[i]), nil
		}))
		if err != nil {
			return fmt.Errorf("copy into %s: %w", c.table, checkViolation(err))
		}
	}
	return nil
}
