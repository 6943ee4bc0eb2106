// Package migrations owns iotauth's PostgreSQL schema: versioned SQL files embedded in the binary and
// applied in order by jackc/tern under an advisory lock, so that several `iotauth migrate` or `serve`
// processes starting at once apply each version exactly once.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed sql/*.sql
var files embed.FS

// VersionTable records the applied schema version.
const VersionTable = "iotauth_schema_version"

// Apply brings the database behind conn to the newest schema version and reports the versions before
// and after.
func Apply(ctx context.Context, conn *pgx.Conn) (from, to int32, err error) {
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return 0, 0, fmt.Errorf("prepare migrations: %w", err)
	}
	sub, err := fs.Sub(files, "sql")
	if err != nil {
		return 0, 0, err
	}
	if err := m.LoadMigrations(sub); err != nil {
		return 0, 0, fmt.Errorf("load embedded migrations: %w", err)
	}
	from, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return from, 0, fmt.Errorf("apply migrations: %w", err)
	}
	to, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return from, 0, fmt.Errorf("read schema version: %w", err)
	}
	return from, to, nil
}

// Latest is the newest version the embedded files define.
func Latest() (int32, error) {
	sub, err := fs.Sub(files, "sql")
	if err != nil {
		return 0, err
	}
	names, err := migrate.FindMigrations(sub)
	if err != nil {
		return 0, err
	}
	return int32(len(names)), nil
}

// Current reads the schema version applied to the database behind conn without changing anything (a
// migrator would create its version table): 0 when no migration was ever applied.
func Current(ctx context.Context, conn *pgx.Conn) (int32, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, VersionTable).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int32
	err := conn.QueryRow(ctx, `SELECT version FROM `+VersionTable).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
