package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
)

const (
	agentA = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"
	agentB = "0a0b0c0d-1111-2222-3333-444455556666"
)

// fakeBroker records the broker calls the table makes.
type fakeBroker struct {
	names   map[uintptr]string
	marks   map[uintptr]string
	kicks   []string
	ticks   int
	failSet bool
	// reads holds the read marks, with the read epoch each was set at (c/iotauth_marks.c).
	reads     map[uintptr]uint64
	readEpoch uint64
	resumed   map[uintptr]bool // clients whose CONNECT did not ask for a clean start
}

func newBroker() *fakeBroker {
	return &fakeBroker{names: map[uintptr]string{}, marks: map[uintptr]string{}, reads: map[uintptr]uint64{},
		resumed: map[uintptr]bool{}}
}

func (b *fakeBroker) MarkReads(client uintptr) bool {
	delete(b.marks, client)
	b.reads[client] = b.readEpoch
	return true
}

func (b *fakeBroker) RevokeReads()                   { b.readEpoch++ }
func (b *fakeBroker) CleanStart(client uintptr) bool { return !b.resumed[client] }

// fastRead is the shim's answer to a READ check, as c/iotauth_marks.c gives it: 1 allowed, 0 denied, -1
// when Go decides.
func (b *fakeBroker) fastRead(client uintptr, topic string) int {
	if p, ok := b.marks[client]; ok {
		if topic == p || strings.HasPrefix(topic, p+"/") {
			return 1
		}
		return 0
	}
	e, ok := b.reads[client]
	if !ok || e != b.readEpoch || topic == "" || topic[0] == '$' || len(topic) > acl.MaxTopicLen ||
		strings.ContainsAny(topic, "+#") {
		return -1
	}
	return 1
}

// disconnect is the shim's DISCONNECT: the mark goes before Go hears of it.
func (b *fakeBroker) disconnect(t *Table, client uintptr, keptFor time.Duration) {
	delete(b.marks, client)
	delete(b.reads, client)
	t.Disconnect(client, keptFor)
}

func (b *fakeBroker) SetUsername(client uintptr, name string) bool {
	if b.failSet {
		return false
	}
	b.names[client] = name
	return true
}

func (b *fakeBroker) Mark(client uintptr, prefix string) bool {
	delete(b.reads, client)
	if prefix == "" {
		delete(b.marks, client)
	} else {
		b.marks[client] = strings.Clone(prefix) // borrowed for the call
	}
	return true
}

func (b *fakeBroker) Kick(clientID string) { b.kicks = append(b.kicks, clientID) }
func (b *fakeBroker) RequestTick()         { b.ticks++ }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// lookup is the authorizer's store: one credential per key.
type lookup map[secret.Digest]credential.Credential

func (l lookup) LookupCredential(_ context.Context, d secret.Digest) (credential.Credential, error) {
	if c, ok := l[d]; ok {
		return c, nil
	}
	return credential.Credential{}, credential.ErrNotFound
}

// LookupAppCredential answers application keys from the same map.
func (l lookup) LookupAppCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	c, err := l.LookupCredential(ctx, d)
	if err == nil && !c.App {
		return credential.Credential{}, credential.ErrNotFound
	}
	return c, err
}

type fixture struct {
	t      *testing.T
	clk    *clock
	broker *fakeBroker
	table  *Table
	rows   lookup
	auth   *auth.Authorizer
}

func newFixture(t *testing.T, maxEnded int) *fixture {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, err := auth.NewCache(cache.Options[auth.Entry, auth.Group]{Size: 100, TTL: time.Minute, Group: auth.GroupOf, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := acl.ParseTemplates("readwrite agents/%u/#")
	if err != nil {
		t.Fatal(err)
	}
	rows := lookup{}
	a := auth.New(auth.Config{
		KeyKind: secret.APIKey, ClientID: "any", Rules: rules, DBTimeout: time.Second,
		NamePrefix: "iotauth-agent:", CustomNamePrefix: "iotauth-agent-custom:", AppNamePrefix: "iotauth-app:", Now: clk.now,
	}, rows, c)
	b := newBroker()
	return &fixture{t: t, clk: clk, broker: b, rows: rows, auth: a,
		table: New(Config{Broker: b, FastPrefix: "agents/", MaxEnded: maxEnded, Now: clk.now})}
}

// session authorises a fresh key of agent (with extra rules, if given) for clientID.
func (f *fixture) session(agent, clientID string, expires time.Time, rules ...credential.Rule) auth.Session {
	f.t.Helper()
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	d := secret.DigestOf(key.Reveal())
	f.rows[d] = credential.Credential{
		Digest: d, KeyID: "8c1d8a57-5f86-4a53-9d36-3c7a54e1f0aa", AgentUUID: agent, AgentStatus: "active",
		Rights: []string{"mqtt"}, PasswordHash: passhash.SHA256Hex(pw.Reveal()), Rules: rules, KeyExpiresAt: expires,
	}
	s, err := f.auth.Authorize(context.Background(), auth.Credentials{Username: key.Reveal(), Password: []byte(pw.Reveal()), ClientID: clientID})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) admit(client uintptr, s auth.Session) {
	f.t.Helper()
	if current, err := f.table.Admit(client, s, f.table.Epoch()); err != nil || !current {
		f.t.Fatalf("admit %x: current %v, %v", client, current, err)
	}
}

// allows asks the table as the broker would, with the client id given and the name the fake broker
// gave the client (or a stranger's).
func (f *fixture) allows(client uintptr, clientID string, access acl.Access, topic string) Verdict {
	return f.table.Allows(client, func() (string, string) {
		if name, ok := f.broker.names[client]; ok {
			return clientID, name
		}
		return clientID, "stranger"
	}, access, topic)
}

func TestAdmitNamesAndMarks(t *testing.T) {
	f := newFixture(t, 0)
	plain := f.session(agentA, "plain", time.Time{})
	custom := f.session(agentB, "custom", time.Time{}, credential.Rule{Access: "read", Pattern: "broadcast/#"})
	f.broker.marks[2] = "agents/left-over-from-a-reused-handle"
	f.admit(1, plain)
	f.admit(2, custom)
	if f.broker.names[1] != "iotauth-agent:"+agentA || f.broker.names[2] != "iotauth-agent-custom:"+agentB {
		t.Fatalf("names %v", f.broker.names)
	}
	if f.broker.marks[1] != "agents/"+agentA {
		t.Fatalf("plain session mark %q, want agents/<uuid>", f.broker.marks[1])
	}
	if m, ok := f.broker.marks[2]; ok {
		t.Fatalf("a session with extra rules must not be marked (got %q)", m)
	}
	if live, ended := f.table.Len(); live != 2 || ended != 0 {
		t.Fatalf("len %d/%d", live, ended)
	}
}

func TestAdmitWithoutFastPathNeverMarks(t *testing.T) {
	f := newFixture(t, 0)
	f.table = New(Config{Broker: f.broker, Now: f.clk.now})
	f.admit(1, f.session(agentA, "c1", time.Time{}))
	if len(f.broker.marks) != 0 {
		t.Fatalf("marks %v without a fast prefix", f.broker.marks)
	}
}

func TestAdmitFailsWhenTheBrokerCannotRename(t *testing.T) {
	f := newFixture(t, 0)
	f.broker.failSet = true
	if _, err := f.table.Admit(1, f.session(agentA, "c1", time.Time{}), f.table.Epoch()); err == nil {
		t.Fatal("admitted a session whose username still is the API key")
	}
	if live, _ := f.table.Len(); live != 0 || len(f.broker.marks) != 0 {
		t.Fatal("a refused admission left state behind")
	}
}

func TestAdmitSeesAChangeSinceItsEpoch(t *testing.T) {
	f := newFixture(t, 0)
	epoch := f.table.Epoch()
	f.table.Changed() // a NOTIFY while the connect was being decided
	current, err := f.table.Admit(1, f.session(agentA, "c1", time.Time{}), epoch)
	if err != nil || current {
		t.Fatalf("current %v, %v: the caller must re-check the agent", current, err)
	}
}

func TestAllows(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	f.admit(2, f.session(agentB, "b1", time.Time{}, credential.Rule{Access: "read", Pattern: "broadcast/#"}))
	f.admit(3, f.session(agentA, "a-ended", time.Time{}))
	f.table.Disconnect(3, Forever)
	tests := []struct {
		name     string
		client   uintptr
		clientID string
		access   acl.Access
		topic    string
		want     Verdict
	}{
		{"live, own namespace", 1, "a1", acl.Write, "agents/" + agentA + "/t", Allow},
		{"live, other namespace", 1, "a1", acl.Write, "agents/" + agentB + "/t", Deny},
		{"live, extra rule", 2, "b1", acl.Read, "broadcast/x", Allow},
		{"live, extra rule is read only", 2, "b1", acl.Write, "broadcast/x", Deny},
		{"ended: its will", 3, "a-ended", acl.Write, "agents/" + agentA + "/status", Allow},
		{"ended: outside its rules", 3, "a-ended", acl.Write, "agents/" + agentB + "/status", Deny},
		{"ended: its offline session's delivery", 3, "a-ended", acl.Read, "agents/" + agentA + "/cmd", Allow},
		{"ended session's client id on another handle", 9, "a-ended", acl.Read, "agents/" + agentA + "/cmd", Unknown},
		{"ended session's handle, another client id", 3, "other-id", acl.Read, "agents/" + agentA + "/cmd", Unknown},
		{"never admitted", 7, "stranger", acl.Write, "agents/" + agentA + "/t", Unknown},
		{"a live session's id, from another handle", 8, "a1", acl.Write, "agents/" + agentA + "/t", Unknown},
		{"over the topic limit", 1, "a1", acl.Write, "agents/" + agentA + "/" + string(make([]byte, acl.MaxTopicLen)), Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.allows(tt.client, tt.clientID, tt.access, tt.topic); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	// The ended session's handle and client id, but a name iotauth did not give it.
	if v := f.table.Allows(3, func() (string, string) { return "a-ended", "backend" }, acl.Write, "agents/"+agentA+"/status"); v != Unknown {
		t.Fatalf("another name on the ended session's handle and id: %v, want Unknown", v)
	}
}

func TestRefuseLiveKicksOnTickAndKeepsNothing(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	snaps := f.table.Sessions([]string{agentA})
	if len(snaps) != 1 {
		t.Fatalf("%d sessions", len(snaps))
	}
	f.table.Refuse(snaps[0], auth.ErrRevoked)
	f.table.Refuse(snaps[0], auth.ErrRevoked) // a second re-check before the tick queues nothing more
	if f.broker.ticks == 0 {
		t.Fatal("Refuse did not ask for a tick")
	}
	f.table.Tick()
	if !slices.Equal(f.broker.kicks, []string{"a1"}) {
		t.Fatalf("kicks %q, want [a1]", f.broker.kicks)
	}
	f.table.Disconnect(1, Forever) // the kick's DISCONNECT
	if v := f.allows(1, "a1", acl.Write, "agents/"+agentA+"/status"); v != Unknown {
		t.Fatalf("the will of a refused session: %v, want Unknown (never allowed)", v)
	}
	f.table.Tick()
	if len(f.broker.kicks) != 1 {
		t.Fatalf("kicked again: %q", f.broker.kicks)
	}
}

func TestRefuseEndedForgetsWithoutKick(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	f.table.Disconnect(1, Forever)
	snaps := f.table.Sessions([]string{agentA})
	if len(snaps) != 1 || !snaps[0].Ended {
		t.Fatalf("snapshots %+v", snaps)
	}
	f.table.Refuse(snaps[0], auth.ErrRevoked)
	f.table.Tick()
	if len(f.broker.kicks) != 0 {
		t.Fatalf("kicked %q: the broker cannot kick an offline session, and its client id may be someone else's now", f.broker.kicks)
	}
	if v := f.allows(5, "a1", acl.Write, "agents/"+agentA+"/status"); v != Unknown {
		t.Fatalf("a revoked agent's will: %v, want Unknown", v)
	}
	if live, ended := f.table.Len(); live != 0 || ended != 0 {
		t.Fatalf("len %d/%d after refusing the ended session", live, ended)
	}
}

func TestRefuseOfAReplacedSessionIsIgnored(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	old := f.table.Sessions([]string{agentA})[0]
	f.table.Disconnect(1, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{})) // the same handle, reconnected with a new key
	f.table.Refuse(old, auth.ErrRevoked)
	f.table.Tick()
	if len(f.broker.kicks) != 0 {
		t.Fatalf("kicked %q for a session that had already been replaced", f.broker.kicks)
	}
	if v := f.allows(1, "a1", acl.Write, "agents/"+agentA+"/t"); v != Allow {
		t.Fatalf("the new session: %v", v)
	}
}

func TestClientIDTakeover(t *testing.T) {
	tests := []struct {
		name    string
		ended   bool
		keptFor time.Duration // how long the broker keeps the ended session
		later   time.Duration // how long after the disconnect the new connect comes
		agent   string
		owner   bool // the template gives the client id to the new connect's agent
		wantErr error
	}{
		{name: "another agent's live session", agent: agentB, wantErr: ErrClientIDTaken},
		{name: "another agent's live session, even for the id's owner", agent: agentB, owner: true, wantErr: ErrClientIDTaken},
		{name: "another agent's offline session kept without expiry", ended: true, keptFor: Forever, later: 24 * time.Hour, agent: agentB, wantErr: ErrClientIDTaken},
		{name: "another agent's offline session kept for an hour, 59 minutes on", ended: true, keptFor: time.Hour, later: 59 * time.Minute, agent: agentB, wantErr: ErrClientIDTaken},
		{name: "another agent's offline session kept for an hour, an hour on", ended: true, keptFor: time.Hour, later: time.Hour, agent: agentB},
		{name: "another agent's ended session not kept", ended: true, agent: agentB},
		{name: "another principal's offline session kept, against the id's owner", ended: true, keptFor: Forever, agent: agentB, owner: true},
		{name: "the same agent's live session", agent: agentA},
		{name: "the same agent's offline session", ended: true, keptFor: Forever, agent: agentA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 0)
			f.admit(1, f.session(agentA, "shared", time.Time{}))
			if tt.ended {
				f.table.Disconnect(1, tt.keptFor)
			}
			f.clk.t = f.clk.t.Add(tt.later)
			s := f.session(tt.agent, "shared", time.Time{})
			s.OwnsClientID = tt.owner
			_, err := f.table.Admit(2, s, f.table.Epoch())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if _, ok := f.broker.names[2]; ok {
					t.Fatal("a refused connect was renamed")
				}
				return
			}
			// The broker disconnects the session taken over: its handle must not end the new one.
			if !tt.ended {
				f.table.Disconnect(1, Forever)
			}
			if v := f.allows(2, "shared", acl.Write, "agents/"+tt.agent+"/t"); v != Allow {
				t.Fatalf("the new session: %v", v)
			}
			if live, ended := f.table.Len(); live != 1 || ended != 0 {
				t.Fatalf("len %d/%d: the old session must be gone", live, ended)
			}
		})
	}
}

// How long the broker keeps a session, from what Mosquitto tells a plugin at DISCONNECT.
func TestKeptFor(t *testing.T) {
	const hold = 30 * time.Minute
	tests := []struct {
		name       string
		protocol   int
		cleanStart bool
		told       Told
		want       time.Duration
	}{
		{"2.0, MQTT 3.1.1 clean session", 4, true, ToldNothing, 0},
		{"2.0, MQTT 3.1 clean session", 3, true, ToldNothing, 0},
		{"2.0, MQTT 3.1.1 persistent session", 4, false, ToldNothing, Forever},
		{"2.0, MQTT 5 clean start (no expiry asked, the clients' default)", 5, true, ToldNothing, 0},
		{"2.0, MQTT 5 resuming (an expiry asked, presumed)", 5, false, ToldNothing, hold},
		{"2.1 DISCONNECT, MQTT 3.1.1", 4, true, ToldEnded, 0},
		{"2.1 DISCONNECT, MQTT 5 resuming without expiry", 5, false, ToldEnded, 0},
		{"2.1 CLIENT_OFFLINE, MQTT 3.1.1 persistent", 4, false, ToldKept, Forever},
		{"2.1 CLIENT_OFFLINE, MQTT 5 clean start with an expiry", 5, true, ToldKept, hold},
		{"2.1 CLIENT_OFFLINE, MQTT 5 resuming", 5, false, ToldKept, hold},
	}
	for _, tt := range tests {
		if got := KeptFor(tt.protocol, tt.cleanStart, tt.told, hold); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := KeptFor(5, false, ToldNothing, 0); got != 0 {
		t.Errorf("MQTT 5 with no hold configured: %v, want 0", got)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, 0)
	expires := f.clk.t.Add(time.Hour)
	f.admit(1, f.session(agentA, "a1", expires))
	f.admit(2, f.session(agentA, "a2", time.Time{}))
	f.admit(3, f.session(agentA, "a3", expires))
	f.table.Disconnect(3, Forever)
	if got := f.table.Expired(); len(got) != 0 {
		t.Fatalf("expired before the hour: %+v", got)
	}
	if v := f.allows(3, "a3", acl.Write, "agents/"+agentA+"/status"); v != Allow {
		t.Fatalf("ended, unexpired: %v", v)
	}
	f.clk.t = expires
	got := f.table.Expired()
	if len(got) != 1 || got[0].ClientID != "a1" {
		t.Fatalf("expired %+v, want a1 alone", got)
	}
	if v := f.allows(3, "a3", acl.Write, "agents/"+agentA+"/status"); v != Deny {
		t.Fatalf("the will of an ended session whose key expired: %v, want Deny", v)
	}
	f.table.Refuse(got[0], auth.ErrExpired)
	f.table.Tick()
	if !slices.Equal(f.broker.kicks, []string{"a1"}) {
		t.Fatalf("kicks %q", f.broker.kicks)
	}
}

func TestEndedSessionsAreBounded(t *testing.T) {
	f := newFixture(t, 2)
	for i, id := range []string{"e1", "e2", "e3"} {
		f.admit(uintptr(i+1), f.session(agentA, id, time.Time{}))
		f.table.Disconnect(uintptr(i+1), Forever)
	}
	if _, ended := f.table.Len(); ended != 2 {
		t.Fatalf("%d ended sessions kept, want 2", ended)
	}
	if v := f.allows(1, "e1", acl.Write, "agents/"+agentA+"/t"); v != Unknown {
		t.Fatalf("the oldest ended session: %v, want Unknown (refused)", v)
	}
	if v := f.allows(3, "e3", acl.Write, "agents/"+agentA+"/t"); v != Allow {
		t.Fatalf("the newest ended session: %v", v)
	}
	// Many reconnects of one client id keep one record and never push others out.
	for i := 0; i < 10; i++ {
		f.admit(9, f.session(agentA, "e2", time.Time{}))
		f.table.Disconnect(9, Forever)
	}
	if v := f.allows(3, "e3", acl.Write, "agents/"+agentA+"/t"); v != Allow {
		t.Fatalf("e3 after e2's reconnects: %v", v)
	}
	if _, ended := f.table.Len(); ended != 2 {
		t.Fatalf("%d ended sessions kept, want 2", ended)
	}
}

func TestIsLive(t *testing.T) {
	f := newFixture(t, 0)
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	d := secret.DigestOf(key.Reveal())
	f.rows[d] = credential.Credential{Digest: d, KeyID: "8c1d8a57-5f86-4a53-9d36-3c7a54e1f0aa", AgentUUID: agentA,
		AgentStatus: "active", Rights: []string{"mqtt"}, PasswordHash: passhash.SHA256Hex(pw.Reveal())}
	s, err := f.auth.Authorize(context.Background(), auth.Credentials{Username: key.Reveal(), Password: []byte(pw.Reveal()), ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	f.admit(1, s)
	tests := []struct {
		name   string
		client uintptr
		user   string
		pass   string
		want   bool
	}{
		{"same client, name and password", 1, s.Name, pw.Reveal(), true},
		{"wrong password", 1, s.Name, "iotmp_wrong", false},
		{"another name", 1, "iotauth-agent:" + agentB, pw.Reveal(), false},
		{"another client", 2, s.Name, pw.Reveal(), false},
	}
	for _, tt := range tests {
		if got := f.table.IsLive(tt.client, tt.user, []byte(tt.pass)); got != tt.want {
			t.Errorf("%s: got %v", tt.name, got)
		}
	}
	f.table.Disconnect(1, 0)
	if f.table.IsLive(1, s.Name, []byte(pw.Reveal())) {
		t.Error("an ended session answered as live")
	}
}

// An agent's sessions stay listed through admissions, ends and replacements in any order.
func TestSessionsOfAnAgent(t *testing.T) {
	f := newFixture(t, 0)
	count := func() (live, ended int) {
		for _, s := range f.table.Sessions([]string{agentA}) {
			if s.Ended {
				ended++
			} else {
				live++
			}
		}
		return
	}
	for i := uintptr(1); i <= 4; i++ {
		f.admit(i, f.session(agentA, fmt.Sprintf("c%d", i), time.Time{}))
	}
	f.admit(9, f.session(agentB, "other", time.Time{}))
	steps := []struct {
		name        string
		do          func()
		live, ended int
	}{
		{"four live", func() {}, 4, 0},
		{"the second ends", func() { f.table.Disconnect(2, Forever) }, 3, 1},
		{"the third ends", func() { f.table.Disconnect(3, 0) }, 2, 2},
		{"the second's id comes back on a new handle", func() { f.admit(5, f.session(agentA, "c2", time.Time{})) }, 3, 1},
		{"the first is replaced on its handle", func() { f.admit(1, f.session(agentA, "c1b", time.Time{})) }, 3, 1},
		{"all end", func() {
			for _, c := range []uintptr{1, 4, 5} {
				f.table.Disconnect(c, Forever)
			}
		}, 0, 4},
	}
	for _, st := range steps {
		st.do()
		if live, ended := count(); live != st.live || ended != st.ended {
			t.Fatalf("%s: %d live and %d ended, want %d and %d", st.name, live, ended, st.live, st.ended)
		}
	}
	if agents := f.table.Agents(); len(agents) != 2 {
		t.Fatalf("agents %v", agents)
	}
}

const appKeyID = "9e9e9e9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"

// appSession authorises a fresh application key (id appKeyID) with these topics for clientID.
func (f *fixture) appSession(clientID string, topics ...credential.Rule) auth.Session {
	f.t.Helper()
	key, _ := secret.Generate(secret.AppKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	d := secret.DigestOf(key.Reveal())
	f.rows[d] = credential.Credential{
		Digest: d, KeyID: appKeyID, AgentUUID: appKeyID, AgentStatus: "active", App: true,
		PasswordHash: passhash.SHA256Hex(pw.Reveal()), Rules: topics,
	}
	s, err := f.auth.Authorize(context.Background(), auth.Credentials{Username: key.Reveal(), Password: []byte(pw.Reveal()), ClientID: clientID})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// TestAppSessions: an application key's sessions are named iotauth-app:<id>, never marked for the
// broker's fast path (even with no topics, which would otherwise look like the default rules), decided
// in Go by their topics, grouped (re-checked, kicked) by the key id, and cannot take a client id that
// an agent's session holds.
func TestAppSessions(t *testing.T) {
	f := newFixture(t, 0)
	agent := f.session(agentA, "shared-id", time.Time{})
	f.admit(1, agent)
	bare := f.appSession("svc-1")
	f.admit(2, bare)
	withTopics := f.appSession("svc-2", credential.Rule{Access: "read", Pattern: "agents/+/telemetry"})
	f.admit(3, withTopics)
	for _, c := range []uintptr{2, 3} {
		if f.broker.names[c] != "iotauth-app:"+appKeyID {
			t.Errorf("client %d named %q, want iotauth-app:%s", c, f.broker.names[c], appKeyID)
		}
		if m, ok := f.broker.marks[c]; ok {
			t.Errorf("application session %d marked for the fast path (%q)", c, m)
		}
	}
	for _, tt := range []struct {
		client uintptr
		access acl.Access
		topic  string
		want   Verdict
	}{
		{2, acl.Write, "agents/" + appKeyID + "/x", Deny}, // the configured agent template is not its
		{3, acl.Subscribe, "agents/+/telemetry", Allow},
		{3, acl.Subscribe, "$share/g/agents/+/telemetry", Allow},
		{3, acl.Subscribe, "agents/#", Deny},
		{3, acl.Read, "agents/" + agentA + "/telemetry", Allow},
		{1, acl.Subscribe, "$share/g/agents/" + agentA + "/#", Deny}, // agents never unwrap $share
	} {
		if got := f.allows(tt.client, "", tt.access, tt.topic); got != tt.want {
			t.Errorf("client %d: %d %q = %v, want %v", tt.client, tt.access, tt.topic, got, tt.want)
		}
	}
	if snaps := f.table.Sessions([]string{appKeyID}); len(snaps) != 2 {
		t.Fatalf("%d sessions grouped under the key id, want 2", len(snaps))
	}
	if _, err := f.table.Admit(4, f.appSession("shared-id"), f.table.Epoch()); !errors.Is(err, ErrClientIDTaken) {
		t.Fatalf("an application key took an agent's live client id: %v", err)
	}
	if f.broker.names[1] != "iotauth-agent:"+agentA {
		t.Fatal("the agent's session was disturbed")
	}
}

// One principal cannot push another's persistent session out of the table (and so free its client id for
// a takeover) by ending many sessions of its own: each principal keeps at most MaxEndedPerAgent.
func TestEndedSessionsPerAgentProtectOthers(t *testing.T) {
	f := newFixture(t, 0)
	f.table = New(Config{Broker: f.broker, FastPrefix: "agents/", MaxEnded: 4, MaxEndedPerAgent: 2, Now: f.clk.now})
	f.admit(1, f.session(agentA, "victim", time.Time{}))
	f.table.Disconnect(1, Forever)
	for i := 0; i < 10; i++ {
		h := uintptr(10 + i)
		f.admit(h, f.session(agentB, fmt.Sprintf("flood-%d", i), time.Time{}))
		f.table.Disconnect(h, Forever)
	}
	if _, err := f.table.Admit(99, f.session(agentB, "victim", time.Time{}), f.table.Epoch()); !errors.Is(err, ErrClientIDTaken) {
		t.Fatalf("after another agent ended 10 sessions: %v, want ErrClientIDTaken", err)
	}
	if _, ended := f.table.Len(); ended != 3 {
		t.Fatalf("%d ended sessions kept, want the victim's and the flood's newest 2", ended)
	}
}

// A session a re-check refused answers nothing from the moment of the refusal (its kick follows on the
// next Tick), and a takeover of a live session removes its mark, so that its will goes to Go.
func TestRefusedAndTakenOverSessions(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a", time.Time{}))
	f.table.Refuse(f.table.Sessions([]string{agentA})[0], auth.ErrRevoked)
	if v := f.allows(1, "a", acl.Write, "agents/"+agentA+"/status"); v != Deny {
		t.Fatalf("a refused session before its kick: %v, want Deny", v)
	}
	f.admit(2, f.session(agentB, "b", time.Time{}))
	if f.broker.marks[2] == "" {
		t.Fatal("precondition: b is marked")
	}
	f.admit(3, f.session(agentB, "b", time.Time{})) // the same agent reconnects: the broker takes b over
	if m, ok := f.broker.marks[2]; ok {
		t.Fatalf("the session taken over keeps its mark %q", m)
	}
	if f.broker.marks[3] != "agents/"+agentB {
		t.Fatalf("the new session's mark: %q", f.broker.marks[3])
	}
}

// Config.Kicked hears of each kick Tick carries out, with the re-check's reason; a queued kick whose
// client disconnected first is not a kick.
func TestKickedHook(t *testing.T) {
	f := newFixture(t, 0)
	var reasons []error
	f.table.cfg.Kicked = func(reason error) { reasons = append(reasons, reason) }
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	f.admit(2, f.session(agentB, "b1", time.Time{}))
	f.table.Refuse(f.table.Sessions([]string{agentA})[0], auth.ErrRevoked)
	f.table.Refuse(f.table.Sessions([]string{agentB})[0], auth.ErrExpired)
	f.table.Disconnect(2, 0) // gone before the tick
	f.table.Tick()
	if len(reasons) != 1 || reasons[0] != auth.ErrRevoked {
		t.Fatalf("kick reasons %v, want [revoked]", reasons)
	}
	f.table.Tick()
	if len(reasons) != 1 {
		t.Fatalf("counted again: %v", reasons)
	}
}

func TestTokensAndExpiryScan(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := newBroker()
	tb := New(Config{Broker: b, Now: func() time.Time { return now }})
	tok := auth.Session{Name: "iotauth-token:t1", Agent: auth.TokenAgentPrefix + "user:1", ClientID: "web-1",
		ExpiresAt: now.Add(2 * time.Second), Token: &auth.TokenInfo{ID: "t1", Subject: "user:1"}}
	app := auth.Session{Name: "app:k", Agent: "k", ClientID: "svc-1", ExpiresAt: now.Add(time.Second)}
	if _, err := tb.Admit(1, tok, tb.Epoch()); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Admit(2, app, tb.Epoch()); err != nil {
		t.Fatal(err)
	}
	if got := tb.Tokens(); len(got) != 1 || got[0].Token.ID != "t1" {
		t.Fatalf("token sessions %+v", got)
	}
	if got := tb.Expired(); len(got) != 0 {
		t.Fatalf("expired before any expiry: %d", len(got))
	}
	now = now.Add(time.Second)
	got := tb.Expired()
	if len(got) != 1 || got[0].ClientID != "svc-1" {
		t.Fatalf("expired at 1s: %+v", got)
	}
	tb.Refuse(got[0], auth.ErrExpired)
	if got := tb.Expired(); len(got) != 0 {
		t.Fatalf("a refused session is reported again: %d", len(got))
	}
	now = now.Add(time.Second)
	if got := tb.Expired(); len(got) != 1 || got[0].ClientID != "web-1" {
		t.Fatalf("expired at 2s: %+v", got)
	}
}

// An agent reconnecting under the client id of its oldest ended session takes that record over in place;
// once it ends again it is the agent's newest ended session, so the per-agent bound drops another first.
func TestReconnectInPlaceIsTheNewestEnded(t *testing.T) {
	f := newFixture(t, 0)
	f.table = New(Config{Broker: f.broker, FastPrefix: "agents/", MaxEnded: 100, MaxEndedPerAgent: 3, Now: f.clk.now})
	for i, id := range []string{"a1", "a2", "a3"} {
		f.admit(uintptr(1+i), f.session(agentA, id, time.Time{}))
		f.table.Disconnect(uintptr(1+i), Forever)
	}
	f.admit(10, f.session(agentA, "a1", time.Time{})) // the oldest ended one's id
	if live, ended := f.table.Len(); live != 1 || ended != 2 {
		t.Fatalf("after the reconnect: %d live, %d ended; want 1 and 2", live, ended)
	}
	if f.broker.marks[10] != "agents/"+agentA {
		t.Fatalf("the reconnected session's mark: %q", f.broker.marks[10])
	}
	f.table.Disconnect(10, Forever)
	f.admit(11, f.session(agentA, "a4", time.Time{}))
	f.table.Disconnect(11, Forever) // the fourth ended session: the oldest, a2, goes
	if _, ended := f.table.Len(); ended != 3 {
		t.Fatalf("%d ended sessions kept, want 3", ended)
	}
	if _, err := f.table.Admit(20, f.session(agentB, "a1", time.Time{}), f.table.Epoch()); !errors.Is(err, ErrClientIDTaken) {
		t.Fatalf("a1, ended most recently but one, was not kept: %v", err)
	}
	if _, err := f.table.Admit(21, f.session(agentB, "a2", time.Time{}), f.table.Epoch()); err != nil {
		t.Fatalf("a2, the oldest ended, was kept in place of a newer one: %v", err)
	}
	if got := len(f.table.Sessions([]string{agentA})); got != 3 {
		t.Fatalf("agent A has %d sessions listed, want 3", got)
	}
}

// The per-agent counts of ended sessions go with the agent's last session, however it went.
func TestAgentBookkeepingGoesWithTheLastSession(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.session(agentA, "a1", time.Time{}))
	f.table.Disconnect(1, Forever)
	f.admit(2, f.session(agentA, "a1", time.Time{})) // in place of the ended one
	f.admit(3, f.session(agentA, "a1", time.Time{})) // takes the live one over
	f.table.Disconnect(2, Forever)                   // the one taken over: forgotten
	f.table.Disconnect(3, 0)
	f.admit(4, f.session(agentB, "b1", time.Time{}))
	f.table.Disconnect(4, Forever)
	for _, s := range f.table.Sessions([]string{agentA, agentB}) {
		f.table.Refuse(s, auth.ErrRevoked) // ended: forgotten at once
	}
	if live, ended := f.table.Len(); live != 0 || ended != 0 {
		t.Fatalf("%d live and %d ended sessions left", live, ended)
	}
	if len(f.table.byAgent) != 0 || len(f.table.endedOf) != 0 || len(f.table.byClientID) != 0 {
		t.Fatalf("left behind: %d agents, %d ended counts, %d client ids", len(f.table.byAgent), len(f.table.endedOf), len(f.table.byClientID))
	}
}
