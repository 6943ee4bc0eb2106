// Package auth decides MQTT connects: Authorize turns a username (a device API key), a password and a
// client id into a Session or a reason for refusal. It checks the key's format before any other work,
// looks credentials up through a bounded cache and then the store under a hard deadline, fails closed
// when the store is unreachable (serving cached positives only within the stale grace), and computes the
// session's ACL once. A short-lived MQTT credential (an iotmq_ username, token.go) takes another path:
// its signature is checked by a TokenVerifier (which may remember credentials it verified) and its
// subjects against an in-memory DenyList on every connect, with no store. It is plain Go: no cgo, no Mosquitto.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
)

// Reasons for refusal. Every one of them becomes CONNACK "not authorised" except ErrDeferred, which
// hands the decision to the next plugin in the chain.
var (
	ErrDeferred       = errors.New("username is not an iotauth key; deferred to the next plugin")
	ErrNoCredentials  = errors.New("no username or password given")
	ErrMalformed      = errors.New("username is not a well-formed device API key")
	ErrBadIdentifier  = errors.New("username or client id is too long or contains '+', '#' or '/'")
	ErrUnknownKey     = errors.New("unknown device API key")
	ErrBadPassword    = errors.New("wrong MQTT password")
	ErrRevoked        = errors.New("device API key revoked")
	ErrExpired        = errors.New("device API key expired")
	ErrAgentDisabled  = errors.New("agent disabled or decommissioned")
	ErrNoMQTTRight    = errors.New("device API key has no mqtt right")
	ErrClientID       = errors.New("client id does not belong to this agent")
	ErrUnavailable    = errors.New("credential store unreachable and nothing usable cached")
	ErrCorrupt        = errors.New("credential row is corrupt")
	ErrCredsChanged   = errors.New("credentials changed since the session started")
	ErrNoMQTTPassword = errors.New("agent has no MQTT password")
	ErrSecretClientID = errors.New("client id contains an iotauth secret; never use a key as the client id")
	ErrLookupBudget   = errors.New("unknown device API key: too many lookups of unknown keys this second (plugin_opt_unknown_key_lookups), refused without asking PostgreSQL")
	ErrAgentClientID  = errors.New("application keys need a client id of their own, never an agent's (agent-…); choose another client id")
	ErrSlowHashBudget = errors.New("imported password hash not checked: too much time spent in slow password hashes this second; the device may retry")
)

// LegacyNames is the in-memory set of live legacy usernames (imported devices, docs/import.md), by digest.
// A username that is not a well-formed key is looked up only when the set holds it, so an unknown name
// still costs no query.
type LegacyNames interface {
	Len() int
	Has(secret.Digest) bool
}

// FastHashRecorder is told, on the broker thread, that a slow stored hash (stored, of agent) just
// accepted a password whose SHA-256 is sum for the first time: it has the store record the fast hash
// off the broker thread.
type FastHashRecorder func(agent, stored string, sum [32]byte)

// AppKeyRefused is the error of a refused connect by an application key that exists: it names the key
// (for the audit trail) and unwraps to the reason (ErrRevoked, ErrBadPassword, ErrAgentClientID, …).
type AppKeyRefused struct {
	KeyID string
	Err   error
}

// Error is the reason's text (the key id is not part of it: logs name the client instead).
func (e *AppKeyRefused) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *AppKeyRefused) Unwrap() error { return e.Err }

// AgentClientIDPrefix starts every agent's client id; an application key may never use it (docs/security.md,
// A3: no takeover of a device's session).
const AgentClientIDPrefix = "agent-"

// MaxIdentifierLen bounds usernames and client ids.
const MaxIdentifierLen = 256

// MaxPasswordLen bounds passwords before any work is done on them.
const MaxPasswordLen = 1024

// Lookup is what the authorizer needs from the store. LookupCredential answers credential.ErrNotFound
// for a digest without a row and credential.ErrCorrupt (with what identified the agent filled in) for a
// row that cannot be trusted; any other error means the store did not answer.
type Lookup interface {
	LookupCredential(ctx context.Context, d secret.Digest) (credential.Credential, error)
}

// AppLookup is what the authorizer needs from the store for application keys, looked up apart from
// device keys so that a device's connect costs what it always did. A store without it refuses
// application keys as malformed.
type AppLookup interface {
	LookupAppCredential(ctx context.Context, d secret.Digest) (credential.Credential, error)
}

// Config tunes an Authorizer.
type Config struct {
	KeyKind secret.Kind
	// AppKeyKind is the application key kind of the deployment (secret.AppKindFor(KeyKind) when unset).
	AppKeyKind   secret.Kind
	ClientID     string // template with %u, or "any"
	Rules        []acl.Template
	DBTimeout    time.Duration
	DeferUnknown bool
	// Budget, when set, is asked before a key the cache has no entry for is looked up in the store; a
	// refusal answers ErrLookupBudget without a query (forged keys must not reach the database at will).
	Budget interface{ Allow(secret.Digest) bool }
	// RetryAfter is how long after a store failure connects skip the store and fail fast (or use stale
	// entries) instead of each waiting out the deadline.
	RetryAfter time.Duration
	// NamePrefix and CustomNamePrefix start a session's Name: the first for an agent with only the
	// configured rules, the second for one with extra acl_rules.
	NamePrefix, CustomNamePrefix string
	// AppNamePrefix starts the Name of an application key's session, followed by the key's id.
	AppNamePrefix string
	// Tokens verifies short-lived credentials (usernames starting with TokenUsernamePrefix); nil refuses
	// them. Denials is the subject deny list they are checked against; TokenNamePrefix starts the Name of
	// their sessions, followed by the token id.
	Tokens          TokenVerifier
	Denials         DenyList
	TokenNamePrefix string
	// Legacy, when set, admits imported devices by their legacy usernames (see LegacyNames).
	Legacy LegacyNames
	// SlowBudget, when set, bounds the time spent in slow KDFs (see SlowBudget).
	SlowBudget SlowBudget
	// RecordFastHash, when set, is called after a slow hash's first success (see FastHashRecorder).
	RecordFastHash FastHashRecorder
	// Refresh, when set, re-reads entries served past their TTL (cache.Aged) in the background, every
	// RefreshEvery (1 s when unset), at most RefreshRate a second (DefaultRefreshRate when 0); Refreshed
	// is then told of each agent whose entry had changed without a notification (see refresh.go).
	Refresh      BatchLookup
	RefreshEvery time.Duration
	RefreshRate  float64
	Refreshed    func(agent string)
	Now          func() time.Time
	Log          *slog.Logger
}

// Credentials are what a client presented.
type Credentials struct {
	Username string
	Password []byte
	ClientID string
}

// Authorizer decides connects. It is safe for concurrent use.
type Authorizer struct {
	cfg      Config
	store    Lookup
	apps     AppLookup // nil: application keys are refused
	cache    *Cache
	downTill atomic.Int64
	dummy    passhash.Hash

	logOnce   sync.Map // digest -> struct{}: corrupt rows logged once
	tokensOff sync.Once
	nLogged   atomic.Int64

	// Store failures are logged at most every 10 s, with a count, so an outage is a trickle.
	failLog  rate.Sometimes
	failures atomic.Int64

	windows atomic.Uint64 // fail-fast windows entered
	stale   atomic.Uint64 // connects answered from a stale entry

	refreshMu                                  sync.Mutex
	refreshQ                                   map[secret.Digest]struct{}
	refreshLimit                               *rate.Limiter
	refreshed, refreshDiffered, refreshSkipped atomic.Uint64
	diffLog                                    rate.Sometimes
}

// Stats are the authorizer's cumulative counters, for metrics.
type Stats struct {
	// StoreFailures counts lookups on the connect path that failed or timed out.
	StoreFailures uint64
	// FailFastWindows counts the times a failure made connects skip the store for RetryAfter.
	FailFastWindows uint64
	// StaleServed counts connects answered from a stale cache entry because the store could not answer.
	StaleServed uint64
	// StoreDown is StoreDown() now.
	StoreDown bool
	// Refreshed counts entries served past their TTL and then refreshed unchanged in the background;
	// RefreshDiffered those found changed without a notification; RefreshSkipped those not queued
	// because the refresh rate was spent or the queue was full.
	Refreshed, RefreshDiffered, RefreshSkipped uint64
}

// Stats returns the counters.
func (a *Authorizer) Stats() Stats {
	return Stats{
		StoreFailures: uint64(a.failures.Load()), FailFastWindows: a.windows.Load(), StaleServed: a.stale.Load(),
		StoreDown: a.StoreDown(), Refreshed: a.refreshed.Load(), RefreshDiffered: a.refreshDiffered.Load(),
		RefreshSkipped: a.refreshSkipped.Load(),
	}
}

// New builds an Authorizer.
func New(cfg Config, st Lookup, c *Cache) *Authorizer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.AppKeyKind.Prefix() == "" {
		cfg.AppKeyKind = secret.AppKindFor(cfg.KeyKind)
	}
	if cfg.AppNamePrefix == "" {
		cfg.AppNamePrefix = "app:"
	}
	if cfg.TokenNamePrefix == "" {
		cfg.TokenNamePrefix = "token-id:"
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = time.Second
	}
	if cfg.RefreshRate <= 0 {
		cfg.RefreshRate = DefaultRefreshRate
	}
	dummy, _ := passhash.Parse(passhash.SHA256Hex("iotauth dummy password for timing"))
	apps, _ := st.(AppLookup)
	return &Authorizer{cfg: cfg, store: st, apps: apps, cache: c, dummy: dummy, failLog: rate.Sometimes{Interval: 10 * time.Second},
		refreshQ: map[secret.Digest]struct{}{}, diffLog: rate.Sometimes{Interval: time.Minute},
		refreshLimit: rate.NewLimiter(rate.Limit(cfg.RefreshRate), int(min(cfg.RefreshRate, refreshBatch)))}
}

// Cache exposes the cache for invalidation and stats.
func (a *Authorizer) Cache() *Cache { return a.cache }

// CheckIdentifier refuses usernames and client ids that are empty-safe but too long or contain topic
// wildcards or separators, which could otherwise widen ACL patterns.
func CheckIdentifier(s string) error {
	if len(s) > MaxIdentifierLen {
		return ErrBadIdentifier
	}
	// Three vectorised byte searches: about a quarter of the time of one loop comparing each byte three
	// times (and strings.ContainsAny builds its byte set on every call); this runs twice per connect.
	if strings.IndexByte(s, '/') >= 0 || strings.IndexByte(s, '+') >= 0 || strings.IndexByte(s, '#') >= 0 {
		return ErrBadIdentifier
	}
	return nil
}

// Authorize decides a fresh connect.
func (a *Authorizer) Authorize(ctx context.Context, c Credentials) (Session, error) {
	if c.Username == "" {
		if a.cfg.DeferUnknown {
			return Session{}, ErrDeferred
		}
		return Session{}, ErrNoCredentials
	}
	if err := CheckIdentifier(c.Username); err != nil {
		return Session{}, err
	}
	if err := CheckIdentifier(c.ClientID); err != nil {
		return Session{}, err
	}
	if secret.LooksLikeAny(c.ClientID) {
		// A key used as the client id would be printed on every broker log line about the client.
		return Session{}, ErrSecretClientID
	}
	if strings.HasPrefix(c.Username, TokenUsernamePrefix) {
		return a.authorizeToken(c)
	}
	app, legacy := false, false
	if err := secret.Check(a.cfg.KeyKind, c.Username); err != nil {
		// Only a username that is not a device key pays for the second check.
		if errors.Is(err, secret.ErrWrongKind) && a.apps != nil && strings.HasPrefix(c.Username, a.cfg.AppKeyKind.Prefix()) {
			if secret.Check(a.cfg.AppKeyKind, c.Username) != nil {
				return Session{}, ErrMalformed
			}
			app = true
		} else if a.cfg.Legacy != nil && a.cfg.Legacy.Len() > 0 && !secret.LooksLikeAny(c.Username) && a.cfg.Legacy.Has(secret.DigestOf(c.Username)) {
			// An imported device's existing username, known from memory: only these reach the store.
			legacy = true
		} else {
			if a.cfg.DeferUnknown && errors.Is(err, secret.ErrWrongKind) {
				return Session{}, ErrDeferred
			}
			return Session{}, ErrMalformed
		}
	}
	if len(c.Password) == 0 {
		return Session{}, ErrNoCredentials
	}
	if len(c.Password) > MaxPasswordLen {
		return Session{}, ErrBadPassword
	}
	return a.authorizeDigest(ctx, secret.DigestOf(c.Username), c.Password, c.ClientID, app, legacy)
}

func (a *Authorizer) authorizeDigest(ctx context.Context, d secret.Digest, password []byte, clientID string, app, legacy bool) (_ Session, err error) {
	e, err := a.entry(ctx, d, app)
	if err != nil {
		// Same work as a wrong password, so unknown keys cannot be told apart by timing.
		a.dummy.Verify(password)
		return Session{}, err
	}
	if app {
		// A refusal of a known application key names the key, for the audit trail.
		defer func() {
			if err != nil {
				err = &AppKeyRefused{KeyID: e.KeyID(), Err: err}
			}
		}()
	}
	if e.Corrupt() {
		a.dummy.Verify(password)
		return Session{}, ErrCorrupt
	}
	sum := sha256.Sum256(password)
	h := e.hash()
	ok, fresh, verr := verify(&e, h, password, &sum, a.cfg.SlowBudget)
	if verr != nil {
		return Session{}, verr
	}
	if !ok {
		if h.Scheme() == 0 {
			return Session{}, ErrNoMQTTPassword
		}
		return Session{}, ErrBadPassword
	}
	if err := a.usable(&e); err != nil {
		return Session{}, err
	}
	if e.App() != app || e.Legacy() != legacy {
		return Session{}, ErrCorrupt // a row of the other kind under this digest: never trust it
	}
	if fresh && a.cfg.RecordFastHash != nil {
		a.cfg.RecordFastHash(e.Agent(), h.Encoded(), sum)
	}
	if app {
		return a.appSession(&e, d, sum, clientID)
	}
	prefix := a.cfg.NamePrefix
	if len(e.rules()) > 0 {
		prefix = a.cfg.CustomNamePrefix
	}
	name := e.name(prefix)
	agent := name[len(prefix):]
	if legacy {
		if !a.legacyClientIDAllowed(&e, clientID) {
			return Session{}, ErrClientID
		}
	} else if !a.clientIDAllowed(agent, clientID) {
		return Session{}, ErrClientID
	}
	s := Session{
		Name: name, Agent: agent, ClientID: clientID, Digest: d, PasswordSum: sum,
		OwnsClientID: !legacy && a.cfg.ClientID != "any",
		rules:        append(a.cfg.Rules[:len(a.cfg.Rules):len(a.cfg.Rules)], e.rules()...),
		src:          e,
	}
	if e.expiresAt != 0 {
		s.ExpiresAt = time.Unix(0, e.expiresAt)
	}
	return s, nil
}

// appSession admits an application key's connection: any client id but an agent's, its topics and
// nothing else as rules, named AppNamePrefix and the key's id.
func (a *Authorizer) appSession(e *Entry, d secret.Digest, sum [32]byte, clientID string) (Session, error) {
	if clientID == "" || strings.HasPrefix(clientID, AgentClientIDPrefix) || a.agentClientID(clientID) {
		return Session{}, ErrAgentClientID
	}
	name := e.name(a.cfg.AppNamePrefix)
	s := Session{
		Name: name, Agent: name[len(a.cfg.AppNamePrefix):], ClientID: clientID, Digest: d, PasswordSum: sum,
		rules: e.rules(), src: *e,
	}
	if e.expiresAt != 0 {
		s.ExpiresAt = time.Unix(0, e.expiresAt)
	}
	return s, nil
}

// agentClientID reports whether the configured client id template (when it is not "any") could give
// clientID to an agent, so that no other principal may use it: with a literal prefix before %u, every id
// with that prefix; without one (%u, %u-dev), every id that is a uuid (in either case) followed by the
// template's suffix. Otherwise an application key could take an agent's exact client id and, with a
// session the broker keeps, hold it against the agent.
func (a *Authorizer) agentClientID(clientID string) bool {
	if a.cfg.ClientID == "any" {
		return false
	}
	i := strings.Index(a.cfg.ClientID, "%u")
	if i < 0 {
		return false
	}
	if pre := a.cfg.ClientID[:i]; pre != "" {
		return strings.HasPrefix(clientID, pre)
	}
	id, ok := strings.CutSuffix(clientID, a.cfg.ClientID[i+2:])
	return ok && uuid.Valid(strings.ToLower(id))
}

// legacyClientIDAllowed applies an imported device's client id rule: the exact id fixed at import, or
// (rule "any") any id but one of an agent's, so that a legacy device can never take an agent's session.
func (a *Authorizer) legacyClientIDAllowed(e *Entry, clientID string) bool {
	if want := e.x.legacyClientID; want != "" {
		return clientID == want
	}
	return clientID != "" && !strings.HasPrefix(clientID, AgentClientIDPrefix) && !a.agentClientID(clientID)
}

func (a *Authorizer) usable(e *Entry) error {
	switch {
	case e.flags&flagRevoked != 0:
		return ErrRevoked
	case e.expiresAt != 0 && a.cfg.Now().UnixNano() >= e.expiresAt:
		return ErrExpired
	case e.flags&flagActive == 0:
		return ErrAgentDisabled
	case e.flags&flagMQTTRight == 0:
		return ErrNoMQTTRight
	}
	return nil
}

func (a *Authorizer) clientIDAllowed(agent, clientID string) bool {
	if a.cfg.ClientID == "any" {
		return clientID != ""
	}
	i := strings.Index(a.cfg.ClientID, "%u")
	if i < 0 {
		return false
	}
	pre, post := a.cfg.ClientID[:i], a.cfg.ClientID[i+2:]
	return len(clientID) == len(pre)+len(agent)+len(post) &&
		strings.HasPrefix(clientID, pre) && strings.HasSuffix(clientID, post) &&
		clientID[len(pre):len(pre)+len(agent)] == agent
}

// entry finds the credential for d: cache first, then the store under the deadline. Errors and
// timeouts are never cached; a stale positive is used only when the store cannot answer.
func (a *Authorizer) entry(ctx context.Context, d secret.Digest, app bool) (e Entry, err error) {
	e, r := a.cache.Get(d)
	switch r {
	case cache.Hit:
		return e, nil
	case cache.Aged:
		// Past its TTL but trusted: the change feed has been up since it was fetched. Refreshed off
		// the broker thread.
		a.queueRefresh(d)
		return e, nil
	case cache.NegativeHit:
		return Entry{}, ErrUnknownKey
	}
	now := a.cfg.Now()
	if now.UnixNano() < a.downTill.Load() {
		if r == cache.Stale {
			a.stale.Add(1)
			return e, nil
		}
		return Entry{}, ErrUnavailable
	}
	if r == cache.Miss && a.cfg.Budget != nil && !a.cfg.Budget.Allow(d) {
		return Entry{}, ErrLookupBudget
	}
	qctx, cancel := context.WithTimeout(ctx, a.cfg.DBTimeout)
	var cred credential.Credential
	var lerr error
	if app {
		cred, lerr = a.apps.LookupAppCredential(qctx, d)
	} else {
		cred, lerr = a.store.LookupCredential(qctx, d)
	}
	cancel()
	switch err := lerr; {
	case err == nil:
		a.downTill.Store(0)
		got := NewEntry(cred)
		if got.Corrupt() {
			a.logCorrupt(d, cred.AgentUUID, errors.New("malformed password hash or ACL rule"))
		}
		a.cache.Add(d, got, now)
		return got, nil
	case errors.Is(err, credential.ErrNotFound):
		a.downTill.Store(0)
		a.cache.AddNegative(d, now)
		return Entry{}, ErrUnknownKey
	case errors.Is(err, credential.ErrCorrupt):
		a.downTill.Store(0)
		a.logCorrupt(d, cred.AgentUUID, err)
		bad := Entry{flags: flagCorrupt}
		bad.setAgent(cred.AgentUUID)
		a.cache.Add(d, bad, now)
		return bad, nil
	default:
		t := a.cfg.Now()
		if a.downTill.Swap(t.Add(a.cfg.RetryAfter).UnixNano()) <= t.UnixNano() {
			a.windows.Add(1)
		}
		n := a.failures.Add(1)
		a.failLog.Do(func() {
			a.cfg.Log.Warn("credential lookup failed; refusing agents that are not cached until PostgreSQL answers",
				"error", err, "deadline", a.cfg.DBTimeout, "served_stale", r == cache.Stale, "failures", n)
		})
		if r == cache.Stale {
			a.stale.Add(1)
			return e, nil
		}
		return Entry{}, ErrUnavailable
	}
}

// StoreDown reports whether the authorizer is currently skipping the store after a failure.
func (a *Authorizer) StoreDown() bool { return a.cfg.Now().UnixNano() < a.downTill.Load() }

// MarkStoreUp lets a background health check end the fail-fast window early.
func (a *Authorizer) MarkStoreUp() { a.downTill.Store(0) }

func (a *Authorizer) logCorrupt(d secret.Digest, agent string, err error) {
	if _, seen := a.logOnce.LoadOrStore(d, struct{}{}); seen {
		return
	}
	if a.nLogged.Add(1) > 10000 {
		return // bound the set; beyond this every corrupt row is still denied, just not logged again
	}
	a.cfg.Log.Error("refusing agent: its credential row is corrupt; fix the row in PostgreSQL",
		"agent", agent, "error", err)
}

// Recheck decides whether a live session may stay, given the credential as the store has it now
// (found=false when the key no longer exists).
func (a *Authorizer) Recheck(s Session, c credential.Credential, found bool) error {
	if !found {
		return ErrUnknownKey
	}
	e := NewEntry(c)
	if e.Corrupt() {
		return ErrCorrupt
	}
	if err := a.usable(&e); err != nil {
		return err
	}
	if e.Agent() != s.Agent || e.App() != s.App() || e.Legacy() != s.src.Legacy() {
		return ErrCredsChanged
	}
	if e.fingerprint() != s.src.fingerprint() && !fastHashRecorded(s, c) {
		return ErrCredsChanged
	}
	return nil
}

// fastHashRecorded reports whether the only change since s was admitted is its slow stored hash
// replaced by the fast hash of the very password s was admitted with (what the plugin records at an
// imported device's first connect): that changes nothing for the session, which is not kicked.
func fastHashRecorded(s Session, c credential.Credential) bool {
	old := s.src.hash()
	if !old.Slow() || old.Encoded() == "" {
		return false
	}
	now, err := passhash.Parse(c.PasswordHash)
	if err != nil {
		return false
	}
	if sum, ok := now.SHA256Sum(); !ok || subtle.ConstantTimeCompare(sum[:], s.PasswordSum[:]) != 1 {
		return false
	}
	before := c
	before.PasswordHash = old.Encoded()
	was := NewEntry(before)
	return was.fingerprint() == s.src.fingerprint()
}

// Expired reports whether the session's key has expired.
func (a *Authorizer) Expired(s Session) bool {
	return !s.ExpiresAt.IsZero() && !a.cfg.Now().Before(s.ExpiresAt)
}
