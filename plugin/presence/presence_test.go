package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/plugin/auth"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeStore keeps the rows as PostgreSQL would (by seq) and counts statements.
type fakeStore struct {
	mu         sync.Mutex
	down       bool
	replaced   bool // another incarnation owns the broker's row
	statements int
	rows       map[int64]Row
	starts     int
	beats      int
	reconciles int
}

func (f *fakeStore) PresenceStart(context.Context, string, string, time.Duration) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, errors.New("down")
	}
	f.starts++
	return 0, nil
}

func (f *fakeStore) PresenceWrite(_ context.Context, _, _ string, rows []Row) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("down")
	}
	f.statements++
	seen := map[int64]bool{}
	for _, r := range rows {
		if seen[r.Seq] {
			return fmt.Errorf("seq %d twice in one statement", r.Seq)
		}
		seen[r.Seq] = true
		if old, ok := f.rows[r.Seq]; ok && (old.DisconnectedAt != nil || r.DisconnectedAt == nil) {
			continue
		}
		if r.DisconnectedAt != nil { // rows are the caller's once the call returns
			end := *r.DisconnectedAt
			r.DisconnectedAt = &end
		}
		f.rows[r.Seq] = r
	}
	return nil
}

func (f *fakeStore) PresenceHeartbeat(context.Context, string, string, time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false, errors.New("down")
	}
	f.beats++
	return !f.replaced, nil
}

func (f *fakeStore) PresenceReconcile(ctx context.Context, b, inc string, live []Row, _ int, at time.Time) (int64, error) {
	if err := f.PresenceWrite(ctx, b, inc, live); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reconciles++
	keep := map[int64]bool{}
	for _, r := range live {
		keep[r.Seq] = true
	}
	var n int64
	for seq, r := range f.rows {
		if r.DisconnectedAt == nil && !keep[seq] {
			r.DisconnectedAt, r.Reason = &at, string(Error)
			f.rows[seq] = r
			n++
		}
	}
	return n, nil
}

func (f *fakeStore) open() map[string]Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Row{}
	for _, r := range f.rows {
		if r.DisconnectedAt == nil {
			out[r.ClientID] = r
		}
	}
	return out
}

func (f *fakeStore) bySeq(seq int64) Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows[seq]
}

func newTest(t *testing.T, mod func(*Config)) (*Recorder, *fakeStore, *clock) {
	t.Helper()
	fs := &fakeStore{rows: map[int64]Row{}}
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := Config{Broker: "b1", Timeout: 30 * time.Second, Events: true, Store: fs, Now: c.Now}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, fs, c
}

func step(t *testing.T, r *Recorder) {
	t.Helper()
	if err := r.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBatchesByCountAndByAge(t *testing.T) {
	r, fs, c := newTest(t, nil)
	step(t, r) // the first heartbeat
	for i := range 999 {
		r.Connected(uintptr(i+1), KindAgent, "a", fmt.Sprint("c", i), "mqtt5", netip.MustParseAddr("127.0.0.1"))
	}
	step(t, r)
	if fs.statements != 0 {
		t.Fatalf("999 fresh rows were written (%d statements); want them held for 250 ms or 1000 rows", fs.statements)
	}
	r.Connected(1000, KindAgent, "a", "c999", "mqtt5", netip.MustParseAddr("127.0.0.1"))
	step(t, r)
	if fs.statements != 1 || len(fs.open()) != 1000 {
		t.Fatalf("1000 rows: %d statements, %d open rows; want 1 and 1000", fs.statements, len(fs.open()))
	}
	r.Disconnected(1, CodeUnknown)
	c.Add(249 * time.Millisecond)
	step(t, r)
	if fs.statements != 1 {
		t.Fatal("a row younger than 250 ms was written alone")
	}
	c.Add(time.Millisecond)
	step(t, r)
	if fs.statements != 2 {
		t.Fatal("a row 250 ms old was not written")
	}
	if row := fs.bySeq(1); row.Reason != string(Client) || row.DisconnectedAt == nil {
		t.Fatalf("ended session: %+v", row)
	}
}

func TestStartAndEndInOneBatchAreOneRow(t *testing.T) {
	r, fs, c := newTest(t, nil)
	r.Connected(1, KindAgent, "a", "c", "mqtt3.1.1", netip.MustParseAddr("10.0.0.1"))
	c.Add(time.Second)
	r.Disconnected(1, CodeUnknown)
	step(t, r) // the store refuses a seq twice in one statement
	row := fs.bySeq(1)
	if row.DisconnectedAt == nil || row.Reason != "client" || row.Remote.String() != "10.0.0.1" || row.Protocol != "mqtt3.1.1" {
		t.Fatalf("row %+v", row)
	}
}

func TestTakeoverAndKickReasons(t *testing.T) {
	r, fs, _ := newTest(t, nil)
	r.Connected(1, KindAgent, "a", "cid", "mqtt5", netip.Addr{})
	r.Connected(2, KindAgent, "a", "cid", "mqtt5", netip.Addr{}) // same client id, another handle
	r.Disconnected(1, CodeUnknown)                               // the broker closes the old one
	r.Connected(3, KindAgent, "b", "cid-b", "mqtt5", netip.Addr{})
	r.Kicking("cid-b", "b", fmt.Errorf("recheck: %w", auth.ErrAgentDisabled))
	r.Disconnected(3, CodeUnknown)
	r.Connected(4, KindApp, "k", "cid-k", "mqtt5", netip.Addr{})
	r.Kicking("cid-k", "k", auth.ErrRevoked)
	r.Disconnected(4, CodeUnknown)
	r.Connected(5, KindToken, "s", "cid-t", "mqtt5", netip.Addr{})
	r.Kicking("cid-t", "s", auth.ErrTokenExpired)
	r.Kicking("cid-t", "someone-else", auth.ErrRevoked) // another principal's name: ignored
	r.Disconnected(5, CodeUnknown)
	if err := r.flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	want := map[int64]Reason{1: Takeover, 3: KickedDisabled, 4: KickedRevoked, 5: KickedExpired}
	for seq, reason := range want {
		if got := fs.bySeq(seq).Reason; got != string(reason) {
			t.Errorf("session %d ended with %q, want %q", seq, got, reason)
		}
	}
	if open := fs.open(); len(open) != 1 || open["cid"].Seq != 2 {
		t.Fatalf("open sessions %+v; want the one that took over", open)
	}
}

// TestBrokerReasons: the code Mosquitto 2.1 passes with a disconnect gives the reason when no kick or
// takeover of the plugin's own is under way; a kick's reason wins over the broker's code.
func TestBrokerReasons(t *testing.T) {
	r, fs, _ := newTest(t, nil)
	codes := []struct {
		code int
		want Reason
	}{{CodeUnknown, Client}, {0, Client}, {19, Keepalive}, {142, Takeover}, {7, Error}, {2, Error}, {152, Error}}
	for i, c := range codes {
		r.Connected(uintptr(i+1), KindAgent, "a", fmt.Sprint("c", i), "mqtt5", netip.Addr{})
		r.Disconnected(uintptr(i+1), c.code)
	}
	r.Connected(100, KindAgent, "k", "kicked", "mqtt5", netip.Addr{})
	r.Kicking("kicked", "k", auth.ErrRevoked)
	r.Disconnected(100, 152)
	if err := r.flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for i, c := range codes {
		if got := fs.bySeq(int64(i + 1)).Reason; got != string(c.want) {
			t.Errorf("broker code %d: the session ended with %q, want %q", c.code, got, c.want)
		}
	}
	if got := fs.bySeq(int64(len(codes) + 1)).Reason; got != string(KickedRevoked) {
		t.Errorf("a kicked session ended with %q, want %q", got, KickedRevoked)
	}
}

func TestEndNeverBeforeStartWhenTheClockStepsBack(t *testing.T) {
	r, fs, c := newTest(t, nil)
	r.Connected(1, KindAgent, "a", "c", "mqtt5", netip.Addr{})
	c.Add(-time.Hour)
	r.Disconnected(1, CodeUnknown)
	_ = r.flush(context.Background(), true)
	row := fs.bySeq(1)
	if row.DisconnectedAt.Before(row.ConnectedAt) {
		t.Fatalf("disconnected %v before connected %v", row.DisconnectedAt, row.ConnectedAt)
	}
}

func TestBoundedQueueDropsThenReconciles(t *testing.T) {
	r, fs, c := newTest(t, func(c *Config) { c.MaxQueue = 10 })
	for i := 1; i <= 6; i++ {
		r.Connected(uintptr(i), KindAgent, "a", fmt.Sprint("c", i), "mqtt5", netip.Addr{})
	}
	step(t, r)
	c.Add(time.Second)
	step(t, r)
	if len(fs.open()) != 6 {
		t.Fatalf("open %d", len(fs.open()))
	}
	fs.mu.Lock()
	fs.down = true
	fs.mu.Unlock()
	// While PostgreSQL is away: 3 disconnect, 20 connect; the queue holds 10.
	for i := 1; i <= 3; i++ {
		r.Disconnected(uintptr(i), CodeUnknown)
	}
	for i := 7; i <= 26; i++ {
		r.Connected(uintptr(i), KindAgent, "a", fmt.Sprint("c", i), "mqtt5", netip.Addr{})
	}
	c.Add(time.Second)
	if err := r.Step(context.Background()); err == nil {
		t.Fatal("a step with PostgreSQL down succeeded")
	}
	if st := r.Stats(); st.Dropped != 13 || st.Queued != 10 {
		t.Fatalf("stats %+v; want 13 dropped, 10 queued", st)
	}
	fs.mu.Lock()
	fs.down = false
	fs.mu.Unlock()
	step(t, r)
	open := fs.open()
	if len(open) != 23 || fs.reconciles != 1 {
		t.Fatalf("after the reconcile: %d open (want the 23 live), %d reconciles", len(open), fs.reconciles)
	}
	for i := 1; i <= 3; i++ {
		if _, ok := open[fmt.Sprint("c", i)]; ok {
			t.Fatalf("c%d ended while PostgreSQL was down but reads open", i)
		}
	}
	if st := r.Stats(); st.Queued != 0 {
		t.Fatalf("queue not empty after reconcile: %+v", st)
	}
}

func TestHeartbeatWhenIdle(t *testing.T) {
	r, fs, c := newTest(t, func(c *Config) { c.Timeout = 3 * time.Second })
	step(t, r)
	step(t, r)
	if fs.beats != 1 {
		t.Fatalf("beats %d after two immediate steps; want 1", fs.beats)
	}
	c.Add(time.Second)
	step(t, r)
	if fs.beats != 2 {
		t.Fatalf("beats %d after a third of the timeout; want 2", fs.beats)
	}
}

func TestStartRetriedByStep(t *testing.T) {
	fs := &fakeStore{rows: map[int64]Row{}, down: true}
	r, err := New(Config{Broker: "b", Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	if r.Start(context.Background()) == nil {
		t.Fatal("start with PostgreSQL down succeeded")
	}
	fs.down = false
	step(t, r)
	if fs.starts != 1 {
		t.Fatal("Step did not register the incarnation")
	}
}

func TestEventsForAgentsOnly(t *testing.T) {
	ticks := 0
	r, _, c := newTest(t, func(cfg *Config) { cfg.RequestTick = func() { ticks++ } })
	r.Connected(1, KindAgent, "u-1", "agent-u-1", "mqtt5", netip.MustParseAddr("192.0.2.1"))
	r.Connected(2, KindApp, "k", "svc", "mqtt5", netip.Addr{})
	r.Connected(3, KindToken, "s", "tok", "mqtt5", netip.Addr{})
	c.Add(1500 * time.Millisecond)
	r.Disconnected(1, CodeUnknown)
	r.Disconnected(2, CodeUnknown)
	if r.TakeEvents() != nil || ticks != 0 {
		t.Fatal("events handed over before they were rendered off the broker's thread")
	}
	r.renderEvents()
	evs := r.TakeEvents()
	if len(evs) != 2 || ticks != 1 {
		t.Fatalf("%d events, %d tick requests; want 2 and 1 (agents only)", len(evs), ticks)
	}
	var con, dis map[string]any
	_ = json.Unmarshal(evs[0].Payload, &con)
	_ = json.Unmarshal(evs[1].Payload, &dis)
	if evs[0].Topic != "iotauth/presence/agents/u-1" || con["event"] != "connected" || con["agentUuid"] != "u-1" ||
		con["clientId"] != "agent-u-1" || con["broker"] != "b1" || con["at"] != "2026-01-02T03:04:05.000Z" {
		t.Fatalf("connected event %s %s", evs[0].Topic, evs[0].Payload)
	}
	if _, ok := con["reason"]; ok {
		t.Fatal("a connected event carries a reason")
	}
	if len(con) != 5 {
		t.Fatalf("connected event has extra fields: %s", evs[0].Payload)
	}
	if dis["event"] != "disconnected" || dis["reason"] != "client" || dis["at"] != "2026-01-02T03:04:06.500Z" {
		t.Fatalf("disconnected event %s", evs[1].Payload)
	}
	if r.TakeEvents() != nil {
		t.Fatal("events handed over twice")
	}
}

func TestEventsOff(t *testing.T) {
	r, _, _ := newTest(t, func(cfg *Config) { cfg.Events = false })
	r.Connected(1, KindAgent, "u", "c", "mqtt5", netip.Addr{})
	r.renderEvents()
	if r.TakeEvents() != nil {
		t.Fatal("events queued with events off")
	}
}

func TestCloseEndsLiveSessionsAsShutdown(t *testing.T) {
	r, fs, _ := newTest(t, nil)
	r.Connected(1, KindAgent, "a", "c1", "mqtt5", netip.Addr{})
	r.Connected(2, KindAgent, "b", "c2", "mqtt5", netip.Addr{})
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for seq := int64(1); seq <= 2; seq++ {
		if got := fs.bySeq(seq).Reason; got != string(BrokerShutdown) {
			t.Fatalf("session %d: reason %q", seq, got)
		}
	}
}

func TestReservedAndProtocol(t *testing.T) {
	for topic, want := range map[string]bool{"iotauth/presence/agents/x": true, "iotauth/presence/": true, "iotauth/presenc": false, "agents/x": false} {
		if Reserved(topic) != want {
			t.Errorf("Reserved(%q) = %v", topic, !want)
		}
	}
	if Protocol(3) != "mqtt3.1" || Protocol(4) != "mqtt3.1.1" || Protocol(5) != "mqtt5" {
		t.Fatal("protocol names")
	}
}

func TestFirstListenerPort(t *testing.T) {
	for conf, want := range map[string]int{
		"# listener 1\nper_listener_settings false\nlistener 18830 127.0.0.1\nlistener 9001\n": 18830,
		"port 1884\nlistener 2000\n": 1884,
		"listener 0 /tmp/sock\n":     0,
		"allow_anonymous false\n":    0,
	} {
		if got := FirstListenerPort(strings.NewReader(conf)); got != want {
			t.Errorf("FirstListenerPort(%q) = %d, want %d", conf, got, want)
		}
	}
}

// BenchmarkConnectDisconnect is the broker thread's share of presence per session: a start and an end
// with their events queued (the writer does not run).
func BenchmarkConnectDisconnect(b *testing.B) {
	fs := &fakeStore{rows: map[int64]Row{}}
	r, err := New(Config{Broker: "b", Store: fs, Events: true, MaxQueue: 1 << 30, MaxEvents: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprint("agent-", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := ids[i%len(ids)]
		r.Connected(uintptr(i%len(ids)+1), KindAgent, id, id, "mqtt3.1.1", netip.MustParseAddr("127.0.0.1"))
		r.Disconnected(uintptr(i%len(ids)+1), CodeUnknown)
		if i%1000 == 999 {
			r.mu.Lock()
			r.queue, r.raw, r.rendered = r.queue[:0], r.raw[:0], 0
			r.mu.Unlock()
		}
	}
}

// The hand-written encoder agrees with encoding/json on every string, odd ones included.
func TestEventJSONMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("x", 3600))
	for _, id := range []string{"agent-1", `q"uo\te`, "ctl\x00\x01\x1f\n\r\t", "ünïcødé ✓", "bad\xff\xfeutf8", ""} {
		got := appendEventJSON(nil, "disconnected", "u-1", id, appendJSONString(nil, "b\"1"), at, Takeover)
		var back map[string]string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", id, got, err)
		}
		want, _ := json.Marshal(id)
		var wantID string
		_ = json.Unmarshal(want, &wantID)
		if back["clientId"] != wantID || back["broker"] != `b"1` || back["at"] != "2026-01-02T02:04:05.678Z" || back["reason"] != "takeover" || len(back) != 6 {
			t.Fatalf("%q: %s", id, got)
		}
	}
	if got := string(appendEventJSON(nil, "connected", "u", "c", appendJSONString(nil, "b"), at, "")); strings.Contains(got, "reason") {
		t.Fatalf("connected with a reason: %s", got)
	}
}

// BenchmarkSessionsWithWriter adds the writer's share (with a store that does nothing): the whole
// process's cost of presence per session, less PostgreSQL's driver.

func BenchmarkSessionsWithWriter(b *testing.B) {
	fs := &fakeStore{rows: map[int64]Row{}}
	r, _ := New(Config{Broker: "b", Store: nopStore{fs}, Events: true})
	r.started.Store(true)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprint("agent-", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := ids[i%len(ids)]
		r.Connected(uintptr(i%len(ids)+1), KindAgent, id, id, "mqtt3.1.1", netip.MustParseAddr("127.0.0.1"))
		r.Disconnected(uintptr(i%len(ids)+1), CodeUnknown)
		if i%50 == 49 {
			r.renderEvents()
			r.TakeEvents()
			_ = r.Step(context.Background())
		}
	}
}

type nopStore struct{ *fakeStore }

func (nopStore) PresenceWrite(context.Context, string, string, []Row) error { return nil }

func TestHeartbeatReportsAnotherBrokerWithTheSameID(t *testing.T) {
	var logs strings.Builder
	r, fs, c := newTest(t, func(cfg *Config) {
		cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	step(t, r)
	if strings.Contains(logs.String(), "another broker") {
		t.Fatal("reported before any other broker")
	}
	fs.replaced = true
	c.Add(time.Minute)
	step(t, r)
	if !strings.Contains(logs.String(), "another broker started with this broker id") {
		t.Fatalf("no error about the id clash: %s", logs.String())
	}
}

// Recording a session on the broker's thread allocates nothing once the recorder's buffers have grown:
// the Go runtime's garbage collector then has nothing of the broker thread's to collect.
func TestRecordingAllocatesNothing(t *testing.T) {
	r, _, _ := newTest(t, nil)
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprint("agent-", i)
	}
	addr := netip.MustParseAddr("192.0.2.7")
	i := 0
	session := func() {
		id := ids[i%len(ids)]
		r.Connected(uintptr(i%len(ids)+1), KindAgent, id, id, "mqtt3.1.1", addr)
		r.Disconnected(uintptr(i%len(ids)+1), CodeUnknown)
		i++
		r.mu.Lock()
		r.queue, r.raw = r.queue[:0], r.raw[:0] // as the writer takes them
		r.mu.Unlock()
	}
	for range 2 * len(ids) {
		session()
	}
	if n := testing.AllocsPerRun(1000, session); n != 0 {
		t.Fatalf("a session allocates %.1f times on the broker's thread; want 0", n)
	}
}

// The hand-written time format agrees with time.Format on every kind of instant.
func TestAppendAtMatchesTimeFormat(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("x", 3600)),
		time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(2030, 10, 10, 10, 10, 10, 1_000_000, time.UTC),
		time.Date(5, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(0, 0),
	} {
		if got, want := string(appendAt(nil, at)), at.UTC().Format(atFormat); got != want {
			t.Errorf("%v: %s, want %s", at, got, want)
		}
	}
}

// Rendering and handing over events reuses the buffers the broker's thread has published from: a steady
// flow of sessions and events allocates nothing, on the broker's thread or in the writer's rendering.
func TestEventRoundsAllocateNothing(t *testing.T) {
	r, _, _ := newTest(t, nil)
	addr := netip.MustParseAddr("192.0.2.7")
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = fmt.Sprint("agent-", i)
	}
	round := func() {
		for i, id := range ids {
			r.Connected(uintptr(i+1), KindAgent, id, id, "mqtt3.1.1", addr)
			r.Disconnected(uintptr(i+1), CodeUnknown)
		}
		r.renderEvents()
		evs := r.TakeEvents()
		if len(evs) != 2*len(ids) || !strings.HasPrefix(string(evs[0].CTopic), evs[0].Topic+"\x00") {
			t.Fatalf("%d events, first topic %q", len(evs), evs[0].CTopic)
		}
		r.Published()
		r.mu.Lock()
		r.queue, r.rendered = r.queue[:0], 0 // as the writer takes it
		r.mu.Unlock()
	}
	for range 4 {
		round()
	}
	if n := testing.AllocsPerRun(200, round); n != 0 {
		t.Fatalf("a round of %d sessions and their events allocates %.1f times; want 0", len(ids), n)
	}
	// Events handed over and not yet published are never overwritten by a later round.
	r.Connected(1, KindAgent, "u-a", "c-a", "mqtt5", addr)
	r.renderEvents()
	pending := r.TakeEvents() // not published
	want := string(pending[0].Payload)
	r.Connected(2, KindAgent, "u-b", "c-b", "mqtt5", addr)
	r.renderEvents()
	next := r.TakeEvents()
	if string(pending[0].Payload) != want || pending[0].Topic != "iotauth/presence/agents/u-a" ||
		!strings.Contains(string(next[0].Payload), "u-b") {
		t.Fatalf("events overwritten: %s %s / %s", pending[0].Topic, pending[0].Payload, next[0].Payload)
	}
}

// Events are rendered from the queued rows, and do not wait for PostgreSQL: while it is away, rows beyond
// the queue's bound are dropped but their events still go out, in order, and a write that fails and puts
// its rows back does not render their events twice.
func TestEventsWithPostgreSQLAway(t *testing.T) {
	r, fs, _ := newTest(t, func(c *Config) { c.MaxQueue = 3 })
	fs.down = true
	agents := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			var m map[string]any
			_ = json.Unmarshal(e.Payload, &m)
			out = append(out, fmt.Sprint(m["agentUuid"], ":", m["event"]))
		}
		return out
	}
	for i := 1; i <= 5; i++ {
		r.Connected(uintptr(i), KindAgent, fmt.Sprint("u", i), fmt.Sprint("c", i), "mqtt5", netip.Addr{})
	}
	r.Disconnected(1, CodeUnknown) // dropped too: the queue holds 3 rows
	r.renderEvents()
	got := agents(r.TakeEvents())
	r.Published()
	want := []string{"u1:connected", "u2:connected", "u3:connected", "u4:connected", "u5:connected", "u1:disconnected"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v; want %v", got, want)
	}
	if err := r.flush(context.Background(), false); err == nil {
		t.Fatal("a write succeeded with PostgreSQL away")
	}
	r.Connected(6, KindAgent, "u6", "c6", "mqtt5", netip.Addr{})
	r.renderEvents()
	if got := agents(r.TakeEvents()); !slices.Equal(got, []string{"u6:connected"}) {
		t.Fatalf("after a failed write: events %v; want only u6's", got)
	}
	r.Published()
	// PostgreSQL is back: the rows put back are written, and nothing is rendered again.
	fs.down = false
	if err := r.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.renderEvents()
	if evs := r.TakeEvents(); evs != nil {
		t.Fatalf("events rendered twice: %v", agents(evs))
	}
	if st := r.Stats(); st.EventsDropped != 0 {
		t.Fatalf("%d events dropped", st.EventsDropped)
	}
}
