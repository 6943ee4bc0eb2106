package acl

import (
	"testing"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// FuzzAgreesWithTopicfilter holds the plugin's fast matcher to the product's one definition of topics
// and filters (backend/core/topicfilter): for a session with one allow rule and at most one deny rule, every
// publish, delivery and subscription decision must be what the shared package's CheckTopic, Check,
// Matches, Covers and Intersects say. The seed corpus in testdata/fuzz/FuzzAgreesWithTopicfilter runs
// with every `go test`; `go test -fuzz FuzzAgreesWithTopicfilter ./plugin/acl` searches for more.
func FuzzAgreesWithTopicfilter(f *testing.F) {
	accesses := []topicfilter.Access{topicfilter.Read, topicfilter.Write, topicfilter.ReadWrite}
	f.Fuzz(func(t *testing.T, which uint8, allow, deny, x string) {
		acc := accesses[int(which)%len(accesses)]
		ta, err := ParseTemplate(string(acc), allow)
		if (err == nil) != (topicfilter.Check(allow) == nil) {
			t.Fatalf("ParseTemplate(%q) = %v but topicfilter.Check = %v", allow, err, topicfilter.Check(allow))
		}
		if err != nil {
			return
		}
		td, err := ParseTemplate("deny", deny)
		if (err == nil) != (topicfilter.Check(deny) == nil) {
			t.Fatalf("ParseTemplate(deny %q) = %v but topicfilter.Check = %v", deny, err, topicfilter.Check(deny))
		}
		hasDeny := err == nil
		ts := []Template{ta}
		if hasDeny {
			ts = append(ts, td)
		}
		// Substituting "%u" by "%u" and "%c" by "%c" leaves the patterns as written, so the session's
		// rules are exactly the filters the shared package is asked about.
		s := Expand(ts, "%u", "%c")
		shared := ExpandShared(ts, "%u", "%c")

		for _, c := range []struct {
			access Access
			want   topicfilter.Access
		}{{Read, topicfilter.Read}, {Write, topicfilter.Write}} {
			want := topicfilter.CheckTopic(x) == nil && acc.Allows(c.want) && topicfilter.Matches(allow, x) &&
				!(hasDeny && topicfilter.Matches(deny, x))
			if got := s.Allows(c.access, x); got != want {
				t.Fatalf("rules %s %q, deny %q (%v): Allows(%d, %q) = %v; topicfilter says %v", acc, allow, deny, hasDeny, c.access, x, got, want)
			}
		}

		want := topicfilter.Check(x) == nil && acc.Allows(topicfilter.Read) && topicfilter.Covers(allow, x) &&
			!(hasDeny && topicfilter.Intersects(x, deny))
		if got := s.Allows(Subscribe, x); got != want {
			t.Fatalf("rules %s %q, deny %q (%v): Allows(Subscribe, %q) = %v; topicfilter says %v", acc, allow, deny, hasDeny, x, got, want)
		}
		if got := shared.Allows(Subscribe, "$share/g/"+x); got != want {
			t.Fatalf("rules %s %q, deny %q (%v): Allows(Subscribe, $share/g/%q) = %v; topicfilter says %v", acc, allow, deny, hasDeny, x, got, want)
		}
	})
}
