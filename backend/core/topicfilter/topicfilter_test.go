package topicfilter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a/", MaxLen/2) // MaxLen bytes with the trailing slash
	for _, c := range []struct {
		filter string
		want   error
	}{
		{"a", nil}, {"a/b", nil}, {"a/+/c", nil}, {"a/#", nil}, {"#", nil}, {"+", nil}, {"a//b", nil}, {"/", nil},
		{long, nil}, {strings.Repeat("x", 300), nil},
		{"", ErrEmpty}, {long + "a", ErrTooLong}, {"$SYS/#", ErrDollar}, {"a/#/b", ErrWildcard}, {"a+/b", ErrWildcard},
		{"a/b#", ErrWildcard}, {"#/", ErrWildcard}, {"a\x00", ErrNUL},
	} {
		if err := Check(c.filter); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("Check(%.20q…) = %v, want %v", c.filter, err, c.want)
		}
	}
	if Valid("$SYS/#") != nil {
		t.Error("Valid refuses a $ filter; only Check should")
	}
	if CheckTopic("a/+") == nil || CheckTopic("a/b") != nil || !errors.Is(CheckTopic(long+"a"), ErrTooLong) {
		t.Error("CheckTopic")
	}
	for f, want := range map[string]error{"apps/%c/out": ErrPercent, "a b": ErrSpace, "a\tb": ErrSpace, "a/\u0085": ErrSpace, "agents/+/x": nil, long: nil} {
		if err := CheckGrant(f); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("CheckGrant(%.20q…) = %v, want %v", f, err, want)
		}
	}
	if !strings.Contains(ErrTooLong.Error(), "1024") {
		t.Errorf("ErrTooLong = %q does not name the limit", ErrTooLong)
	}
}

func TestCovers(t *testing.T) {
	cases := []struct {
		outer, inner string
		want         bool
	}{
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "a/#", true},
		{"#", "a/+/#", true},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a/b/c", false},
		{"a/b", "a/+", false},
		{"a/+/#", "a/#", false},
		{"a/+/#", "a/x", true},
		{"agents/+/telemetry", "agents/u1/telemetry", true},
		{"agents/u1/#", "agents/+/telemetry", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	}
	for _, c := range cases {
		if got := Covers(c.outer, c.inner); got != c.want {
			t.Errorf("Covers(%q, %q) = %v", c.outer, c.inner, got)
		}
	}
	if Matches("#", "$SYS/x") || Matches("+/x", "$a/x") || !Matches("$a/x", "$a/x") {
		t.Error("wildcards must not match $ topics")
	}
}

func TestIntersect(t *testing.T) {
	cases := []struct{ a, b, want string }{
		{"agents/#", "agents/u1/#", "agents/u1/#"},
		{"agents/+/telemetry", "agents/u1/#", "agents/u1/telemetry"},
		{"a/+/c", "a/b/+", "a/b/c"},
		{"a/+/#", "+/b", "a/b"},
		{"a/b", "a/c", ""},
		{"a/+", "a/b/c", ""},
	}
	for _, c := range cases {
		got, ok := Intersect(c.a, c.b)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("Intersect(%q, %q) = %q, %v", c.a, c.b, got, ok)
		}
		if ok && (!Covers(c.a, got) || !Covers(c.b, got)) {
			t.Errorf("Intersect(%q, %q) = %q is wider than one of them", c.a, c.b, got)
		}
	}
}

func TestNarrow(t *testing.T) {
	allowed := []Grant{{Read, "agents/+/telemetry"}, {ReadWrite, "agents/u1/cmd/#"}}
	wanted := []Grant{{ReadWrite, "agents/u1/#"}, {Write, "other/#"}}
	got := Narrow(wanted, allowed)
	want := []Grant{{Read, "agents/u1/telemetry"}, {ReadWrite, "agents/u1/cmd/#"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Narrow = %v", got)
	}
	if !AllowsWrite(got, "agents/u1/cmd/reboot") || AllowsWrite(got, "agents/u1/telemetry") {
		t.Fatal("AllowsWrite")
	}
}

func FuzzIntersectNeverWider(f *testing.F) {
	f.Add("a/+/#", "+/b")
	f.Add("agents/#", "agents/u/#")
	f.Fuzz(func(t *testing.T, a, b string) {
		if Check(a) != nil || Check(b) != nil {
			return
		}
		if got, ok := Intersect(a, b); ok && (!Covers(a, got) || !Covers(b, got)) {
			t.Fatalf("Intersect(%q, %q) = %q is wider than an input", a, b, got)
		}
	})
}

// instance returns a concrete topic filter matches: each + becomes level, a final # is dropped (a/#
// matches a) or, with deep, becomes level.
func instance(filter, level string, deep bool) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if l == "+" {
			levels[i] = level
		}
	}
	if levels[len(levels)-1] == "#" {
		if !deep {
			if len(levels) == 1 {
				return level
			}
			return strings.Join(levels[:len(levels)-1], "/")
		}
		levels[len(levels)-1] = level
	}
	return strings.Join(levels, "/")
}

// FuzzFilterAlgebra checks Matches, Covers, Intersect and Intersects against each other on concrete
// topics: a topic both filters match is matched by their intersection and the other way round; what
// an inner filter matches, a covering filter matches; filters that share a topic intersect. Seeds in
// testdata/fuzz/FuzzFilterAlgebra run with every go test.
func FuzzFilterAlgebra(f *testing.F) {
	f.Fuzz(func(t *testing.T, a, b, topic, level string) {
		if Check(a) != nil || Check(b) != nil || level == "" || strings.ContainsAny(level, "/+#$\x00") {
			return
		}
		topics := []string{instance(a, level, false), instance(a, level, true), instance(b, level, false), instance(b, level, true)}
		if CheckTopic(topic) == nil {
			topics = append(topics, topic)
		}
		c, ok := Intersect(a, b)
		if ok != Intersects(a, b) {
			t.Fatalf("Intersect(%q, %q) ok %v but Intersects %v", a, b, ok, Intersects(a, b))
		}
		if ok && Check(c) != nil {
			t.Fatalf("Intersect(%q, %q) = %q, not a well-formed filter: %v", a, b, c, Check(c))
		}
		if ok {
			topics = append(topics, instance(c, level, false), instance(c, level, true))
		}
		for _, tp := range topics {
			if CheckTopic(tp) != nil {
				continue
			}
			both := Matches(a, tp) && Matches(b, tp)
			if both && !ok {
				t.Fatalf("%q and %q both match %q but do not intersect", a, b, tp)
			}
			if ok && Matches(c, tp) != both {
				t.Fatalf("Intersect(%q, %q) = %q matches %q: %v; both filters: %v", a, b, c, tp, Matches(c, tp), both)
			}
			if Covers(a, b) && Matches(b, tp) && !Matches(a, tp) {
				t.Fatalf("Covers(%q, %q) but %q matches only the inner one", a, b, tp)
			}
		}
		if Covers(a, b) && (!ok || c != b) {
			t.Fatalf("Covers(%q, %q) but Intersect = %q, %v", a, b, c, ok)
		}
	})
}
