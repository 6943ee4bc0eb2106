// Package auth decides MQTT connects: Authorize turns a username (a device API key), a password and a
// client id into a Session or a reason for refusal. It checks the key's format before any other work,
// looks credentials up through a bounded cache and then the store under a hard deadline, fails closed
// when the store is unreachable (serving cached positives only within the stale grace), and computes the
// session's ACL once. It is plain Go: no cgo, no Mosquitto.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/credential"
	"github.com/iotauth/iotauth/backend/passhash"
	"github.com/iotauth/iotauth/backend/secret"
	"github.com/iotauth/iotauth/backend/uuid"
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
)

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

// Config tunes an Authorizer.
type Config struct {
	KeyKind      secret.Kind
	ClientID     string // template with %u, or "any"
	Rules        []acl.Template
	DBTimeout    time.Duration
	DeferUnknown bool
	// RetryAfter is how long after a store failure connects skip the store and fail fast (or use stale
	// entries) instead of each waiting out the deadline.
	RetryAfter time.Duration
	// NamePrefix and CustomNamePrefix start a session's Name: the first for an agent with only the
	// configured rules, the second for one with extra acl_rules.
	NamePrefix, CustomNamePrefix string
	Now                          func() time.Time
	Log                          *slog.Logger
}

// Credentials are what a client presented.
type Credentials struct {
	Username string
	Password []byte
	ClientID string
}

// Session is an authorised connection: who it is, what it may do, and what it was authorised with, so
// that it can be re-checked when credentials change.
type Session struct {
	// Name is the username the broker gives the session in place of the key: the configured prefix and
	// Agent. Agent shares its memory (one allocation per connect for both).
	Name      string
	Agent     string
	ClientID  string
	Digest    secret.Digest
	ExpiresAt time.Time
	// PasswordSum is the SHA-256 of the password the session was admitted with.
	PasswordSum [32]byte
	// FreshUntil is when the credential the session was admitted with stops being fresh in the cache
	// (unix ns): 0 when it was served stale or the cache is disabled.
	FreshUntil int64
	// rules are the configured templates followed by the agent's extra rules; ACL expands them.
	rules []acl.Template
	// src is the cache entry the session was admitted with: its fingerprint (of the stored password hash
	// and rules) is what Recheck compares against.
	src Entry
}

// ACL expands the session's rules for its agent and client id. It allocates: callers that check many
// topics keep the result.
func (s *Session) ACL() acl.Set { return acl.Expand(s.rules, s.Agent, s.ClientID) }

// Custom reports whether the agent has extra acl_rules beyond the configured templates.
func (s *Session) Custom() bool { return len(s.src.rules()) > 0 }

// KeyID is the id of the API key the session was admitted with, formatted on demand (only logs use it).
func (s *Session) KeyID() string { return s.src.KeyID() }

// Entry is the cached, compact form of a credential.Credential, stored by value in the cache. The common
// credential — canonical uuids, a sha256$ password hash, no extra ACL rules — is 88 bytes and nothing
// else: the uuids are kept as 16 bytes each and the password hash as its 32-byte digest, the strings are
// rebuilt only when a Session is made, and the fingerprint is recomputed only by Recheck. Anything else
// (a slow hash scheme, extra rules, identifiers that are not canonical uuids) lives in a separately
// allocated extension, x.
type Entry struct {
	expiresAt int64 // unix ns, 0 = never
	agent     uuid.UUID
	keyID     uuid.UUID
	sum       [32]byte  // the SHA-256 password digest when scheme is passhash.SHA256
	x         *entryExt // nil for the common credential
	scheme    passhash.Scheme
	flags     entryFlags
}

type entryFlags uint8

const (
	flagActive entryFlags = 1 << iota
	flagRevoked
	flagMQTTRight
	flagCorrupt
	flagAgentInExt // the agent is not a canonical uuid: x.agent holds it
	flagKeyIDInExt // the key id is not a canonical uuid: x.keyID holds it
)

// entryExt holds the parts of an Entry that the common credential does not have.
type entryExt struct {
	hash         passhash.Hash // slow schemes keep their encoded form here
	rules        []acl.Template
	fingerprint  [32]byte // set when it cannot be derived from scheme and sum
	fpSet        bool
	agent, keyID string
	// verified is the SHA-256 of the password once a slow hash accepted it: later connects, right or
	// wrong, are then answered with one SHA-256 instead of a KDF on the broker thread.
	verified atomic.Pointer[[32]byte]
}

// Agent is the agent's uuid.
func (e *Entry) Agent() string {
	if e.flags&flagAgentInExt != 0 {
		return e.x.agent
	}
	return uuid.Format(e.agent)
}

// name returns prefix followed by the agent's id, in one allocation.
func (e *Entry) name(prefix string) string {
	if e.flags&flagAgentInExt != 0 {
		return prefix + e.x.agent
	}
	var buf [64]byte // on the stack: the string below is the one allocation
	return string(uuid.Append(append(buf[:0], prefix...), e.agent))
}

// KeyID is the API key's id.
func (e *Entry) KeyID() string {
	if e.flags&flagKeyIDInExt != 0 {
		return e.x.keyID
	}
	return uuid.Format(e.keyID)
}

// Corrupt reports whether the credential row could not be trusted; its agent is denied.
func (e *Entry) Corrupt() bool { return e.flags&flagCorrupt != 0 }

func (e *Entry) hash() passhash.Hash {
	switch {
	case e.scheme == passhash.SHA256:
		return passhash.FromSHA256Sum(e.sum)
	case e.x != nil:
		return e.x.hash
	}
	return passhash.Hash{}
}

func (e *Entry) rules() []acl.Template {
	if e.x == nil {
		return nil
	}
	return e.x.rules
}

// fingerprint is the SHA-256 of the stored password hash and the extra rules. For the common credential
// the stored hash is exactly "sha256$" and the lowercase hex of sum (or empty), so it is recomputed
// rather than kept.
func (e *Entry) fingerprint() [32]byte {
	if e.x != nil && e.x.fpSet {
		return e.x.fingerprint
	}
	if e.scheme != passhash.SHA256 {
		return sha256.Sum256(nil) // no stored hash (any other case has the fingerprint in x)
	}
	var buf [sha256HashLen]byte
	return sha256.Sum256(appendSHA256Hash(buf[:0], &e.sum))
}

const (
	sha256Prefix  = "sha256$"
	sha256HashLen = len(sha256Prefix) + 2*sha256.Size
)

// appendSHA256Hash appends the canonical stored form of the sha256$ hash whose digest is sum: the prefix
// and the digest in lowercase hex, as passhash.SHA256Hex writes it.
func appendSHA256Hash(dst []byte, sum *[32]byte) []byte {
	return hex.AppendEncode(append(dst, sha256Prefix...), sum[:])
}

// verify checks password, whose SHA-256 is sum, against the entry's hash. The common sha256$ hash is
// compared with sum directly. For slow schemes the first success is remembered as sum (the entry is
// immutable and replaced when the stored hash changes), so a KDF runs on the broker thread at most until
// the agent's first successful connect.
func verify(e *Entry, h passhash.Hash, password []byte, sum *[32]byte) bool {
	if stored, ok := h.SHA256Sum(); ok {
		return subtle.ConstantTimeCompare(sum[:], stored[:]) == 1
	}
	if !h.Slow() || e.x == nil {
		return h.Verify(password)
	}
	if v := e.x.verified.Load(); v != nil {
		return subtle.ConstantTimeCompare(sum[:], v[:]) == 1
	}
	if !h.Verify(password) {
		return false
	}
	remembered := *sum
	e.x.verified.Store(&remembered)
	return true
}

// ext returns e's extension, allocating it on first use.
func (e *Entry) ext() *entryExt {
	if e.x == nil {
		e.x = &entryExt{}
	}
	return e.x
}

// Group is a cache invalidation group: one agent, as a 16-byte uuid when it is canonical.
type Group struct {
	id    uuid.UUID
	name  string // the agent when it is not a canonical uuid
	named bool
}

// GroupFor is the invalidation group of agent.
func GroupFor(agent string) Group {
	if id, ok := uuid.Parse(agent); ok {
		return Group{id: id}
	}
	return Group{name: agent, named: true}
}

// GroupOf is the cache group function: entries are invalidated per agent.
func GroupOf(e Entry) Group {
	if e.flags&flagAgentInExt != 0 {
		return Group{name: e.x.agent, named: true}
	}
	return Group{id: e.agent}
}

// Cache is the credential cache: answers by API key digest, invalidated per agent.
type Cache struct {
	*cache.Cache[secret.Digest, Entry, Group]
}

// NewCache builds the credential cache; a nil opt.Group means GroupOf.
func NewCache(opt cache.Options[Entry, Group]) (*Cache, error) {
	if opt.Group == nil {
		opt.Group = GroupOf
	}
	c, err := cache.New[secret.Digest](opt)
	if err != nil {
		return nil, err
	}
	return &Cache{c}, nil
}

// InvalidateGroup makes every entry of agent fetched at or before at behave as absent.
func (c *Cache) InvalidateGroup(agent string, at time.Time) {
	c.Cache.InvalidateGroup(GroupFor(agent), at)
}

// Authorizer decides connects. It is safe for concurrent use.
type Authorizer struct {
	cfg      Config
	store    Lookup
	cache    *Cache
	downTill atomic.Int64
	dummy    passhash.Hash

	logOnce sync.Map // digest -> struct{}: corrupt rows logged once
	nLogged atomic.Int64

	// Store failures are logged at most every 10 s, with a count, so an outage is a trickle.
	failLog  rate.Sometimes
	failures atomic.Int64
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
	dummy, _ := passhash.Parse(passhash.SHA256Hex("iotauth dummy password for timing"))
	return &Authorizer{cfg: cfg, store: st, cache: c, dummy: dummy, failLog: rate.Sometimes{Interval: 10 * time.Second}}
}

// Cache exposes the cache for invalidation and stats.
func (a *Authorizer) Cache() *Cache { return a.cache }

// CheckIdentifier refuses usernames and client ids that are empty-safe but too long or contain topic
// wildcards or separators, which could otherwise widen ACL patterns.
func CheckIdentifier(s string) error {
	if len(s) > MaxIdentifierLen || strings.ContainsAny(s, "+#/") {
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
	if err := secret.Check(a.cfg.KeyKind, c.Username); err != nil {
		if a.cfg.DeferUnknown && errors.Is(err, secret.ErrWrongKind) {
			return Session{}, ErrDeferred
		}
		return Session{}, ErrMalformed
	}
	if len(c.Password) == 0 {
		return Session{}, ErrNoCredentials
	}
	if len(c.Password) > MaxPasswordLen {
		return Session{}, ErrBadPassword
	}
	return a.authorizeDigest(ctx, secret.DigestOf(c.Username), c.Password, c.ClientID)
}

func (a *Authorizer) authorizeDigest(ctx context.Context, d secret.Digest, password []byte, clientID string) (Session, error) {
	e, fresh, err := a.entry(ctx, d)
	if err != nil {
		// Same work as a wrong password, so unknown keys cannot be told apart by timing.
		a.dummy.Verify(password)
		return Session{}, err
	}
	if e.Corrupt() {
		a.dummy.Verify(password)
		return Session{}, ErrCorrupt
	}
	sum := sha256.Sum256(password)
	if h := e.hash(); !verify(&e, h, password, &sum) {
		if h.Scheme() == 0 {
			return Session{}, ErrNoMQTTPassword
		}
		return Session{}, ErrBadPassword
	}
	if err := a.usable(&e); err != nil {
		return Session{}, err
	}
	prefix := a.cfg.NamePrefix
	if len(e.rules()) > 0 {
		prefix = a.cfg.CustomNamePrefix
	}
	name := e.name(prefix)
	agent := name[len(prefix):]
	if !a.clientIDAllowed(agent, clientID) {
		return Session{}, ErrClientID
	}
	s := Session{
		Name: name, Agent: agent, ClientID: clientID, Digest: d, PasswordSum: sum, FreshUntil: fresh,
		rules: append(a.cfg.Rules[:len(a.cfg.Rules):len(a.cfg.Rules)], e.rules()...),
		src:   e,
	}
	if e.expiresAt != 0 {
		s.ExpiresAt = time.Unix(0, e.expiresAt)
	}
	return s, nil
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
// timeouts are never cached; a stale positive is used only when the store cannot answer. fresh is until
// when the answer stays fresh in the cache (unix ns), 0 for a stale one.
func (a *Authorizer) entry(ctx context.Context, d secret.Digest) (e Entry, fresh int64, err error) {
	e, r, fresh := a.cache.Lookup(d)
	switch r {
	case cache.Hit:
		return e, fresh, nil
	case cache.NegativeHit:
		return Entry{}, 0, ErrUnknownKey
	}
	now := a.cfg.Now()
	if now.UnixNano() < a.downTill.Load() {
		if r == cache.Stale {
			return e, 0, nil
		}
		return Entry{}, 0, ErrUnavailable
	}
	qctx, cancel := context.WithTimeout(ctx, a.cfg.DBTimeout)
	cred, lerr := a.store.LookupCredential(qctx, d)
	cancel()
	switch err := lerr; {
	case err == nil:
		a.downTill.Store(0)
		got := NewEntry(cred)
		if got.Corrupt() {
			a.logCorrupt(d, cred.AgentUUID, errors.New("malformed password hash or ACL rule"))
		}
		a.cache.Add(d, got, now)
		return got, a.cache.FreshUntil(now), nil
	case errors.Is(err, credential.ErrNotFound):
		a.downTill.Store(0)
		a.cache.AddNegative(d, now)
		return Entry{}, 0, ErrUnknownKey
	case errors.Is(err, credential.ErrCorrupt):
		a.downTill.Store(0)
		a.logCorrupt(d, cred.AgentUUID, err)
		bad := Entry{flags: flagCorrupt}
		bad.setAgent(cred.AgentUUID)
		a.cache.Add(d, bad, now)
		return bad, 0, nil
	default:
		a.downTill.Store(a.cfg.Now().Add(a.cfg.RetryAfter).UnixNano())
		n := a.failures.Add(1)
		a.failLog.Do(func() {
			a.cfg.Log.Warn("credential lookup failed; refusing agents that are not cached until PostgreSQL answers",
				"error", err, "deadline", a.cfg.DBTimeout, "served_stale", r == cache.Stale, "failures", n)
		})
		if r == cache.Stale {
			return e, 0, nil
		}
		return Entry{}, 0, ErrUnavailable
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

// NewEntry compacts a store credential into a cache entry. Problems with the row (a malformed hash, a
// bad rule) make a Corrupt entry: that agent is denied, nothing else is affected.
func NewEntry(c credential.Credential) Entry {
	var e Entry
	e.setAgent(c.AgentUUID)
	if id, ok := uuid.Parse(c.KeyID); ok {
		e.keyID = id
	} else {
		e.ext().keyID = c.KeyID
		e.flags |= flagKeyIDInExt
	}
	if c.AgentStatus == "active" {
		e.flags |= flagActive
	}
	if c.KeyRevoked {
		e.flags |= flagRevoked
	}
	if c.Corrupt {
		e.flags |= flagCorrupt
	}
	if !c.KeyExpiresAt.IsZero() {
		e.expiresAt = c.KeyExpiresAt.UnixNano()
	}
	for _, r := range c.Rights {
		if r == "mqtt" {
			e.flags |= flagMQTTRight
		}
	}
	// The fingerprint can be recomputed from scheme and sum when the stored hash is empty or exactly the
	// canonical sha256$ form, and there are no rules; otherwise it is kept.
	derivable := len(c.Rules) == 0
	if c.PasswordHash != "" {
		h, err := passhash.Parse(c.PasswordHash)
		if err != nil {
			e.flags |= flagCorrupt
		}
		e.scheme = h.Scheme()
		if sum, ok := h.SHA256Sum(); ok {
			e.sum = sum
			// Parse accepts either case of hex; only the canonical spelling can be rebuilt from sum.
			var buf [sha256HashLen]byte
			derivable = derivable && string(appendSHA256Hash(buf[:0], &sum)) == c.PasswordHash
		} else {
			derivable = false
			if h.Scheme() != 0 {
				e.ext().hash = h
			}
		}
	}
	if derivable {
		return e
	}
	fp := sha256.New()
	fp.Write([]byte(c.PasswordHash))
	x := e.ext()
	for _, r := range c.Rules {
		t, err := acl.ParseTemplate(r.Access, r.Pattern)
		if err != nil {
			e.flags |= flagCorrupt
			continue
		}
		x.rules = append(x.rules, t)
		fmt.Fprintf(fp, "\x00%s %s", r.Access, r.Pattern)
	}
	copy(x.fingerprint[:], fp.Sum(nil))
	x.fpSet = true
	return e
}

func (e *Entry) setAgent(agent string) {
	if id, ok := uuid.Parse(agent); ok {
		e.agent = id
		return
	}
	e.ext().agent = agent
	e.flags |= flagAgentInExt
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
	if e.Agent() != s.Agent || e.fingerprint() != s.src.fingerprint() {
		return ErrCredsChanged
	}
	return nil
}

// Expired reports whether the session's key has expired.
func (a *Authorizer) Expired(s Session) bool {
	return !s.ExpiresAt.IsZero() && !a.cfg.Now().Before(s.ExpiresAt)
}
