// Package service holds what every management service shares: the typed errors a service returns
// (handlers map them to answers in one place: the REST API's problem details, the CLI's messages), the
// Actor a change is audited under, and the Licenser a service asks before it registers anything.
//
// The services themselves live in the packages below (keys, users, agents, audit, exchange, publish). Each owns its domain's
// validation, licensing checks, audit events and transactions; the REST handlers, the console (through
// the REST API) and the CLI only translate between their own forms and a service's. A service reaches
// PostgreSQL only through the small store interface it declares, and never speaks HTTP.
package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// Kinds of refusal. A service's error matches one of them with errors.Is; the REST API answers each with
// its own status (400, 401, 403, 404, 409, 412, 413, 429, 502, 503, 504).
var (
	// ErrInvalid: a value of the request is wrong; Error.Field names it.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: a credential carried in the request (a provisioning key) is not valid.
	ErrUnauthenticated = errors.New("credential not valid")
	// ErrForbidden: a rule refuses the change (the license, the device limit).
	ErrForbidden = errors.New("refused")
	// ErrNotFound: what the request names does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change clashes with the current state (an email taken, a decommissioned agent).
	ErrConflict = errors.New("conflict")
	// ErrPrecondition: the caller's view of the resource is out of date (a stale version).
	ErrPrecondition = errors.New("precondition failed")
	// ErrTooLarge: a value of the request is larger than allowed; Error.Field names it.
	ErrTooLarge = errors.New("too large")
	// ErrUpstream: a system the service relies on (the MQTT broker) refused the request.
	ErrUpstream = errors.New("refused upstream")
	// ErrUpstreamTimeout: a system the service relies on did not answer in time; what it did is unknown.
	ErrUpstreamTimeout = errors.New("no answer upstream in time")
	// ErrThrottled: the caller asked too often; Error.RetryAfter says when it may ask again.
	ErrThrottled = errors.New("too many requests")
	// ErrUnavailable: the service cannot answer as deployed (a part it needs is not configured) or
	// right now; Error.RetryAfter, when set, says when to ask again.
	ErrUnavailable = errors.New("unavailable")
)

// Stable codes of refusals that need more than their kind to tell apart. The REST API sends them as the
// problem's code; clients branch on them.
const (
	CodeEmailTaken          = "email_taken"
	CodeLastAdmin           = "last_admin"
	CodeAgentDecommissioned = "agent_decommissioned"
	CodeDeviceLimit         = "device_limit_reached"
	CodeInvalidProvisioning = "invalid_provisioning_key"
	CodePreconditionFailed  = "precondition_failed"
	CodeLicenseRestricted   = "license_restricted"
)

// Error is a service's refusal: what kind it is, the stable code when the kind is not enough, the
// request field at fault, and a message that says what to do instead (safe to show to the caller: it
// never holds a secret). Err, when set, is the cause, for the log.
type Error struct {
	Kind  error
	Code  string
	Field string
	Msg   string
	Err   error
	// RetryAfter is how long the caller should wait before asking again (ErrThrottled, ErrUnavailable, ErrUpstreamTimeout);
	// zero says nothing.
	RetryAfter time.Duration
}

// Error returns the message (and the cause's text, for the log).
func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Kind.Error()
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

// Unwrap gives errors.Is and errors.As both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Invalid is the refusal of one request field, with what to send instead.
func Invalid(field, msg string) *Error { return &Error{Kind: ErrInvalid, Field: field, Msg: msg} }

// NotFound is the refusal of a request that names nothing that exists; msg may be empty (the caller
// says it its own way), cause is the store's error.
func NotFound(field, msg string, cause error) *Error {
	return &Error{Kind: ErrNotFound, Field: field, Msg: msg, Err: cause}
}

// Forbidden is a refusal by a rule, with its stable code.
func Forbidden(code, msg string) *Error { return &Error{Kind: ErrForbidden, Code: code, Msg: msg} }

// Conflict is a refusal of the current state, with its stable code.
func Conflict(code, msg string, cause error) *Error {
	return &Error{Kind: ErrConflict, Code: code, Msg: msg, Err: cause}
}

// NotFoundIfMissing turns the store's ErrNotFound into the service's (with no message of its own) and
// returns every other error as it is.
func NotFoundIfMissing(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("", "", err)
	}
	return err
}

// Actor is who makes a change, for its audit event: "user:<id>", "app-key:<id>", "cli:<name>"…, the
// client's address when there is one, the operator's user id (recorded as a key's creator), and details
// every event of this caller carries (the CLI's "via": "cli").
type Actor struct {
	Name       string
	RemoteAddr string
	UserID     string
	Detail     map[string]any
}

// Event is the audit event of action by this actor: its own details, then the action's.
func (a Actor) Event(action string, detail map[string]any) store.AuditEvent {
	var d map[string]any
	if len(a.Detail)+len(detail) > 0 {
		d = make(map[string]any, len(a.Detail)+len(detail))
		for k, v := range a.Detail {
			d[k] = v
		}
		for k, v := range detail {
			d[k] = v
		}
	}
	name := a.Name
	if name == "" {
		name = "anonymous"
	}
	return store.AuditEvent{Actor: name, Action: action, RemoteAddr: a.RemoteAddr, Detail: d}
}

// Licenser is what a service asks of the license (docs/license.md); backend/license implements it.
//
//   - CheckRegistration is asked before anything is consumed or created on a registration path, so a
//     restricted deployment never burns a provisioning key. A non-nil error refuses.
//   - CheckFeature guards premium features (for example "data_export").
//   - MaxDevices is read on each registration: when limited, the store enforces n in the registration's
//     transaction. It must be cheap and must not block.
//
// An error with a method `ProblemCode() string` returning a non-empty code is shown to the caller with
// that code and its own text (so the text must be safe to show); any other is refused as
// license_restricted with a generic message, and its text is logged. Implementations must be safe for
// concurrent use.
type Licenser interface {
	CheckRegistration(ctx context.Context) error
	CheckFeature(feature string) error
	MaxDevices() (n int, limited bool)
}

// Unlimited is the permissive Licenser: every registration and feature is allowed, with no device limit.
type Unlimited struct{}

// CheckRegistration allows every registration.
func (Unlimited) CheckRegistration(context.Context) error { return nil }

// CheckFeature allows every feature.
func (Unlimited) CheckFeature(string) error { return nil }

// MaxDevices reports no limit.
func (Unlimited) MaxDevices() (int, bool) { return 0, false }

// ErrLicense marks a licenser's refusal that carries no code of its own.
var ErrLicense = errors.New("license refused the request")

// ProblemCoder is implemented by errors that carry their own stable code, such as the licenser's.
type ProblemCoder interface {
	ProblemCode() string
}

// LicenseRefusal wraps a licenser's refusal: one with its own code passes as it is, any other is marked
// ErrLicense (answered as license_restricted). Nil stays nil.
func LicenseRefusal(err error) error {
	if err == nil {
		return nil
	}
	var pc ProblemCoder
	if errors.As(err, &pc) && pc.ProblemCode() != "" {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLicense, err)
}

// CheckName refuses a name that is empty or longer than 200 characters, as every named resource.
func CheckName(field, name string) *Error {
	if n := len([]rune(name)); n < 1 || n > 200 {
		return Invalid(field, field+" is required (1 to 200 characters)")
	}
	return nil
}
