package oidc

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/core/uuid"
)

// ErrMapping wraps refusals of a verified token's claims by the mapping rules (a malformed value).
var ErrMapping = errors.New("the token's claims cannot be mapped to topics")

// maxClaimValues bounds how many values of one list claim are mapped.
const maxClaimValues = 64

// Grants maps a verified identity's claims to topic grants by the provider's rules. A claim that is
// absent, or a rule that does not match, grants nothing; a value that would change a topic's shape (+,
// #, /, empty, not a UUID where one is needed) refuses the whole token (ErrMapping).
func (p Provider) Grants(id Identity) ([]topicfilter.Grant, error) {
	if err := checkSubstitution(id.Subject); err != nil {
		return nil, fmt.Errorf("%w: sub %w", ErrMapping, err)
	}
	var out []topicfilter.Grant
	for _, r := range p.Rules {
		vals, err := claimStrings(id.Claims[r.Claim])
		if err != nil {
			return nil, fmt.Errorf("%w: claim %q %w", ErrMapping, r.Claim, err)
		}
		if r.Equals != "" {
			if contains(vals, r.Equals) {
				out = append(out, expand(r.Topics, id.Subject, "")...)
			}
			continue
		}
		for _, v := range vals {
			v = strings.ToLower(v)
			if !uuid.Valid(v) {
				return nil, fmt.Errorf("%w: claim %q holds a value that is not a UUID", ErrMapping, r.Claim)
			}
			out = append(out, expand(r.Topics, id.Subject, v)...)
		}
	}
	return out, nil
}

func expand(ts []Template, sub, value string) []topicfilter.Grant {
	rep := strings.NewReplacer("{sub}", sub, "{value}", value)
	out := make([]topicfilter.Grant, 0, len(ts))
	for _, t := range ts {
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: rep.Replace(t.Pattern)})
	}
	return out
}

// claimStrings reads a claim that is absent, a string or a list of strings.
func claimStrings(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{x}, nil
	case []any:
		if len(x) > maxClaimValues {
			return nil, fmt.Errorf("holds more than %d values", maxClaimValues)
		}
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("must hold strings only")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("must be a string or a list of strings")
}

// checkSubstitution checks a value that goes into a topic: 1 to 128 bytes, no + # / (it could widen or
// reshape the topic), no $ at the start, no control characters or spaces.
func checkSubstitution(s string) error {
	switch {
	case s == "" || len(s) > 128:
		return errors.New("must be 1 to 128 bytes")
	case strings.ContainsAny(s, "+#/{}") || strings.HasPrefix(s, "$"):
		return errors.New("must not contain + # / { } or start with $")
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return errors.New("must not contain spaces or control characters")
	}
	return nil
}
