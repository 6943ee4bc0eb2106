package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/migrations"
	"github.com/iotauth/iotauth/backend/store"
)

var errUsage = errors.New("usage")

// newFlags builds a flag set whose -h prints to stderr and whose errors become errUsage.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("iotauth "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// No usage yet: a command sets its own, or parseFlags and parseArgs set one that names its arguments.
	fs.Usage = nil
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if fs.Usage == nil {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "usage: %s [flags]\n", fs.Name())
			fs.PrintDefaults()
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}

// openStore opens a pool and checks the database answers within 10 s.
func openStore(ctx context.Context, dsn string, durable store.Durability) (*store.Store, error) {
	st, err := store.Open(dsn, store.PoolOptions{MaxConns: 10, AppName: "iotauth", Durable: durable})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL (is it running, and is DATABASE_URL right?): %w", err)
	}
	return st, nil
}

// storeFor opens the store named by the database flags or the environment (dbFlags.resolve).
func storeFor(ctx context.Context, db *dbFlags, stderr io.Writer) (*store.Store, error) {
	dsn, err := db.resolve(os.Getenv, stderr)
	if err != nil {
		return nil, err
	}
	durable, err := durabilityFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	return openStore(ctx, dsn, durable)
}

// durabilityFromEnv reads DURABLE_COMMIT and DURABLE_COMMIT_TIMEOUT for the CLI, whose revocations
// wait for a synchronous standby as the API's do.
func durabilityFromEnv(getenv func(string) string) (store.Durability, error) {
	d := store.Durability{Level: store.DurableRemoteApply, Timeout: store.DefaultDurableTimeout}
	if v := getenv("DURABLE_COMMIT"); v != "" {
		l, err := store.ParseDurableLevel(v)
		if err != nil {
			return d, fmt.Errorf("DURABLE_COMMIT: %w", err)
		}
		d.Level = l
	}
	if v := getenv("DURABLE_COMMIT_TIMEOUT"); v != "" {
		t, err := parseSeconds(v)
		if err != nil {
			return d, fmt.Errorf("DURABLE_COMMIT_TIMEOUT=%q: %v", v, err)
		}
		d.Timeout = t
	}
	return d, nil
}

// cliAudit is the audit event of an action taken with the CLI (by whoever holds database access), its
// actor "cli:<os user>".
func cliAudit(action string) store.AuditEvent {
	return store.AuditEvent{Actor: cliActor(), Action: action, Detail: map[string]any{"via": "cli"}}
}

// migrate applies the embedded migrations.
func migrate(ctx context.Context, dsn string, stdout io.Writer) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, dsn)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot reach PostgreSQL (is it running, and is DATABASE_URL right?): %w", err)
	}
	defer conn.Close(context.Background())
	from, to, err := migrations.Apply(ctx, conn)
	if err != nil {
		return err
	}
	if from == to {
		fmt.Fprintf(stdout, "schema is up to date (version %d)\n", to)
	} else {
		fmt.Fprintf(stdout, "schema migrated from version %d to %d\n", from, to)
	}
	return nil
}

func init() {
	register("migrate", "apply the database schema migrations", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		fs := newFlags("migrate", stderr)
		db := addDBFlags(fs)
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		dsn, err := db.resolve(os.Getenv, stderr)
		if err != nil {
			return err
		}
		return migrate(ctx, dsn, stdout)
	})
}

// cliAuditWith is cliAudit with more detail.
func cliAuditWith(action string, detail map[string]any) store.AuditEvent {
	e := cliAudit(action)
	for k, v := range detail {
		e.Detail[k] = v
	}
	return e
}
