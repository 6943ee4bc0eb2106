package engine

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/denylist"
	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/options"
	"github.com/iotauth/iotauth/plugin/session"
)

// The engine's event protocol, driven the way Mosquitto drives it (connect, ACL check, disconnect, TICK,
// SIGHUP) and the way PostgreSQL does (notifications, lookups), with a fake broker, a fake store and a
// fake clock. No goroutine runs unless a test starts one.

const (
	agentA = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"
	agentB = "0a0b0c0d-1111-2222-3333-444455556666"
)

// fakeBroker is Mosquitto: clients by handle with their id and username, marks, kicks and log lines.
type fakeBroker struct {
	mu        sync.Mutex
	ids       map[uintptr]string
	names     map[uintptr]string
	marks     map[uintptr]string
	kicks     []string
	replaced  map[uintptr]string
	logs      []string
	ticks     int
	ticksSeen uint64
	// readRevokes counts RevokeReads calls (every read mark made stale).
	readRevokes atomic.Int64
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{ids: map[uintptr]string{}, names: map[uintptr]string{}, marks: map[uintptr]string{},
		replaced: map[uintptr]string{}, ticksSeen: 1}
}

func (b *fakeBroker) SetUsername(client uintptr, name string) bool {
	b.names[client] = name
	return true
}

func (b *fakeBroker) Mark(client uintptr, prefix string) bool {
	if b.marks[client] != prefix {
		b.marks[client] = strings.Clone(prefix) // borrowed for the call
	}
	return true
}

// MarkReads records a read mark as the prefix "(reads)"; every client started clean.
func (b *fakeBroker) MarkReads(client uintptr) bool {
	b.marks[client] = "(reads)"
	return true
}

func (b *fakeBroker) RevokeReads() { b.readRevokes.Add(1) }

func (b *fakeBroker) CleanStart(uintptr) bool { return true }

func (b *fakeBroker) Kick(clientID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kicks = append(b.kicks, clientID)
}

func (b *fakeBroker) RequestTick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ticks++
}

func (b *fakeBroker) ClientID(client uintptr) string       { return b.ids[client] }
func (b *fakeBroker) ClientUsername(client uintptr) string { return b.names[client] }
func (b *fakeBroker) ClientInfo(uintptr) (int, netip.Addr) {
	return 4, netip.MustParseAddr("127.0.0.1")
}
func (b *fakeBroker) TicksSeen() uint64                   { return b.ticksSeen }
func (b *fakeBroker) Publish(ctopic, payload []byte) bool { return true }

func (b *fakeBroker) ReplaceClientID(client uintptr, id string) bool {
	b.replaced[client] = id
	return true
}

func (b *fakeBroker) Log(level int, msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logs = append(b.logs, msg)
}

func (b *fakeBroker) kicked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.kicks)
}

func (b *fakeBroker) logged(part string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.logs {
		if strings.Contains(l, part) {
			return true
		}
	}
	return false
}

// fakeStore is PostgreSQL: credential rows by digest, and what the engine wrote.
type fakeStore struct {
	mu       sync.Mutex
	rows     map[secret.Digest]credential.Credential
	down     error // every call fails with it
	audits   []AuditEvent
	touched  []secret.Digest
	hashes   []FastHash
	lookups  int
	denials  []denylist.Denial
	feedCall func(ListenHandler)
	// keysEntered and keysGate, when set, make KeyDigests say it was called and wait for the gate.
	keysEntered chan struct{}
	keysGate    chan struct{}
	// activeCalled, when set, hears of every ActiveCredentials call (the preload).
	activeCalled chan struct{}
}

func (s *fakeStore) fail() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *fakeStore) set(c credential.Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows[c.Digest] = c
}

func (s *fakeStore) LookupCredential(_ context.Context, d secret.Digest) (credential.Credential, error) {
	if err := s.fail(); err != nil {
		return credential.Credential{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	c, ok := s.rows[d]
	if !ok || c.App {
		return credential.Credential{}, credential.ErrNotFound
	}
	return c, nil
}

func (s *fakeStore) LookupCredentials(_ context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[secret.Digest]credential.Credential{}
	for _, d := range ds {
		if c, ok := s.rows[d]; ok {
			out[d] = c
		}
	}
	return out, nil
}

func (s *fakeStore) ActiveCredentials(_ context.Context, fn func(credential.Credential)) error {
	if s.activeCalled != nil {
		select {
		case s.activeCalled <- struct{}{}:
		default:
		}
	}
	if err := s.fail(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.rows {
		fn(c)
	}
	return nil
}

func (s *fakeStore) KeyDigests(ctx context.Context, fn func(secret.Digest)) error {
	if s.keysGate != nil {
		select {
		case s.keysEntered <- struct{}{}:
		default:
		}
		select {
		case <-s.keysGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := s.fail(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for d := range s.rows {
		fn(d)
	}
	return nil
}

func (s *fakeStore) LegacyDigests(context.Context) (map[secret.Digest]struct{}, error) {
	return map[secret.Digest]struct{}{}, s.fail()
}

func (s *fakeStore) Denials(context.Context, time.Time) ([]denylist.Denial, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.denials, nil
}

func (s *fakeStore) AuditMany(_ context.Context, es []AuditEvent) error {
	if err := s.fail(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audits = append(s.audits, es...)
	return nil
}

func (s *fakeStore) RecordFastHashes(_ context.Context, hs []FastHash, _ AuditEvent) (int64, error) {
	if err := s.fail(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hashes = append(s.hashes, hs...)
	return int64(len(hs)), nil
}

func (s *fakeStore) TouchKeys(_ context.Context, ds []secret.Digest) error {
	if err := s.fail(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touched = append(s.touched, ds...)
	return nil
}

func (s *fakeStore) Ping(context.Context) error { return s.fail() }

func (s *fakeStore) Listen(ctx context.Context, h ListenHandler) {
	h.Connected(false)
	if s.feedCall != nil {
		s.feedCall(h)
	}
	<-ctx.Done()
}

func (s *fakeStore) actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.audits {
		out = append(out, e.Action)
	}
	return out
}

// fakeClock is the engine's clock: it moves only when a test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// device is one agent's credentials.
type device struct {
	agent, key, password string
	cred                 credential.Credential
}

type fixture struct {
	e   *Engine
	b   *fakeBroker
	st  *fakeStore
	clk *fakeClock
}

func newFixture(t testing.TB, opts ...[2]string) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, opts...)
}

// newFixtureWith is newFixture with a last word on the engine's Config.
func newFixtureWith(t testing.TB, mutate func(*Config, *fakeClock), opts ...[2]string) *fixture {
	t.Helper()
	cfg, err := options.Parse(append([][2]string{{"dsn", "postgres://unused@127.0.0.1/x"}}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Presence = false
	f := &fixture{b: newFakeBroker(), st: &fakeStore{rows: map[secret.Digest]credential.Credential{}},
		clk: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	levels, logs := logq.Levels{Debug: 1, Info: 2, Warning: 3, Error: 4}, logq.New()
	c := Config{Options: cfg, Broker: f.b, Lookup: f.st, Store: f.st, Feed: f.st, MaxMark: 128,
		Log: logq.NewLogger(logs, logq.ParseLevel("debug"), levels), Logs: logs, Levels: levels,
		Now: f.clk.now, DenialKeep: 25 * time.Hour}
	if mutate != nil {
		mutate(&c, f.clk)
	}
	f.e, err = New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.e.Close)
	return f
}

// device adds an agent with a key and an MQTT password to the store.
func (f *fixture) device(t testing.TB, agent string, mutate ...func(*credential.Credential)) device {
	t.Helper()
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	c := credential.Credential{
		Digest: secret.DigestOf(key.Reveal()), KeyID: "k-" + agent[:4], AgentUUID: agent, AgentStatus: "active",
		Rights: []string{"mqtt"}, PasswordHash: passhash.SHA256Hex(pw.Reveal()),
	}
	for _, m := range mutate {
		m(&c)
	}
	f.st.set(c)
	return device{agent: agent, key: key.Reveal(), password: pw.Reveal(), cred: c}
}

// connect has client present d's credentials with client id clientID.
func (f *fixture) connect(client uintptr, d device, clientID string) Result {
	f.b.ids[client] = clientID
	f.b.names[client] = d.key
	return f.e.BasicAuth(client, d.key, []byte(d.password), clientID)
}

// recheck runs what the re-check worker would, once.
func (f *fixture) recheck(t *testing.T) {
	t.Helper()
	if err := f.e.rechecks.runPending(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) revoke(d device) {
	c := d.cred
	c.KeyRevoked = true
	f.st.set(c)
	f.e.Changed(Change{Table: KeyTable, Op: "UPDATE", Agent: d.agent, Key: d.cred.Digest, HasKey: true})
}

func TestConnect(t *testing.T) {
	tests := []struct {
		name    string
		opts    [][2]string
		present func(f *fixture, d device) (user, pass, clientID string)
		want    Result
		renamed bool
	}{
		{"allowed", nil, func(f *fixture, d device) (string, string, string) { return d.key, d.password, "agent-" + agentA }, OK, true},
		{"wrong password", nil, func(f *fixture, d device) (string, string, string) {
			return d.key, "iotmp_wrong", "agent-" + agentA
		}, Refused, false},
		{"another agent's client id", nil, func(f *fixture, d device) (string, string, string) {
			return d.key, d.password, "agent-" + agentB
		}, Refused, false},
		{"unknown key", nil, func(f *fixture, d device) (string, string, string) {
			k, _ := secret.Generate(secret.APIKey)
			return k.Reveal(), d.password, "agent-" + agentA
		}, Refused, false},
		{"not a key, refused", nil, func(f *fixture, d device) (string, string, string) { return "alice", "pw", "alice" }, Refused, false},
		{"not a key, deferred", [][2]string{{"defer_unknown", "true"}}, func(f *fixture, d device) (string, string, string) {
			return "alice", "pw", "alice"
		}, Defer, false},
		{"reserved name without a live session", [][2]string{{"defer_unknown", "true"}}, func(f *fixture, d device) (string, string, string) {
			return "iotauth-agent:" + agentA, d.password, "agent-" + agentA
		}, Refused, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts...)
			d := f.device(t, agentA)
			user, pass, clientID := tt.present(f, d)
			f.b.ids[1] = clientID
			if got := f.e.BasicAuth(1, user, []byte(pass), clientID); got != tt.want {
				t.Fatalf("BasicAuth = %v, want %v", got, tt.want)
			}
			if renamed := f.b.names[1] == "iotauth-agent:"+agentA; renamed != tt.renamed {
				t.Errorf("username %q, renamed %v, want %v", f.b.names[1], renamed, tt.renamed)
			}
		})
	}
}

func TestRefusedClientIDCarryingASecretIsReplaced(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA)
	if got := f.e.BasicAuth(1, d.key, []byte("iotmp_wrong"), d.key); got != Refused {
		t.Fatalf("BasicAuth = %v, want Refused", got)
	}
	if got := f.b.replaced[1]; got == "" || strings.Contains(got, "iot") && got != "iotauth-hidden-secret" {
		t.Errorf("client id replaced by %q", got)
	}
}

func TestAdmittedKeysUseIsRecorded(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA)
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	j := newJobs(f.e)
	j.secondly(context.Background()) // starts the interval
	if len(f.st.touched) != 0 {
		t.Fatalf("touched before the interval: %v", f.st.touched)
	}
	f.clk.advance(touchEvery)
	j.secondly(context.Background())
	if !slices.Equal(f.st.touched, []secret.Digest{d.cred.Digest}) {
		t.Errorf("touched %v, want the key", f.st.touched)
	}
}

func TestACLCheck(t *testing.T) {
	tests := []struct {
		name   string
		opts   [][2]string
		client uintptr // 1 is agentA's connected client
		user   string  // a stranger's username (client 2)
		access acl.Access
		topic  string
		want   Result
	}{
		{"own namespace", nil, 1, "", acl.Write, "agents/" + agentA + "/state", OK},
		{"another agent's", nil, 1, "", acl.Read, "agents/" + agentB + "/state", Denied},
		{"presence topics", nil, 1, "", acl.Write, "$iotauth/presence/x", Denied},
		{"unknown client", nil, 2, "alice", acl.Read, "x", Denied},
		{"unknown client, defer_unknown", [][2]string{{"defer_unknown", "true"}}, 2, "alice", acl.Read, "x", Defer},
		{"unknown client with a reserved name, defer_unknown", [][2]string{{"defer_unknown", "true"}}, 2, "iotauth-agent:" + agentA, acl.Read, "x", Denied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts...)
			if f.connect(1, f.device(t, agentA), "agent-"+agentA) != OK {
				t.Fatal("connect refused")
			}
			f.b.names[2], f.b.ids[2] = tt.user, "stranger"
			if got := f.e.ACLCheck(tt.client, tt.access, tt.topic); got != tt.want {
				t.Errorf("ACLCheck = %v, want %v", got, tt.want)
			}
		})
	}
}

// A revocation is noticed by its notification, re-checked against the store, and carried out by the
// next TICK on the broker's thread; the kick is audited.
func TestNotifyRecheckKickOnNextTick(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA)
	other := f.device(t, agentB)
	if f.connect(1, d, "agent-"+agentA) != OK || f.connect(2, other, "agent-"+agentB) != OK {
		t.Fatal("connect refused")
	}
	f.revoke(d)
	f.recheck(t)
	if k := f.b.kicked(); len(k) != 0 {
		t.Fatalf("kicked %v before the TICK", k)
	}
	if got := f.e.ACLCheck(1, acl.Write, "agents/"+agentA+"/x"); got != Denied {
		t.Errorf("a refused session's check = %v, want Denied until the kick", got)
	}
	f.e.Tick()
	if k := f.b.kicked(); !slices.Equal(k, []string{"agent-" + agentA}) {
		t.Fatalf("kicked %v, want agentA's client", k)
	}
	if got := f.e.ACLCheck(2, acl.Write, "agents/"+agentB+"/x"); got != OK {
		t.Errorf("the other agent's check = %v, want OK", got)
	}
	f.e.audits.write(context.Background())
	if got := f.st.actions(); !slices.Equal(got, []string{"session_kick"}) {
		t.Errorf("audited %v, want one session_kick", got)
	}
	// The revoked key cannot connect again: the notification dropped its cached entry.
	if got := f.connect(3, d, "agent-"+agentA); got != Refused {
		t.Errorf("reconnect with the revoked key = %v, want Refused", got)
	}
}

func TestKickOnRevokeOffLeavesSessions(t *testing.T) {
	f := newFixture(t, [2]string{"kick_on_revoke", "false"})
	d := f.device(t, agentA)
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	f.revoke(d)
	f.recheck(t)
	f.e.Tick()
	if k := f.b.kicked(); len(k) != 0 {
		t.Errorf("kicked %v with kick_on_revoke false", k)
	}
}

// On SIGHUP Mosquitto re-checks every client with the name the plugin gave it: the engine answers from
// memory, and the re-check it starts finds what changed.
func TestReload(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA)
	keep := f.device(t, agentB)
	if f.connect(1, d, "agent-"+agentA) != OK || f.connect(2, keep, "agent-"+agentB) != OK {
		t.Fatal("connect refused")
	}
	c := d.cred
	c.KeyRevoked = true
	f.st.set(c) // changed without a notification
	f.e.Reload()
	name := "iotauth-agent:" + agentA
	if got := f.e.BasicAuth(1, name, []byte(d.password), "agent-"+agentA); got != OK {
		t.Errorf("reload's re-check of the live session = %v, want OK from memory", got)
	}
	if got := f.e.BasicAuth(1, name, []byte("iotmp_wrong"), "agent-"+agentA); got != Refused {
		t.Errorf("reload's re-check with another password = %v, want Refused", got)
	}
	if got := f.e.BasicAuth(9, name, []byte(d.password), "agent-"+agentA); got != Refused {
		t.Errorf("the session's name from another client = %v, want Refused", got)
	}
	f.recheck(t)
	f.e.Tick()
	if k := f.b.kicked(); !slices.Equal(k, []string{"agent-" + agentA}) {
		t.Errorf("kicked %v after the reload's re-check, want agentA's client", k)
	}
}

// A client id in use by another principal's live session is not taken over; the same agent may.
func TestTakeover(t *testing.T) {
	f := newFixture(t, [2]string{"clientid", "any"})
	a := f.device(t, agentA)
	b := f.device(t, agentB)
	if f.connect(1, a, "shared") != OK {
		t.Fatal("connect refused")
	}
	if got := f.connect(2, b, "shared"); got != Refused {
		t.Errorf("another agent taking the client id = %v, want Refused", got)
	}
	if got := f.connect(3, a, "shared"); got != OK {
		t.Errorf("the same agent reconnecting = %v, want OK", got)
	}
	if got := f.e.ACLCheck(3, acl.Write, "agents/"+agentA+"/x"); got != OK {
		t.Errorf("the new session's check = %v, want OK", got)
	}
}

// An ended persistent session answers its will and queued deliveries from its own rules, until a
// re-check refuses it: it is forgotten, without a kick (it is not live).
func TestEndedSessionAnswersWill(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA)
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	will := "agents/" + agentA + "/will"
	f.e.Disconnect(1, false, 4, session.ToldNothing, -1) // MQTT 3.1.1, not clean: kept
	if got := f.e.ACLCheck(1, acl.Write, will); got != OK {
		t.Errorf("will check of the ended session = %v, want OK", got)
	}
	if got := f.e.ACLCheck(1, acl.Write, "agents/"+agentB+"/x"); got != Denied {
		t.Errorf("ended session outside its rules = %v, want Denied", got)
	}
	f.revoke(d)
	f.recheck(t)
	f.e.Tick()
	if k := f.b.kicked(); len(k) != 0 {
		t.Errorf("kicked %v: an ended session is forgotten, not kicked", k)
	}
	if got := f.e.ACLCheck(1, acl.Write, will); got != Denied {
		t.Errorf("will check after the revocation = %v, want Denied", got)
	}
}

// Expired keys are kicked by the periodic job, driven here through the injected ticker.
func TestExpiredKeyKickedByPeriodicJob(t *testing.T) {
	f := newFixture(t)
	d := f.device(t, agentA, func(c *credential.Credential) { c.KeyExpiresAt = f.clk.now().Add(time.Minute) })
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	tickers := map[time.Duration]chan time.Time{100 * time.Millisecond: make(chan time.Time), time.Second: make(chan time.Time)}
	f.e.every = func(d time.Duration) (<-chan time.Time, func()) { return tickers[d], func() {} }
	f.e.Go("periodic", f.e.periodic)
	tickers[100*time.Millisecond] <- f.clk.now()
	tickers[100*time.Millisecond] <- f.clk.now() // the first was handled once the second is taken
	f.e.Tick()
	if k := f.b.kicked(); len(k) != 0 {
		t.Fatalf("kicked %v before the expiry", k)
	}
	f.clk.advance(time.Minute)
	tickers[100*time.Millisecond] <- f.clk.now()
	tickers[100*time.Millisecond] <- f.clk.now()
	f.e.Tick()
	if k := f.b.kicked(); !slices.Equal(k, []string{"agent-" + agentA}) {
		t.Fatalf("kicked %v, want the expired key's client", k)
	}
}

// The background loops started together: the feed's first connection loads the known keys, and a
// notification it delivers is re-checked by the worker and kicked on the next TICK.
func TestStartFeedRecheckWorker(t *testing.T) {
	f := newFixture(t, [2]string{"preload_wait", "10s"})
	d := f.device(t, agentA)
	changes := make(chan Change)
	t.Cleanup(func() { close(changes) }) // before Close (cleanups run last first), which waits for the feed
	f.st.feedCall = func(h ListenHandler) {
		for c := range changes {
			h.Changed(c)
		}
	}
	f.e.Start()
	select {
	case <-f.e.keys.loaded: // Start waited for the preload, which waits for the first load of the known keys
	default:
		t.Fatal("Start returned before the known keys loaded")
	}
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	c := d.cred
	c.KeyRevoked = true
	f.st.set(c)
	changes <- Change{Table: KeyTable, Op: "UPDATE", Agent: agentA, Key: c.Digest, HasKey: true}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.b.kicked()) == 0 && time.Now().Before(deadline) {
		f.e.Tick()
		time.Sleep(5 * time.Millisecond)
	}
	if k := f.b.kicked(); !slices.Equal(k, []string{"agent-" + agentA}) {
		t.Fatalf("kicked %v, want agentA's client", k)
	}
}

// Audit events wait while PostgreSQL does not answer and are written, in order, once it does.
func TestAuditsKeptWhileStoreDown(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		f.e.audits.add(AuditEvent{Action: "session_kick", Target: string(rune('a' + i))})
	}
	f.st.down = errors.New("connection refused")
	f.e.audits.write(context.Background())
	if f.e.audits.queue.Len() != 3 {
		t.Fatalf("queued %d after a failed write, want 3", f.e.audits.queue.Len())
	}
	f.e.audits.add(AuditEvent{Action: "app_key_refused", Target: "d"})
	f.st.down = nil
	f.e.audits.write(context.Background())
	var targets []string
	for _, e := range f.st.audits {
		targets = append(targets, e.Target)
	}
	if !slices.Equal(targets, []string{"a", "b", "c", "d"}) {
		t.Errorf("wrote %v, want a b c d in order", targets)
	}
	f.e.FlushLogs()
	if !f.b.logged("wrote the refused connects and kicks kept while PostgreSQL did not answer") {
		t.Error("the write after the outage was not logged")
	}
}

// Beyond its bound the audit queue counts what it drops, and the count is audited.
func TestAuditDroppedCountIsAudited(t *testing.T) {
	f := newFixture(t)
	for range maxQueuedAudits + 2 {
		f.e.audits.add(AuditEvent{Action: "app_key_refused"})
	}
	f.e.audits.write(context.Background())
	if n := len(f.st.audits); n != maxQueuedAudits+1 {
		t.Fatalf("wrote %d events, want %d and one count", n, maxQueuedAudits+1)
	}
	last := f.st.audits[len(f.st.audits)-1]
	if last.Detail["notRecorded"] != 2 || last.Outcome != OutcomeFailure {
		t.Errorf("count event %+v, want notRecorded 2, failure", last)
	}
}

func TestFastHashesLastWinsPerAgent(t *testing.T) {
	f := newFixture(t)
	f.e.writes.queueFastHash(agentA, "old1", [32]byte{1})
	f.e.writes.queueFastHash(agentA, "old2", [32]byte{2})
	f.e.writes.queueFastHash(agentB, "old3", [32]byte{3})
	f.e.writes.fastHashes(context.Background())
	if len(f.st.hashes) != 2 || f.st.hashes[0].Old != "old2" || f.st.hashes[1].Agent != agentB {
		t.Errorf("recorded %+v, want agentA's last and agentB's", f.st.hashes)
	}
	f.e.FlushLogs()
	if !f.b.logged("recorded fast password hashes of imported devices") {
		t.Error("the write was not logged")
	}
}

// The ACL check of an admitted session runs on the broker's thread for every publish and delivery the
// shim leaves to Go: it must not allocate.
func TestACLCheckAllocatesNothing(t *testing.T) {
	f := newFixture(t, [2]string{"acl", "readwrite agents/%u/#; read fleet/#"})
	if f.connect(1, f.device(t, agentA), "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	topic := "agents/" + agentA + "/state"
	f.e.ACLCheck(1, acl.Write, topic) // expands the session's rules once
	if n := testing.AllocsPerRun(100, func() {
		if f.e.ACLCheck(1, acl.Write, topic) != OK {
			t.Fatal("denied")
		}
	}); n != 0 {
		t.Errorf("ACLCheck allocates %v times per call", n)
	}
}

// fakeTokens verifies any password "good" as a short-lived credential of subject user:alice.
type fakeTokens struct {
	clk     *fakeClock
	reloads int
}

func (v *fakeTokens) VerifyToken(username string, password []byte, clientID string) (auth.Token, error) {
	if string(password) != "good" {
		return auth.Token{}, auth.ErrTokenInvalid
	}
	now := v.clk.now()
	return auth.Token{ID: "t1", Subject: "user:alice", From: []string{"user:alice"}, IssuedAt: now.Add(-time.Minute),
		ExpiresAt: now.Add(time.Hour), ClientIDAllowed: true, Topics: []auth.TokenTopic{{Access: "read", Pattern: "fleet/#"}}}, nil
}

func (v *fakeTokens) Reload() error { v.reloads++; return nil }
func (v *fakeTokens) Keys() int     { return 1 }

// A subject denial, announced by notification, kicks the live sessions of the credentials derived from
// the subject on the next TICK, without a query; SIGHUP re-reads the verifier's keys.
func TestSubjectDenialKicksTokenSessions(t *testing.T) {
	var v *fakeTokens
	f := newFixtureWith(t, func(c *Config, clk *fakeClock) { v = &fakeTokens{clk: clk}; c.Tokens = v })
	f.e.denied.load(context.Background()) // tokens are refused until the deny list loaded once
	user := auth.TokenUsernamePrefix + "x"
	f.b.ids[1] = "fleet-1"
	if got := f.e.BasicAuth(1, user, []byte("good"), "fleet-1"); got != OK {
		t.Fatalf("token connect = %v, want OK", got)
	}
	if got := f.e.ACLCheck(1, acl.Read, "fleet/a"); got != OK {
		t.Errorf("token session's check = %v, want OK", got)
	}
	lookups := f.st.lookups
	f.e.Changed(Change{Table: DenialTable, Subject: "user:alice", DeniedAt: f.clk.now()})
	f.e.Tick()
	if k := f.b.kicked(); !slices.Equal(k, []string{"fleet-1"}) {
		t.Fatalf("kicked %v, want the token's client", k)
	}
	if f.st.lookups != lookups {
		t.Error("a subject denial queried the store")
	}
	if got := f.e.BasicAuth(2, user, []byte("good"), "fleet-2"); got != Refused {
		t.Errorf("connect of a denied subject's credential = %v, want Refused", got)
	}
	f.e.Reload()
	if v.reloads != 1 {
		t.Errorf("SIGHUP re-read the keys %d times, want 1", v.reloads)
	}
}

// TestResyncRefusalDropsTheCachedEntry: a change nobody announced (triggers disabled, a LISTEN that
// hears nothing) found by the periodic re-check kicks the session and also drops the cached entry, so
// the key's reconnect asks PostgreSQL again instead of being admitted from an entry trusted past
// cache_ttl while the feed looks up (docs/decisions/0017-trust-cached-entries-while-listen-is-healthy.md).
func TestResyncRefusalDropsTheCachedEntry(t *testing.T) {
	f := newFixture(t)
	f.e.feedConnected(context.Background())
	f.clk.advance(time.Millisecond)
	d := f.device(t, agentA)
	if f.connect(1, d, "agent-"+agentA) != OK {
		t.Fatal("connect refused")
	}
	f.clk.advance(10 * time.Minute) // past cache_ttl: the entry is trusted only because the feed is up
	c := d.cred
	c.KeyRevoked = true
	f.st.set(c) // no notification
	f.e.rechecks.all()
	f.recheck(t)
	f.e.Tick()
	if len(f.b.kicked()) == 0 {
		t.Fatal("the re-check did not kick the session of the revoked key")
	}
	f.e.Disconnect(1, true, 4, session.ToldNothing, -1)
	if got := f.connect(2, d, "agent-"+agentA); got == OK {
		t.Error("the revoked key was admitted again from the cache after the re-check refused its session")
	}
}

// TestRefreshBudgetNotSpentByOneClient: a client reconnecting in a loop with an aged entry is queued for
// a refresh once, so the refresh budget still reaches another aged entry, whose silent revocation the
// refresh then finds.
func TestRefreshBudgetNotSpentByOneClient(t *testing.T) {
	f := newFixture(t)
	f.e.feedConnected(context.Background())
	f.clk.advance(time.Millisecond)
	a := f.device(t, agentA)
	b := f.device(t, agentB)
	if f.connect(1, a, "agent-"+agentA) != OK || f.connect(2, b, "agent-"+agentB) != OK {
		t.Fatal("connect refused")
	}
	f.e.Disconnect(1, true, 4, session.ToldNothing, -1)
	f.e.Disconnect(2, true, 4, session.ToldNothing, -1)
	f.clk.advance(10 * time.Minute)
	for i := range 300 { // one client's reconnect loop, every connect aged
		f.connect(uintptr(100+i), a, "agent-"+agentA)
		f.e.Disconnect(uintptr(100+i), true, 4, session.ToldNothing, -1)
	}
	c := b.cred
	c.KeyRevoked = true
	f.st.set(c)                        // not announced
	f.connect(500, b, "agent-"+agentB) // aged: admitted, and queued for a refresh
	f.e.Disconnect(500, true, 4, session.ToldNothing, -1)
	f.e.auth.RefreshNow(context.Background())
	if got := f.connect(501, b, "agent-"+agentB); got == OK {
		t.Errorf("the silently revoked key is still admitted after a refresh (refreshes skipped: %d)", f.e.auth.Stats().RefreshSkipped)
	}
}

// TestStartWaitsForTheKnownKeys: plugin start (and so the broker's listeners) waits, within preload_wait,
// for the first load of the set of known keys, so that no forged-key budget is spent on a real key while
// that set is empty. The load is held: neither the preload (after which Start returns) nor Start may
// go ahead meanwhile. A build that did not wait is caught as soon as its preload runs (given 500 ms to).
func TestStartWaitsForTheKnownKeys(t *testing.T) {
	f := newFixture(t, [2]string{"preload_wait", "30s"})
	d := f.device(t, agentA)
	f.st.keysEntered, f.st.keysGate = make(chan struct{}, 1), make(chan struct{})
	f.st.activeCalled = make(chan struct{}, 1)
	f.st.feedCall = func(ListenHandler) {}
	started := make(chan struct{})
	go func() { f.e.Start(); close(started) }()
	select {
	case <-f.st.keysEntered:
	case <-time.After(10 * time.Second):
		t.Fatal("the known keys were never loaded")
	}
	select {
	case <-f.st.activeCalled:
		t.Fatal("the preload ran, so Start could return, while the set of known keys was still loading")
	case <-started:
		t.Fatal("Start returned while the set of known keys was still loading")
	case <-time.After(500 * time.Millisecond):
	}
	close(f.st.keysGate)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return once the known keys loaded")
	}
	if !f.e.keys.set.Has(d.cred.Digest) {
		t.Fatal("the set of known keys lacks the agent's key after Start")
	}
}
