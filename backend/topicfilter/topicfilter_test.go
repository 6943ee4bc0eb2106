package topicfilter

import (
	"reflect"
	"testing"
)

func TestCheck(t *testing.T) {
	for f, ok := range map[string]bool{
		"a": true, "a/b": true, "a/+/c": true, "a/#": true, "#": true, "+": true, "a//b": true,
		"": false, "$SYS/#": false, "a/#/b": false, "a+/b": false, "a/b#": false, "a\x00": false,
	} {
		if err := Check(f); (err == nil) != ok {
			t.Errorf("Check(%q) = %v", f, err)
		}
	}
	if CheckTopic("a/+") == nil || CheckTopic("a/b") != nil {
		t.Error("CheckTopic")
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
