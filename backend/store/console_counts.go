package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/iotauth/iotauth/backend/core/uuid"
)

// The counts below give the operator console the total of each list it pages through. Each counts
// exactly the rows its list function (ListAgents, ListAPIKeys, …) pages through, with the same filters;
// the console shows a count only beside a list the API has just allowed the operator to read.

func (s *core) count(ctx context.Context, what, sql string, args ...any) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, sql, args...).Scan(&n)
	if isInvalidText(err) {
		return 0, ErrInvalid
	}
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", what, err)
	}
	return n, nil
}

// CountAgentList counts the agents ListAgents pages through for these Status, Search, IncludeGone and Online
// (the page's cursor and limit are ignored).
func (s Agents) CountAgentList(ctx context.Context, p AgentPage) (int64, error) {
	var status, search *string
	if p.Status != "" {
		status = &p.Status
	}
	if p.Search != "" {
		search = &p.Search
	}
	return s.count(ctx, "agents", `SELECT count(*) FROM agents
 WHERE ($1::text IS NULL OR status = $1)
   AND ($1::text IS NOT NULL OR $2 OR status <> 'decommissioned')
   AND ($3::text IS NULL OR uuid::text = lower($3) OR strpos(lower(name), lower($3)) > 0)
   AND ($4::boolean IS NULL OR $4 = `+liveAgentSession+`)`, status, p.IncludeGone, search, p.Online)
}

// CountAPIKeys counts the device API keys ListAPIKeys pages through (of one agent, or all for "").
func (s Keys) CountAPIKeys(ctx context.Context, agentUUID string) (int64, error) {
	var agent *string
	if agentUUID != "" {
		agent = &agentUUID
	}
	return s.count(ctx, "api keys", `SELECT count(*) FROM api_keys WHERE ($1::uuid IS NULL OR agent_uuid = $1::uuid)`, agent)
}

// CountAppKeys counts the application keys ListAppKeys pages through.
func (s Keys) CountAppKeys(ctx context.Context) (int64, error) {
	return s.count(ctx, "application keys", `SELECT count(*) FROM app_keys`)
}

// CountPublishableKeys counts the publishable keys ListPublishableKeys pages through.
func (s Keys) CountPublishableKeys(ctx context.Context) (int64, error) {
	return s.count(ctx, "publishable keys", `SELECT count(*) FROM publishable_keys`)
}

// CountProvisioningKeys counts the unredeemed provisioning keys ListProvisioningKeys pages through.
func (s Keys) CountProvisioningKeys(ctx context.Context) (int64, error) {
	return s.count(ctx, "provisioning keys", `SELECT count(*) FROM provisioning_keys`)
}

// CountUsers counts the operators ListUsers pages through.
func (s Accounts) CountUsers(ctx context.Context) (int64, error) {
	return s.count(ctx, "users", `SELECT count(*) FROM users`)
}

// CountAudit counts the audit events ListAudit pages through for these filters (Action, Actor, Agent,
// Since, Until; the page's position and limit are ignored).
func (s AuditTrail) CountAudit(ctx context.Context, p AuditPage) (int64, error) {
	var f auditFilter
	f.filters(p)
	sql := `SELECT count(*) FROM audit_events`
	if len(f.where) > 0 {
		sql += " WHERE " + strings.Join(f.where, " AND ")
	}
	return s.count(ctx, "audit events", sql, f.args...)
}

// auditRefTables are the audit references ("<kind>:<id>") the console can name, with the table and
// column that hold the name.
var auditRefTables = []struct{ kind, sql string }{
	{"user", `SELECT 'user:' || id::text, email FROM users WHERE id = ANY($1::uuid[])`},
	{"agent", `SELECT 'agent:' || uuid::text, name FROM agents WHERE uuid = ANY($1::uuid[])`},
	{"api-key", `SELECT 'api-key:' || id::text, name FROM api_keys WHERE id = ANY($1::uuid[])`},
	{"app-key", `SELECT 'app-key:' || id::text, name FROM app_keys WHERE id = ANY($1::uuid[])`},
	{"provisioning-key", `SELECT 'provisioning-key:' || id::text, name FROM provisioning_keys WHERE id = ANY($1::uuid[])`},
	{"pk", `SELECT 'pk:' || id::text, name FROM publishable_keys WHERE id = ANY($1::uuid[])`},
}

// RefNames returns readable names for references as the audit trail writes them: "user:<id>" → the
// email, "agent:<uuid>" → the agent's name, "api-key:", "app-key:", "provisioning-key:", "pk:" → the
// key's name. The console shows them on its audit screen and its confirmation pages. References of
// other kinds, malformed ids and rows that no longer exist are left out.
func (s AuditTrail) RefNames(ctx context.Context, refs []string) (map[string]string, error) {
	byKind := map[string][]string{}
	for _, ref := range refs {
		kind, id, ok := strings.Cut(ref, ":")
		if ok && uuid.Valid(id) {
			byKind[kind] = append(byKind[kind], strings.ToLower(id))
		}
	}
	out := map[string]string{}
	for _, t := range auditRefTables {
		ids := byKind[t.kind]
		if len(ids) == 0 {
			continue
		}
		rows, err := s.pool.Query(ctx, t.sql, ids)
		if err != nil {
			return nil, fmt.Errorf("name audit references: %w", err)
		}
		for rows.Next() {
			var ref, name string
			if err := rows.Scan(&ref, &name); err != nil {
				rows.Close()
				return nil, fmt.Errorf("name audit references: %w", err)
			}
			out[ref] = name
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("name audit references: %w", err)
		}
	}
	return out, nil
}
