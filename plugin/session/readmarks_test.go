package session

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/plugin/acl"
)

// Read marks (docs/decisions/0016-read-marks-for-admitted-subscriptions.md): a session that started
// clean and has no prefix mark gets a read mark; a refusal makes every read mark stale at once; Go renews
// the mark of a session it still allows; nothing else is ever marked.

func newReadMarkFixture(t *testing.T) *fixture {
	f := newFixture(t, 0)
	f.table = New(Config{Broker: f.broker, FastPrefix: "agents/", ReadMarks: true, Now: f.clk.now})
	return f
}

func (f *fixture) snapshotOf(agent string, client uintptr) Snapshot {
	f.t.Helper()
	for _, s := range f.table.Sessions([]string{agent}) {
		if s.client == client && !s.Ended {
			return s
		}
	}
	f.t.Fatalf("no live session of %s on client %x", agent, client)
	return Snapshot{}
}

func TestReadMarks(t *testing.T) {
	f := newReadMarkFixture(t)
	telemetry := credential.Rule{Access: "read", Pattern: "agents/+/telemetry"}
	f.admit(1, f.session(agentA, "plain", time.Time{}))
	f.admit(2, f.appSession("svc-1", telemetry))
	f.admit(3, f.appSession("svc-2", telemetry))
	f.admit(4, f.session(agentB, "custom", time.Time{}, credential.Rule{Access: "read", Pattern: "broadcast/#"}))
	f.broker.resumed[5] = true
	f.admit(5, f.appSession("svc-resumed", telemetry))
	topic := "agents/" + agentA + "/telemetry"
	if f.broker.marks[1] != "agents/"+agentA {
		t.Fatalf("the default-rules agent lost its prefix mark: %v", f.broker.marks)
	}
	if _, ok := f.broker.reads[1]; ok {
		t.Fatal("the default-rules agent got a read mark instead of its prefix mark")
	}
	for _, c := range []uintptr{2, 3, 4} {
		if f.broker.fastRead(c, topic) != 1 {
			t.Errorf("client %d: a session that started clean has no read mark", c)
		}
	}
	if _, ok := f.broker.reads[5]; ok || f.broker.fastRead(5, topic) != -1 {
		t.Fatal("a session that resumed an earlier one (whose subscriptions Go never saw) got a read mark")
	}

	// Refusing one session makes every read mark stale: its own stays so (Go denies), the others are
	// renewed by Go at their next delivery, and prefix marks are untouched.
	f.table.Refuse(f.snapshotOf(appKeyID, 2), errors.New("rules changed"))
	for _, c := range []uintptr{2, 3, 4} {
		if got := f.broker.fastRead(c, topic); got != -1 {
			t.Errorf("client %d: read mark still answers (%d) after a refusal", c, got)
		}
	}
	if f.broker.fastRead(1, topic) != 1 {
		t.Error("a refusal touched the agent's prefix mark")
	}
	if got := f.allows(2, "svc-1", acl.Read, topic); got != Deny {
		t.Fatalf("the refused session's delivery: %v, want Deny", got)
	}
	if f.broker.fastRead(2, topic) != -1 {
		t.Fatal("Go renewed the read mark of a refused session")
	}
	if got := f.allows(3, "svc-2", acl.Read, topic); got != Allow {
		t.Fatalf("another session's delivery: %v, want Allow", got)
	}
	if f.broker.fastRead(3, topic) != 1 {
		t.Fatal("Go did not renew the read mark of a session it still allows")
	}
	// A publish, a subscription or an unsubscription renews nothing.
	f.table.Refuse(f.snapshotOf(appKeyID, 3), errors.New("rules changed"))
	f.allows(4, "custom", acl.Subscribe, "broadcast/#")
	f.allows(4, "custom", acl.Write, "agents/"+agentB+"/x")
	if f.broker.fastRead(4, "broadcast/x") != -1 {
		t.Fatal("a check other than READ renewed a read mark")
	}

	// An ended session is never marked again (its offline deliveries are Go's).
	f.broker.disconnect(f.table, 4, Forever)
	if got := f.allows(4, "custom", acl.Read, "broadcast/x"); got != Allow {
		t.Fatalf("offline delivery of the ended session: %v, want Allow", got)
	}
	if f.broker.fastRead(4, "broadcast/x") != -1 {
		t.Fatal("Go marked the handle of an ended session")
	}

	// A takeover of a read-marked session's client id unmarks the old handle for good.
	f.admit(6, f.appSession("svc-6", telemetry))
	f.admit(7, f.appSession("svc-6", telemetry))
	if f.broker.fastRead(6, topic) != -1 || f.allows(6, "svc-6", acl.Read, topic) != Allow || f.broker.fastRead(6, topic) != -1 {
		t.Fatal("the handle of a session taken over keeps or regains a read mark")
	}
	if f.broker.fastRead(7, topic) != 1 {
		t.Fatal("the session that took the client id over has no read mark")
	}

	// A live client admitted again (no DISCONNECT between) may keep subscriptions of its earlier rules.
	f.admit(7, f.appSession("svc-6", credential.Rule{Access: "read", Pattern: "agents/" + agentA + "/telemetry"}))
	if f.broker.fastRead(7, "agents/"+agentB+"/telemetry") != -1 {
		t.Fatal("a client admitted again while live got a read mark")
	}
}

func TestReadMarksOffByDefault(t *testing.T) {
	f := newFixture(t, 0)
	f.admit(1, f.appSession("svc-1", credential.Rule{Access: "read", Pattern: "agents/+/telemetry"}))
	f.allows(1, "svc-1", acl.Read, "agents/x/telemetry")
	if len(f.broker.reads) != 0 {
		t.Fatal("read marks without Config.ReadMarks")
	}
}

// TestReadMarkDifferential runs random connects (clean or resuming an earlier session), subscriptions,
// deliveries, refusals and disconnects against the table and the fake shim, and compares every delivery
// the shim answers itself with the table's own decision. A resumed session starts with a subscription
// an earlier connection made ("#"), as the broker hands it over: its deliveries must all be Go's.
func TestReadMarkDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	ruleSets := [][]credential.Rule{
		{{Access: "read", Pattern: "agents/+/telemetry"}},
		{{Access: "read", Pattern: "agents/#"}, {Access: "deny", Pattern: "agents/+/secret"}},
		{{Access: "readwrite", Pattern: "broadcast/#"}, {Access: "read", Pattern: "agents/a/+"}},
		{},
	}
	filters := []string{"agents/+/telemetry", "agents/#", "agents/a/+", "broadcast/#", "#", "agents/+/secret",
		"$share/g/agents/+/telemetry", "$share/g/agents/#", "agents/a/telemetry", "+/a/#", "$SYS/#"}
	topics := []string{"agents/a/telemetry", "agents/b/telemetry", "agents/a/secret", "agents/b/secret", "agents/a",
		"broadcast/x", "broadcast", "other", "$SYS/broker/load", "agents/a/telemetry/x"}
	type client struct {
		id      string
		subs    []string
		live    bool
		refused bool
	}
	f := newReadMarkFixture(t)
	clients := map[uintptr]*client{}
	checked, fast := 0, 0
	for step := range 20000 {
		c := uintptr(1 + r.IntN(12))
		cl := clients[c]
		switch op := r.IntN(10); {
		case cl == nil || !cl.live:
			if cl != nil || r.IntN(3) != 0 {
				// A new connection on this handle: clean, or resuming the subscriptions of an earlier one.
				cl = &client{id: fmt.Sprintf("c%d-%d", c, step), live: true}
				f.broker.resumed[c] = r.IntN(3) == 0
				if f.broker.resumed[c] {
					cl.subs = []string{"#"}
				}
				clients[c] = cl
				rules := ruleSets[r.IntN(len(ruleSets))]
				if r.IntN(2) == 0 {
					f.admit(c, f.appSession(cl.id, rules...))
				} else {
					f.admit(c, f.session(agentB, cl.id, time.Time{}, rules...))
				}
			}
		case op < 3:
			flt := filters[r.IntN(len(filters))]
			if f.allows(c, cl.id, acl.Subscribe, flt) == Allow {
				cl.subs = append(cl.subs, flt)
			}
		case op == 7 && r.IntN(4) == 0:
			// The broker asks about a live client again, which now has other rules; its subscriptions stay.
			rules := ruleSets[r.IntN(len(ruleSets))]
			if strings.HasPrefix(f.broker.names[c], "iotauth-app:") {
				f.admit(c, f.appSession(cl.id, rules...))
			} else {
				f.admit(c, f.session(agentB, cl.id, time.Time{}, rules...))
			}
			cl.refused = false
		case op < 8:
			// A message on topic: the broker checks READ once per subscription of c that matches it.
			topic := topics[r.IntN(len(topics))]
			for _, flt := range cl.subs {
				if !deliversThrough(flt, topic) {
					continue
				}
				checked++
				got := f.broker.fastRead(c, topic)
				want := f.allows(c, cl.id, acl.Read, topic)
				if got == -1 {
					continue
				}
				fast++
				if (got == 1) != (want == Allow) {
					t.Fatalf("step %d: client %d (subscriptions %q, refused %v): the shim answers %d for %q, Go %v",
						step, c, cl.subs, cl.refused, got, topic, want)
				}
			}
		case op == 8 && r.IntN(3) == 0:
			agent := agentB
			if strings.HasPrefix(f.broker.names[c], "iotauth-app:") {
				agent = appKeyID
			}
			for _, s := range f.table.Sessions([]string{agent}) {
				if s.client == c && !s.Ended {
					f.table.Refuse(s, errors.New("rules changed"))
					cl.refused = true
				}
			}
		case op == 9:
			f.broker.disconnect(f.table, c, 0)
			cl.live = false
		}
	}
	if fast < 400 {
		t.Fatalf("%d deliveries checked, %d answered by the shim: the generator is too narrow", checked, fast)
	}
}

// deliversThrough is the broker's choice of subscriptions for a message (see plugin/acl's readmark_test.go).
func deliversThrough(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, filter, _ = strings.Cut(rest, "/")
	}
	if strings.HasPrefix(topic, "$") && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range fl {
		if l == "#" {
			return true
		}
		if i >= len(tl) || (l != "+" && l != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}
