// Package engine is the plugin's decision engine: it admits or refuses connects, answers the ACL checks
// the shim leaves to Go, keeps the admitted sessions, re-checks them when credentials change and kicks
// those no longer allowed, and runs the background loops that keep it in step with PostgreSQL (the change
// feed, the loaders, the periodic resync, the writes of audit events and key use). It composes the
// plugin's decision packages (auth, session, keyset, budget, denylist, legacy, presence).
//
// It is plain Go: no cgo, no Mosquitto, no PostgreSQL. Mosquitto is behind the Broker interface, the
// database behind the small store interfaces declared here, and time behind an injected clock and ticker,
// so that the whole event protocol (connect, ACL, disconnect, NOTIFY, tick, reload, takeover, ended
// sessions) is tested with fakes. The cgo package main only converts values at the edge and wires an
// Engine to the real broker and store.
package engine

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/budget"
	"github.com/iotauth/iotauth/plugin/denylist"
	"github.com/iotauth/iotauth/plugin/engine/batch"
	"github.com/iotauth/iotauth/plugin/keyset"
	"github.com/iotauth/iotauth/plugin/legacy"
	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/options"
	"github.com/iotauth/iotauth/plugin/presence"
	"github.com/iotauth/iotauth/plugin/session"
)

// Result is the engine's answer to the broker; package main maps it to Mosquitto's return codes.
type Result int

const (
	// OK admits a connect or allows an ACL check.
	OK Result = iota
	// Refused refuses a connect (CONNACK "not authorised").
	Refused
	// Denied denies an ACL check.
	Denied
	// Defer hands the decision to the next plugin in the chain.
	Defer
)

// Broker is what the engine needs from Mosquitto. Every method is called on the broker's main thread,
// except RequestTick (any goroutine).
type Broker interface {
	session.Broker
	// ClientID and ClientUsername are a connected client's id and current username (copies).
	ClientID(client uintptr) string
	ClientUsername(client uintptr) string
	// ClientInfo is the client's MQTT protocol version and IP address (the zero Addr when unknown).
	ClientInfo(client uintptr) (protocol int, addr netip.Addr)
	// ReplaceClientID gives a client being refused another id, no longer than its own.
	ReplaceClientID(client uintptr, id string) bool
	// TicksSeen counts the TICK events the broker delivered.
	TicksSeen() uint64
	// Publish publishes payload from the broker to ctopic (the topic followed by a NUL byte).
	Publish(ctopic, payload []byte) bool
	// Log writes a line to the broker's log at one of the levels of Config.Levels.
	Log(level int, msg string)
}

// Principal is who a connect claimed to be or a session is, for metrics.
type Principal uint8

// The principals.
const (
	Agent Principal = iota
	App
	Token
)

// ErrReservedName refuses a connect that presents one of the plugin's own session names without being
// that live session (Mosquitto re-checking it on SIGHUP).
var ErrReservedName = errors.New("username uses the plugin's reserved prefix but matches no live session")

// Metrics is what the engine reports to the plugin's instrumentation.
type Metrics interface {
	Allowed(Principal)
	Refused(Principal, error)
	Deferred()
	Kicked(reason error)
	// Notified counts a notification and returns its arrival time (zero: not timed).
	Notified() time.Time
	Applied(arrived time.Time)
	AuditDropped(n int)
	Preloaded(n int, took time.Duration)
}

// Tokens verifies short-lived MQTT credentials; Reload re-reads its public keys (SIGHUP).
type Tokens interface {
	auth.TokenVerifier
	Reload() error
	Keys() int
}

// Config is what New needs: the parsed options, the broker, the stores, and the clock.
type Config struct {
	Options options.Config
	Broker  Broker
	// Lookup answers the connects' lookups (on the broker's thread); Store serves the background work;
	// Feed delivers the change notifications.
	Lookup auth.Lookup
	Store  Store
	Feed   Feed
	// Tokens is nil when short-lived credentials are refused.
	Tokens Tokens
	// Metrics may be nil.
	Metrics Metrics
	// Presence is nil when presence is not recorded (docs/presence.md).
	Presence *presence.Recorder
	// Log and Logs are the logger and the queue it writes to; Levels map its levels to Broker.Log's.
	Log    *slog.Logger
	Logs   *logq.Queue
	Levels logq.Levels
	// DenialKeep is how long a subject denial can matter: the longest lifetime of a short-lived
	// credential and the clock skew its verifier allows, with a margin (plugin/mqtttoken's bounds, from
	// the wiring: the engine does not import the credential format). Older denials are neither loaded
	// nor kept.
	DenialKeep time.Duration
	// MaxMark is the longest fast-path prefix the broker keeps (0: none is kept).
	MaxMark int
	// Now is the clock (default time.Now); BudgetNow the unknown-key lookup budget's (default Now).
	Now       func() time.Time
	BudgetNow func() time.Time
	// Every starts a ticker for the periodic jobs (default time.NewTicker).
	Every func(time.Duration) (c <-chan time.Time, stop func())
	// Hook, when set, sees every username, topic and changed agent first (test builds only).
	Hook func(string)
}

// The plugin gives an authorised client the username iotauth-agent:<uuid> in place of its API key, so
// that the key never reaches the broker's "New client connected" log line (iotauth-agent-custom:<uuid>
// for an agent with extra acl_rules, so that the log tells them apart). Such names are not well-formed
// keys, and a client presenting one itself is refused (it has no session to match). The names grant
// nothing: every decision rests on the session table, keyed by the broker's client handle.
//
// An application key's session is named iotauth-app:<key id> the same way, and a short-lived
// credential's iotauth-token:<token id> (its password, the signed token, is the secret; the id is not).
const (
	reservedPrefix      = "iotauth-agent"
	reservedAppPrefix   = "iotauth-app"
	reservedTokenPrefix = "iotauth-token"
	renamedPrefix       = "iotauth-agent:"
	renamedCustomPrefix = "iotauth-agent-custom:"
	renamedAppPrefix    = "iotauth-app:"
	renamedTokenPrefix  = "iotauth-token:"
)

// reservedName reports whether a username is one of the names the plugin gives its sessions.
func reservedName(username string) bool {
	return strings.HasPrefix(username, reservedPrefix) || strings.HasPrefix(username, reservedAppPrefix) ||
		strings.HasPrefix(username, reservedTokenPrefix)
}

// Bounds of the writes waiting for PostgreSQL (plugin/engine/batch). maxQueuedAudits: refused connects
// and kicks (written once a second, kept while PostgreSQL does not answer; beyond it they are counted,
// and the count is audited); maxQueuedFastHashes: fast hashes of imported devices, one per agent (once a
// second); maxQueuedTouches: keys that connected, once each (every touchEvery).
const (
	maxQueuedAudits     = 1000
	maxQueuedFastHashes = 10000
	maxQueuedTouches    = 100000
	touchEvery          = 5 * time.Second
)

// Engine is the plugin: configuration, authorizer, and the sessions it admitted. BasicAuth, ACLCheck,
// Disconnect, Tick and Reload run on the broker's thread; the rest on background goroutines.
type Engine struct {
	cfg        options.Config
	broker     Broker
	store      Store
	feed       Feed
	auth       *auth.Authorizer
	sessions   *session.Table
	tokens     Tokens // nil: short-lived credentials are refused
	denials    *denylist.List
	metrics    Metrics
	counting   bool // metrics were configured (skip working out what only they would use)
	log        *slog.Logger
	logs       *logq.Queue
	levels     logq.Levels
	now        func() time.Time
	denialKeep time.Duration
	every      func(time.Duration) (<-chan time.Time, func())
	hook       func(string)
	fastACL    bool

	appPrefix string // an application key's prefix: connects with it count as principal App

	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup

	rechecks *rechecks
	keys     *knownKeys
	legacy   *legacyNames
	denied   *denials
	audits   *auditLog
	presence presenceHooks
	writes   *writes

	refusals *rate.Limiter
	unlogged atomic.Int64

	ticks     tickWatch // main thread only
	reloading bool      // main thread only: from RELOAD to the next TICK, Mosquitto re-checks every client
}

// tickWatch notices a broker that delivers no TICK event: Mosquitto 2.0.11 to 2.0.14 with
// per_listener_settings true. Mosquitto offers plugins no way to learn its version, so the plugin cannot
// refuse to start there; it logs an error at connects instead, at most once a minute.
type tickWatch struct {
	ok        bool      // a TICK arrived
	firstAuth time.Time // the first connect seen without any TICK
	warned    time.Time
}

type noMetrics struct{}

func (noMetrics) Allowed(Principal)            {}
func (noMetrics) Refused(Principal, error)     {}
func (noMetrics) Deferred()                    {}
func (noMetrics) Kicked(error)                 {}
func (noMetrics) Notified() time.Time          { return time.Time{} }
func (noMetrics) Applied(time.Time)            {}
func (noMetrics) AuditDropped(int)             {}
func (noMetrics) Preloaded(int, time.Duration) {}

// New builds an engine; Start starts its background work.
func New(c Config) (*Engine, error) {
	cfg := c.Options
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.BudgetNow == nil {
		c.BudgetNow = c.Now
	}
	if c.Every == nil {
		c.Every = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if c.DenialKeep <= 0 {
		return nil, errors.New("engine: Config.DenialKeep is not set")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Logs == nil {
		c.Logs = logq.New()
	}
	e := &Engine{
		cfg: cfg, broker: c.Broker, store: c.Store, feed: c.Feed, metrics: c.Metrics, counting: c.Metrics != nil,
		log: c.Log, logs: c.Logs, levels: c.Levels, now: c.Now, every: c.Every, hook: c.Hook,
		appPrefix: secret.AppKindFor(cfg.KeyKind).Prefix(),
		refusals:  rate.NewLimiter(rate.Limit(1), 5),
	}
	if e.metrics == nil {
		e.metrics = noMetrics{}
	}
	ca, err := auth.NewCache(cache.Options[auth.Entry, auth.Group]{
		Size: cfg.CacheSize, TTL: cfg.CacheTTL, NegativeTTL: cfg.NegativeTTL, StaleGrace: cfg.StaleGrace, Group: auth.GroupOf, Now: c.Now,
	})
	if err != nil {
		return nil, err
	}
	known := keyset.New()
	lookups := budget.New(cfg.UnknownKeyLookups, known, c.BudgetNow)
	var verifier auth.TokenVerifier // stays a nil interface without a key file
	if c.Tokens != nil {
		e.tokens, verifier = c.Tokens, c.Tokens
	}
	e.denialKeep = c.DenialKeep
	e.denials = denylist.New(c.DenialKeep)
	names := legacy.New()
	e.writes = &writes{e: e, fast: batch.New[string, FastHash](maxQueuedFastHashes, 0, nil),
		touches: batch.New[secret.Digest, struct{}](maxQueuedTouches, touchEvery, nil)}
	e.auth = auth.New(auth.Config{
		Budget: authBudget(lookups), KeyKind: cfg.KeyKind, ClientID: cfg.ClientID, Rules: cfg.ACL, DBTimeout: cfg.DBTimeout,
		DeferUnknown: cfg.DeferUnknown, NamePrefix: renamedPrefix, CustomNamePrefix: renamedCustomPrefix,
		AppNamePrefix: renamedAppPrefix, Log: e.log, Now: e.now,
		Legacy: names, SlowBudget: auth.NewTimeBudget(cfg.SlowHashBudget, time.Second, nil), RecordFastHash: e.writes.queueFastHash,
		Tokens: verifier, Denials: e.denials, TokenNamePrefix: renamedTokenPrefix,
		// Entries served past cache_ttl while the change feed is up are re-read in the background; one
		// that changed without a notification has its agent's live sessions re-checked.
		Refresh: c.Store, Refreshed: func(agent string) { e.rechecks.later(agent) },
	}, c.Lookup, ca)
	// The broker answers a marked client's publishes and deliveries itself (c/iotauth_marks.h) when the
	// configured rules are one namespace per agent and the longest mark fits.
	// Not under the presence topics either: there Go must refuse every client's publish, which a mark
	// answered in C would allow.
	prefix, fast := acl.FastPrefix(cfg.ACL)
	if !fast || len(prefix)+36 > c.MaxMark || strings.HasPrefix(prefix, presence.TopicPrefix) {
		prefix = ""
	}
	e.fastACL = prefix != ""
	e.sessions = session.New(session.Config{Broker: c.Broker, FastPrefix: prefix, ReadMarks: true, Log: e.log, Now: e.now, Kicked: e.metrics.Kicked})
	e.rechecks = &rechecks{e: e, pending: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	e.keys = &knownKeys{e: e, set: known, load: make(chan struct{}, 1), loaded: make(chan struct{}), checks: map[secret.Digest]struct{}{}}
	e.legacy = &legacyNames{e: e, set: names, load: make(chan struct{}, 1), loaded: make(chan struct{})}
	e.denied = &denials{e: e, fail: rate.Sometimes{Interval: 30 * time.Second}}
	e.denied.stale.Store(true)
	e.audits = newAuditLog(e)
	e.presence = presenceHooks{e: e, rec: c.Presence}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Auth is the engine's authorizer (for the metrics' sources).
func (e *Engine) Auth() *auth.Authorizer { return e.auth }

// Sessions is the engine's session table (for the metrics' sources).
func (e *Engine) Sessions() *session.Table { return e.sessions }

// KnownKeys is the size of the set of known keys (for the metrics' sources).
func (e *Engine) KnownKeys() int { return e.keys.set.Len() }

// Cache returns the cache's figures (for the metrics' sources).
func (e *Engine) Cache() cache.Stats { return e.auth.Cache().Stats() }

// Close stops the background work and ends the live sessions' presence (within 3 s).
func (e *Engine) Close() {
	e.cancel()
	e.wg.Wait()
	e.presence.close()
}

// authBudget hands the authorizer the lookup budget, or no budget at all (a nil *budget.Budget in the
// interface would not compare equal to nil).
func authBudget(b *budget.Budget) interface{ Allow(secret.Digest) bool } {
	if b == nil {
		return nil
	}
	return b
}
