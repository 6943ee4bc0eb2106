package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auditq"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/budget"
	"github.com/iotauth/iotauth/plugin/denylist"
	"github.com/iotauth/iotauth/plugin/keyset"
	"github.com/iotauth/iotauth/plugin/legacy"
	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/metrics"
	"github.com/iotauth/iotauth/plugin/mqtttoken"
	"github.com/iotauth/iotauth/plugin/options"
	"github.com/iotauth/iotauth/plugin/presence"
	"github.com/iotauth/iotauth/plugin/session"
)

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

// denialKeep is how long a subject denial can matter: the longest credential lifetime and the clock
// skew the verifier allows, with a margin. Older denials are neither loaded nor kept.
const denialKeep = mqttcred.MaxTTL + 2*time.Minute

// instance is the plugin: configuration, store, authorizer, and the sessions it admitted.
type instance struct {
	cfg      options.Config
	store    *store.Store // background work: LISTEN, re-checks, preload, key use
	lookup   *store.Store // connects, on the broker thread
	feed     *store.Store // the change feed's LISTEN: store, or plugin_opt_listen_dsn's
	auth     *auth.Authorizer
	sessions *session.Table
	lookups  *budget.Budget      // nil without a bound
	tokens   *mqtttoken.Verifier // nil: short-lived credentials are refused
	denials  *denylist.List
	// denialsStale is set while the deny list needs a full load from the store (at start, after LISTEN
	// reconnected): the periodic loop retries until one succeeds.
	denialsStale atomic.Bool
	denialFail   rate.Sometimes
	log          *slog.Logger
	logs         *logq.Queue
	cancel       context.CancelFunc
	wg           sync.WaitGroup

	// metrics is nil unless plugin_opt_metrics_listen is set (its methods then do nothing); metricsSrv
	// serves it on metricsLn.
	metrics    *metrics.Metrics
	metricsSrv *http.Server
	metricsLn  net.Listener
	appPrefix  string // an application key's prefix: connects with it count as principal "app"

	pendingMu sync.Mutex
	pending   map[string]time.Time // agents whose sessions need a re-check: when the change arrived (zero: not a NOTIFY)
	wake      chan struct{}

	refusals *rate.Limiter
	unlogged atomic.Int64

	usedMu sync.Mutex
	used   map[secret.Digest]struct{} // keys that connected since the last TouchKeys

	// audits holds refused connects and kicks until the background loop writes them; a failed write
	// (PostgreSQL down, a failover) keeps them for the next attempt.
	audits    *auditq.Queue[store.AuditEvent]
	auditLost rate.Sometimes // logging of dropped audit events
	auditFail rate.Sometimes // logging of failed writes of audit events
	// auditRetrying: the last write of audit events failed (the periodic loop's own).
	auditRetrying bool

	// legacy is the set of live legacy usernames (imported devices), loaded by the background and kept
	// current by notifications; legacyLoad asks for a full load.
	legacy       *legacy.Set
	legacyLoad   chan struct{}
	legacyLoaded chan struct{} // closed by the first successful load
	legacyOnce   sync.Once

	// keys is the set of every key PostgreSQL holds (plugin/keyset), so that real keys skip the lookup
	// budget; keysLoad asks for a full load, keyChecks are changed keys to re-read (knownkeys.go).
	keys        *keyset.Set
	keysLoad    chan struct{}
	keysLoaded  chan struct{} // closed by the first successful full load
	keysOnce    sync.Once
	keyChecksMu sync.Mutex
	keyChecks   map[secret.Digest]struct{}

	fastMu sync.Mutex
	fast   map[string]store.FastHash // by agent: fast hashes to record, written by the background loop

	presence *presence.Recorder // nil with plugin_opt_presence false (docs/presence.md)

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

// maxQueuedAudits bounds the refused connects and kicks waiting for the audit trail (written once a
// second, and kept while PostgreSQL does not answer): a flood or an outage must not grow memory; beyond
// it they are counted, and the count is audited.
const maxQueuedAudits = 1000

func newInstance(kv [][2]string) (*instance, error) {
	cfg, err := options.Parse(kv)
	if err != nil {
		return nil, err
	}
	logs := logq.New()
	logs.OnPush(broker{}.RequestTick)
	log := logq.NewLogger(logs, logq.ParseLevel(cfg.LogLevel), logq.Levels{Debug: levelDebug, Info: levelNotice, Warning: levelWarning, Error: levelErr})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	st, err := store.Open(cfg.DSN, store.PoolOptions{
		MaxConns: cfg.MaxConns, MinConns: 1, ConnectTimeout: cfg.DBTimeout + 2*time.Second, AppName: "mosquitto-iotauth",
	})
	if err != nil {
		return nil, fmt.Errorf("plugin_opt_dsn: %w", err)
	}
	// Lookups for connects run on the broker's thread: they get their own small pool of blocking sockets
	// (see store.PoolOptions.SocketTimeout), kept open by the pool's background health check.
	lookup, err := store.Open(cfg.DSN, store.PoolOptions{
		MaxConns: 2, MinConns: 1, ConnectTimeout: cfg.DBTimeout + 2*time.Second, AppName: "mosquitto-iotauth-lookup",
		SocketTimeout: cfg.DBTimeout,
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("plugin_opt_dsn: %w", err)
	}
	// The change feed needs a session of its own (LISTEN), which a transaction-pooling PgBouncer cannot
	// give: plugin_opt_listen_dsn points it at PostgreSQL directly. Its pool is never used for queries.
	feed := st
	if cfg.ListenDSN != "" {
		if feed, err = store.Open(cfg.ListenDSN, store.PoolOptions{MaxConns: 1, ConnectTimeout: cfg.DBTimeout + 2*time.Second,
			AppName: "mosquitto-iotauth-listen"}); err != nil {
			lookup.Close()
			st.Close()
			return nil, fmt.Errorf("plugin_opt_listen_dsn: %w", err)
		}
	}
	closeStores := func() {
		lookup.Close()
		st.Close()
		if feed != st {
			feed.Close()
		}
	}
	c, err := auth.NewCache(cache.Options[auth.Entry, auth.Group]{
		Size: cfg.CacheSize, TTL: cfg.CacheTTL, NegativeTTL: cfg.NegativeTTL, StaleGrace: cfg.StaleGrace, Group: auth.GroupOf,
	})
	if err != nil {
		closeStores()
		return nil, err
	}
	keys := keyset.New()
	lookups := budget.New(cfg.UnknownKeyLookups, keys, testClock())
	var tokens *mqtttoken.Verifier
	var verifier auth.TokenVerifier // stays a nil interface without a key file
	if cfg.MQTTTokenPublicKey != "" {
		if tokens, err = mqtttoken.Open(cfg.MQTTTokenPublicKey, nil); err != nil {
			closeStores()
			return nil, err
		}
		verifier = tokens
		log.Info("short-lived MQTT credentials accepted", "public_keys", tokens.Keys(), "file", cfg.MQTTTokenPublicKey)
	}
	denials := denylist.New(denialKeep)
	// Metrics read the authorizer's and the session table's own counters when scraped (after both exist).
	var (
		m        *metrics.Metrics
		a        *auth.Authorizer
		sessions *session.Table
	)
	if cfg.MetricsListen != "" {
		m = metrics.New(metrics.Sources{
			Cache: c.Stats, Auth: func() auth.Stats { return a.Stats() }, Sessions: func() (int, int) { return sessions.Len() },
			KnownKeys: keys.Len,
		})
	}
	names := legacy.New()
	in := &instance{legacy: names, legacyLoad: make(chan struct{}, 1), legacyLoaded: make(chan struct{}), fast: map[string]store.FastHash{},
		keys: keys, keysLoad: make(chan struct{}, 1), keysLoaded: make(chan struct{}), keyChecks: map[secret.Digest]struct{}{}}
	a = auth.New(auth.Config{
		Budget: authBudget(lookups), KeyKind: cfg.KeyKind, ClientID: cfg.ClientID, Rules: cfg.ACL, DBTimeout: cfg.DBTimeout,
		DeferUnknown: cfg.DeferUnknown, NamePrefix: renamedPrefix, CustomNamePrefix: renamedCustomPrefix,
		AppNamePrefix: renamedAppPrefix, Log: log,
		Legacy: names, SlowBudget: auth.NewTimeBudget(cfg.SlowHashBudget, time.Second, nil), RecordFastHash: in.queueFastHash,
		Tokens: verifier, Denials: denials, TokenNamePrefix: renamedTokenPrefix,
		Refresh: st, Refreshed: func(agent string) { in.recheckLater(agent) },
	}, m.Timed(lookup), c)
	// The broker answers a marked client's publishes and deliveries itself (c/iotauth_marks.h) when the
	// configured rules are one namespace per agent and the longest mark fits.
	// Not under the presence topics either: there Go must refuse every client's publish, which a mark
	// answered in C would allow.
	prefix, fast := acl.FastPrefix(cfg.ACL)
	if !fast || len(prefix)+36 > maxMark || strings.HasPrefix(prefix, presence.TopicPrefix) {
		prefix = ""
	}
	setMaxTopic(acl.MaxTopicLen)
	scfg := session.Config{Broker: broker{}, FastPrefix: prefix, Log: log}
	if m != nil {
		scfg.Kicked = m.Kicked
	}
	sessions = session.New(scfg)
	in.cfg, in.store, in.lookup, in.feed, in.auth, in.log, in.logs = cfg, st, lookup, feed, a, log, logs
	in.sessions, in.lookups, in.metrics, in.appPrefix = sessions, lookups, m, secret.AppKindFor(cfg.KeyKind).Prefix()
	in.pending, in.wake, in.used = map[string]time.Time{}, make(chan struct{}, 1), map[secret.Digest]struct{}{}
	in.refusals = rate.NewLimiter(rate.Limit(1), 5)
	in.audits = auditq.New(maxQueuedAudits, func(e store.AuditEvent) string { return e.Action })
	in.auditLost = rate.Sometimes{Interval: 30 * time.Second}
	in.auditFail = rate.Sometimes{Interval: 30 * time.Second}
	in.tokens, in.denials, in.denialFail = tokens, denials, rate.Sometimes{Interval: 30 * time.Second}
	in.denialsStale.Store(true)
	if m != nil {
		// Bound during init, so that an address in use stops the broker's start with a clear message.
		if in.metricsLn, err = metrics.Listen(cfg.MetricsListen); err != nil {
			closeStores()
			return nil, err
		}
		in.metricsSrv = m.Server(slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	if err := in.startPresence(ctx); err != nil {
		cancel()
		closeStores()
		return nil, err
	}
	preloaded := in.goBackground(ctx)
	if cfg.Preload && cfg.CacheSize > 0 && cfg.PreloadWait > 0 {
		// Mosquitto opens its listeners only after plugin init returns: waiting here (bounded) means that
		// agents reconnecting after a restart find their credentials cached instead of all missing at once.
		start := time.Now()
		select {
		case <-preloaded:
			log.Info("start waited for the preload", "took", time.Since(start).Round(time.Millisecond))
		case <-time.After(cfg.PreloadWait):
			log.Warn("preload is taking longer than preload_wait; starting now, it continues in the background",
				"preload_wait", cfg.PreloadWait)
		}
	}
	log.Info("started", "cache_size", cfg.CacheSize, "cache_ttl", cfg.CacheTTL, "db_timeout", cfg.DBTimeout,
		"clientid", cfg.ClientID, "acl", cfg.ACLSpec, "preload", cfg.Preload, "fast_acl", prefix != "")
	if in.metricsLn != nil {
		log.Info("serving Prometheus metrics", "url", "http://"+in.metricsLn.Addr().String()+"/metrics") // tests wait for it
	}
	return in, nil
}

func (in *instance) close() {
	if in.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := in.metricsSrv.Shutdown(ctx); err != nil {
			in.metricsSrv.Close()
		}
		cancel()
	}
	in.cancel()
	in.wg.Wait()
	in.closePresence()
	in.lookup.Close()
	in.store.Close()
	if in.feed != in.store {
		in.feed.Close()
	}
}

// basicAuth decides a CONNECT (or Mosquitto's re-check of a live client on SIGHUP).
// username and password are borrowed from the broker for the call and must not be kept.
func (in *instance) basicAuth(client uintptr, username string, password []byte, clientID string) int {
	in.checkTicks()
	rc := in.decide(client, username, password, clientID)
	if rc != rcSuccess && !in.reloading && secret.LooksLikeAny(clientID) {
		// Mosquitto 2.0.13 and later log a refused client's id ("Client <id> disconnected, not
		// authorised."): replace one that carries a secret first. Such a client is never deferred to
		// another plugin, which could admit it under that id. Not during a reload's re-check of
		// connected clients: 2.0 indexes those by id, and replacing it in place would break the index.
		if !replaceClientID(client, hiddenClientID(len(clientID))) {
			in.log.Warn("could not replace a refused client id that looks like a secret; the broker may log it")
		}
		return rcAuth
	}
	return rc
}

// principal is who a refused connect claimed to be, from its username: an application key or not.
func (in *instance) principal(username string) metrics.Principal {
	if strings.HasPrefix(username, in.appPrefix) {
		return metrics.App
	}
	if strings.HasPrefix(username, auth.TokenUsernamePrefix) {
		return metrics.Token
	}
	return metrics.Agent
}

// principalOf is who an authorised session is.
func principalOf(s *auth.Session) metrics.Principal {
	if s.App() {
		return metrics.App
	}
	if s.Token != nil {
		return metrics.Token
	}
	return metrics.Agent
}

// hiddenClientID is what a refused client id carrying a secret becomes: no longer than the original n.
func hiddenClientID(n int) string {
	const id = "iotauth-hidden-secret"
	if n >= len(id) {
		return id
	}
	return strings.Repeat("x", n)
}

// checkTicks logs an error when connects arrive but the broker never delivered a TICK: kicks and
// queued log lines wait for TICK, so revocation would fail silently.
func (in *instance) checkTicks() {
	w := &in.ticks
	if w.ok {
		return
	}
	if ticksSeen() > 0 {
		w.ok = true
		return
	}
	now := time.Now()
	if w.firstAuth.IsZero() {
		w.firstAuth = now
	}
	if now.Sub(w.firstAuth) >= 2*time.Second && (w.warned.IsZero() || now.Sub(w.warned) >= time.Minute) {
		w.warned = now
		in.log.Error("Mosquitto delivers no TICK event to the plugin (per_listener_settings true on Mosquitto 2.0.11 " +
			"to 2.0.14?): revoked agents are NOT kicked. Use per_listener_settings false or Mosquitto 2.0.15 or newer")
	}
	in.flushLogs() // no TICK will write them
}

func (in *instance) decide(client uintptr, username string, password []byte, clientID string) int {
	testHook(username)
	ctx := context.Background()
	if reservedName(username) {
		return in.reauth(client, username, password)
	}
	// Read before the cache is: a change to the credential after this point shows as a new epoch.
	epoch := in.sessions.Epoch()
	s, err := in.auth.Authorize(ctx, auth.Credentials{Username: username, Password: password, ClientID: clientID})
	if errors.Is(err, auth.ErrDeferred) {
		in.metrics.Deferred()
		return rcDefer
	}
	if err != nil {
		if in.metrics != nil {
			in.metrics.Refused(in.principal(username), err)
		}
		in.refused(clientID, err)
		var app *auth.AppKeyRefused
		var tok *auth.TokenRefused
		switch {
		case errors.As(err, &app):
			in.auditRefusal(app.KeyID, clientID, app.Err)
		case errors.As(err, &tok):
			in.auditTokenRefusal(tok.Subject, tok.ID, clientID, tok.Err)
		}
		return rcAuth
	}
	// Admit replaces the client's username, which username borrows: it must not be used from here.
	username = ""
	current, err := in.sessions.Admit(client, s, epoch)
	if err != nil {
		in.metrics.Refused(principalOf(&s), err)
		in.refused(clientID, err)
		switch {
		case s.Token != nil:
			in.auditTokenRefusal(s.Token.Subject, s.Token.ID, clientID, err)
		case s.App():
			in.auditRefusal(s.KeyID(), clientID, err)
		}
		return rcAuth
	}
	if !current {
		in.recheckLater(s.Agent)
	}
	in.presenceConnected(client, &s)
	if s.Token != nil {
		if in.log.Enabled(ctx, slog.LevelDebug) {
			in.log.Debug("connect authorised", "subject", s.Token.Subject, "token", s.Token.ID)
		}
		return rcSuccess
	}
	in.markUsed(s.Digest)
	in.metrics.Allowed(principalOf(&s))
	if in.log.Enabled(ctx, slog.LevelDebug) { // skip boxing the arguments on the hot path
		in.log.Debug("connect authorised", "agent", s.Agent, "key", s.KeyID())
	}
	return rcSuccess
}

// maxQueuedFastHashes bounds the fast hashes waiting to be written (one write a second).
const maxQueuedFastHashes = 10000

// queueFastHash is the authorizer's FastHashRecorder: on the broker thread, it only queues; the
// background loop writes the queue once a second (store.RecordFastHashes). Only the SHA-256 of the
// password is kept, never the password.
func (in *instance) queueFastHash(agent, stored string, sum [32]byte) {
	in.fastMu.Lock()
	defer in.fastMu.Unlock()
	if len(in.fast) < maxQueuedFastHashes {
		in.fast[agent] = store.FastHash{Agent: agent, Old: stored, New: passhash.SHA256HexOfSum(sum)}
	}
}

// auditRefusal queues an audit event for a refused connect by an existing application key
// (docs/security.md, O1: every refused use is audited). The background loop writes the queue once a second.
func (in *instance) auditRefusal(keyID, clientID string, reason error) {
	in.queueAudit(store.AuditEvent{
		Actor: "app-key:" + keyID, Action: "app_key_refused", Target: "app-key:" + keyID, Outcome: store.OutcomeFailure,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(clientID), "reason": reason.Error()},
	})
}

// kick refuses a session a re-check no longer allows (session.Table.Refuse) and, when that disconnects a
// live session, queues the audit event "session_kick" (docs/cli.md): target the agent or application key,
// with the client id, key id and reason. Never a secret: the reason is one of the authorizer's errors.
func (in *instance) kick(s session.Snapshot, reason error) {
	if !in.sessions.Refuse(s, reason) {
		return
	}
	in.presenceKicking(s, reason)
	target := "agent:" + s.Agent
	switch {
	case s.Token != nil:
		target = "mqtt-token:" + s.Token.ID
	case s.App():
		target = "app-key:" + s.KeyID()
	}
	in.queueAudit(store.AuditEvent{
		Actor: auditActor, Action: "session_kick", Target: target,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(s.ClientID), "keyId": s.KeyID(), "reason": reason.Error()},
	})
}

// auditActor is the plugin's name as an actor in the audit trail.
const auditActor = "mosquitto-iotauth"

func shortClientID(clientID string) string {
	if len(clientID) > 64 {
		return clientID[:64] + "…"
	}
	return clientID
}

// auditTokenRefusal queues an audit event for a refused connect by a well-signed short-lived credential
// (a denied subject, a client id it does not allow): the actor is the token's subject; never the
// password.
func (in *instance) auditTokenRefusal(subject, id, clientID string, reason error) {
	in.queueAudit(store.AuditEvent{
		Actor: subject, Action: "mqtt_token_refused", Target: "mqtt-token:" + id, Outcome: store.OutcomeFailure,
		Detail: map[string]any{"via": "mqtt", "clientId": shortClientID(clientID), "reason": reason.Error()},
	})
}

// auditDropped records n audit events the queue could not hold: counted in the metrics, logged at most
// twice a minute, and audited as one event with the count once PostgreSQL answers.
func (in *instance) auditDropped(n int) {
	in.metrics.AuditDropped(n)
	in.auditLost.Do(func() {
		in.log.Warn("the audit queue is full (PostgreSQL has not answered for a while): refused connects and kicks are counted, not recorded one by one; the counts are written to the audit trail once it answers",
			"queued", maxQueuedAudits, "droppedSinceStart", in.audits.Dropped())
	})
}

// queueAudit queues e for the background loop, or counts it when the queue is full.
func (in *instance) queueAudit(e store.AuditEvent) {
	if !in.audits.Add(e) {
		in.auditDropped(1)
	}
}

func (in *instance) markUsed(d secret.Digest) {
	in.usedMu.Lock()
	if len(in.used) < 100000 {
		in.used[d] = struct{}{}
	}
	in.usedMu.Unlock()
}

func (in *instance) reauth(client uintptr, username string, password []byte) int {
	if !in.sessions.IsLive(client, username, password) {
		if in.metrics != nil {
			p := metrics.Agent
			if strings.HasPrefix(username, reservedAppPrefix) {
				p = metrics.App
			} else if strings.HasPrefix(username, renamedTokenPrefix) {
				p = metrics.Token
			}
			in.metrics.Refused(p, metrics.ErrReservedName)
		}
		in.refused("", metrics.ErrReservedName)
		return rcAuth
	}
	// Mosquitto re-checks every client on SIGHUP, one after another on its only thread: answer from
	// memory (same client, same name, same password) and let the background re-check, which reload()
	// started, consult PostgreSQL and kick whatever is no longer allowed.
	return rcSuccess
}

// refused logs a refusal, at most one a second after a burst of five, with the count of those not
// logged in between: a flood of bad connects must not become a flood of log lines on the broker thread.
func (in *instance) refused(clientID string, err error) {
	if !in.refusals.Allow() {
		in.unlogged.Add(1)
		return
	}
	if len(clientID) > 64 {
		clientID = clientID[:64] + "…"
	}
	if n := in.unlogged.Swap(0); n > 0 {
		in.log.Info("connect refused", "client", clientID, "reason", err.Error(), "refusals_not_logged", n)
		return
	}
	in.log.Info("connect refused", "client", clientID, "reason", err.Error())
}

// aclCheck decides an ACL check the shim did not answer, from the session table. A client iotauth never
// admitted is deferred to the next plugin when defer_unknown is set, unless it carries one of the
// plugin's own names (a session iotauth no longer vouches for: its name must not earn it anything
// elsewhere).
func (in *instance) aclCheck(client uintptr, access acl.Access, topic string) int {
	testHook(topic)
	if presenceRefuses(access, topic) {
		return rcDenied
	}
	switch in.sessions.Allows(client, func() (string, string) { return clientID(client), clientUsername(client) }, access, topic) {
	case session.Allow:
		return rcSuccess
	case session.Unknown:
		if in.cfg.DeferUnknown && !reservedName(clientUsername(client)) {
			return rcDefer
		}
	}
	return rcDenied
}

// tick runs on the main thread when the shim was asked for it (at most every 50 ms): it carries out
// queued kicks and writes queued logs.
func (in *instance) tick() {
	in.reloading = false
	in.sessions.Tick()
	in.publishPresence()
	in.flushLogs()
}

func (in *instance) reload() {
	in.reloading = true // its log line below asks for the TICK that ends it
	in.log.Info("reload: re-checking live sessions (plugin options are read at start only)")
	if in.tokens != nil {
		// The key file is re-read, so that a signing key can be rotated without a restart.
		if err := in.tokens.Reload(); err != nil {
			in.log.Error("reload: keeping the MQTT credential public keys in use", "error", err)
		} else {
			in.log.Info("reload: MQTT credential public keys read", "public_keys", in.tokens.Keys())
		}
	}
	in.recheckAll()
}

// authBudget hands the authorizer the lookup budget, or no budget at all (a nil *budget.Budget in the
// interface would not compare equal to nil).
func authBudget(b *budget.Budget) interface{ Allow(secret.Digest) bool } {
	if b == nil {
		return nil
	}
	return b
}
