// Package topicfilter reasons about MQTT topic filters on the REST side: whether a filter is well
// formed, whether it matches a topic, whether one filter covers another, and what two filters have in
// common. The token exchange uses it to grant nothing wider than the caller's own topics (docs/security.md, A1)
// and the publish bridge to check a caller's write rights for an exact topic (B1). The broker's plugin has
// its own allocation-free matcher (plugin/acl) for the publish path; the rules are the same.
package topicfilter

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen bounds a filter or topic (the plugin's acl.MaxTopicLen is larger; grants stay small).
const MaxLen = 256

// Errors of Check.
var (
	ErrEmpty     = errors.New("topic filter is empty or too long")
	ErrDollar    = errors.New("$ topics are reserved for the broker and never granted")
	ErrWildcard  = errors.New("+ and # must fill a whole level, and # may only be the last level")
	ErrNUL       = errors.New("topic filter contains a NUL character")
	ErrWildTopic = errors.New("a topic to publish to may not contain + or #")
)

// Check reports whether filter is a well-formed filter that may be granted (never a $ topic).
func Check(filter string) error {
	if filter == "" || len(filter) > MaxLen {
		return ErrEmpty
	}
	if strings.HasPrefix(filter, "$") {
		return ErrDollar
	}
	if strings.ContainsRune(filter, 0) {
		return ErrNUL
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if (l == "#" && i != len(levels)-1) || (l != "#" && l != "+" && strings.ContainsAny(l, "+#")) {
			return ErrWildcard
		}
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
