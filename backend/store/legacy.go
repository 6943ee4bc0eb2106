package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// Imported fleets (docs/import.md). An imported device becomes an agent whose "legacy username" is an api_keys
// row: digest = SHA-256 of the device's existing MQTT username, rights {mqtt}, legacy_username set. Its
// existing password hash is the agent's mqtt_credentials row, and its topics are acl_rules rows.

// LegacyKeyName and LegacyKeyPrefix are the name and display prefix of a legacy username's api_keys row.
const (
	LegacyKeyName   = "legacy username"
	LegacyKeyPrefix = "legacy"
)

// ErrNoLegacyUsername means the agent has no live legacy username (it was never imported, or was
// already moved to iotauth keys).
var ErrNoLegacyUsername = errors.New("agent has no live legacy username")

// LegacyRule is one topic rule of an imported device (acl_rules access and pattern).
type LegacyRule struct {
	Access  string
	Pattern string
}

// LegacyAccount is one device to import: its existing username and password hash (a format package
// passhash parses), its client id rule and its topics.
type LegacyAccount struct {
	Username     string
	PasswordHash string
	// ClientID is the exact client id the device must use; "" lets it use any id but an agent's.
	ClientID string
	Rules    []LegacyRule
	// Line is where the account came from in the import file (reported back, never stored).
	Line int
}

// ImportOutcome is what an import did with one account.
type ImportOutcome string

// Import outcomes. A username imported before is updated in place (its hash, client id rule and
// topics), or left unchanged when the file says what the database already has; a username whose
// legacy row was retired (moved to iotauth keys, revoked, or its agent decommissioned) is never
// revived.
const (
	ImportCreated   ImportOutcome = "created"
	ImportUpdated   ImportOutcome = "updated"
	ImportUnchanged ImportOutcome = "unchanged"
	ImportRetired   ImportOutcome = "retired"
)

// ImportedAgent reports one account.
type ImportedAgent struct {
	Line      int           `json:"line"`
	Username  string        `json:"username"`
	AgentUUID string        `json:"agentUuid"`
	Outcome   ImportOutcome `json:"outcome"`
}

// ImportResult is what ImportLegacy did.
type ImportResult struct {
	Agents []ImportedAgent       `json:"agents"`
	Counts map[ImportOutcome]int `json:"counts"`
}

// ImportLegacy imports accounts in one transaction, with one audit event per agent created or updated
// and batch (its Detail completed with the counts) for the whole import. Either every account is
// imported or none is.
func (s Credentials) ImportLegacy(ctx context.Context, accounts []LegacyAccount, batch AuditEvent) (ImportResult, error) {
	res := ImportResult{Counts: map[ImportOutcome]int{}}
	err := s.withAudit(ctx, &batch, func(tx pgx.Tx) error {
		res.Agents = res.Agents[:0]
		clear(res.Counts)
		for _, a := range accounts {
			got, err := importOne(ctx, tx, a, batch.Actor)
			if err != nil {
				return fmt.Errorf("line %d (%s): %w", a.Line, a.Username, err)
			}
			res.Agents = append(res.Agents, got)
			res.Counts[got.Outcome]++
		}
		if batch.Detail == nil {
			batch.Detail = map[string]any{}
		}
		batch.Detail["accounts"] = len(accounts)
		for _, o := range []ImportOutcome{ImportCreated, ImportUpdated, ImportUnchanged, ImportRetired} {
			batch.Detail[string(o)] = res.Counts[o]
		}
		return nil
	})
	if err != nil {
		return ImportResult{}, err
	}
	return res, nil
}

func importOne(ctx context.Context, tx pgx.Tx, a LegacyAccount, actor string) (ImportedAgent, error) {
	if _, err := passhash.Parse(a.PasswordHash); err != nil {
		return ImportedAgent{}, err
	}
	out := ImportedAgent{Line: a.Line, Username: a.Username}
	var (
		keyID, oldHash string
		oldClientID    *string
		retired        bool
	)
	err := tx.QueryRow(ctx, `SELECT k.id::text, k.agent_uuid::text, k.revoked_at IS NOT NULL OR ag.status = 'decommissioned',
       coalesce(k.legacy_hash, ''), k.legacy_client_id
  FROM api_keys k JOIN agents ag ON ag.uuid = k.agent_uuid
 WHERE k.legacy_username = $1 FOR UPDATE OF k`, a.Username).Scan(&keyID, &out.AgentUUID, &retired, &oldHash, &oldClientID)
	var clientID *string
	if a.ClientID != "" {
		clientID = &a.ClientID
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return createLegacy(ctx, tx, a, clientID, actor, out)
	case err != nil:
		return out, fmt.Errorf("find legacy username: %w", err)
	case retired:
		out.Outcome = ImportRetired
		return out, nil
	}
	var changed []string
	if oldHash != a.PasswordHash {
		if _, err := tx.Exec(ctx, `INSERT INTO mqtt_credentials (agent_uuid, password_hash) VALUES ($1::uuid, $2)
ON CONFLICT (agent_uuid) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`, out.AgentUUID, a.PasswordHash); err != nil {
			return out, fmt.Errorf("update password hash: %w", err)
		}
		changed = append(changed, "passwordHash")
	}
	if (oldClientID == nil) != (clientID == nil) || (clientID != nil && *oldClientID != *clientID) {
		changed = append(changed, "clientId")
	}
	if len(changed) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE api_keys SET legacy_hash = $2, legacy_client_id = $3 WHERE id = $1::uuid`,
			keyID, a.PasswordHash, clientID); err != nil {
			return out, fmt.Errorf("update legacy username: %w", checkViolation(err))
		}
	}
	rows, err := tx.Query(ctx, `SELECT access, pattern FROM acl_rules WHERE agent_uuid = $1::uuid ORDER BY id`, out.AgentUUID)
	if err != nil {
		return out, fmt.Errorf("read topics: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowToStructByPos[LegacyRule])
	if err != nil {
		return out, fmt.Errorf("read topics: %w", err)
	}
	if !slices.Equal(have, a.Rules) && !(len(have) == 0 && len(a.Rules) == 0) {
		if _, err := tx.Exec(ctx, `DELETE FROM acl_rules WHERE agent_uuid = $1::uuid`, out.AgentUUID); err != nil {
			return out, fmt.Errorf("replace topics: %w", err)
		}
		if err := insertRules(ctx, tx, out.AgentUUID, a.Rules); err != nil {
			return out, err
		}
		changed = append(changed, "topics")
	}
	if len(changed) == 0 {
		out.Outcome = ImportUnchanged
		return out, nil
	}
	out.Outcome = ImportUpdated
	return out, InsertAudit(ctx, tx, AuditEvent{Actor: actor, Action: "agent_import_update", Target: "agent:" + out.AgentUUID,
		Detail: map[string]any{"legacyUsername": a.Username, "changed": changed}})
}

func createLegacy(ctx context.Context, tx pgx.Tx, a LegacyAccount, clientID *string, actor string, out ImportedAgent) (ImportedAgent, error) {
	name := a.Username
	if r := []rune(name); len(r) > 200 {
		name = string(r[:199]) + "…"
	}
	if err := tx.QueryRow(ctx, `INSERT INTO agents (name) VALUES ($1) RETURNING uuid::text`, name).Scan(&out.AgentUUID); err != nil {
		return out, fmt.Errorf("insert agent: %w", checkViolation(err))
	}
	d := secret.DigestOf(a.Username)
	var keyID string
	if err := tx.QueryRow(ctx, `INSERT INTO api_keys (agent_uuid, name, digest, prefix, rights, legacy_username, legacy_client_id, legacy_hash)
VALUES ($1, $2, $3, $4, ARRAY['mqtt'], $5, $6, $7) RETURNING id::text`,
		out.AgentUUID, LegacyKeyName, d[:], LegacyKeyPrefix, a.Username, clientID, a.PasswordHash).Scan(&keyID); err != nil {
		return out, fmt.Errorf("insert legacy username: %w", checkViolation(err))
	}
	if _, err := tx.Exec(ctx, `INSERT INTO mqtt_credentials (agent_uuid, password_hash) VALUES ($1, $2)`, out.AgentUUID, a.PasswordHash); err != nil {
		return out, fmt.Errorf("insert password hash: %w", err)
	}
	if err := insertRules(ctx, tx, out.AgentUUID, a.Rules); err != nil {
		return out, err
	}
	out.Outcome = ImportCreated
	scheme := "unknown"
	if h, err := passhash.Parse(a.PasswordHash); err == nil {
		scheme = SchemeName(h.Scheme())
	}
	detail := map[string]any{"legacyUsername": a.Username, "keyId": keyID, "hashScheme": scheme, "topics": len(a.Rules)}
	if a.ClientID != "" {
		detail["clientId"] = a.ClientID
	} else {
		detail["clientId"] = "any"
	}
	return out, InsertAudit(ctx, tx, AuditEvent{Actor: actor, Action: "agent_import", Target: "agent:" + out.AgentUUID, Detail: detail})
}

func insertRules(ctx context.Context, tx pgx.Tx, agent string, rules []LegacyRule) error {
	for _, r := range rules {
		if _, err := tx.Exec(ctx, `INSERT INTO acl_rules (agent_uuid, access, pattern) VALUES ($1::uuid, $2, $3)`, agent, r.Access, r.Pattern); err != nil {
			return fmt.Errorf("insert topic %q: %w", r.Pattern, checkViolation(err))
		}
	}
	return nil
}

// SchemeName names a hash scheme for audit events and reports.
func SchemeName(s passhash.Scheme) string {
	switch s {
	case passhash.SHA256:
		return "sha256"
	case passhash.Argon2id:
		return "argon2id"
	case passhash.Bcrypt:
		return "bcrypt"
	case passhash.PBKDF2SHA512:
		return "mosquitto-pbkdf2-sha512"
	case passhash.SaltedSHA512:
		return "mosquitto-sha512"
	case passhash.GoAuthPBKDF2:
		return "go-auth-pbkdf2"
	}
	return "unknown"
}

// LegacyDigests returns the digests of every live legacy username (not revoked, agent not
// decommissioned), for the broker's in-memory set.
func (s Credentials) LegacyDigests(ctx context.Context) (map[secret.Digest]struct{}, error) {
	rows, err := s.idem().Query(ctx, `SELECT k.digest FROM api_keys k JOIN agents a ON a.uuid = k.agent_uuid
 WHERE k.legacy_username IS NOT NULL AND k.revoked_at IS NULL AND a.status <> 'decommissioned'`)
	if err != nil {
		return nil, fmt.Errorf("load legacy usernames: %w", err)
	}
	defer rows.Close()
	out := map[secret.Digest]struct{}{}
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("load legacy usernames: %w", err)
		}
		var d secret.Digest
		if len(raw) == len(d) {
			copy(d[:], raw)
			out[d] = struct{}{}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load legacy usernames: %w", err)
	}
	return out, nil
}

// FastHash asks to replace an agent's slow stored password hash Old by New (the sha256$ hash of the
// same password, learnt at its first successful connect).
type FastHash struct {
	Agent string
	Old   string
	New   string
}

// RecordFastHashes replaces slow hashes by fast ones in one statement, each only while the agent's hash
// is still exactly Old (a rotation or re-import in between wins), and audits the batch. It returns how
// many were replaced.
func (s Credentials) RecordFastHashes(ctx context.Context, hs []FastHash, audit AuditEvent) (int64, error) {
	agents, olds, news := make([]string, len(hs)), make([]string, len(hs)), make([]string, len(hs))
	for i, h := range hs {
		agents[i], olds[i], news[i] = h.Agent, h.Old, h.New
	}
	var n int64
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE mqtt_credentials c SET password_hash = v.new, updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v (agent, old, new)
 WHERE c.agent_uuid = v.agent AND c.password_hash = v.old`, agents, olds, news)
		if err != nil {
			return fmt.Errorf("record fast password hashes: %w", err)
		}
		n = tag.RowsAffected()
		if n == 0 {
			return errUnchanged
		}
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["recorded"] = n
		if len(agents) <= 100 {
			audit.Detail["agents"] = agents
		}
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return 0, nil
	}
	return n, err
}

// MovedAgent is what MoveLegacyToKeys made: the agent's new device API key and MQTT password (shown once)
// and the legacy username it retired.
type MovedAgent struct {
	KeyID          string
	APIKey         secret.Secret
	MQTTPassword   secret.Secret
	LegacyUsername string
}

// MoveLegacyToKeys moves an imported agent to iotauth keys in one transaction: a new device API key and
// MQTT password, and its legacy username retired (revoked). The triggers make every broker forget the
// name and close the sessions that used it. ErrNoLegacyUsername when the agent has none live.
func (s Credentials) MoveLegacyToKeys(ctx context.Context, agentUUID string, kind secret.Kind, audit AuditEvent) (MovedAgent, error) {
	if kind.Prefix() == "" {
		kind = secret.APIKey
	}
	key, err := secret.Generate(kind)
	if err != nil {
		return MovedAgent{}, err
	}
	pw, err := secret.Generate(secret.MQTTPassword)
	if err != nil {
		return MovedAgent{}, err
	}
	out := MovedAgent{APIKey: key, MQTTPassword: pw}
	err = s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		status, err := lockAgentStatus(ctx, tx, agentUUID)
		if err != nil {
			return err
		}
		if status == StatusDecommissioned {
			return ErrDecommissioned
		}
		err = tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = now()
 WHERE agent_uuid = $1::uuid AND legacy_username IS NOT NULL AND revoked_at IS NULL RETURNING legacy_username`, agentUUID).Scan(&out.LegacyUsername)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoLegacyUsername
		}
		if err != nil {
			return fmt.Errorf("retire legacy username: %w", err)
		}
		d := secret.DigestOf(key.Reveal())
		if err := tx.QueryRow(ctx, `INSERT INTO api_keys (agent_uuid, name, digest, prefix) VALUES ($1, $2, $3, $4) RETURNING id::text`,
			agentUUID, "moved from "+LegacyKeyName, d[:], secret.DisplayPrefix(kind, key.Reveal())).Scan(&out.KeyID); err != nil {
			return fmt.Errorf("insert api key: %w", checkViolation(err))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mqtt_credentials (agent_uuid, password_hash) VALUES ($1::uuid, $2)
ON CONFLICT (agent_uuid) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`, agentUUID, passhash.SHA256Hex(pw.Reveal())); err != nil {
			return fmt.Errorf("set mqtt password: %w", err)
		}
		audit.Target = "agent:" + agentUUID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["legacyUsername"] = out.LegacyUsername
		audit.Detail["keyId"] = out.KeyID
		return nil
	})
	if err != nil {
		return MovedAgent{}, err
	}
	return out, nil
}
