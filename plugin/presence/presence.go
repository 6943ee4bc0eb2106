// Package presence records the authenticated sessions a broker holds in PostgreSQL, so that every broker
// and the API share one view of who is online (docs/presence.md), and queues the lifecycle events of
// agents that the plugin publishes over MQTT.
//
// The broker's thread only touches memory: Connected and Disconnected update the live table and queue a
// row; a background goroutine (Run) writes the queue in batches, one statement per BatchSize rows or per
// FlushEvery, whichever comes first, and heartbeats. The queue is bounded: beyond MaxQueue rows are
// dropped and counted, and once a write succeeds again the recorder reconciles the database with its live
// table. It is plain Go behind a small Store interface with an injected clock: it reaches neither PostgreSQL
// nor the broker.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/iotauth/iotauth/plugin/auth"
)

// Reason is why a session ended: one of a fixed set.
type Reason string

// The reasons a session ends.
const (
	// Client: the client sent DISCONNECT. Under Mosquitto 2.0, which does not tell plugins why a connection
	// ended (BrokerReason), also any end without a kick or takeover.
	Client         Reason = "client"
	Keepalive      Reason = "keepalive"
	KickedRevoked  Reason = "kicked_revoked"
	KickedDisabled Reason = "kicked_disabled"
	KickedExpired  Reason = "kicked_expired"
	Takeover       Reason = "takeover"
	BrokerShutdown Reason = "broker_shutdown"
	BrokerLost     Reason = "broker_lost"
	Error          Reason = "error"
)

// TopicPrefix is the topic tree only the plugin publishes to; EventTopicPrefix+<agent uuid> carries an
// agent's lifecycle events.
const (
	TopicPrefix      = "iotauth/presence/"
	EventTopicPrefix = TopicPrefix + "agents/"
)

// Reserved reports whether topic is under TopicPrefix: no client may publish there, whatever its grants.
func Reserved(topic string) bool { return strings.HasPrefix(topic, TopicPrefix) }

// Principal kinds.
const (
	KindAgent = "agent"
	KindApp   = "app"
	KindToken = "token"
)

// Row is a session as the recorder writes it: a start (DisconnectedAt nil) or a start with its end.
type Row struct {
	Seq            int64
	Kind           string // KindAgent, KindApp, KindToken
	Principal      string // agent uuid, application key id, short-lived credential subject
	ClientID       string
	Protocol       string     // mqtt3.1, mqtt3.1.1, mqtt5
	Remote         netip.Addr // IP address (the zero Addr when unknown)
	ConnectedAt    time.Time
	DisconnectedAt *time.Time
	Reason         string // set with DisconnectedAt
}

// Store is what the recorder needs from PostgreSQL (the plugin adapts package store to it).
type Store interface {
	PresenceStart(ctx context.Context, broker, incarnation string, timeout time.Duration) (int64, error)
	// PresenceWrite writes rows; it must not keep rows (nor what their pointers point to) once it returns.
	PresenceWrite(ctx context.Context, broker, incarnation string, rows []Row) error
	// PresenceHeartbeat reports owned false when the broker's row names another incarnation: another
	// broker started with the same id since.
	PresenceHeartbeat(ctx context.Context, broker, incarnation string, timeout time.Duration) (owned bool, err error)
	PresenceReconcile(ctx context.Context, broker, incarnation string, live []Row, batch int, at time.Time) (int64, error)
}

// Config sets up a Recorder.
type Config struct {
	Broker  string        // broker id (plugin_opt_broker_id)
	Timeout time.Duration // plugin_opt_presence_timeout: how long after its last heartbeat the broker's sessions read offline
	Events  bool          // queue agents' lifecycle events for MQTT (plugin_opt_presence_events)
	Store   Store
	// BatchSize and FlushEvery: a batch is written once it holds BatchSize rows or its oldest row waited
	// FlushEvery (defaults 1000 and 250 ms). MaxBatch bounds the rows of one statement (default 1000).
	BatchSize  int
	FlushEvery time.Duration
	MaxBatch   int
	// MaxQueue bounds the rows waiting for PostgreSQL (default 100000), MaxEvents the MQTT events waiting
	// for a TICK (default 10000).
	MaxQueue, MaxEvents int
	DBTimeout           time.Duration // bounds each statement (default 5 s)
	// RequestTick asks for a TICK on the broker's thread (events wait to be published). Any goroutine.
	RequestTick func()
	// Lag, when set, is told how long each written row waited, from its event to its commit.
	Lag func(time.Duration)
	Now func() time.Time
	Log *slog.Logger
}

// Event is a lifecycle event to publish on the broker's thread. CTopic is Topic followed by a NUL byte, so
// that C can read it in place. All three share a buffer that is reused once Published is called: copy
// what must outlive the publish.
type Event struct {
	Topic   string
	CTopic  []byte
	Payload []byte
}

// rec is a session as the broker's thread records it: fixed-size values and strings the session already
// holds, so that recording one allocates nothing. The writer turns it into a Row.
type rec struct {
	seq                       int64
	kind, principal, clientID string
	protocol                  string // one of Protocol's constants
	remote                    netip.Addr
	connectedAt               time.Time
	end                       time.Time // set with reason
	reason                    Reason    // "" while the session is live
}

type entry struct {
	row      rec
	client   uintptr
	reason   Reason // set before the end: a kick or a takeover that is under way
	reasonAt int64  // the kick's or takeover's generation, to tell a stale one
}

// maxSpareEntries bounds Recorder.spareEntries.
const maxSpareEntries = 1024

type queued struct {
	row rec
	at  time.Time // when the event happened (monotonic): for the write lag
	// evRaw: this row's lifecycle event went to Recorder.raw (see pushLocked), not to be rendered from
	// the row.
	evRaw bool
}

// Recorder is the live table and the write queue.
type Recorder struct {
	cfg         Config
	incarnation string
	started     atomic.Bool // the broker's incarnation is registered (PresenceStart succeeded)
	// writing serializes the writers (Run's steps, Close): a batch leaves the queue only once written.
	writing sync.Mutex

	mu   sync.Mutex
	seq  int64
	live map[uintptr]*entry
	// spareEntries are entries of ended sessions, reused so that a connect storm allocates none.
	spareEntries []*entry
	byClientID   map[string]*entry
	queue        []queued
	// rendered: the first rendered rows of queue have had their lifecycle events rendered (or need
	// none). A row's event is rendered from the row itself, so that the broker's thread writes one record
	// per start or end, not two.
	rendered int
	dirty    bool // rows were dropped: reconcile once PostgreSQL answers
	// raw holds the events of rows that could not carry them: rows dropped while the queue was full, and
	// every row after such a one until the writer renders (events keep their order).
	raw        []rawEvent
	spareRaw   []rawEvent // the other buffer of raw, swapped by renderEvents (no allocation per round)
	spareQueue []queued   // the other buffer of queue, swapped by flush
	events     []Event    // events rendered, waiting for a TICK
	eventBufs  [][]byte   // the buffers events point into
	// Handed to the broker's thread by TakeEvents, and recycled by Published once it has published them.
	handedEvents []Event
	handedBufs   [][]byte
	freeEvents   []Event
	freeBufs     [][]byte
	spareBufList [][]byte
	renderOut    []Event    // render's scratch (writer only)
	brokerJSON   []byte     // the broker id as a JSON string, for the events
	rowEvents    []rawEvent // renderRows' scratch (writer only)
	lastWrite    time.Time

	dropped       atomic.Int64
	eventsDropped atomic.Int64
	written       atomic.Int64
	wake          chan struct{}

	// The writer's scratch space, reused between batches (writer only, under writing).
	scratchRows    []Row
	scratchAt      map[int64]int
	replacedWarned time.Time // when the last "another broker has this id" error was logged
}

// New makes a recorder with a fresh incarnation.
func New(cfg Config) (*Recorder, error) {
	if cfg.Broker == "" {
		return nil, errors.New("presence: the broker id is empty; set plugin_opt_broker_id")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 250 * time.Millisecond
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 100000
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 10000
	}
	if cfg.DBTimeout <= 0 {
		cfg.DBTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RequestTick == nil {
		cfg.RequestTick = func() {}
	}
	inc, err := newIncarnation()
	if err != nil {
		return nil, err
	}
	return &Recorder{cfg: cfg, incarnation: inc, live: map[uintptr]*entry{}, byClientID: map[string]*entry{},
		wake: make(chan struct{}, 1), brokerJSON: appendJSONString(nil, cfg.Broker)}, nil
}

// newIncarnation draws a random version 4 UUID.
func newIncarnation() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("presence: draw a broker incarnation: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// Incarnation is this start's id.
func (r *Recorder) Incarnation() string { return r.incarnation }

// Broker is the broker id.
func (r *Recorder) Broker() string { return r.cfg.Broker }

// Start registers this incarnation and closes the sessions the broker's earlier incarnations left open
// (reason broker_lost). Call it before the broker accepts; on failure Run retries it.
func (r *Recorder) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
	defer cancel()
	closed, err := r.cfg.Store.PresenceStart(ctx, r.cfg.Broker, r.incarnation, r.cfg.Timeout)
	if err != nil {
		return err
	}
	r.started.Store(true)
	if closed > 0 {
		r.cfg.Log.Info("presence: closed the sessions of this broker's previous start", "broker", r.cfg.Broker, "sessions", closed)
	}
	return nil
}

// Protocol names an MQTT protocol version as Mosquitto reports it (3, 4, 5).
func Protocol(version int) string {
	switch version {
	case 3:
		return "mqtt3.1"
	case 4:
		return "mqtt3.1.1"
	case 5:
		return "mqtt5"
	}
	return "mqtt"
}

// KindOf is the principal kind and id of an authorised session.
func KindOf(s *auth.Session) (kind, id string) {
	switch {
	case s.Token != nil:
		return KindToken, s.Token.Subject
	case s.App():
		return KindApp, s.Agent
	}
	return KindAgent, s.Agent
}

// Connected records client's new session. A live session of the same client id on another handle is
// being taken over: its end, when it comes, reads takeover. remote is the client's IP address (the zero
// Addr when unknown). Broker's thread; it allocates nothing once the recorder's buffers have grown.
func (r *Recorder) Connected(client uintptr, kind, principal, clientID, protocol string, remote netip.Addr) {
	now := r.cfg.Now()
	r.mu.Lock()
	before := len(r.queue)
	if old := r.live[client]; old != nil {
		if old.row.clientID == clientID && old.row.principal == principal && old.row.kind == kind {
			r.mu.Unlock()
			return // Mosquitto re-checking a live client
		}
		r.endLocked(old, now, Error)
	}
	if old := r.byClientID[clientID]; old != nil && old.client != client {
		old.reason = Takeover
	}
	r.seq++
	var e *entry
	if n := len(r.spareEntries); n > 0 {
		e, r.spareEntries = r.spareEntries[n-1], r.spareEntries[:n-1]
	} else {
		e = new(entry)
	}
	*e = entry{client: client, row: rec{seq: r.seq, kind: kind, principal: principal, clientID: clientID,
		protocol: protocol, remote: remote, connectedAt: now}}
	r.live[client] = e
	r.byClientID[clientID] = e
	r.pushLocked(e.row, now)
	full := before < r.cfg.BatchSize && len(r.queue) >= r.cfg.BatchSize
	r.mu.Unlock()
	r.afterPush(full)
}

// Kicking records that the live session of clientID held by principal is about to be disconnected for
// reason (a re-check refused it): its end reads kicked_revoked, kicked_disabled or kicked_expired. Any
// goroutine.
func (r *Recorder) Kicking(clientID, principal string, reason error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.byClientID[clientID]; e != nil && e.row.principal == principal && e.reason == "" {
		e.reason = KickReason(reason)
	}
}

// KickReason maps a re-check's refusal to the reason a kicked session ends with.
func KickReason(err error) Reason {
	switch {
	case errors.Is(err, auth.ErrAgentDisabled):
		return KickedDisabled
	case errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrTokenExpired):
		return KickedExpired
	}
	return KickedRevoked
}

// The codes Mosquitto passes plugins in MOSQ_EVT_DISCONNECT's reason (and MOSQ_EVT_CLIENT_OFFLINE's):
// 2.1 passes the MOSQ_ERR_* code its do_disconnect was given, in 2.1's numbering (2.0's headers number
// MOSQ_ERR_ADMINISTRATIVE_ACTION 30, not 152); every 2.0 passes -1 (docs/presence.md lists the versions).
const (
	CodeUnknown   = -1
	codeSuccess   = 0   // MOSQ_ERR_SUCCESS: the client's DISCONNECT packet
	codeKeepalive = 19  // MOSQ_ERR_KEEPALIVE: nothing heard for 1.5 keep-alive intervals
	codeTakenOver = 142 // MOSQ_ERR_SESSION_TAKEN_OVER: another connection with the same client id
	// Others read error: MOSQ_ERR_CONN_LOST (7, closed without DISCONNECT), MOSQ_ERR_PROTOCOL (2),
	// MOSQ_ERR_MALFORMED_PACKET, MOSQ_ERR_ADMINISTRATIVE_ACTION (152, a kick by another plugin), ...
)

// BrokerReason is the reason a session ends with when the broker's code is all there is to go by (no
// kick or takeover of the plugin's own under way): client for a DISCONNECT packet, keepalive, takeover,
// and error for the rest (a connection lost or closed without DISCONNECT, a protocol error, a kick by
// another plugin). A broker that does not say (CodeUnknown: Mosquitto 2.0) reads client.
func BrokerReason(code int) Reason {
	switch code {
	case CodeUnknown, codeSuccess:
		return Client
	case codeKeepalive:
		return Keepalive
	case codeTakenOver:
		return Takeover
	}
	return Error
}

// Disconnected ends client's session, if it has one: with the reason a kick or takeover left, else the
// reason the broker's code gives (BrokerReason). Broker's thread.
func (r *Recorder) Disconnected(client uintptr, code int) {
	now := r.cfg.Now()
	r.mu.Lock()
	e := r.live[client]
	if e == nil {
		r.mu.Unlock()
		return
	}
	before := len(r.queue)
	reason := e.reason
	if reason == "" {
		reason = BrokerReason(code)
	}
	r.endLocked(e, now, reason)
	full := before < r.cfg.BatchSize && len(r.queue) >= r.cfg.BatchSize
	r.mu.Unlock()
	r.afterPush(full)
}

// endLocked ends e at now (never before its start, whatever the clock did) and queues the end.
func (r *Recorder) endLocked(e *entry, now time.Time, reason Reason) {
	delete(r.live, e.client)
	if r.byClientID[e.row.clientID] == e {
		delete(r.byClientID, e.row.clientID)
	}
	// Compared on the wall clock, which is what PostgreSQL stores: times from time.Now compare on the
	// monotonic clock, which never steps back, so a wall clock stepped back between the start and the end
	// would otherwise store an end before its start (which the table refuses, and with it the batch).
	end := now
	if end.Round(0).Before(e.row.connectedAt.Round(0)) {
		end = e.row.connectedAt
	}
	row := e.row
	row.end, row.reason = end, reason
	r.pushLocked(row, now)
	*e = entry{}
	if len(r.spareEntries) < maxSpareEntries {
		r.spareEntries = append(r.spareEntries, e)
	}
}

// pushLocked queues a start (row.reason "") or an end, with its lifecycle event: the row carries it, unless
// the row is dropped (the queue is full: PostgreSQL is away) or events already wait in raw.
func (r *Recorder) pushLocked(row rec, now time.Time) {
	full := len(r.queue) >= r.cfg.MaxQueue
	evRaw := full || len(r.raw) > 0
	if evRaw {
		r.eventLocked(row)
	}
	if full {
		r.dropped.Add(1)
		r.dirty = true
		return
	}
	r.queue = append(r.queue, queued{row: row, at: now, evRaw: evRaw})
}

// truncateLocked drops the newest rows beyond MaxQueue (after a failed write put its rows back in front),
// counting them, and the events of those not rendered yet.
func (r *Recorder) truncateLocked() {
	over := len(r.queue) - r.cfg.MaxQueue
	if over <= 0 {
		return
	}
	r.dropped.Add(int64(over))
	for i := max(r.cfg.MaxQueue, r.rendered); i < len(r.queue); i++ {
		if q := &r.queue[i]; !q.evRaw && r.wantsEvent(&q.row) {
			r.eventsDropped.Add(1)
		}
	}
	clear(r.queue[r.cfg.MaxQueue:])
	r.queue = r.queue[:r.cfg.MaxQueue]
	r.rendered = min(r.rendered, len(r.queue))
	r.dirty = true
}

// afterPush wakes the writer when a push made the batch full: once per batch, not once per row (a queue
// that stays above the size, after a failed write, is taken by the writer's next tick). Events wait for
// the writer's next round, which renders them off the broker's thread.
func (r *Recorder) afterPush(full bool) {
	if full {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// rawEvent is a lifecycle event as the broker's thread queues it; renderEvents makes it an Event.
type rawEvent struct {
	event, agent, clientID string
	at                     time.Time
	reason                 Reason
}

// wantsEvent reports whether row's start or end is published over MQTT: agents' only, when events are on
// (application keys and short-lived credentials are REST only).
func (r *Recorder) wantsEvent(row *rec) bool { return r.cfg.Events && row.kind == KindAgent }

// rawOf is row's lifecycle event: connected for a start, disconnected with its reason for an end. Never a
// key, password, remote address or token.
func rawOf(row *rec) rawEvent {
	if row.reason == "" {
		return rawEvent{event: "connected", agent: row.principal, clientID: row.clientID, at: row.connectedAt}
	}
	return rawEvent{event: "disconnected", agent: row.principal, clientID: row.clientID, at: row.end, reason: row.reason}
}

// eventLocked queues row's lifecycle event in raw.
func (r *Recorder) eventLocked(row rec) {
	if !r.wantsEvent(&row) {
		return
	}
	if len(r.raw)+len(r.events) >= r.cfg.MaxEvents {
		r.eventsDropped.Add(1)
		return
	}
	r.raw = append(r.raw, rawOf(&row))
}

// takeRowEventsLocked returns the queued rows whose events are not rendered yet, and marks them rendered.
// The rows stay valid for the writer: the broker's thread only appends to the queue, and only the writer
// (under writing) swaps it.
func (r *Recorder) takeRowEventsLocked() []queued {
	rows := r.queue[r.rendered:len(r.queue):len(r.queue)]
	r.rendered = len(r.queue)
	return rows
}

// renderEvents encodes the queued events (off the broker's thread) and asks for a TICK to publish them:
// those of queued rows not rendered yet, then raw's. Writer only (under writing).
func (r *Recorder) renderEvents() {
	r.mu.Lock()
	rows := r.takeRowEventsLocked()
	r.mu.Unlock()
	r.renderRows(rows)
}

// renderRows renders the events of rows (taken by takeRowEventsLocked) and then raw's. Writer only
// (under writing).
func (r *Recorder) renderRows(rows []queued) {
	evs := r.rowEvents[:0]
	if r.cfg.Events {
		for i := range rows {
			if q := &rows[i]; !q.evRaw && r.wantsEvent(&q.row) {
				evs = append(evs, rawOf(&q.row))
			}
		}
	}
	r.mu.Lock()
	raw := r.raw
	r.raw, r.spareRaw = r.spareRaw[:0], nil
	// Rendered events wait for a TICK: beyond MaxEvents of them, the rows' events are dropped and counted.
	if over := len(r.events) + len(evs) - r.cfg.MaxEvents; over > 0 {
		over = min(over, len(evs))
		r.eventsDropped.Add(int64(over))
		clear(evs[len(evs)-over:])
		evs = evs[:len(evs)-over]
	}
	r.mu.Unlock()
	r.render(evs)
	clear(evs)
	r.rowEvents = evs[:0]
	r.render(raw)
	clear(raw)
	r.mu.Lock()
	r.spareRaw = raw[:0]
	r.mu.Unlock()
}

// render encodes events and queues them for the broker's thread.
func (r *Recorder) render(raw []rawEvent) {
	if len(raw) == 0 {
		return
	}
	// One buffer holds every topic and payload of this round, and is not written again until the broker's
	// thread has published them (the broker copies each) and handed the buffer back with Published: no
	// allocation per event, nor per round once the buffers have grown.
	size := 0
	for _, e := range raw {
		size += len(EventTopicPrefix) + 160 + len(r.cfg.Broker) + 2*len(e.agent) + len(e.clientID)
	}
	var buf []byte
	r.mu.Lock()
	if n := len(r.freeBufs); n > 0 {
		buf, r.freeBufs = r.freeBufs[n-1], r.freeBufs[:n-1]
	}
	r.mu.Unlock()
	if cap(buf) < size {
		buf = make([]byte, 0, size)
	}
	out := slices.Grow(r.renderOut[:0], len(raw))[:len(raw)]
	for i, e := range raw {
		start := len(buf)
		buf = append(buf, EventTopicPrefix...)
		buf = append(buf, e.agent...)
		buf = append(buf, 0)
		mid := len(buf)
		buf = appendEventJSON(buf, e.event, e.agent, e.clientID, r.brokerJSON, e.at, e.reason)
		// Sliced once this event is complete, in case an append moved buf (earlier events keep the old one).
		out[i] = Event{Topic: unsafe.String(&buf[start], mid-1-start), CTopic: buf[start:mid:mid], Payload: buf[mid:len(buf):len(buf)]}
	}
	r.mu.Lock()
	r.events = append(r.events, out...)
	r.eventBufs = append(r.eventBufs, buf)
	r.mu.Unlock()
	clear(out)
	r.renderOut = out[:0]
	r.cfg.RequestTick()
}

// The buffers Published keeps for reuse: how many, and how large each may be.
const (
	maxFreeEventBufs = 4
	maxEventBufSize  = 1 << 20
)

// TakeEvents hands over the rendered events, oldest first. Broker's thread (TICK).
func (r *Recorder) TakeEvents() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return nil
	}
	out := r.events
	r.handedEvents, r.handedBufs = out, r.eventBufs
	r.events, r.freeEvents = r.freeEvents, nil
	r.eventBufs, r.spareBufList = r.spareBufList, nil
	return out
}

// Published tells the recorder that the events TakeEvents handed over last are published: their
// buffers may be reused. Until then they are never written. Broker's thread (TICK).
func (r *Recorder) Published() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handedEvents == nil {
		return
	}
	clear(r.handedEvents)
	if r.freeEvents == nil {
		r.freeEvents = r.handedEvents[:0]
	}
	for _, b := range r.handedBufs {
		if len(r.freeBufs) < maxFreeEventBufs && cap(b) <= maxEventBufSize {
			r.freeBufs = append(r.freeBufs, b[:0])
		}
	}
	clear(r.handedBufs)
	if r.spareBufList == nil {
		r.spareBufList = r.handedBufs[:0]
	}
	r.handedEvents, r.handedBufs = nil, nil
}

// Stats are the recorder's counters.
type Stats struct {
	Live, Queued                  int
	Dropped, EventsDropped, Wrote int64
}

// Stats reads the counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	live, queued := len(r.live), len(r.queue)
	r.mu.Unlock()
	return Stats{Live: live, Queued: queued, Dropped: r.dropped.Load(), EventsDropped: r.eventsDropped.Load(), Wrote: r.written.Load()}
}

// Run writes the queue and heartbeats until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(min(r.cfg.FlushEvery/5, 50*time.Millisecond))
	defer t.Stop()
	var backoff, warned time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
		r.writing.Lock()
		r.renderEvents()
		r.writing.Unlock()
		if r.cfg.Now().Before(backoff) {
			continue
		}
		if err := r.Step(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			// At most one line every 30 s while the failure lasts, with the count of failed attempts.
			failures++
			if now := r.cfg.Now(); warned.IsZero() || now.Sub(warned) >= 30*time.Second {
				warned = now
				r.cfg.Log.Warn("presence: cannot write sessions to PostgreSQL; keeping them queued and retrying every second "+
					"(if the presence tables are missing, run iotauth migrate)", "queued", r.Stats().Queued, "attempts", failures, "error", err)
			}
			backoff = r.cfg.Now().Add(time.Second)
		} else if failures > 0 {
			r.cfg.Log.Info("presence: writing sessions to PostgreSQL again", "failed_attempts", failures)
			failures, warned = 0, time.Time{}
		}
	}
}

// Step does what is due: registering the incarnation, a reconcile after drops, a batch once it is full
// or old enough, a heartbeat when nothing was written for a third of the timeout.
func (r *Recorder) Step(ctx context.Context) error {
	r.writing.Lock()
	defer r.writing.Unlock()
	if !r.started.Load() {
		if err := r.Start(ctx); err != nil {
			return err
		}
	}
	now := r.cfg.Now()
	r.mu.Lock()
	dirty := r.dirty
	due := len(r.queue) >= r.cfg.BatchSize || (len(r.queue) > 0 && now.Sub(r.queue[0].at) >= r.cfg.FlushEvery)
	beat := now.Sub(r.lastWrite) >= r.cfg.Timeout/3
	r.mu.Unlock()
	switch {
	case dirty:
		return r.reconcile(ctx)
	case due:
		return r.flush(ctx, false)
	case beat:
		c, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
		defer cancel()
		owned, err := r.cfg.Store.PresenceHeartbeat(c, r.cfg.Broker, r.incarnation, r.cfg.Timeout)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.lastWrite = now
		r.mu.Unlock()
		if !owned && (r.replacedWarned.IsZero() || now.Sub(r.replacedWarned) >= time.Minute) {
			r.replacedWarned = now
			r.cfg.Log.Error("presence: another broker started with this broker id, so this broker's sessions read offline; "+
				"give each broker its own plugin_opt_broker_id and restart this one", "broker", r.cfg.Broker)
		}
	}
	return nil
}

// flush writes the queued rows, at most MaxBatch rows per statement, and then, when drain is set, what
// was queued meanwhile. Rows stay queued until their statement succeeded; the queue's two buffers are
// swapped so that steady writing allocates no queue.
func (r *Recorder) flush(ctx context.Context, drain bool) error {
	for {
		r.mu.Lock()
		rows := r.takeRowEventsLocked()
		taken := r.queue
		r.queue, r.spareQueue, r.rendered = r.spareQueue[:0], nil, 0
		r.mu.Unlock()
		r.renderRows(rows)
		for i := 0; i < len(taken); i += r.cfg.MaxBatch {
			if err := r.write(ctx, taken[i:min(i+r.cfg.MaxBatch, len(taken))]); err != nil {
				r.mu.Lock()
				r.queue = append(taken[i:], r.queue...)
				r.rendered = len(taken) - i // their events were rendered; the rows queued since not
				r.truncateLocked()
				r.mu.Unlock()
				return err
			}
		}
		clear(taken) // the written rows' strings are not kept alive by the array
		r.mu.Lock()
		r.spareQueue = taken[:0]
		more := len(r.queue) > 0
		r.mu.Unlock()
		if !drain || !more {
			return nil
		}
	}
}

// write sends one batch: a start and its end in the same batch become one row.
func (r *Recorder) write(ctx context.Context, batch []queued) error {
	rows := r.scratchRows[:0]
	if r.scratchAt == nil {
		r.scratchAt = make(map[int64]int, r.cfg.MaxBatch)
	}
	at := r.scratchAt
	clear(at)
	for j := range batch {
		q := &batch[j]
		if i, ok := at[q.row.seq]; ok {
			if q.row.reason != "" {
				rows[i] = r.rowOf(&q.row)
			}
			continue
		}
		at[q.row.seq] = len(rows)
		rows = append(rows, r.rowOf(&q.row))
	}
	c, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout)
	defer cancel()
	err := r.cfg.Store.PresenceWrite(c, r.cfg.Broker, r.incarnation, rows)
	clear(rows)
	r.scratchRows = rows[:0]
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	r.mu.Lock()
	r.lastWrite = now
	r.mu.Unlock()
	r.written.Add(int64(len(rows)))
	if r.cfg.Lag != nil {
		for _, q := range batch {
			r.cfg.Lag(now.Sub(q.at))
		}
	}
	return nil
}

// rowOf is s as a Row; its DisconnectedAt points into s. Writer only (under writing).
func (r *Recorder) rowOf(s *rec) Row {
	row := Row{Seq: s.seq, Kind: s.kind, Principal: s.principal, ClientID: s.clientID, Protocol: s.protocol,
		Remote: s.remote, ConnectedAt: s.connectedAt}
	if s.reason != "" {
		row.DisconnectedAt, row.Reason = &s.end, string(s.reason)
	}
	return row
}

// reconcile runs after rows were dropped: it writes what is queued, then makes the database hold exactly
// the live table as it was when the queue was taken (sessions whose end was dropped close now, reason
// error; those whose start was dropped are written). Rows queued since follow in later batches.
func (r *Recorder) reconcile(ctx context.Context) error {
	r.mu.Lock()
	rows := r.takeRowEventsLocked()
	pending := r.queue
	r.queue, r.rendered = nil, 0
	live := make([]Row, 0, len(r.live))
	for _, e := range r.live {
		row := e.row
		live = append(live, r.rowOf(&row))
	}
	r.dirty = false
	r.mu.Unlock()
	r.renderRows(rows)
	restore := func() {
		r.mu.Lock()
		r.queue = append(pending, r.queue...)
		r.rendered = len(pending)
		r.truncateLocked()
		r.dirty = true
		r.mu.Unlock()
	}
	for i := 0; i < len(pending); i += r.cfg.MaxBatch {
		if err := r.write(ctx, pending[i:min(i+r.cfg.MaxBatch, len(pending))]); err != nil {
			pending = pending[i:]
			restore()
			return err
		}
	}
	pending = nil
	c, cancel := context.WithTimeout(ctx, r.cfg.DBTimeout+time.Duration(len(live)/r.cfg.MaxBatch)*time.Second)
	defer cancel()
	closed, err := r.cfg.Store.PresenceReconcile(c, r.cfg.Broker, r.incarnation, live, r.cfg.MaxBatch, r.cfg.Now())
	if err != nil {
		restore()
		return err
	}
	r.cfg.Log.Info("presence: reconciled PostgreSQL with the live sessions after dropped rows", "live", len(live),
		"closed", closed, "dropped_total", r.dropped.Load())
	return nil
}

// Close ends every live session (reason broker_shutdown) and writes what is queued, within ctx.
func (r *Recorder) Close(ctx context.Context) error {
	r.writing.Lock()
	defer r.writing.Unlock()
	now := r.cfg.Now()
	r.mu.Lock()
	for _, e := range r.live {
		r.endLocked(e, now, BrokerShutdown)
	}
	dirty := r.dirty
	r.mu.Unlock()
	if dirty {
		return r.reconcile(ctx)
	}
	return r.flush(ctx, true)
}
