package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/migrations"
)

// checkSchema refuses to serve a database whose schema is missing or older than this binary's: without
// this check, serve on an empty database would report ready and answer every route with 500. A newer schema is
// logged and accepted: migrations only add, so an older binary keeps working during a rolling upgrade.
func checkSchema(ctx context.Context, dsn string, log *slog.Logger) error {
	latest, err := migrations.Latest()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return fmt.Errorf("cannot reach PostgreSQL (is it running, and is DATABASE_URL right?): %w", err)
	}
	defer conn.Close(context.Background())
	cur, err := migrations.Current(cctx, conn)
	if err != nil {
		return err
	}
	const fix = "run `iotauth migrate` with the same database URL, or start `iotauth serve -migrate` (IOTAUTH_MIGRATE=true) to apply the migrations at start"
	switch {
	case cur == 0:
		return fmt.Errorf("the database has no iotauth schema (no migration applied; this iotauth needs version %d): %s", latest, fix)
	case cur < latest:
		return fmt.Errorf("the database schema is at version %d but this iotauth needs version %d: %s", cur, latest, fix)
	case cur > latest:
		log.Warn("the database schema is newer than this iotauth binary knows; serving anyway, but upgrade iotauth", "schemaVersion", cur, "binaryVersion", latest)
	}
	return nil
}
