package store_test

// The store's conformance suite: every group of methods against a real PostgreSQL (a fresh migrated
// database per group, from test/harness), for the happy path, not-found, conflicts and invalid values
// (as typed errors: errors.Is with the store's sentinels, never SQLSTATE codes), and the coupling of a
// change with its audit event: an audited write that fails leaves neither the change nor an audit row,
// and a write whose audit event cannot be stored leaves no change.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

// db is one group's database: the store under test and a pool of its own for checking rows behind the
// store's back.
type db struct {
	t   *testing.T
	st  *store.Store
	raw *pgxpool.Pool
	ctx context.Context
}

func newDB(t *testing.T) *db {
	t.Helper()
	dsn := pg.NewDatabase(t)
	raw, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &db{t: t, st: harness.OpenStore(t, dsn), raw: raw, ctx: ctx}
}

// count counts the rows of table matching where.
func (d *db) count(table, where string, args ...any) int {
	d.t.Helper()
	var n int
	if err := d.raw.QueryRow(d.ctx, "SELECT count(*) FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		d.t.Fatalf("count %s where %s: %v", table, where, err)
	}
	return n
}

// audits counts the audit events with action.
func (d *db) audits(action string) int {
	d.t.Helper()
	return d.count("audit_events", "action = $1", action)
}

// audit is an audit event for action by the suite.
func audit(action string) store.AuditEvent {
	return store.AuditEvent{Actor: "user:conformance", Action: action, RemoteAddr: "127.0.0.1"}
}

// badAudit is an audit event the database refuses (a NUL in its actor): the write it goes with must
// not happen either.
func badAudit(action string) store.AuditEvent {
	return store.AuditEvent{Actor: "user:\x00", Action: action}
}

// wantErr fails unless errors.Is(err, want) (want nil: err must be nil).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

// newUUID returns a random version 4 uuid.
func newUUID() string {
	var u uuid.UUID
	_, _ = rand.Read(u[:])
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80
	return uuid.Format(u)
}

// unknownUUID is a well-formed uuid no row has.
const unknownUUID = "00000000-0000-4000-8000-000000000000"

// TestStore runs every group on its own database.
func TestStore(t *testing.T) {
	for _, g := range []struct {
		name string
		fn   func(t *testing.T, d *db)
	}{
		{"Agents", testAgents},
		{"AgentState", testAgentState},
		{"APIKeys", testAPIKeys},
		{"AppKeys", testAppKeys},
		{"PublishableKeys", testPublishableKeys},
		{"ProvisioningKeys", testProvisioningKeys},
		{"Users", testUsers},
		{"RefreshTokens", testRefreshTokens},
		{"Audit", testAudit},
		{"Credentials", testCredentials},
		{"Denials", testDenials},
		{"LoginAttempts", testLoginAttempts},
		{"Legacy", testLegacy},
		{"Bulk", testBulk},
		{"Listen", testListen},
	} {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.fn(t, newDB(t))
		})
	}
}

// TestClassify: the store's typed errors keep the driver's error for the log, and are never applied
// twice.
func TestClassify(t *testing.T) {
	if store.Classify(nil) != nil {
		t.Fatal("Classify(nil) is not nil")
	}
	plain := errors.New("plain")
	if store.Classify(plain) != plain {
		t.Fatal("an unclassifiable error was changed")
	}
	e := &store.Error{Kind: store.ErrConflict, Err: plain}
	if store.Classify(e) != error(e) || !errors.Is(e, store.ErrConflict) || !errors.Is(e, plain) || e.Error() != "plain" {
		t.Fatalf("Error %v: kind, cause or text lost", e)
	}
	if !strings.Contains(store.ErrUnavailable.Error(), "unavailable") {
		t.Fatal(store.ErrUnavailable)
	}
}

// TestUnavailable: a database that cannot be reached is ErrUnavailable (worth retrying), not an opaque
// failure and not "not found".
func TestUnavailable(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(fmt.Sprintf("postgres://iotauth@127.0.0.1:%d/none?sslmode=disable", port), store.PoolOptions{ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err = st.Agents.ListAgents(ctx, store.AgentPage{})
	wantErr(t, "ListAgents without a database", err, store.ErrUnavailable)
	_, err = st.Accounts.CreateUser(ctx, "a@example.com", "h", store.RoleAdmin, audit("user_create"))
	wantErr(t, "CreateUser without a database", err, store.ErrUnavailable)
	if errors.Is(err, store.ErrNotFound) || !store.Unavailable(err) {
		t.Fatalf("CreateUser without a database: %v", err)
	}
}
