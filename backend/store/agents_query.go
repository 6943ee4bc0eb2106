package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// ErrVersionMismatch means a conditional update named a target version that is no longer current.
var ErrVersionMismatch = errors.New("target version changed")

// Agent statuses.
const (
	StatusActive         = "active"
	StatusDisabled       = "disabled"
	StatusDecommissioned = "decommissioned"
)

// AgentInfo is an agent as operators and the agent itself see it: never a secret.
type AgentInfo struct {
	UUID          string
	Name          string
	Status        string
	TargetState   json.RawMessage
	TargetVersion int64
	ReportedState json.RawMessage // nil until the agent reports
	ReportedAt    *time.Time
	// LastSeenAt is the last use of any of the agent's device keys (an MQTT connect, a device REST
	// call; brokers record uses every few seconds), nil if none was ever used.
	LastSeenAt *time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

const agentColumns = `uuid::text, name, status, target_state, target_version, reported_state, reported_at,
 (SELECT max(k.last_used_at) FROM api_keys k WHERE k.agent_uuid = agents.uuid), created_at, updated_at`

func scanAgent(row pgx.Row) (AgentInfo, error) {
	a, err := scanAgentRow(row)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return AgentInfo{}, ErrNotFound
	}
	return a, err
}

// scanAgentRow is scanAgent without mapping errors to ErrNotFound.
func scanAgentRow(row pgx.Row) (AgentInfo, error) {
	var a AgentInfo
	var target, reported []byte
	err := row.Scan(&a.UUID, &a.Name, &a.Status, &target, &a.TargetVersion, &reported, &a.ReportedAt, &a.LastSeenAt, &a.CreatedAt, &a.UpdatedAt)
	if err != nil {
		return AgentInfo{}, err
	}
	a.TargetState = target
	if reported != nil {
		a.ReportedState = reported
	}
	return a, err
}

// AgentPage selects one page of agents in (created_at, uuid) order, after a cursor.
type AgentPage struct {
	Limit       int
	AfterTime   time.Time // zero: from the start
	AfterUUID   string
	Status      string // "" for every status
	IncludeGone bool   // include decommissioned agents when Status is ""
	// Search, when set, keeps the agents whose uuid is exactly it or whose name contains it (case
	// insensitive; LIKE wildcards in it match literally).
	Search string
	// Online, when set, keeps the agents with (true) or without (false) a live session (docs/presence.md).
	Online *bool
	// Sort orders the page (AgentSorts; "" is SortCreated). For SortName and its descending form the
	// cursor is AfterName and AfterUUID; for the others AfterTime and AfterUUID (for SortLastSeen, an
	// agent never seen sorts as the zero time: last when newest first).
	Sort      string
	AfterName string
}

// The orders of ListAgents: by creation (the default), name or last use of a key, each ascending or,
// with a leading "-", descending; ties are broken by uuid in the same direction.
const (
	SortCreated  = "created"
	SortName     = "name"
	SortLastSeen = "lastSeen"
)

// AgentSorts are the values AgentPage.Sort accepts.
var AgentSorts = []string{"", SortCreated, "-" + SortCreated, SortName, "-" + SortName, SortLastSeen, "-" + SortLastSeen}

// agentSortKey is the SQL of a sort's key; the cursor compares (key, uuid) with the last row seen.
func agentSortKey(sort string) (key, castAfter string, desc bool) {
	desc = strings.HasPrefix(sort, "-")
	switch strings.TrimPrefix(sort, "-") {
	case SortName:
		return "name", "$8::text", desc
	case SortLastSeen:
		return "coalesce((SELECT max(k.last_used_at) FROM api_keys k WHERE k.agent_uuid = agents.uuid), '0001-01-01T00:00:00Z'::timestamptz)", "$1::timestamptz", desc
	}
	return "created_at", "$1::timestamptz", desc
}

// ListAgents returns one page of agents; more reports whether another page follows.
func (s Agents) ListAgents(ctx context.Context, p AgentPage) (agents []AgentInfo, more bool, err error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	if !slices.Contains(AgentSorts, p.Sort) {
		return nil, false, ErrInvalid
	}
	var after *time.Time
	var afterUUID, afterName *string
	key, castAfter, desc := agentSortKey(p.Sort)
	if castAfter == "$8::text" {
		if p.AfterUUID != "" {
			afterName, afterUUID = &p.AfterName, &p.AfterUUID
		}
	} else if !p.AfterTime.IsZero() || p.AfterUUID != "" && strings.TrimPrefix(p.Sort, "-") == SortLastSeen {
		after, afterUUID = &p.AfterTime, &p.AfterUUID
	}
	cmp, dir := ">", "ASC"
	if desc {
		cmp, dir = "<", "DESC"
	}
	var status *string
	if p.Status != "" {
		status = &p.Status
	}
	var search *string
	if p.Search != "" {
		search = &p.Search
	}
	rows, err := s.idem().Query(ctx, `SELECT `+agentColumns+` FROM agents
 WHERE ($2::uuid IS NULL OR (`+key+`, uuid) `+cmp+` (`+castAfter+`, $2::uuid))
   AND ($3::text IS NULL OR status = $3)
   AND ($3::text IS NOT NULL OR $4 OR status <> 'decommissioned')
   AND ($6::text IS NULL OR uuid::text = lower($6)
        OR strpos(lower(name), lower($6)) > 0)
   AND ($7::boolean IS NULL OR $7 = `+liveAgentSession+`)
   AND ($1::timestamptz IS NULL OR $8::text IS NULL OR true) -- both cursors' types, whichever the order uses
 ORDER BY `+key+` `+dir+`, uuid `+dir+` LIMIT $5`, after, afterUUID, status, p.IncludeGone, p.Limit+1, search, p.Online, afterName)
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, Classify(fmt.Errorf("list agents: %w", err))
	}
	agents, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (AgentInfo, error) { return scanAgent(r) })
	if isInvalidText(err) {
		return nil, false, ErrInvalid
	}
	if err != nil {
		return nil, false, fmt.Errorf("list agents: %w", err)
	}
	if len(agents) > p.Limit {
		return agents[:p.Limit], true, nil
	}
	return agents, false, nil
}

// GetAgent returns one agent; a malformed uuid is ErrNotFound.
func (s Agents) GetAgent(ctx context.Context, uuid string) (AgentInfo, error) {
	return scanAgent(s.idem().QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE uuid = $1::uuid`, uuid))
}

// SetTargetState replaces an agent's target state and bumps its version, with its audit event. When
// ifVersion > 0 the update happens only if the current version is still ifVersion (ErrVersionMismatch
// otherwise). Decommissioned agents are ErrDecommissioned.
func (s Agents) SetTargetState(ctx context.Context, uuid string, state json.RawMessage, ifVersion int64, audit AuditEvent) (AgentInfo, error) {
	var a AgentInfo
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		cur, err := scanAgent(tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE uuid = $1::uuid FOR UPDATE`, uuid))
		if err != nil {
			return err
		}
		if cur.Status == StatusDecommissioned {
			return ErrDecommissioned
		}
		if ifVersion > 0 && cur.TargetVersion != ifVersion {
			return ErrVersionMismatch
		}
		// The uuid is known good here: an error is the state's (ErrMalformed, ErrBadCharacter), never "not found".
		a, err = scanAgentRow(tx.QueryRow(ctx, `UPDATE agents SET target_state = $2, target_version = target_version + 1, updated_at = now()
 WHERE uuid = $1::uuid RETURNING `+agentColumns, uuid, string(state)))
		if err != nil {
			return fmt.Errorf("set target state: %w", err)
		}
		audit.Target = "agent:" + uuid
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["targetVersion"] = a.TargetVersion
		return nil
	})
	return a, err
}

// ReportState records the state an agent reports about itself. A malformed uuid is ErrNotFound; an
// invalid-text error is the state's (ErrMalformed, ErrBadCharacter).
func (s Agents) ReportState(ctx context.Context, agentUUID string, state json.RawMessage) (time.Time, error) {
	if !uuid.Valid(agentUUID) {
		return time.Time{}, ErrNotFound
	}
	var at time.Time
	err := s.idem().QueryRow(ctx, `UPDATE agents SET reported_state = $2, reported_at = now() WHERE uuid = $1::uuid AND status <> 'decommissioned' RETURNING reported_at`,
		agentUUID, string(state)).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, ErrNotFound
	}
	return at, Classify(err)
}

// RotateAgentPassword gives an agent that is not decommissioned a new MQTT password, with its audit
// event, and returns the password (shown once). The trigger on mqtt_credentials makes every broker drop
// the sessions that used the old one.
func (s Agents) RotateAgentPassword(ctx context.Context, uuid string, audit AuditEvent) (secret.Secret, error) {
	pw, err := secret.Generate(secret.MQTTPassword)
	if err != nil {
		return "", err
	}
	err = s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		status, err := lockAgentStatus(ctx, tx, uuid)
		if err != nil {
			return err
		}
		if status == StatusDecommissioned {
			return ErrDecommissioned
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mqtt_credentials (agent_uuid, password_hash) VALUES ($1::uuid, $2)
ON CONFLICT (agent_uuid) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`, uuid, passhash.SHA256Hex(pw.Reveal())); err != nil {
			return fmt.Errorf("rotate mqtt password: %w", err)
		}
		audit.Target = "agent:" + uuid
		return nil
	})
	if err != nil {
		return "", err
	}
	return pw, nil
}

// DecommissionAgent retires an agent for good in one transaction: status decommissioned, every key
// revoked, MQTT credentials deleted, audit event written. The triggers make every broker kick it.
// Decommissioning a decommissioned agent changes nothing, writes no audit event and succeeds.
func (s Agents) DecommissionAgent(ctx context.Context, uuid string, audit AuditEvent) error {
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		status, err := lockAgentStatus(ctx, tx, uuid)
		if err != nil {
			return err
		}
		if status == StatusDecommissioned {
			return errUnchanged
		}
		if _, err := tx.Exec(ctx, `UPDATE agents SET status = 'decommissioned', updated_at = now() WHERE uuid = $1::uuid`, uuid); err != nil {
			return fmt.Errorf("decommission agent: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE agent_uuid = $1::uuid AND revoked_at IS NULL`, uuid)
		if err != nil {
			return fmt.Errorf("revoke agent keys: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM mqtt_credentials WHERE agent_uuid = $1::uuid`, uuid); err != nil {
			return fmt.Errorf("delete mqtt credentials: %w", err)
		}
		audit.Target = "agent:" + uuid
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["keysRevoked"] = tag.RowsAffected()
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// errUnchanged ends a withAudit transaction that found nothing to change (and so nothing to audit).
var errUnchanged = errors.New("nothing to change")

// lockAgentStatus locks an agent's row for the rest of tx and returns its status; ErrNotFound for an
// unknown or malformed uuid.
func lockAgentStatus(ctx context.Context, tx pgx.Tx, uuid string) (string, error) {
	var status string
	err := tx.QueryRow(ctx, `SELECT status FROM agents WHERE uuid = $1::uuid FOR UPDATE`, uuid).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidText(err) {
		return "", ErrNotFound
	}
	return status, err
}

// SetAgentActive disables (active false) or re-enables an agent, with its audit event (Target and
// the new status filled in) in the same transaction. A decommissioned agent stays decommissioned:
// ErrDecommissioned. The status change NOTIFYs every broker (trigger agents_notify_status), which
// closes a disabled agent's sessions and refuses its reconnects; device REST calls are refused too.
func (s Agents) SetAgentActive(ctx context.Context, agentUUID string, active bool, audit AuditEvent) (AgentInfo, error) {
	status := StatusDisabled
	if active {
		status = StatusActive
	}
	var a AgentInfo
	err := s.withAudit(ctx, &audit, func(tx pgx.Tx) error {
		cur, err := scanAgent(tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE uuid = $1::uuid FOR UPDATE`, agentUUID))
		if err != nil {
			return err
		}
		if cur.Status == StatusDecommissioned {
			return ErrDecommissioned
		}
		if a, err = scanAgentRow(tx.QueryRow(ctx, `UPDATE agents SET status = $2, updated_at = now() WHERE uuid = $1::uuid
 RETURNING `+agentColumns, agentUUID, status)); err != nil {
			return fmt.Errorf("set agent status: %w", err)
		}
		audit.Target = "agent:" + agentUUID
		if audit.Detail == nil {
			audit.Detail = map[string]any{}
		}
		audit.Detail["status"], audit.Detail["was"] = status, cur.Status
		return nil
	})
	return a, err
}
