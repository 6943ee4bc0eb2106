package acl

import (
	"strings"
	"testing"
)

const me = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"
const other = "0a0b0c0d-1111-2222-3333-444455556666"

func set(t *testing.T, spec string) Set {
	t.Helper()
	ts, err := ParseTemplates(spec)
	if err != nil {
		t.Fatal(err)
	}
	return Expand(ts, me, "agent-"+me)
}

func TestDefaultNamespace(t *testing.T) {
	s := set(t, "readwrite agents/%u/#")
	tests := []struct {
		access Access
		topic  string
		want   bool
	}{
		{Write, "agents/" + me + "/telemetry", true},
		{Write, "agents/" + me, true},
		{Write, "agents/" + me + "/a/b/c", true},
		{Read, "agents/" + me + "/cmd", true},
		{Write, "agents/" + other + "/telemetry", false},
		{Read, "agents/" + other + "/cmd", false},
		{Write, "agents", false},
		{Write, "other/" + me, false},
		{Write, "$SYS/broker/version", false},
		{Write, "", false},
		{Subscribe, "agents/" + me + "/#", true},
		{Subscribe, "agents/" + me + "/+/x", true},
		{Subscribe, "agents/" + me, true},
		{Subscribe, "#", false},
		{Subscribe, "+/#", false},
		{Subscribe, "+", false},
		{Subscribe, "agents/#", false},
		{Subscribe, "agents/+", false},
		{Subscribe, "agents/+/telemetry", false},
		{Subscribe, "agents/+/#", false},
		{Subscribe, "agents/" + other + "/#", false},
		{Subscribe, "$SYS/#", false},
		{Subscribe, "$CONTROL/#", false},
		{Subscribe, "agents/" + me + "/a#", false},
		{Unsubscribe, "#", true},
	}
	for _, tt := range tests {
		if got := s.Allows(tt.access, tt.topic); got != tt.want {
			t.Errorf("Allows(%d, %q) = %v, want %v", tt.access, tt.topic, got, tt.want)
		}
	}
}

func TestRuleKindsAndDeny(t *testing.T) {
	s := set(t, "readwrite agents/%u/#; read broadcast/#; write ingest/%c; deny agents/%u/secret/#")
	tests := []struct {
		access Access
		topic  string
		want   bool
	}{
		{Read, "broadcast/fw", true},
		{Write, "broadcast/fw", false},
		{Subscribe, "broadcast/#", true},
		{Write, "ingest/agent-" + me, true},
		{Read, "ingest/agent-" + me, false},
		{Subscribe, "ingest/agent-" + me, false},
		{Write, "agents/" + me + "/secret/x", false},
		{Read, "agents/" + me + "/secret", false},
		{Subscribe, "agents/" + me + "/#", false},
		{Subscribe, "agents/" + me + "/+", false},
		{Subscribe, "agents/" + me + "/public/#", true},
	}
	for _, tt := range tests {
		if got := s.Allows(tt.access, tt.topic); got != tt.want {
			t.Errorf("Allows(%d, %q) = %v, want %v", tt.access, tt.topic, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, spec := range []string{"", "readwrite", "all agents/#", "read $SYS/#", "read a/#/b", "read a+/b", "read a b c"} {
		if _, err := ParseTemplates(spec); err == nil {
			t.Errorf("ParseTemplates(%q) accepted", spec)
		}
	}
}

// FuzzSubscribeSubset checks the subset rule against brute force: whenever a subscription is granted,
// no concrete topic it matches may be refused for reading.
func FuzzSubscribeSubset(f *testing.F) {
	f.Add("agents/+/x", "agents/u/x")
	f.Add("#", "a")
	f.Add("agents/"+me+"/#", "agents/"+me)
	s := Expand([]Template{{allow: Read, pattern: "agents/%u/#"}, {deny: true, pattern: "agents/%u/secret"}}, me, "c")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if strings.ContainsAny(topic, "+#") || topic == "" || topic[0] == '$' || validFilter(filter) != nil {
			return
		}
		if s.Allows(Subscribe, filter) && matches(strings.Split(filter, "/"), topic) && !s.Allows(Read, topic) {
			t.Fatalf("filter %q granted but matching topic %q is not readable", filter, topic)
		}
	})
}

func BenchmarkAllowsWrite(b *testing.B) {
	ts, _ := ParseTemplates("readwrite agents/%u/#")
	s := Expand(ts, me, "agent-"+me)
	topic := "agents/" + me + "/telemetry/temp"
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !s.Allows(Write, topic) {
			b.Fatal("denied")
		}
	}
}

func TestFastPrefix(t *testing.T) {
	tests := []struct {
		spec string
		want string
		ok   bool
	}{
		{"readwrite agents/%u/#", "agents/", true},
		{"readwrite fleet/devices/%u/#", "fleet/devices/", true},
		{"readwrite %u/#", "", false},
		{"read agents/%u/#", "", false},
		{"readwrite agents/%u/#; read broadcast/#", "", false},
		{"readwrite agents/%c/#", "", false},
		{"readwrite agents/+/%u/#", "", false},
		{"readwrite agents/%u", "", false},
		{"readwrite a%u/#", "", false},
	}
	for _, tt := range tests {
		ts, err := ParseTemplates(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := FastPrefix(ts)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FastPrefix(%q) = %q, %v; want %q, %v", tt.spec, got, ok, tt.want, tt.ok)
		}
		if ok {
			// The fast rule must agree with the full matcher on the boundary cases.
			s := Expand(ts, me, "c")
			for topic, allowed := range map[string]bool{
				got + me: true, got + me + "/x": true, got + me + "x": false, got + "other/" + me: false, "$SYS/" + got + me: false,
			} {
				if s.Allows(Write, topic) != allowed {
					t.Errorf("full matcher disagrees on %q", topic)
				}
			}
		}
	}
}

// TestApplicationTopics covers an application key's grants (docs/security.md, A2): wildcard
// patterns, subscriptions only as subsets of read grants, $share unwrapped, $ topics and wildcard
// publishes refused.
func TestApplicationTopics(t *testing.T) {
	ts, err := ParseTemplates("read agents/+/telemetry; write agents/+/cmd; readwrite svc/#")
	if err != nil {
		t.Fatal(err)
	}
	s := ExpandShared(ts, "app-id", "consumer-1")
	tests := []struct {
		name   string
		access Access
		topic  string
		want   bool
	}{
		{"exact read grant", Subscribe, "agents/+/telemetry", true},
		{"one agent's telemetry", Subscribe, "agents/" + me + "/telemetry", true},
		{"wider: agents/#", Subscribe, "agents/#", false},
		{"wider: agents/+/+", Subscribe, "agents/+/+", false},
		{"wider: #", Subscribe, "#", false},
		{"deeper than the grant", Subscribe, "agents/+/telemetry/#", false},
		{"write-only grant is not readable", Subscribe, "agents/+/cmd", false},
		{"readwrite subtree", Subscribe, "svc/a/+/#", true},
		{"shared subscription", Subscribe, "$share/workers/agents/+/telemetry", true},
		{"shared, one agent", Subscribe, "$share/workers/agents/" + me + "/telemetry", true},
		{"shared, wider inner filter", Subscribe, "$share/workers/agents/#", false},
		{"shared, empty group", Subscribe, "$share//agents/+/telemetry", false},
		{"shared, wildcard group", Subscribe, "$share/+/agents/+/telemetry", false},
		{"shared, no filter", Subscribe, "$share/workers", false},
		{"shared, inner $SYS", Subscribe, "$share/workers/$SYS/#", false},
		{"$SYS", Subscribe, "$SYS/#", false},
		{"delivery of telemetry", Read, "agents/" + me + "/telemetry", true},
		{"delivery of other topic", Read, "agents/" + me + "/state", false},
		{"publish a command", Write, "agents/" + me + "/cmd", true},
		{"publish telemetry (read only)", Write, "agents/" + me + "/telemetry", false},
		{"publish with +", Write, "agents/+/cmd", false},
		{"publish with #", Write, "svc/#", false},
		{"publish $SYS", Write, "$SYS/x", false},
	}
	for _, tt := range tests {
		if got := s.Allows(tt.access, tt.topic); got != tt.want {
			t.Errorf("%s: Allows(%d, %q) = %v, want %v", tt.name, tt.access, tt.topic, got, tt.want)
		}
	}
	// Agents' sets never unwrap $share.
	if Expand(ts, "a", "c").Allows(Subscribe, "$share/g/agents/+/telemetry") {
		t.Error("a set from Expand granted a $share subscription")
	}
}

// FuzzSharedSubscribeSubset is FuzzSubscribeSubset for an application key's set: a granted filter,
// shared or not, matches only readable topics, and a granted shared filter's inner filter is granted too.
func FuzzSharedSubscribeSubset(f *testing.F) {
	f.Add("$share/g/agents/+/telemetry", "agents/u/telemetry")
	f.Add("$share/g/#", "a")
	f.Add("$share//agents/+/telemetry", "agents/u/telemetry")
	f.Add("agents/+/+", "agents/u/cmd")
	ts, _ := ParseTemplates("read agents/+/telemetry; readwrite svc/#; deny svc/secret")
	s := ExpandShared(ts, "app", "c")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if !s.Allows(Subscribe, filter) {
			return
		}
		inner := filter
		if g, rest, ok := strings.Cut(strings.TrimPrefix(filter, sharedPrefix), "/"); ok && strings.HasPrefix(filter, sharedPrefix) {
			if g == "" {
				t.Fatalf("shared filter %q with an empty group granted", filter)
			}
			inner = rest
			if !s.Allows(Subscribe, inner) {
				t.Fatalf("shared filter %q granted but its inner filter %q is not", filter, inner)
			}
		}
		if inner == "" || inner[0] == '$' {
			t.Fatalf("filter %q granted", filter)
		}
		if strings.ContainsAny(topic, "+#") || topic == "" || topic[0] == '$' {
			return
		}
		if matches(strings.Split(inner, "/"), topic) && !s.Allows(Read, topic) {
			t.Fatalf("filter %q granted but matching topic %q is not readable", filter, topic)
		}
	})
}

// A short-lived credential's topics are exact: %u and %c in them are not substituted.
func TestParseLiteral(t *testing.T) {
	lit, err := ParseLiteral("readwrite", "rooms/%c/#")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := ParseTemplate("readwrite", "rooms/%c/#")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ts    []Template
		topic string
		want  bool
	}{
		{[]Template{lit}, "rooms/%c/x", true},
		{[]Template{lit}, "rooms/web-1/x", false},
		{[]Template{tpl}, "rooms/web-1/x", true},
	} {
		if got := ExpandShared(c.ts, "agent", "web-1").Allows(Write, c.topic); got != c.want {
			t.Errorf("%q: %v, want %v", c.topic, got, c.want)
		}
	}
	for _, bad := range [][2]string{{"deny", "a/b"}, {"read", "$SYS/#"}, {"read", "a/#/b"}} {
		if _, err := ParseLiteral(bad[0], bad[1]); err == nil {
			t.Errorf("ParseLiteral%q accepted", bad)
		}
	}
}
