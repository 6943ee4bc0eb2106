package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	mathbits "math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/options"
)

// The plugin gives an authorised client the username iotauth-agent:<uuid> in place of its API key, so
// that the key never reaches the broker's "New client connected" log line. Such names are not
// well-formed keys, and a client presenting one itself is refused (it has no session to match).
// Sessions whose agent has extra acl_rules are named iotauth-agent-custom:<uuid> instead: the C shim
// answers publish and delivery checks itself only for plain iotauth-agent: sessions, when the
// configured rules are a single `readwrite <prefix>%u/#` (see acl.FastPrefix).
const (
	reservedPrefix      = "iotauth-agent"
	renamedPrefix       = "iotauth-agent:"
	renamedCustomPrefix = "iotauth-agent-custom:"
)

// instance is the plugin: configuration, store, authorizer, and the live sessions it admitted. The
// session maps are written by callbacks on the broker's main thread and read by background goroutines
// that re-check sessions, hence the mutex.
type instance struct {
	cfg    options.Config
	store  *store.Store // background work: LISTEN, re-checks, preload, key use
	lookup *store.Store // connects, on the broker thread
	auth   *auth.Authorizer
	log    *slog.Logger
	logs   *logq.Queue
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[uintptr]*live
	byAgent  map[string]*live // first of the agent's live sessions, linked through live.nextOfAgent
	gen      uint64
	kicks    []kick
	// spare holds the records of ended sessions for reuse, so that a connect storm allocates none. Every
	// *live is reached only under mu (the background takes copies), so a record is free once removed.
	spare []*live

	pendingMu sync.Mutex
	pending   map[string]struct{} // agents whose sessions need a re-check
	wake      chan struct{}

	refusals *rate.Limiter
	unlogged atomic.Int64

	expiring atomic.Int64 // live sessions whose key has an expiry; the expiry scan runs only then

	usedMu sync.Mutex
	used   map[secret.Digest]struct{} // keys that connected since the last TouchKeys

	// memo holds, under the index of each slot of the shim's connect memo, the session Go admitted and
	// recorded there and the epoch it was decided in. Only the broker thread uses it, inside exports,
	// after the shim's queued events were applied; so a slot an unapplied event names is never rewritten.
	memo []memoEntry
}

type memoEntry struct {
	session auth.Session
	epoch   uint64
}

// live is an admitted session. Session.PasswordSum lets Mosquitto's re-check of every client on SIGHUP
// be answered in memory; the store is consulted in the background.
type live struct {
	auth.Session
	client   uintptr
	gen      uint64
	username string
	// prevOfAgent and nextOfAgent link the sessions of one agent (most have one), without a map each.
	prevOfAgent, nextOfAgent *live
	// acl is the expanded ACL, computed under mu on the first check Go answers (the C shim answers most
	// of them) and never changed after.
	acl *acl.Set
}

type kick struct {
	client   uintptr
	gen      uint64
	clientID string
	reason   error
}

func newInstance(kv [][2]string) (*instance, error) {
	cfg, err := options.Parse(kv)
	if err != nil {
		return nil, err
	}
	logs := logq.New()
	logs.OnPush(requestTick)
	log := logq.NewLogger(logs, logq.ParseLevel(cfg.LogLevel), logq.Levels{Debug: levelDebug, Info: levelNotice, Warning: levelWarning, Error: levelErr})
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
	closeStores := func() { lookup.Close(); st.Close() }
	c, err := auth.NewCache(cache.Options[auth.Entry, auth.Group]{
		Size: cfg.CacheSize, TTL: cfg.CacheTTL, NegativeTTL: cfg.NegativeTTL, StaleGrace: cfg.StaleGrace, Group: auth.GroupOf,
	})
	if err != nil {
		closeStores()
		return nil, err
	}
	a := auth.New(auth.Config{
		KeyKind: cfg.KeyKind, ClientID: cfg.ClientID, Rules: cfg.ACL, DBTimeout: cfg.DBTimeout,
		DeferUnknown: cfg.DeferUnknown, NamePrefix: renamedPrefix, CustomNamePrefix: renamedCustomPrefix, Log: log,
	}, lookup, c)
	prefix, fast := acl.FastPrefix(cfg.ACL)
	if fast && fastUserPrefix() != renamedPrefix {
		fast = false // the shim and this file disagree on the name: never guess
	}
	if !setFastACL(prefix, fast) {
		closeStores()
		return nil, fmt.Errorf("out of memory setting up the ACL fast path")
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{
		cfg: cfg, store: st, lookup: lookup, auth: a, log: log, logs: logs, cancel: cancel,
		sessions: map[uintptr]*live{}, byAgent: map[string]*live{},
		pending: map[string]struct{}{}, wake: make(chan struct{}, 1), used: map[secret.Digest]struct{}{},
		refusals: rate.NewLimiter(rate.Limit(1), 5),
	}
	// The memo never remembers more connects than the cache holds credentials (it is off without a cache).
	memoSlots := min(cfg.ConnectMemo, cfg.CacheSize)
	if n := initMemo(memoSlots); n < 0 {
		cancel()
		closeStores()
		return nil, fmt.Errorf("out of memory allocating plugin_opt_connect_memo %d: lower it or set 0", memoSlots)
	} else if n > 0 {
		in.memo = make([]memoEntry, n)
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
		"clientid", cfg.ClientID, "acl", cfg.ACLSpec, "preload", cfg.Preload, "connect_memo", len(in.memo))
	return in, nil
}

func (in *instance) close() {
	in.cancel()
	in.wg.Wait()
	in.lookup.Close()
	in.store.Close()
}

// basicAuth decides a CONNECT (or Mosquitto's re-check of a live client on SIGHUP).
// username and password are borrowed from the broker for the call and must not be kept.
func (in *instance) basicAuth(client uintptr, username string, password []byte, clientID string) int {
	testHook(username)
	ctx := context.Background()
	if strings.HasPrefix(username, reservedPrefix) {
		return in.reauth(client, username, password)
	}
	// Read before the cache is: a change to the credential after this point shows as a new epoch.
	epoch := memoEpoch()
	s, err := in.auth.Authorize(ctx, auth.Credentials{Username: username, Password: password, ClientID: clientID})
	if errors.Is(err, auth.ErrDeferred) {
		return rcDefer
	}
	if err != nil {
		in.refused(clientID, err)
		return rcAuth
	}
	// Mosquitto frees the client's old username, which username borrows: it must not be used from here.
	username = ""
	if !setUsername(client, s.Name) {
		in.log.Error("refusing connect: could not replace the username in the broker (out of memory?)", "agent", s.Agent)
		return rcAuth
	}
	if in.admit(client, s, epoch) {
		in.remember(&s, epoch)
	} else {
		in.recheckLater(s.Agent)
	}
	in.markUsed(s.Digest)
	if in.log.Enabled(ctx, slog.LevelDebug) { // skip boxing the arguments on the hot path
		in.log.Debug("connect authorised", "agent", s.Agent, "key", s.KeyID())
	}
	return rcSuccess
}

func (in *instance) markUsed(d secret.Digest) {
	in.usedMu.Lock()
	if len(in.used) < 100000 {
		in.used[d] = struct{}{}
	}
	in.usedMu.Unlock()
}

// admit records an authorised session of client, decided in epoch. It returns false when the epoch has
// moved on since: a credential changed while the connect was decided, and the re-check that the change
// started may have looked at the live sessions before this one was added. Every section under mu
// unlocks by defer: a panic recovered at the export must not leave the broker thread's next call waiting
// on the lock.
func (in *instance) admit(client uintptr, s auth.Session, epoch uint64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.admitLocked(client, s, epoch)
}

func (in *instance) admitLocked(client uintptr, s auth.Session, epoch uint64) bool {
	in.gen++
	in.removeLocked(client)
	var l *live
	if n := len(in.spare); n > 0 {
		l, in.spare = in.spare[n-1], in.spare[:n-1]
	} else {
		l = new(live)
	}
	*l = live{Session: s, client: client, gen: in.gen, username: s.Name}
	in.sessions[client] = l
	if !s.ExpiresAt.IsZero() {
		in.expiring.Add(1)
	}
	if first := in.byAgent[s.Agent]; first != nil {
		l.nextOfAgent, first.prevOfAgent = first, l
	}
	in.byAgent[s.Agent] = l
	// Read under mu, after the session is in place: a change whose epoch bump comes later re-checks the
	// agent's sessions after this (its re-check reads them under mu), and one whose bump came earlier is
	// seen here.
	return memoEpoch() == epoch
}

// applyLocked applies one event; for an admission decided in an epoch that has since moved on it returns
// the agent to re-check. A failure is contained to its event, so that the rest of the queue is applied;
// a memo admission that could not be recorded also empties the memo, so that no more follow unseen.
func (in *instance) applyLocked(ev shimEvent) (agent string, stale bool) {
	defer func() {
		if r := recover(); r != nil {
			if ev.slot >= 0 {
				bumpMemoEpoch()
			}
			in.log.Error("internal error applying a queued connect or disconnect (please report this)", "slot", ev.slot, "panic", fmt.Sprint(r))
		}
	}()
	switch {
	case ev.slot == eventVoid:
	case ev.slot == eventDisconnect:
		in.removeLocked(ev.client)
	case ev.slot >= 0 && int(ev.slot) < len(in.memo):
		m := &in.memo[ev.slot]
		if !in.admitLocked(ev.client, m.session, m.epoch) {
			return m.session.Agent, true
		}
	default: // cannot happen: the shim hands out only slots of its table, which memo mirrors
		panic(fmt.Sprintf("the connect memo admitted a client under slot %d of %d", ev.slot, len(in.memo)))
	}
	return "", false
}

// remember records an admitted connect in the shim's memo, so that the same key, password and client id
// are admitted again without entering Go while the credential stays fresh in the cache (and the key
// unexpired) and no credential changes (the epoch). A credential served stale is not remembered.
func (in *instance) remember(s *auth.Session, epoch uint64) {
	if len(in.memo) == 0 || s.FreshUntil == 0 {
		return
	}
	deadline := s.FreshUntil
	if !s.ExpiresAt.IsZero() {
		deadline = min(deadline, s.ExpiresAt.UnixNano())
	}
	if slot := memoPut((*[32]byte)(&s.Digest), &s.PasswordSum, s.ClientID, s.Name, epoch, deadline); slot >= 0 && slot < len(in.memo) {
		in.collectReplays(slot) // what the slot's previous entry admitted is its own key's use
		in.memo[slot] = memoEntry{session: *s, epoch: epoch}
	}
}

// collectAllReplays records the keys the memo admitted connects with since Go last looked, for their
// last_used_at (the memo's admissions that Go never saw, because the client left before Go ran, count
// too). Broker thread, inside an export.
func (in *instance) collectAllReplays() {
	words, pending := memoUsed(len(in.memo))
	if !pending {
		return
	}
	for w := range words {
		for bits := words[w]; bits != 0; bits &= bits - 1 {
			in.collectReplays(w*64 + mathbits.TrailingZeros64(bits))
		}
	}
}

// collectReplays records the use of the key of memo slot slot, if the memo admitted connects from it
// since Go last looked, and logs how many at debug level.
func (in *instance) collectReplays(slot int) {
	n := memoTakeReplays(slot)
	if n == 0 || slot >= len(in.memo) {
		return
	}
	s := &in.memo[slot].session
	in.markUsed(s.Digest)
	if in.log.Enabled(context.Background(), slog.LevelDebug) {
		in.log.Debug("connects admitted by the memo", "agent", s.Agent, "key", s.KeyID(), "count", n)
	}
}

// apply carries out, in the broker's order, the events the shim queued: a disconnect forgets the
// client's session; a connect the memo admitted becomes the session Go recorded under that slot.
func (in *instance) apply(events []shimEvent) {
	var changed []string
	func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		for _, ev := range events {
			if agent, stale := in.applyLocked(ev); stale {
				changed = append(changed, agent)
			}
		}
	}()
	for _, agent := range changed {
		in.recheckLater(agent)
	}
	if in.log.Enabled(context.Background(), slog.LevelDebug) { // no boxing on the broker thread otherwise
		in.log.Debug("applied queued events", "count", len(events))
	}
}

// isLive reports whether client is a live session named username, admitted with this password.
func (in *instance) isLive(client uintptr, username string, password []byte) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	l := in.sessions[client]
	if l == nil {
		return false
	}
	sum := sha256.Sum256(password)
	return l.username == username && subtle.ConstantTimeCompare(sum[:], l.PasswordSum[:]) == 1
}

func (in *instance) reauth(client uintptr, username string, password []byte) int {
	if !in.isLive(client, username, password) {
		in.refused("", errors.New("username uses the plugin's reserved prefix but matches no live session"))
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

// allows decides an ACL check. Live sessions use the ACL computed at connect. A client with no live
// session but the plugin's username (an offline persistent session receiving queued messages) gets the
// configured template rules for its agent.
func (in *instance) allows(client uintptr, access acl.Access, topic string) bool {
	testHook(topic)
	if set := in.sessionACL(client); set != nil {
		return set.Allows(access, topic)
	}
	user, cid := clientUsernameAndID(client)
	agent, ok := strings.CutPrefix(user, renamedPrefix)
	if !ok || auth.CheckIdentifier(cid) != nil || auth.CheckIdentifier(agent) != nil {
		// Includes agents with extra acl_rules (iotauth-agent-custom:): their deny rules are not known
		// here, so their will messages and offline deliveries are refused rather than guessed.
		return false
	}
	return acl.Expand(in.cfg.ACL, agent, cid).Allows(access, topic)
}

// sessionACL is the ACL of client's live session, expanded on first use; nil when it has none.
func (in *instance) sessionACL(client uintptr) *acl.Set {
	in.mu.Lock()
	defer in.mu.Unlock()
	l := in.sessions[client]
	if l == nil {
		return nil
	}
	if l.acl == nil {
		expanded := l.ACL()
		l.acl = &expanded
	}
	return l.acl
}

func (in *instance) removeLocked(client uintptr) {
	l := in.sessions[client]
	if l == nil {
		return
	}
	delete(in.sessions, client)
	if !l.ExpiresAt.IsZero() {
		in.expiring.Add(-1)
	}
	switch {
	case l.prevOfAgent != nil:
		l.prevOfAgent.nextOfAgent = l.nextOfAgent
	case l.nextOfAgent != nil:
		in.byAgent[l.Agent] = l.nextOfAgent
	default:
		delete(in.byAgent, l.Agent)
	}
	if l.nextOfAgent != nil {
		l.nextOfAgent.prevOfAgent = l.prevOfAgent
	}
	*l = live{}
	if len(in.spare) < maxSpare {
		in.spare = append(in.spare, l)
	}
}

// maxSpare bounds instance.spare: enough for the churn between two garbage collections at thousands of
// connects a second, small next to the sessions themselves.
const maxSpare = 1024

// tick runs on the main thread when the shim was asked for it (at most every 50 ms), or has queued events
// or memo admissions to report (at most every second): it carries out queued kicks, records the keys the
// memo admitted connects with, and writes queued logs. (enter has applied the queued events.)
func (in *instance) tick() {
	for _, id := range in.takeKicks() {
		kickClient(id) // fires DISCONNECT, which takes in.mu: not held here
	}
	in.collectAllReplays()
	in.flushLogs()
}

// takeKicks empties the kick queue and returns the client ids of the sessions still live to kick.
func (in *instance) takeKicks() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var ids []string
	for _, k := range in.kicks {
		if l := in.sessions[k.client]; l != nil && l.gen == k.gen {
			ids = append(ids, k.clientID)
			in.log.Info("disconnecting agent", "agent", l.Agent, "client", k.clientID, "reason", k.reason.Error())
		}
	}
	in.kicks = in.kicks[:0]
	return ids
}

func (in *instance) reload() {
	in.log.Info("reload: re-checking live sessions (plugin options are read at start only)")
	in.recheckAll()
}
