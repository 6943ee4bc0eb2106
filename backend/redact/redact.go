// Package redact scrubs iotauth's secrets out of text bound for logs: device API keys, application keys, MQTT passwords,
// provisioning keys and JWTs are recognised by their shape and replaced by their kind. It is the last line
// of defence (docs/security.md, H3); the first is never handing a secret to a logger at all.
package redact

import (
	"fmt"
	"log/slog"
	"regexp"
)

// Placeholder replaces a JWT.
const Placeholder = "[redacted]"

var (
	keyPattern = regexp.MustCompile(`(iotsk_live_|iotsk_test_|iotak_live_|iotak_test_|iotmp_|prov_)[0-9A-Za-z]{4,}`)
	jwtPattern = regexp.MustCompile(`eyJ[0-9A-Za-z_-]{4,}(\.[0-9A-Za-z_-]*){1,2}`)
)

// String returns s with every secret-shaped substring replaced.
func String(s string) string {
	if s == "" {
		return s
	}
	s = keyPattern.ReplaceAllString(s, "${1}"+Placeholder)
	return jwtPattern.ReplaceAllString(s, Placeholder)
}

// Contains reports whether s holds anything secret-shaped.
func Contains(s string) bool { return keyPattern.MatchString(s) || jwtPattern.MatchString(s) }

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that scrubs string values and error texts.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); Contains(s) {
			a.Value = slog.StringValue(String(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			a.Value = slog.StringValue(String(err.Error()))
		} else if s := fmt.Sprint(a.Value.Any()); Contains(s) {
			// Stringers, slices, maps and structs print their contents: scrub what they would print.
			a.Value = slog.StringValue(String(s))
		}
	}
	return a
}

// Options returns a copy of o whose ReplaceAttr also scrubs every attribute, the message included; use it as
// slog.NewJSONHandler(w, redact.Options(nil)).
func Options(o *slog.HandlerOptions) *slog.HandlerOptions {
	var out slog.HandlerOptions
	if o != nil {
		out = *o
	}
	prev := out.ReplaceAttr
	out.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if prev != nil {
			a = prev(groups, a)
		}
		return ReplaceAttr(groups, a)
	}
	return &out
}
