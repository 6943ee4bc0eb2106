// Package session keeps the MQTT sessions the plugin admitted, in the broker's order of events: a
// connect Go admitted, a disconnect, a re-check that found a session's credentials changed, a kick
// carried out on the broker's thread. It is plain Go behind a small Broker interface (the few broker
// calls a session needs) with an injected clock, so that the protocol between those events is tested
// without Mosquitto.
//
// A session is live from its admission until its client's DISCONNECT, then ended: Mosquitto may still
// check the client's will and deliver queued messages to its offline persistent session, and those checks
// are answered from the ended session's own rules, never from the client's name. An ended session is
// forgotten when its client id is admitted again, when a re-check finds its credentials no longer valid
// (its offline session is then ended without its will), or when too many ended sessions are kept.
package session

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
)

// Broker is what sessions need from Mosquitto. Every method is called on the broker's main thread,
// except RequestTick (any goroutine).
type Broker interface {
	// SetUsername gives the client the session's name in place of the API key it presented.
	SetUsername(client uintptr, name string) bool
	// Mark lets the broker answer the client's publishes and deliveries itself: allowed exactly for
	// topics that are prefix or below it. An empty prefix removes the mark. prefix is borrowed for the
	// call: the broker copies it.
	Mark(client uintptr, prefix string) bool
	// MarkReads lets the broker allow the client's deliveries itself (a read mark: every subscription
	// the client has was admitted by its session's rules), until RevokeReads. It replaces any mark.
	MarkReads(client uintptr) bool
	// RevokeReads makes every read mark stale at once: the broker asks again before its next delivery
	// to such a client. Any goroutine.
	RevokeReads()
	// CleanStart reports whether the client's CONNECT asked for a clean start (clean session): the
	// broker then hands it none of an earlier session's subscriptions or queued messages.
	CleanStart(client uintptr) bool
	// Kick disconnects the client with this id, live or offline, without its will.
	Kick(clientID string)
	// RequestTick asks for Tick to run on the main thread soon.
	RequestTick()
}

// ErrClientIDTaken refuses a connect whose client id belongs to a live or offline session of another
// agent: admitting it would disconnect that session and take over its queued messages.
var ErrClientIDTaken = errors.New("client id is in use by another agent's session")

// Forever is the KeptFor of a session the broker keeps for as long as it runs.
const Forever time.Duration = math.MaxInt64

// Told is what the broker said when a client went offline.
type Told int8

const (
	// ToldNothing: Mosquitto 2.0 sends DISCONNECT whether it keeps the session or not.
	ToldNothing Told = -1
	// ToldEnded: Mosquitto 2.1 sent DISCONNECT, so the session ends.
	ToldEnded Told = 0
	// ToldKept: Mosquitto 2.1 sent CLIENT_OFFLINE, so it keeps the session.
	ToldKept Told = 1
)

// KeptFor is how long the broker may keep a client's session after it went offline, as far as the plugin
// can know. Mosquitto gives plugins the clean start (MQTT 5) or clean session (3.1.x) flag of the client's
// CONNECT and, from 2.1 on, whether it keeps the session (told), but never an MQTT 5 session expiry
// interval. A 3.1.x session is kept, without expiry, exactly when it was not clean. On 2.0 an MQTT 5
// session is presumed kept when it did not start clean (it asked to resume a session, so it most likely
// asked to be kept too) and presumed ended when it started clean (no expiry is the default of MQTT 5
// clients). A kept MQTT 5 session is held for mqtt5Hold at most (0: not at all). Another principal that
// takes over a session wrongly presumed ended gets only what its own ACL allows of it (Mosquitto re-checks
// queued messages, and every delivery, against the new client).
func KeptFor(protocolVersion int, cleanStart bool, told Told, mqtt5Hold time.Duration) time.Duration {
	switch {
	case told == ToldEnded, told == ToldNothing && cleanStart:
		return 0
	case protocolVersion == 5:
		return mqtt5Hold
	}
	return Forever
}

// Config sets up a Table.
type Config struct {
	Broker Broker
	// FastPrefix, when not empty, is the topic prefix of the configured single-namespace rule
	// (acl.FastPrefix): sessions with exactly the configured rules are marked with FastPrefix+agent.
	FastPrefix string
	// ReadMarks gives the other sessions that started clean a read mark (Broker.MarkReads), see
	// docs/decisions/0016-read-marks-for-admitted-subscriptions.md.
	ReadMarks bool
	// MaxEnded bounds the ended sessions kept for wills and offline deliveries (default 65536), and
	// MaxEndedPerAgent those of one agent or application key (default 256), so that no principal can
	// push out the others' (which would also free their client ids for a takeover).
	MaxEnded, MaxEndedPerAgent int
	// Kicked, when set, is told the reason of each kick Tick carries out (for metrics). It runs on the
	// broker's thread with the table locked: it must only count.
	Kicked func(reason error)
	Now    func() time.Time
	Log    *slog.Logger
}

// Table holds the sessions. Admit, Disconnect, Allows and Tick run on the broker's thread; Sessions,
// Expired, QueueKick and Changed on background goroutines: a mutex guards the maps.
type Table struct {
	cfg   Config
	epoch atomic.Uint64

	mu         sync.Mutex
	live       map[uintptr]*record
	byAgent    map[string]*record // the first of each agent's sessions, live and ended (linked by agent)
	byClientID map[string]*record // the newest session of each client id, live or ended
	ended      list               // ended sessions, oldest first, for MaxEnded
	endedOf    map[string]int     // ended sessions per agent, for MaxEndedPerAgent
	gen        uint64
	kicks      []kick
	expiring   int       // live sessions whose key has an expiry
	nextExpiry int64     // unix ns no later than the earliest expiry of a live session not yet refused
	spare      []*record // records of forgotten sessions, reused so that a connect storm allocates none
	markBuf    []byte    // the mark prefix being handed to the broker (it copies it)
}

// list is an intrusive doubly linked list of records through their endedPrev/endedNext.
type list struct {
	head, tail *record
	n          int
}

func (l *list) pushBack(r *record) {
	r.endedPrev, r.endedNext = l.tail, nil
	if l.tail != nil {
		l.tail.endedNext = r
	} else {
		l.head = r
	}
	l.tail = r
	l.n++
}

func (l *list) remove(r *record) {
	if r.endedPrev != nil {
		r.endedPrev.endedNext = r.endedNext
	} else {
		l.head = r.endedNext
	}
	if r.endedNext != nil {
		r.endedNext.endedPrev = r.endedPrev
	} else {
		l.tail = r.endedPrev
	}
	r.endedPrev, r.endedNext = nil, nil
	l.n--
}

type record struct {
	auth.Session
	client     uintptr
	gen        uint64
	ended      bool
	persistent bool  // ended, and the broker may keep its session (and queued messages) for the client id
	keptUntil  int64 // when persistent: unix ns after which the broker no longer keeps it (0: never)
	revoked    bool  // a re-check refused it: kicked soon, and not kept once ended
	indexed    bool  // byClientID holds it under its client id (no newer session took the id over)
	reads      bool  // live and read-marked: the broker allows its deliveries while the mark is current
	acl        *acl.Set
	// agentPrev/agentNext link the sessions of one agent (most have one); endedPrev/endedNext the ended
	// ones in the order they ended.
	agentPrev, agentNext *record
	endedPrev, endedNext *record
}

// maxSpare bounds Table.spare: enough for the churn between two garbage collections at thousands of
// connects a second, small next to the sessions themselves.
const maxSpare = 1024

type kick struct {
	client   uintptr
	gen      uint64
	clientID string
	reason   error
}

// New makes an empty table.
func New(cfg Config) *Table {
	if cfg.MaxEnded <= 0 {
		cfg.MaxEnded = 65536
	}
	if cfg.MaxEndedPerAgent <= 0 {
		cfg.MaxEndedPerAgent = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Table{
		cfg: cfg, live: map[uintptr]*record{}, byAgent: map[string]*record{},
		byClientID: map[string]*record{}, endedOf: map[string]int{}, nextExpiry: math.MaxInt64,
	}
}

// Epoch counts credential changes (Changed). Read it before deciding a connect and hand it to Admit.
func (t *Table) Epoch() uint64 { return t.epoch.Load() }

// Changed records that a credential changed (a NOTIFY, the change feed reconnecting). Call it before
// starting the re-check of the agents concerned: a connect decided before the change and admitted after
// the re-check looked at the sessions is then seen by Admit.
func (t *Table) Changed() { t.epoch.Add(1) }

// Admit records s as client's live session: it gives the client the session's name and, for a session
// with exactly the configured rules, the broker's fast-path mark. It refuses (ErrClientIDTaken) a client
// id that another principal's session holds (see keepsOut). current is false when a credential changed
// since epoch was read: the caller must then re-check the agent, since the re-check that the change
// started may have missed this session.
func (t *Table) Admit(client uintptr, s auth.Session, epoch uint64) (current bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.byClientID[s.ClientID]
	sameClient := old != nil && !old.ended && old.client == client // Mosquitto re-checking a live client
	if old != nil && !sameClient && keepsOut(old, &s, t.cfg.Now().UnixNano()) {
		return false, ErrClientIDTaken
	}
	if !t.cfg.Broker.SetUsername(client, s.Name) {
		return false, errors.New("the broker could not store the session's username (out of memory?)")
	}
	// A client admitted again while live may hold subscriptions its earlier session's rules admitted.
	prev := t.live[client]
	again := prev != nil
	if prev != nil {
		t.dropLocked(prev)
		if prev == old {
			old = nil
		}
	}
	t.gen++
	var r *record
	switch {
	case old != nil && old.ended && old.Agent == s.Agent:
		// The agent's own ended session under this client id (an agent reconnecting): its record takes
		// the new session in place, keeping its entries in byClientID and byAgent.
		r = old
		t.ended.remove(r)
		t.endedLeftLocked(r.Agent)
		t.toAgentHeadLocked(r)
		*r = record{Session: s, client: client, gen: t.gen, indexed: true, agentNext: r.agentNext}
		t.live[client] = r
	case old != nil && old.ended:
		t.dropLocked(old)
		old = nil
	case old != nil:
		// The broker disconnects the session taken over after this; its will is checked before that, and
		// must be answered by Go from its record (refused if a re-check refused it), not by its mark.
		t.cfg.Broker.Mark(old.client, "")
		old.reads = false
		old.indexed = false
		old = nil
	}
	if r == nil {
		if n := len(t.spare); n > 0 {
			r, t.spare = t.spare[n-1], t.spare[:n-1]
		} else {
			r = new(record)
		}
		*r = record{Session: s, client: client, gen: t.gen, indexed: true}
		t.live[client] = r
		t.byClientID[s.ClientID] = r
		if first := t.byAgent[s.Agent]; first != nil {
			r.agentNext, first.agentPrev = first, r
		}
		t.byAgent[s.Agent] = r
	}
	if !s.ExpiresAt.IsZero() {
		t.expiring++
		t.nextExpiry = min(t.nextExpiry, s.ExpiresAt.UnixNano())
	}
	// An application key's session never has a prefix mark: its publishes always go to Go.
	marked := t.cfg.FastPrefix != "" && !s.Custom() && !s.App() && t.markLocked(client, s.Agent)
	if !marked && t.cfg.ReadMarks && !again && t.cfg.Broker.CleanStart(client) {
		// Started clean, the session has no subscription yet; each one it makes is admitted by Go from
		// its rules, which never change while it lives (a change refuses it, see Refuse).
		r.reads = t.cfg.Broker.MarkReads(client)
		marked = r.reads
	}
	if !marked {
		t.cfg.Broker.Mark(client, "") // a handle the broker reused must not keep an old mark
	}
	// Read under mu, after the session is in place: a change whose Changed comes later re-checks the
	// agent's sessions after this (its snapshot is taken under mu), and one that came earlier shows here.
	return t.epoch.Load() == epoch, nil
}

// markLocked gives client the prefix mark of agent, built in a buffer the table reuses (the broker
// copies it), so that a connect allocates no string for it.
func (t *Table) markLocked(client uintptr, agent string) bool {
	t.markBuf = append(append(t.markBuf[:0], t.cfg.FastPrefix...), agent...)
	return t.cfg.Broker.Mark(client, unsafe.String(unsafe.SliceData(t.markBuf), len(t.markBuf)))
}

// toAgentHeadLocked moves r to the head of its agent's list of sessions, where a new session goes.
func (t *Table) toAgentHeadLocked(r *record) {
	if r.agentPrev == nil {
		return
	}
	r.agentPrev.agentNext = r.agentNext
	if r.agentNext != nil {
		r.agentNext.agentPrev = r.agentPrev
	}
	first := t.byAgent[r.Agent]
	r.agentPrev, r.agentNext, first.agentPrev = nil, first, r
	t.byAgent[r.Agent] = r
}

// endedLeftLocked counts one ended session of agent fewer. The count stays in endedOf, even at 0, while
// the agent has sessions (an agent reconnecting would otherwise delete and re-insert it every time);
// dropLocked removes it with the agent's last session.
func (t *Table) endedLeftLocked(agent string) {
	t.endedOf[agent]--
}

// Disconnect ends client's live session, if it has one. The session is kept as ended under its client
// id, for the will and offline deliveries Mosquitto still checks, unless a newer session took the client
// id over or a re-check refused it. keptFor (KeptFor) is how long the broker may keep the client's
// session (and queue messages for it) after the disconnect: 0 not at all, Forever without expiry.
func (t *Table) Disconnect(client uintptr, keptFor time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.live[client]
	if r == nil {
		return
	}
	if r.revoked || !r.indexed {
		t.dropLocked(r)
		return
	}
	t.removeLiveLocked(r)
	r.ended, r.persistent, r.reads = true, keptFor > 0, false // the shim removed the client's mark
	if r.persistent && keptFor != Forever {
		r.keptUntil = t.cfg.Now().Add(keptFor).UnixNano()
	}
	t.ended.pushBack(r)
	n := t.endedOf[r.Agent] + 1
	t.endedOf[r.Agent] = n
	if n > t.cfg.MaxEndedPerAgent {
		// The agent's oldest ended session is the last of its list (sessions are added at its head).
		var oldest *record
		for e := t.byAgent[r.Agent]; e != nil; e = e.agentNext {
			if e.ended {
				oldest = e
			}
		}
		t.dropLocked(oldest)
	}
	for t.ended.n > t.cfg.MaxEnded {
		t.dropLocked(t.ended.head)
	}
}

// keepsOut decides whether old, the newest session recorded under the client id that s asks for, keeps
// s out at now (unix ns). A session of the same agent or application key never does. Another principal's
// live session does (admitting s would disconnect it). Another principal's ended session does only while
// the broker may still keep it (KeptFor), so that its queued messages are not handed over, and never when
// the template gives the id to s's agent: no other principal can hold an agent's own client id.
func keepsOut(old *record, s *auth.Session, now int64) bool {
	switch {
	case old.Agent == s.Agent:
		return false
	case !old.ended:
		return true
	case s.OwnsClientID, !old.persistent:
		return false
	}
	return old.keptUntil == 0 || now < old.keptUntil
}

func (t *Table) removeLiveLocked(r *record) {
	if t.live[r.client] == r {
		delete(t.live, r.client)
		if !r.ExpiresAt.IsZero() {
			t.expiring--
		}
	}
}

// dropLocked forgets a live or ended session entirely; its record is reused. Every *record is reached
// only under mu (the re-checks take copies), so a record is free once it is out of every index.
func (t *Table) dropLocked(r *record) {
	if r.ended {
		t.ended.remove(r)
		t.endedLeftLocked(r.Agent)
	} else {
		t.removeLiveLocked(r)
	}
	if r.indexed {
		delete(t.byClientID, r.ClientID)
	}
	switch {
	case r.agentPrev != nil:
		r.agentPrev.agentNext = r.agentNext
	case r.agentNext != nil:
		t.byAgent[r.Agent] = r.agentNext
	default:
		delete(t.byAgent, r.Agent)
		delete(t.endedOf, r.Agent)
	}
	if r.agentNext != nil {
		r.agentNext.agentPrev = r.agentPrev
	}
	*r = record{}
	if len(t.spare) < maxSpare {
		t.spare = append(t.spare, r)
	}
}

// IsLive reports whether client has a live session named username, admitted with this password: how
// Mosquitto's re-check of every client on SIGHUP is answered without the database.
func (t *Table) IsLive(client uintptr, username string, password []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.live[client]
	if r == nil {
		return false
	}
	sum := sha256.Sum256(password)
	return r.Name == username && subtle.ConstantTimeCompare(sum[:], r.PasswordSum[:]) == 1
}

// Verdict is the answer to an ACL check.
type Verdict uint8

const (
	// Unknown means the client is neither a live session nor an ended one that iotauth vouches for.
	Unknown Verdict = iota
	// Allow means the session's rules allow the check.
	Allow
	// Deny means the session's rules refuse it.
	Deny
)

// Allows decides an ACL check that the broker's fast path did not answer. A live session uses its own
// rules. A client without one may be an ended session whose will or queued messages Mosquitto checks:
// the broker keeps such a client's context (the same handle) with the same client id and the name the
// session was given, and all three must match the ended session, whose own rules then decide until its
// key expires. who returns the broker's client id and username for client; it is asked only then.
// Anything else is Unknown: a client iotauth did not admit, or a session it no longer vouches for.
func (t *Table) Allows(client uintptr, who func() (clientID, username string), access acl.Access, topic string) Verdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.live[client]
	if r == nil {
		id, name := who()
		if r = t.byClientID[id]; r == nil || !r.ended || r.client != client || r.Name != name {
			return Unknown
		}
		if !r.ExpiresAt.IsZero() && !t.cfg.Now().Before(r.ExpiresAt) {
			return Deny
		}
	}
	if r.revoked {
		return Deny // a re-check refused it; the kick follows on the next Tick
	}
	if r.reads && !r.ended && access == acl.Read {
		// The read mark went stale (another session was refused) or did not answer this topic: renew it,
		// under mu, so that a Refuse of this session after this point makes it stale again.
		r.reads = t.cfg.Broker.MarkReads(client)
	}
	if r.acl == nil {
		expanded := r.ACL()
		r.acl = &expanded
	}
	if r.acl.Allows(access, topic) {
		return Allow
	}
	return Deny
}

// Snapshot is a copy of a session, for a re-check off the broker's thread.
type Snapshot struct {
	auth.Session
	Ended  bool
	client uintptr
	gen    uint64
}

// Agents lists the agents with live or ended sessions.
func (t *Table) Agents() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	agents := make([]string, 0, len(t.byAgent))
	for a := range t.byAgent {
		agents = append(agents, a)
	}
	return agents
}

// Sessions copies the live and ended sessions of these agents.
func (t *Table) Sessions(agents []string) []Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Snapshot
	for _, a := range agents {
		for r := t.byAgent[a]; r != nil; r = r.agentNext {
			out = append(out, Snapshot{Session: r.Session, Ended: r.ended, client: r.client, gen: r.gen})
		}
	}
	return out
}

// Digests lists the keys of the live sessions (with repeats), so that their credentials can be kept
// resident in the cache.
func (t *Table) Digests() []secret.Digest {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]secret.Digest, 0, len(t.live))
	for _, r := range t.live {
		if r.Token == nil { // a short-lived credential has no key in the cache
			out = append(out, r.Digest)
		}
	}
	return out
}

// Expired copies the live sessions whose key (or short-lived credential) has expired by now. (An ended
// one is refused by Allows.) It is cheap to call often: the sessions are scanned only once the earliest
// expiry has come.
func (t *Table) Expired() []Snapshot {
	now := t.cfg.Now().UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expiring == 0 || now < t.nextExpiry {
		return nil
	}
	var out []Snapshot
	next := int64(math.MaxInt64)
	for _, r := range t.live {
		if r.ExpiresAt.IsZero() || r.revoked {
			continue
		}
		if e := r.ExpiresAt.UnixNano(); now < e {
			next = min(next, e)
			continue
		}
		out = append(out, Snapshot{Session: r.Session, client: r.client, gen: r.gen})
	}
	t.nextExpiry = next
	return out
}

// Tokens copies the live and ended sessions of short-lived credentials, for a re-check against the
// deny list.
func (t *Table) Tokens() []Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Snapshot
	for a, first := range t.byAgent {
		if !strings.HasPrefix(a, auth.TokenAgentPrefix) {
			continue
		}
		for r := first; r != nil; r = r.agentNext {
			if r.Token != nil {
				out = append(out, Snapshot{Session: r.Session, Ended: r.ended, client: r.client, gen: r.gen})
			}
		}
	}
	return out
}

// Refuse ends a session a re-check no longer allows. A live one is disconnected on the next Tick,
// without its will, and not kept once it has ended. An ended one is forgotten at once: its will and its
// offline session's deliveries are refused from now on. A session that was replaced since the snapshot
// is left alone. It reports whether it queued a disconnect (a live session not refused before), which
// the caller records in the audit trail.
func (t *Table) Refuse(s Snapshot, reason error) (kicked bool) {
	t.mu.Lock()
	if r := t.live[s.client]; r != nil && r.gen == s.gen {
		if r.reads {
			// From now on the broker asks Go, which refuses, before each delivery to this session.
			r.reads = false
			t.cfg.Broker.RevokeReads()
		}
		if !r.revoked {
			r.revoked, kicked = true, true
			t.kicks = append(t.kicks, kick{client: s.client, gen: s.gen, clientID: s.ClientID, reason: reason})
			t.cfg.Log.Info("disconnecting agent", "agent", r.Agent, "client", r.ClientID, "reason", reason.Error())
		}
	} else if r := t.byClientID[s.ClientID]; r != nil && r.gen == s.gen && r.ended {
		t.cfg.Log.Info("refusing the will and queued messages of an ended session", "agent", r.Agent,
			"client", r.ClientID, "reason", reason.Error())
		t.dropLocked(r)
	}
	n := len(t.kicks)
	t.mu.Unlock()
	if n > 0 {
		t.cfg.Broker.RequestTick()
	}
	return kicked
}

// Tick disconnects the sessions Refuse queued that are still live. Main thread.
func (t *Table) Tick() {
	for _, id := range t.takeKicks() {
		t.cfg.Broker.Kick(id) // fires DISCONNECT, which takes t.mu: not held here
	}
}

func (t *Table) takeKicks() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for _, k := range t.kicks {
		if r := t.live[k.client]; r != nil && r.gen == k.gen {
			ids = append(ids, k.clientID)
			if t.cfg.Kicked != nil {
				t.cfg.Kicked(k.reason)
			}
		}
	}
	clear(t.kicks) // drop the reasons and client ids the slice's array still references
	t.kicks = t.kicks[:0]
	return ids
}

// Len reports the live and ended sessions held.
func (t *Table) Len() (live, ended int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live), t.ended.n
}
