package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DBTX is what both the pool and a transaction offer, so that a query helper can run inside or outside
// a caller's transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AuditEvent is one row of the audit trail. Actor names who acted ("user:<id>", "agent:<uuid>",
// "provisioning-key:<id>", "anonymous"); Target what was acted on. Detail must never hold a secret.
type AuditEvent struct {
	Actor      string
	Action     string
	Target     string
	Outcome    string // "success" (default) or "failure"
	RemoteAddr string
	Detail     map[string]any
}

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// InsertAudit writes e through db (the pool or a transaction, so that the event commits with the
// change it records).
func InsertAudit(ctx context.Context, db DBTX, e AuditEvent) error {
	if e.Outcome == "" {
		e.Outcome = OutcomeSuccess
	}
	if e.Actor == "" {
		e.Actor = "anonymous"
	}
	detail := []byte("{}")
	if len(e.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(e.Detail); err != nil {
			return fmt.Errorf("encode audit detail: %w", err)
		}
	}
	_, err := db.Exec(ctx, `INSERT INTO audit_events (actor, action, target, outcome, remote_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.Actor, e.Action, e.Target, e.Outcome, e.RemoteAddr, string(detail))
	if err != nil {
		return fmt.Errorf("write audit event %s: %w", e.Action, err)
	}
	return nil
}

// grantingActions are the audited changes that give something (a key, an agent, a state) rather than
// take access away. They do not wait for a synchronous standby: losing one in a failover takes nothing
// away from anybody's security, while answering 503 for one would lose what it gave (a secret shown once,
// a consumed provisioning key) and a repeat could not recover it.
var grantingActions = map[string]bool{
	"agent_create": true, "agent_provision": true, "agent_register": true, "agent_enable": true,
	"agent_import": true, "agent_import_update": true, "legacy_import": true, "target_state_set": true,
	"fast_hash": true, "login": true, "refresh_token": true,
}

// durableAction reports whether an audited change waits for a synchronous standby's confirmation
// (docs/operations.md, "High availability"): every change that takes access away (revoke, disable,
// decommission, rotate, delete, deny, user changes), and any action not known to grant.
func durableAction(action string) bool {
	return !grantingActions[action] && !strings.HasSuffix(action, "_create")
}

// withAudit runs fn in a transaction and then writes *audit in the same transaction, so that a change
// and the event recording it commit together or not at all. Every audited change is a durable one: it
// is acknowledged only once a synchronous standby has it (Store.tx), when durable commits are enabled. fn may fill in *audit (its Target, its
// Detail) from what it changed; when fn fails, nothing is written and the transaction rolls back.
func (s *core) withAudit(ctx context.Context, audit *AuditEvent, fn func(tx pgx.Tx) error) error {
	return Classify(s.tx(ctx, durableAction(audit.Action), func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return InsertAudit(ctx, tx, *audit)
	}))
}

// Audit writes e on its own (for events that change nothing else, such as a failed login).
func (s AuditTrail) Audit(ctx context.Context, e AuditEvent) error {
	return Classify(InsertAudit(ctx, s.pool, e))
}

// AuditMany writes several events in one transaction (the plugin's refused application-key connects,
// batched off the broker thread).
func (s AuditTrail) AuditMany(ctx context.Context, es []AuditEvent) error {
	return Classify(s.tx(ctx, false, func(tx pgx.Tx) error {
		for _, e := range es {
			if err := InsertAudit(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	}))
}

// AuditRecord is a stored audit event.
type AuditRecord struct {
	ID         int64
	At         time.Time
	Actor      string
	Action     string
	Target     string
	Outcome    string
	RemoteAddr string
	Detail     map[string]any
}

// AuditPage selects one page of the audit trail: newest first, events with an id below BeforeID (0:
// from the newest); or, with Ascending, oldest first from the event after AfterID (0: from the first),
// for following the trail. The filters narrow it: an exact Actor, an exact Action, Agent (events whose target or actor
// is that agent, "agent:<uuid>"), and Since/Until on the event time (since inclusive, until exclusive).
type AuditPage struct {
	Limit     int
	BeforeID  int64
	AfterID   int64
	Ascending bool
	Action    string
	Actor     string
	Agent     string
	Since     time.Time
	Until     time.Time
}

// auditFilter builds the WHERE clause of an audit query. It holds only the conditions given, so that each
// can use its index (migration 009) whatever plan PostgreSQL caches for the statement.
type auditFilter struct {
	where []string
	args  []any
}

// add appends cond, whose $? stands for v.
func (f *auditFilter) add(cond string, v any) {
	f.args = append(f.args, v)
	f.where = append(f.where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(f.args))))
}

// filters adds p's filters (Action, Actor, Agent, Since, Until); the page's position is the caller's.
func (f *auditFilter) filters(p AuditPage) {
	if p.Action != "" {
		f.add("action = $?", p.Action)
	}
	if p.Actor != "" {
		f.add("actor = $?", p.Actor)
	}
	if p.Agent != "" {
		f.add("(target = $? OR actor = $?)", "agent:"+p.Agent)
	}
	if !p.Since.IsZero() {
		f.add("at >= $?", p.Since)
	}
	if !p.Until.IsZero() {
		f.add("at < $?", p.Until)
	}
}

// ListAudit returns one page of audit events; more reports whether another page follows.
func (s AuditTrail) ListAudit(ctx context.Context, p AuditPage) (events []AuditRecord, more bool, err error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	var f auditFilter
	if p.BeforeID > 0 {
		f.add("id < $?", p.BeforeID)
	}
	if p.AfterID > 0 {
		f.add("id > $?", p.AfterID)
	}
	f.filters(p)
	where, args := f.where, f.args
	sql := `SELECT id, at, actor, action, target, outcome, remote_addr, detail FROM audit_events`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	order := " ORDER BY id DESC"
	if p.Ascending {
		order = " ORDER BY id ASC"
	}
	args = append(args, p.Limit+1)
	rows, err := s.idem().Query(ctx, sql+order+" LIMIT $"+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", err)
	}
	events, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditRecord, error) {
		var e AuditRecord
		err := r.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.RemoteAddr, &e.Detail)
		return e, err
	})
	if err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", err)
	}
	if len(events) > p.Limit {
		return events[:p.Limit], true, nil
	}
	return events, false, nil
}
