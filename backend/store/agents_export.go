package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AgentRow is one agent as an export lists it: identity, status and timestamps, never a secret and
// never the (possibly large) target or reported state.
type AgentRow struct {
	UUID          string
	Name          string
	Status        string
	TargetVersion int64
	ReportedAt    *time.Time // nil until the agent first reports
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// EachAgent calls fn for every agent, decommissioned ones included, in (created_at, uuid) order. Rows are
// passed on one at a time as PostgreSQL sends them, so an export of a large fleet holds one row in memory,
// not the fleet. fn must not keep the row's ReportedAt pointer after it returns; an error from fn stops
// the iteration and is returned as is.
func (s Agents) EachAgent(ctx context.Context, fn func(AgentRow) error) error {
	rows, err := s.idem().Query(ctx, `SELECT uuid::text, name, status, target_version, reported_at, created_at, updated_at
 FROM agents ORDER BY created_at, uuid`)
	if err != nil {
		return fmt.Errorf("export agents: %w", err)
	}
	var a AgentRow
	_, err = pgx.ForEachRow(rows, []any{&a.UUID, &a.Name, &a.Status, &a.TargetVersion, &a.ReportedAt, &a.CreatedAt, &a.UpdatedAt},
		func() error { return fn(a) })
	return err
}
