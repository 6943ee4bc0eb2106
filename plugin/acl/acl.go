// Package acl decides which topics an agent may publish to, receive from and subscribe to. Rules are
// templates (`readwrite agents/%u/#`) expanded once per session with the agent's uuid (%u) and client id
// (%c); checks on the publish and delivery path then compare topic levels with no allocation. A
// subscription is granted only if every topic its filter can match is readable, so `#`, `+/#` or
// `agents/+/x` cannot reach outside the agent's namespace. `$` topics are never granted.
//
// What a valid topic or filter is, and its maximum length, come from backend/core/topicfilter; the matcher
// here is a faster copy of that package's Matches, Covers and Intersects, held to them by
// FuzzAgreesWithTopicfilter.
package acl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// Access is the kind of operation, with the values of Mosquitto's MOSQ_ACL_* constants.
type Access int

// The operations Mosquitto asks about.
const (
	Read        Access = 0x01
	Write       Access = 0x02
	Subscribe   Access = 0x04
	Unsubscribe Access = 0x08
)

// Template is an unexpanded rule: an access kind and a topic pattern that may contain %u and %c.
type Template struct {
	allow   Access // Read, Write or both; 0 for deny
	deny    bool
	literal bool // %u and %c are not substituted (a short-lived credential's topics are exact)
	pattern string
}

// ParseTemplate parses one rule: access (read, write, readwrite or deny) and a pattern.
func ParseTemplate(access, pattern string) (Template, error) {
	var t Template
	switch access {
	case "read":
		t.allow = Read
	case "write":
		t.allow = Write
	case "readwrite":
		t.allow = Read | Write
	case "deny":
		t.deny = true
	default:
		return Template{}, fmt.Errorf("acl access %q: use read, write, readwrite or deny", access)
	}
	if err := validFilter(pattern); err != nil {
		return Template{}, fmt.Errorf("acl pattern %q: %w", pattern, err)
	}
	if strings.HasPrefix(pattern, "$") {
		return Template{}, fmt.Errorf("acl pattern %q: $ topics are reserved for the broker and never granted to agents", pattern)
	}
	t.pattern = pattern
	return t, nil
}

// ParseLiteral parses one grant of a short-lived MQTT credential: read, write or readwrite and a
// pattern taken exactly as written (no %u or %c substitution: the issuer granted that very filter).
func ParseLiteral(access, pattern string) (Template, error) {
	if access == "deny" {
		return Template{}, fmt.Errorf("acl access %q: use read, write or readwrite", access)
	}
	t, err := ParseTemplate(access, pattern)
	t.literal = true
	return t, err
}

// ParseTemplates parses a rule list: rules separated by ';', each "access pattern".
func ParseTemplates(spec string) ([]Template, error) {
	var out []Template
	for _, part := range strings.Split(spec, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("acl rule %q: want \"<read|write|readwrite|deny> <topic pattern>\"", part)
		}
		t, err := ParseTemplate(f[0], f[1])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("acl: no rules given; the default is \"readwrite agents/%u/#\"")
	}
	return out, nil
}

// MaxTopicLen is the longest topic name or filter a session may use, in bytes: one limit for publishes,
// deliveries and subscriptions (the broker's shim answers marked clients only up to it). It is
// topicfilter.MaxLen, the one limit of the whole product.
const MaxTopicLen = topicfilter.MaxLen

// validFilter is topicfilter.Valid: the syntax of a filter and its length.
func validFilter(p string) error { return topicfilter.Valid(p) }

// rule is an expanded template.
type rule struct {
	allow  Access
	deny   bool
	levels []string
}

// Set is the expanded rules of one session.
type Set struct {
	rules []rule
	// shared lets the session subscribe through $share/<group>/<filter>, checked on its inner filter
	// (application keys: several replicas of one service share the load).
	shared bool
}

// Expand substitutes the agent uuid and client id into the templates. Both must already be free of
// '+', '#' and '/' (the authorizer refuses such ids), so substitution cannot widen a rule.
func Expand(ts []Template, agent, clientID string) Set {
	s := Set{rules: make([]rule, 0, len(ts))}
	for _, t := range ts {
		p := t.pattern
		if !t.literal {
			p = strings.ReplaceAll(p, "%u", agent)
			p = strings.ReplaceAll(p, "%c", clientID)
		}
		s.rules = append(s.rules, rule{allow: t.allow, deny: t.deny, levels: strings.Split(p, "/")})
	}
	return s
}

// ExpandShared is Expand for a session that may also subscribe through shared subscriptions
// ($share/<group>/<filter>), which are granted exactly when <filter> alone would be.
func ExpandShared(ts []Template, agent, clientID string) Set {
	s := Expand(ts, agent, clientID)
	s.shared = true
	return s
}

// sharedPrefix starts an MQTT 5 shared subscription filter.
const sharedPrefix = "$share/"

// Allows decides one check. topic is a topic name for Read and Write and a filter for Subscribe.
// A topic name with a wildcard is never allowed (publishes never contain wildcards).
func (s Set) Allows(access Access, topic string) bool {
	switch access {
	case Unsubscribe:
		return true
	case Read, Write:
		if topic == "" || topic[0] == '$' || len(topic) > MaxTopicLen || strings.ContainsAny(topic, "+#\x00") {
			return false
		}
		allowed := false
		for i := range s.rules {
			r := &s.rules[i]
			if !r.deny && r.allow&access == 0 {
				continue
			}
			if matches(r.levels, topic) {
				if r.deny {
					return false
				}
				allowed = true
			}
		}
		return allowed
	case Subscribe:
		if s.shared && strings.HasPrefix(topic, sharedPrefix) {
			group, inner, ok := strings.Cut(topic[len(sharedPrefix):], "/")
			if !ok || group == "" || strings.ContainsAny(group, "+#") {
				return false
			}
			topic = inner
		}
		if topic == "" || topic[0] == '$' || validFilter(topic) != nil {
			return false
		}
		f := strings.Split(topic, "/")
		allowed := false
		for i := range s.rules {
			r := &s.rules[i]
			switch {
			case r.deny:
				if intersects(f, r.levels) {
					return false
				}
			case r.allow&Read != 0 && !allowed:
				allowed = subset(f, r.levels)
			}
		}
		return allowed
	}
	return false
}

// matches reports whether a topic name matches a filter given as levels.
func matches(filter []string, topic string) bool {
	pos, done := 0, false
	for _, lv := range filter {
		if lv == "#" {
			return true
		}
		if done {
			return false
		}
		var level string
		if j := strings.IndexByte(topic[pos:], '/'); j >= 0 {
			level = topic[pos : pos+j]
			pos += j + 1
		} else {
			level = topic[pos:]
			done = true
		}
		if lv != "+" && lv != level {
			return false
		}
	}
	return done
}

// subset reports whether every topic filter f can match is also matched by p.
func subset(f, p []string) bool {
	for i, pl := range p {
		if pl == "#" {
			return true
		}
		if i >= len(f) {
			return false
		}
		fl := f[i]
		if fl == "#" {
			return false
		}
		if pl == "+" {
			continue
		}
		if fl == "+" || fl != pl {
			return false
		}
	}
	return len(f) == len(p)
}

// intersects reports whether some topic is matched by both filters.
func intersects(a, b []string) bool {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		x, y := a[i], b[i]
		if x == "#" || y == "#" {
			return true
		}
		if x == "+" || y == "+" || x == y {
			continue
		}
		return false
	}
	if len(a) == len(b) {
		return true
	}
	longer := a
	if len(b) > len(a) {
		longer = b
	}
	return len(longer) == n+1 && longer[n] == "#"
}

// Len is the number of rules in the set.
func (s Set) Len() int { return len(s.rules) }

// FastPrefix reports whether the templates are exactly one rule `readwrite <prefix>%u/#` with a literal,
// wildcard-free prefix, and returns the prefix. Then a publish or delivery check is "the topic is
// <prefix><agent> or below it", simple enough for the C shim to answer without entering Go (measured: a
// Go call per message costs the broker ~15–25% more CPU per delivered message).
func FastPrefix(ts []Template) (string, bool) {
	if len(ts) != 1 || ts[0].deny || ts[0].allow != Read|Write {
		return "", false
	}
	p, ok := strings.CutSuffix(ts[0].pattern, "%u/#")
	if !ok || p == "" || strings.ContainsAny(p, "+#%$") || !strings.HasSuffix(p, "/") {
		return "", false
	}
	return p, true
}
