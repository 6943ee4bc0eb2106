package acl

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The broker's read mark (docs/decisions/0016-read-marks-for-admitted-subscriptions.md) allows every
// delivery of a plain topic (not empty, no leading '$', no '+' or '#', at most MaxTopicLen bytes) to a
// session that started clean, without asking Go. That is sound only if every topic the broker can
// deliver through a subscription Go admitted is one Go would let the session read. These tests compare
// that fast answer with Go's decision on random rules, filters and topics.

// brokerMatches is how Mosquitto picks the subscriptions a message goes through, written from the MQTT
// specification independently of this package: '+' is one whole level, '#' the parent level and every
// level below, a filter that starts with a wildcard never matches a topic that starts with '$', and a
// shared subscription ($share/<group>/<filter>) matches what <filter> matches.
func brokerMatches(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, inner, ok := strings.Cut(rest, "/")
		if !ok {
			return false
		}
		filter = inner
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return i == len(f)-1 // "a/#" also matches "a"
		}
		if i >= len(t) {
			return false
		}
		if fl != "+" && fl != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// fastReadAnswers is the C shim's read mark (c/iotauth_marks.c, iotauth_mark_allows): whether it answers
// a READ of topic itself (always with "allowed") instead of asking Go. It is a Go copy of the C rule: a
// change to one must be made to the other; test_read_marks in c/iotauth_marks_test.c pins the C side to
// the same cases (plain topics only, no '$', no wildcard, at most the maximum length).
func fastReadAnswers(topic string) bool {
	return topic != "" && topic[0] != '$' && len(topic) <= MaxTopicLen && !strings.ContainsAny(topic, "+#")
}

// levels are few, so that random filters and topics often match one another.
var markLevels = []string{"a", "b", "c", "", "%u", "%c", "$SYS", "$x"}

func randomFilter(r *rand.Rand, wildcards bool) string {
	n := 1 + r.IntN(4)
	parts := make([]string, n)
	for i := range parts {
		switch k := r.IntN(10); {
		case wildcards && k == 0 && i == n-1:
			parts[i] = "#"
		case wildcards && k <= 2:
			parts[i] = "+"
		default:
			lv := markLevels[r.IntN(len(markLevels))]
			if i > 0 && strings.HasPrefix(lv, "$") {
				lv = "x" + lv // '$' is special only at the start
			}
			parts[i] = lv
		}
	}
	return strings.Join(parts, "/")
}

// topicFor instantiates a filter's wildcards into a topic it matches (or, for a random mutation, one it
// may not match).
func topicFor(r *rand.Rand, filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, filter, _ = strings.Cut(rest, "/")
	}
	var out []string
	for _, lv := range strings.Split(filter, "/") {
		switch lv {
		case "+":
			out = append(out, []string{"a", "b", "", "u1", "c1", "z"}[r.IntN(6)])
		case "#":
			for range r.IntN(3) {
				out = append(out, []string{"a", "b", "", "z"}[r.IntN(4)])
			}
		default:
			out = append(out, lv)
		}
	}
	if len(out) == 0 {
		out = append(out, "a")
	}
	if r.IntN(8) == 0 {
		out[r.IntN(len(out))] = "b"
	}
	return strings.Join(out, "/")
}

func randomSet(r *rand.Rand) (Set, []string) {
	accesses := []string{"read", "write", "readwrite", "deny"}
	var ts []Template
	var desc []string
	literal := r.IntN(4) == 0 // a short-lived credential: exact grants, no deny rules
	for range 1 + r.IntN(4) {
		access := accesses[r.IntN(len(accesses))]
		pattern := randomFilter(r, true)
		var t Template
		var err error
		if literal {
			t, err = ParseLiteral(access, pattern)
		} else {
			t, err = ParseTemplate(access, pattern)
		}
		if err != nil {
			continue // a '$' pattern, or deny for a credential: refused at parse time
		}
		ts = append(ts, t)
		desc = append(desc, access+" "+pattern)
	}
	if r.IntN(2) == 0 {
		return ExpandShared(ts, "u1", "c1"), desc
	}
	return Expand(ts, "u1", "c1"), desc
}

// TestReadMarkAgreesWithGo: for random rule sets (allow and deny rules, templates and literal grants,
// with and without shared subscriptions), every topic the broker can deliver through a subscription
// that Allows(Subscribe, ...) admitted is either answered by Go (fastReadAnswers false) or one that
// Allows(Read, ...) allows: the fast answer never differs from Go's.
func TestReadMarkAgreesWithGo(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	admitted, delivered, fast := 0, 0, 0
	for range 20000 {
		s, desc := randomSet(r)
		for range 8 {
			f := randomFilter(r, true)
			switch r.IntN(6) {
			case 0:
				f = "$share/g/" + f
			case 1:
				f = "$share/g+/" + f // not a valid group: refused
			}
			if !s.Allows(Subscribe, f) {
				continue
			}
			admitted++
			for range 6 {
				var topic string
				if r.IntN(3) == 0 {
					topic = randomFilter(r, false)
				} else {
					topic = topicFor(r, f)
				}
				if !brokerMatches(f, topic) {
					continue
				}
				delivered++
				if !fastReadAnswers(topic) {
					continue
				}
				fast++
				if !s.Allows(Read, topic) {
					t.Fatalf("rules %q admitted subscription %q, the broker delivers %q through it, the read "+
						"mark allows it, and Go refuses it", desc, f, topic)
				}
			}
		}
	}
	// The generator must exercise the property, not skip it.
	if admitted < 5000 || fast < 5000 {
		t.Fatalf("only %d admitted subscriptions and %d fast answers (%d deliveries): the generator is too narrow",
			admitted, fast, delivered)
	}
}

// TestReadMarkCases are the cases the read mark must leave to Go, or that Go must refuse at SUBSCRIBE.
func TestReadMarkCases(t *testing.T) {
	ts, err := ParseTemplates("read agents/+/telemetry; deny agents/blocked/#; readwrite apps/%c/#")
	if err != nil {
		t.Fatal(err)
	}
	s := ExpandShared(ts, "u1", "c1")
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{"agents/+/telemetry", false}, // intersects the deny rule: refused, or agents/blocked/telemetry would get through
		{"agents/a/telemetry", true},
		{"$share/g/agents/a/telemetry", true},
		{"$share/g/agents/+/telemetry", false},
		{"#", false},
		{"+/+/telemetry", false},
		{"$SYS/#", false},
		{"$share/g/$SYS/#", false},
		{"apps/c1/#", true},
		{"$share//apps/c1/#", false},
	} {
		if got := s.Allows(Subscribe, c.filter); got != c.want {
			t.Errorf("SUBSCRIBE %q = %v, want %v", c.filter, got, c.want)
		}
	}
	long := "apps/c1/" + strings.Repeat("x", MaxTopicLen)
	if fastReadAnswers(long) || s.Allows(Read, long) {
		t.Error("a topic over MaxTopicLen, delivered through apps/c1/#, must be left to Go, which refuses it")
	}
	for _, topic := range []string{"$SYS/broker/uptime", "$share/g/apps/c1/x", "apps/c1/+", "apps/c1/#", ""} {
		if fastReadAnswers(topic) {
			t.Errorf("the read mark answers %q itself; Go must", topic)
		}
	}
}
