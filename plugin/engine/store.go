package engine

import (
	"context"
	"errors"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/denylist"
)

// What the engine needs from PostgreSQL, declared here and satisfied in the plugin's wiring by an
// adapter over backend/store (plugin/pgstore), so that the engine itself never reaches pgx.

// Rechecker reads the current credentials of live sessions' keys (credential.ErrNotFound: none).
type Rechecker interface {
	LookupCredentials(ctx context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error)
}

// Loader reads the whole sets the engine keeps in memory. ActiveCredentials may return an error that
// wraps credential.ErrCorrupt after skipping rows it could not trust.
type Loader interface {
	ActiveCredentials(ctx context.Context, fn func(credential.Credential)) error
	KeyDigests(ctx context.Context, fn func(secret.Digest)) error
	LegacyDigests(ctx context.Context) (map[secret.Digest]struct{}, error)
	Denials(ctx context.Context, since time.Time) ([]denylist.Denial, error)
}

// Writer records what the engine queued: audit events, fast hashes of imported devices, key use.
type Writer interface {
	AuditMany(ctx context.Context, es []AuditEvent) error
	RecordFastHashes(ctx context.Context, hs []FastHash, audit AuditEvent) (int64, error)
	TouchKeys(ctx context.Context, ds []secret.Digest) error
}

// Store is everything the background work needs from PostgreSQL; Ping probes it while the authorizer
// considers it down.
type Store interface {
	Rechecker
	Loader
	Writer
	Ping(ctx context.Context) error
}

// Feed delivers credential changes: Listen calls h until ctx ends, reconnecting on its own.
type Feed interface {
	Listen(ctx context.Context, h ListenHandler)
}

// ListenHandler receives what the feed sees. Connected is called each time the feed is (re-)established
// (notifications sent through the query pool are seen to arrive): changes made while it was down were
// missed. Failed is called for each failed attempt; an error that wraps ErrFeedDeaf means the feed connects
// but notifications sent through the query pool never reach it.
type ListenHandler struct {
	Changed   func(Change)
	Connected func(reconnect bool)
	Failed    func(err error)
}

// ErrFeedDeaf is what a Feed's Failed error wraps when LISTEN is established but receives no notification
// sent through the query pool (plugin_opt_dsn): a pooler in transaction mode, or plugin_opt_listen_dsn
// pointing at another server or database than the writes reach.
var ErrFeedDeaf = errors.New("the change feed receives no notification sent through plugin_opt_dsn")

// AllAgents is the agent a change names when a whole table was emptied (TRUNCATE).
const AllAgents = "*"

// Tables a change names that the engine treats apart.
const (
	LegacyTable = "legacy_usernames" // the set of live legacy usernames
	DenialTable = "subject_denials"  // a subject denial of short-lived credentials
	KeyTable    = "api_keys"
	AppKeyTable = "app_keys"
)

// Change is one announced credential change.
type Change struct {
	Table, Op, Agent string
	// Key is the digest of the key the change concerns, when HasKey.
	Key    secret.Digest
	HasKey bool
	// Subject and DeniedAt are set for DenialTable changes.
	Subject  string
	DeniedAt time.Time
	// Live is set for LegacyTable changes: whether the legacy username now admits.
	Live bool
}

// AuditEvent is one event for the audit trail.
type AuditEvent struct {
	Actor, Action, Target, Outcome string
	Detail                         map[string]any
}

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// FastHash replaces an imported device's slow stored hash (Old) by a fast one (New).
type FastHash struct {
	Agent, Old, New string
}
