package license

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// State is the coarse license state shown to operators.
type State string

// The four states. Only StateRestricted blocks anything; warning and grace exist so that an operator hears
// about an expiry before it bites.
const (
	StateValid      State = "valid"
	StateWarning    State = "warning"
	StateGrace      State = "grace"
	StateRestricted State = "restricted"
)

// Status is one evaluation of the license at CheckedAt, shaped for `GET /api/v1/license` (JSON, camelCase).
// Fields describing the license are filled only from a verified token; an expired license still shows whose
// it was and what it granted. The REST layer adds the current device count itself.
type Status struct {
	// Status is valid, warning, grace or restricted.
	Status State `json:"status"`
	// Restricted is true when new registrations and premium features are blocked.
	Restricted bool `json:"restricted"`
	// Reason is the restriction's code (license_missing, license_invalid, license_expired), or empty.
	Reason string `json:"reason,omitempty"`
	// Warning is true in the warning and grace states: the license needs the operator's attention soon.
	Warning bool `json:"warning"`
	// Message tells an operator what is going on and what to do. It may name configuration settings, so it
	// belongs on admin-only routes and in logs, never in answers to agents.
	Message string `json:"message,omitempty"`
	// Customer is the licensee (sub claim).
	Customer string `json:"customer,omitempty"`
	// MaxDevices is the device limit; null when the license sets none or no license verified.
	MaxDevices *int `json:"maxDevices"`
	// Features are the premium features granted, known ones only; never null.
	Features []string `json:"features"`
	// IssuedAt, NotBefore and ExpiresAt come from the license; GraceEndsAt is set in the grace state.
	IssuedAt    *time.Time `json:"issuedAt,omitempty"`
	NotBefore   *time.Time `json:"notBefore,omitempty"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
	GraceEndsAt *time.Time `json:"graceEndsAt,omitempty"`
	// CheckedAt is when this evaluation ran, by the injected clock.
	CheckedAt time.Time `json:"checkedAt"`
}

// Material is what a deployment configured: the vendor's public key (PEM) and the license token. A Source
// supplies it; Evaluate judges it.
type Material struct {
	PublicKeyPEM []byte
	Token        string
}

// Evaluate judges m under policy p at time now. It is a pure function of its inputs, so every license rule
// is testable with a fixed clock; the Manager calls it on start, every interval and on Reload.
//
// Order of the checks: no token → restricted license_missing; a key that cannot be used or a token that does
// not verify → restricted license_invalid; past exp → grace while within p.GracePeriod, then restricted
// license_expired; within p.WarningWindow of exp → warning; otherwise valid.
func Evaluate(m Material, p Policy, now time.Time) Status {
	p = p.withDefaults()
	if strings.TrimSpace(m.Token) == "" {
		return restricted(CodeMissing, Explain(missing()), now)
	}
	var key *PublicKey
	if len(m.PublicKeyPEM) > 0 {
		k, err := ParsePublicKey(m.PublicKeyPEM)
		if err != nil {
			return restricted(CodeInvalid, err.Error(), now)
		}
		key = k
	}
	lic, err := Verify(key, m.Token, p, now)
	if err != nil && CodeOf(err) != CodeExpired {
		return restricted(CodeOf(err), Explain(err), now)
	}
	return classify(lic, p, now)
}

// classify places a verified license on the timeline.
func classify(lic License, p Policy, now time.Time) Status {
	st := Status{
		Customer:  lic.Customer,
		Features:  append([]string{}, lic.Features...),
		IssuedAt:  timePtr(lic.IssuedAt),
		NotBefore: timePtr(lic.NotBefore),
		ExpiresAt: timePtr(lic.ExpiresAt),
		CheckedAt: now,
	}
	if lic.MaxDevices > 0 {
		n := lic.MaxDevices
		st.MaxDevices = &n
	}
	exp := lic.ExpiresAt.UTC().Format(time.RFC3339)
	renew := "ask the vendor for a renewal, write it to the LICENSE_KEY_FILE file and send SIGHUP (or set LICENSE_KEY and restart)"
	switch left := lic.ExpiresAt.Sub(now); {
	case left <= 0:
		graceEnd := lic.ExpiresAt.Add(p.GracePeriod)
		if now.Before(graceEnd) {
			st.Status, st.Warning, st.GraceEndsAt = StateGrace, true, timePtr(graceEnd)
			st.Message = fmt.Sprintf("the license for %q expired at %s; its grace period ends at %s, after which new agents and premium features are blocked: %s",
				lic.Customer, exp, graceEnd.UTC().Format(time.RFC3339), renew)
			return st
		}
		st.Status, st.Restricted, st.Reason = StateRestricted, true, CodeExpired
		st.Message = fmt.Sprintf("the license for %q expired at %s; new agents cannot be registered and premium features are off (existing agents keep working): %s",
			lic.Customer, exp, renew)
	case left <= p.WarningWindow:
		st.Status, st.Warning = StateWarning, true
		st.Message = fmt.Sprintf("the license for %q expires at %s (in %s): %s", lic.Customer, exp, humanDuration(left), renew)
	default:
		st.Status = StateValid
	}
	return st
}

func restricted(reason, message string, now time.Time) Status {
	return Status{
		Status:     StateRestricted,
		Restricted: true,
		Reason:     reason,
		Message:    message,
		Features:   []string{},
		CheckedAt:  now,
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// humanDuration renders a remaining time the way an operator reads it: days when there are some.
func humanDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(math.Floor(d.Hours()/24)))
	}
	if d >= time.Minute {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// clone returns a copy whose slices and pointers the caller may keep and modify.
func (s Status) clone() Status {
	s.Features = append([]string{}, s.Features...)
	if s.MaxDevices != nil {
		n := *s.MaxDevices
		s.MaxDevices = &n
	}
	for _, p := range []**time.Time{&s.IssuedAt, &s.NotBefore, &s.ExpiresAt, &s.GraceEndsAt} {
		if *p != nil {
			t := **p
			*p = &t
		}
	}
	return s
}
