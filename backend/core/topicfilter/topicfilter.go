// Package topicfilter is the one definition of what iotauth accepts as an MQTT topic and topic filter:
// their syntax and maximum length (MaxLen), which filters may be granted (Check, CheckGrant), which
// topics may be published to (CheckTopic), and how filters relate: whether one matches a topic
// (Matches), covers another (Covers) or shares topics with it (Intersect, Intersects). The REST side
// validates grants with it at key creation, the token exchange narrows grants with it, the publish
// bridge checks a caller's write rights with it, and the broker's plugin parses its rules with it. The
// plugin keeps its own allocation-free matcher for the publish path (plugin/acl); a differential fuzz
// test there holds it to the definitions here.
package topicfilter

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// MaxLen is the longest topic or topic filter iotauth accepts anywhere, in bytes: in a grant given to a
// key or credential, in a rule of the broker's plugin, and in a topic published through the REST bridge.
// MQTT allows 65,535; 1,024 is what the broker plugin has always answered (its C shim decides marked
// clients' checks up to this length and denies longer topics) and what the database has allowed for
// agents' rules, so no existing grant becomes invalid, while one grant stays small next to the 4,096
// bytes a short-lived MQTT credential may take in all. docs/topics.md says more.
const MaxLen = 1024

// Errors of the checks, compared with errors.Is. Each message says what is wrong and what is allowed.
var (
	ErrEmpty     = errors.New("topic filter is empty")
	ErrTooLong   = fmt.Errorf("topic filter is longer than %d bytes", MaxLen)
	ErrDollar    = errors.New("$ topics are reserved for the broker and never granted")
	ErrWildcard  = errors.New("+ and # must fill a whole level, and # may only be the last level")
	ErrNUL       = errors.New("topic filter contains a NUL character")
	ErrWildTopic = errors.New("a topic to publish to may not contain + or #")
	ErrPercent   = errors.New("a key's topic filter may not contain '%' (the broker substitutes %u and %c in rules)")
	ErrSpace     = errors.New("a key's topic filter may not contain spaces or control characters")
)

// Valid reports whether filter is a syntactically valid MQTT topic filter within MaxLen: not empty, no
// NUL, and the wildcards + and # each fill a whole level, # only as the last one. $ topics are valid
// here; Check refuses them as grants.
func Valid(filter string) error {
	switch {
	case filter == "":
		return ErrEmpty
	case len(filter) > MaxLen:
		return ErrTooLong
	case strings.IndexByte(filter, 0) >= 0:
		return ErrNUL
	}
	if !strings.ContainsAny(filter, "+#") {
		return nil
	}
	rest := filter
	for {
		level, tail, more := strings.Cut(rest, "/")
		if strings.ContainsAny(level, "+#") && level != "+" && (level != "#" || more) {
			return ErrWildcard
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// Check reports whether filter is a well-formed filter that may be granted: Valid and never a $ topic.
func Check(filter string) error {
	if err := Valid(filter); err != nil {
		return err
	}
	if filter[0] == '$' {
		return ErrDollar
	}
	return nil
}

// CheckGrant is Check for a filter stored on a key (an application or publishable key): the broker
// reads such grants as rule templates, so '%' is refused (it would substitute %u and %c), and so are
// spaces and control characters (rules are written as "access pattern").
func CheckGrant(filter string) error {
	if err := Check(filter); err != nil {
		return err
	}
	if strings.IndexByte(filter, '%') >= 0 {
		return ErrPercent
	}
	if strings.IndexFunc(filter, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return ErrSpace
	}
	return nil
}

// CheckTopic reports whether topic is a topic one may publish to through iotauth: well formed, no
// wildcard, never a $ topic.
func CheckTopic(topic string) error {
	if strings.ContainsAny(topic, "+#") {
		return ErrWildTopic
	}
	if err := Check(topic); err != nil {
		return fmt.Errorf("topic %q: %w", topic, err)
	}
	return nil
}

// Matches reports whether filter matches the concrete topic (MQTT 5.0 §4.7: "a/#" matches "a" too; a
// filter starting with a wildcard never matches a $ topic).
func Matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	return Covers(filter, topic)
}

// Covers reports whether every topic that inner can match is matched by outer: outer is at least as wide
// as inner. Both are well-formed filters (a topic is a filter without wildcards).
func Covers(outer, inner string) bool {
	o, i := strings.Split(outer, "/"), strings.Split(inner, "/")
	for k := 0; ; k++ {
		switch {
		case k == len(o) && k == len(i):
			return true
		case k == len(o):
			return false // inner is longer than anything outer matches
		case o[k] == "#":
			return true
		case k == len(i):
			// inner ended; outer still matches it only through a final "/#" ("a/#" matches "a").
			return k == len(o)-1 && o[k] == "#"
		case i[k] == "#":
			return false // inner reaches any depth, outer does not
		case o[k] == "+":
			continue
		case i[k] == "+" || o[k] != i[k]:
			return false
		}
	}
}

// Intersect returns the filter that matches exactly the topics both a and b match, and false when they
// share none. Both are well-formed filters.
func Intersect(a, b string) (string, bool) {
	switch {
	case Covers(a, b):
		return b, true
	case Covers(b, a):
		return a, true
	}
	x, y := strings.Split(a, "/"), strings.Split(b, "/")
	var out []string
	for k := 0; ; k++ {
		switch {
		case k == len(x) && k == len(y):
			return strings.Join(out, "/"), true
		case k < len(x) && x[k] == "#":
			return strings.Join(append(out, y[k:]...), "/"), true
		case k < len(y) && y[k] == "#":
			return strings.Join(append(out, x[k:]...), "/"), true
		case k == len(x) || k == len(y):
			return "", false
		case x[k] == "+":
			out = append(out, y[k])
		case y[k] == "+" || x[k] == y[k]:
			out = append(out, x[k])
		default:
			return "", false
		}
	}
}

// Intersects reports whether some topic is matched by both filters a and b (well-formed filters).
func Intersects(a, b string) bool {
	_, ok := Intersect(a, b)
	return ok
}

// Access is a grant's access: read, write or readwrite.
type Access string

// The accesses a grant may have.
const (
	Read      Access = "read"
	Write     Access = "write"
	ReadWrite Access = "readwrite"
)

// Allows reports whether a grant with access a allows what want asks for.
func (a Access) Allows(want Access) bool { return a == want || a == ReadWrite }

// Common returns what a and b both allow, and false when they share nothing.
func (a Access) Common(b Access) (Access, bool) {
	switch {
	case a == b:
		return a, true
	case a == ReadWrite:
		return b, true
	case b == ReadWrite:
		return a, true
	}
	return "", false
}

// Grant is an access on a filter.
type Grant struct {
	Access Access
	Filter string
}

// Narrow returns the part of each wanted grant that some allowed grant covers: never wider than allowed
// (the token exchange's "intersected with the caller key's own topics"). Duplicates are dropped.
func Narrow(wanted, allowed []Grant) []Grant {
	var out []Grant
	seen := map[Grant]bool{}
	for _, w := range wanted {
		for _, al := range allowed {
			acc, ok := w.Access.Common(al.Access)
			if !ok {
				continue
			}
			f, ok := Intersect(w.Filter, al.Filter)
			if !ok {
				continue
			}
			g := Grant{Access: acc, Filter: f}
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	return out
}

// AllowsWrite reports whether grants allow publishing to topic.
func AllowsWrite(grants []Grant, topic string) bool {
	for _, g := range grants {
		if g.Access.Allows(Write) && Matches(g.Filter, topic) {
			return true
		}
	}
	return false
}
