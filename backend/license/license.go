// Package license owns iotauth's commercial license: a JWT that the vendor signs with a private key the
// product never sees, verified here with the configured public key (LICENSE_PUBLIC_KEY) and exactly one
// asymmetric algorithm (EdDSA or RS256, whichever matches that key). The package turns a license and a clock
// into a Status (valid, warning, grace or restricted with a reason code), keeps the current Status in a
// Manager that re-evaluates periodically and on SIGHUP, and answers the gate questions the REST API asks
// before registering agents or serving premium routes.
//
// A missing, invalid or expired license never stops the product: it puts it in restricted mode, where
// existing agents keep working and only new registrations and premium features are refused. Claims are read
// only after the signature verified; nothing from an unverified token reaches a decision or a log line.
package license

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults for the claims a license must carry and for the evaluation policy.
const (
	// DefaultIssuer is the vendor's name in the iss claim; a JWT from any other issuer is not a license.
	DefaultIssuer = "iotauth-license"
	// DefaultAudience is the product's name in the aud claim, so a license for another product is refused.
	DefaultAudience = "iotauth"
	// TokenType is the value of the typ claim that marks a JWT as a license, so that an access or refresh
	// token (typ access/refresh) can never pass as a license, nor a license as one of them.
	TokenType = "license"
	// DefaultWarningWindow is how long before exp the status turns to warning, giving the operator time to
	// renew before anything is blocked.
	DefaultWarningWindow = 14 * 24 * time.Hour
	// DefaultLeeway absorbs small clock differences between the vendor's signing machine and this server for
	// iat and nbf. It is deliberately small; MaxLeeway caps it.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the largest accepted leeway: more would let a badly set clock hide a future-dated license.
	MaxLeeway = 60 * time.Second
	// DefaultInterval is how often a Manager re-evaluates the license against the clock.
	DefaultInterval = time.Minute
)

// Premium features a license can grant. Feature names the product does not know are ignored, so a license
// issued for a newer version keeps working with this one.
const (
	FeatureAdvancedAnomaly = "advanced_anomaly"
	FeatureDataExport      = "data_export"
	FeatureAI              = "ai"
)

// knownFeatures is the canonical order in which features are reported.
var knownFeatures = []string{FeatureAdvancedAnomaly, FeatureDataExport, FeatureAI}

// KnownFeatures lists the features this version understands, in canonical order. The CLI uses it to refuse
// typos when issuing a license.
func KnownFeatures() []string { return slices.Clone(knownFeatures) }

// IsKnownFeature reports whether name is a feature this version understands.
func IsKnownFeature(name string) bool { return slices.Contains(knownFeatures, name) }

// normalizeFeatures keeps the known features of in, once each, in canonical order.
func normalizeFeatures(in []string) []string {
	out := []string{}
	for _, f := range knownFeatures {
		if slices.Contains(in, f) {
			out = append(out, f)
		}
	}
	return out
}

// License is the verified content of a license token. It exists only for tokens whose signature verified
// with the configured key; values never come from an unverified token.
type License struct {
	// ID is the jti claim, the vendor's reference for this license (may be empty).
	ID string
	// Issuer is the iss claim (the vendor).
	Issuer string
	// Customer is the sub claim: who the license was sold to.
	Customer string
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp. NotBefore is zero when the token has no nbf.
	IssuedAt, NotBefore, ExpiresAt time.Time
	// MaxDevices is the maxDevices claim: how many agents may be registered. Zero means the license sets
	// no limit (the claim is absent); a present claim is always at least 1.
	MaxDevices int
	// Features are the premium features granted that this version knows, in canonical order.
	Features []string
}

// Stable, machine-readable reason codes. The REST layer returns them as the `code` member of a 403
// problem+json, so clients can branch on them; they never change once released.
const (
	CodeMissing            = "license_missing"
	CodeInvalid            = "license_invalid"
	CodeExpired            = "license_expired"
	CodeDeviceLimitReached = "device_limit_reached"
	CodeFeatureNotLicensed = "feature_not_licensed"
)

// Error is a refusal caused by the license. Reason is one of the Code constants; Detail is a sentence safe
// to show to any API client (it never names configuration, keys or the token). The operator-facing
// explanation of what is wrong and how to fix it is in Status.Message and in the Manager's log lines.
type Error struct {
	Reason string
	Detail string
}

// Code returns the stable reason code.
func (e *Error) Code() string { return e.Reason }

// ProblemCode is Code under the name the REST layer looks for (backend/api's problemCoder): an error with
// it is answered as 403 problem+json with this code and Error() as the client-visible detail.
func (e *Error) ProblemCode() string { return e.Reason }

// Error returns Detail, a complete client-safe sentence (the REST layer shows it as the problem's
// detail), or the code when there is no detail.
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Reason
	}
	return e.Detail
}

// Is makes errors.Is(err, license.ErrExpired) (and the other sentinels) match any *Error with the same
// code, whatever its detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Sentinels for errors.Is; compare codes, not details.
var (
	ErrMissing            = &Error{Reason: CodeMissing}
	ErrInvalid            = &Error{Reason: CodeInvalid}
	ErrExpired            = &Error{Reason: CodeExpired}
	ErrDeviceLimitReached = &Error{Reason: CodeDeviceLimitReached}
	ErrFeatureNotLicensed = &Error{Reason: CodeFeatureNotLicensed}
)

// clientDetail is the client-safe sentence for a restriction reason.
func clientDetail(reason, blocked string) string {
	switch reason {
	case CodeMissing:
		return "this server has no license installed; " + blocked + " until an operator installs one"
	case CodeExpired:
		return "this server's license has expired; " + blocked + " until an operator installs a renewed license"
	default:
		return "this server's license is not valid; " + blocked + " until an operator installs a valid license"
	}
}

// DeviceLimitError is the refusal for a registration that would exceed the license's device limit. The
// REST layer returns it from inside the transaction that counts agents and inserts the new one.
func DeviceLimitError(limit, registered int) *Error {
	return &Error{
		Reason: CodeDeviceLimitReached,
		Detail: fmt.Sprintf("the license allows %d devices and %d are registered; decommission an agent or ask the operator for a larger license", limit, registered),
	}
}

// CodeOf returns the reason code of a license error anywhere in err's chain, or "" when err is not one.
func CodeOf(err error) string {
	var le *Error
	if errors.As(err, &le) {
		return le.Reason
	}
	return ""
}
