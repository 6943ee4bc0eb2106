package api

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/exchange"
	"github.com/iotauth/iotauth/backend/store"
)

// Problem codes: the stable `code` member of every error answer. Clients branch on these, never on
// the human-readable title or detail.
const (
	CodeInvalidJSON           = "invalid_json"                  // 400: malformed body, unknown or duplicate field, trailing data, wrong type
	CodeValidation            = "validation_failed"             // 400: well-formed JSON with a value out of range
	CodeInvalidCharacter      = "invalid_character"             // 400: text that is not UTF-8, or holds NUL, a lone surrogate or a control character where none belongs
	CodeNumberOutOfRange      = "number_out_of_range"           // 400: a JSON number beyond what PostgreSQL's numeric can hold
	CodeSecretInURL           = "secret_in_url"                 // 400: a credential in the path or query string
	CodeAuthRequired          = "authentication_required"       // 401: no Authorization: Bearer header
	CodeInvalidToken          = "invalid_token"                 // 401: bad, expired or foreign access token, or its user is gone or disabled
	CodeInvalidCredentials    = "invalid_credentials"           // 401: login failed (one answer for every reason)
	CodeInvalidRefreshToken   = "invalid_refresh_token"         // 401: bad, spent, revoked or expired refresh token
	CodeInvalidDeviceKey      = "invalid_device_key"            // 401: X-Device-API-Key missing, malformed, of the wrong kind, unknown, revoked or expired
	CodeInvalidProvisioning   = service.CodeInvalidProvisioning // 401: provisioning key malformed, unknown, expired or already used
	CodeForbidden             = "forbidden"                     // 403: the caller's role may not do this
	CodeInsufficientKeyRights = "insufficient_key_rights"       // 403: the device key lacks the right this route needs
	CodeMissingRight          = "missing_right"                 // 403: the application key lacks the route's right (named in detail)
	CodeDeviceLimit           = service.CodeDeviceLimit         // 403: the license's device limit is reached
	CodeLicenseRestricted     = service.CodeLicenseRestricted   // 403: the license forbids this (when the licenser gives no code)
	CodeNotFound              = "not_found"                     // 404
	CodeMethodNotAllowed      = "method_not_allowed"            // 405
	CodeConflict              = "conflict"                      // 409: generic conflict
	CodeEmailTaken            = service.CodeEmailTaken          // 409
	CodeLastAdmin             = service.CodeLastAdmin           // 409: the change would leave no enabled admin
	CodeAgentDecommissioned   = service.CodeAgentDecommissioned // 409
	CodePreconditionFailed    = service.CodePreconditionFailed  // 412: If-Match names an old target version
	CodeBodyTooLarge          = "body_too_large"                // 413
	CodeUnsupportedMediaType  = "unsupported_media_type"        // 415: the body is not application/json
	CodeLoginThrottled        = "login_throttled"               // 429: too many failed logins; see Retry-After
	CodeThrottled             = "throttled"                     // 429: too many requests (when the refusal gives no code of its own); see Retry-After
	CodeInternal              = "internal_error"                // 500: details are in the server log only
	CodeBadGateway            = "bad_gateway"                   // 502: a system the server relies on refused (when the refusal gives no code of its own)
	CodeUnavailable           = "unavailable"                   // 503: the request took too long (database or server too busy); retry
	CodeDatabaseUnavailable   = "database_unavailable"          // 503: PostgreSQL cannot be reached or takes no work now; see Retry-After
	CodeCommitNotConfirmed    = "commit_not_confirmed"          // 503: no synchronous standby confirmed the change in time; repeat the request after Retry-After
	CodeGatewayTimeout        = "gateway_timeout"               // 504: a system the server relies on did not answer in time (when the refusal gives no code of its own)

	// Token exchange and publishable keys (docs/token-exchange.md).
	CodeExchangeUnavailable = exchange.CodeUnavailable        // 503: no MQTT credential signing key is configured
	CodePublishableOnly     = "publishable_key_exchange_only" // 403: a publishable key on any route but the token exchange
	CodeInvalidPublishable  = "invalid_publishable_key"       // 401: publishable key malformed, unknown, revoked or expired
	CodeOriginNotAllowed    = "origin_not_allowed"            // 403: the Origin is not one the publishable key lists
	CodeUnknownProvider     = exchange.CodeUnknownProvider    // 400: no such identity provider for this caller
	CodeProviderNotAllowed  = exchange.CodeProviderNotAllowed // 403: the publishable key may not use this provider
	CodeInvalidIdPToken     = exchange.CodeInvalidIdPToken    // 401: the identity provider's token failed verification
	CodeNoTopics            = exchange.CodeNoTopics           // 403: the mapping grants nothing within the caller's topics
	CodeUnmappableClaims    = exchange.CodeUnmappableClaims   // 403: a claim the mapping uses holds a value that cannot go into a topic
	CodeTooManyTopics       = exchange.CodeTooManyTopics      // 403: the mapping grants more topics than one credential holds
	CodeExchangeThrottled   = exchange.CodeThrottled          // 429: too many exchanges by this caller; see Retry-After
)

// Problem is an RFC 9457 problem details object, and an error a handler can return.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// Field names the request member at fault, for validation errors.
	Field string `json:"field,omitempty"`

	retryAfter int
	header     http.Header
	cause      error // logged, never sent
}

// Error returns the code and detail; it is what logs see.
func (p *Problem) Error() string {
	if p.cause != nil {
		return p.Code + ": " + p.Detail + ": " + p.cause.Error()
	}
	return p.Code + ": " + p.Detail
}

// Unwrap exposes the cause to errors.Is.
func (p *Problem) Unwrap() error { return p.cause }

func problem(status int, code, detail string) *Problem {
	return &Problem{Type: "urn:iotauth:problem:" + code, Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

func badRequest(code, detail string) *Problem { return problem(http.StatusBadRequest, code, detail) }

func invalidField(field, detail string) *Problem {
	p := problem(http.StatusBadRequest, CodeValidation, detail)
	p.Field = field
	return p
}

var notFound = func() *Problem { return problem(http.StatusNotFound, CodeNotFound, "no such resource") }

// problemCoder is implemented by errors that carry their own problem code, such as the licenser's.
type problemCoder = service.ProblemCoder

// serviceStatus is the HTTP status of each kind of service refusal, and the code it has when the
// refusal carries none of its own.
var serviceStatus = []struct {
	kind   error
	status int
	code   string
}{
	{service.ErrInvalid, http.StatusBadRequest, CodeValidation},
	{service.ErrUnauthenticated, http.StatusUnauthorized, CodeInvalidProvisioning},
	{service.ErrForbidden, http.StatusForbidden, CodeForbidden},
	{service.ErrNotFound, http.StatusNotFound, CodeNotFound},
	{service.ErrConflict, http.StatusConflict, CodeConflict},
	{service.ErrPrecondition, http.StatusPreconditionFailed, CodePreconditionFailed},
	{service.ErrTooLarge, http.StatusRequestEntityTooLarge, CodeBodyTooLarge},
	{service.ErrThrottled, http.StatusTooManyRequests, CodeThrottled},
	{service.ErrUpstream, http.StatusBadGateway, CodeBadGateway},
	{service.ErrUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
	{service.ErrUpstreamTimeout, http.StatusGatewayTimeout, CodeGatewayTimeout},
}

// serviceProblem is the answer to a service's refusal: its kind's status, its code (or the kind's), its
// message (a 404 without one says "no such resource") and the field at fault.
func serviceProblem(e *service.Error) *Problem {
	for _, k := range serviceStatus {
		if !errors.Is(e.Kind, k.kind) {
			continue
		}
		code, detail := e.Code, e.Msg
		if code == "" {
			code = k.code
		}
		if detail == "" && k.kind == service.ErrNotFound {
			return notFound()
		}
		q := problem(k.status, code, detail)
		if k.status == http.StatusUnauthorized {
			q = unauthorized(code, detail)
		}
		q.Field = e.Field
		q.cause = e.Err
		if e.RetryAfter > 0 {
			q.retryAfter = int(math.Ceil(e.RetryAfter.Seconds()))
		}
		return q
	}
	return nil
}

// toProblem maps any handler error to the problem a client sees. It is the one place where errors become
// HTTP statuses; unknown errors become an opaque 500 whose cause is logged.
func toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var se *service.Error
	if errors.As(err, &se) {
		if q := serviceProblem(se); q != nil {
			return q
		}
	}
	var pc problemCoder
	if errors.As(err, &pc) && pc.ProblemCode() != "" {
		q := problem(http.StatusForbidden, pc.ProblemCode(), err.Error())
		return q
	}
	switch {
	case errors.Is(err, service.ErrLicense):
		q := problem(http.StatusForbidden, CodeLicenseRestricted, "the license does not allow this")
		q.cause = err
		return q
	case errors.Is(err, store.ErrNotFound):
		return notFound()
	}
	err = store.Classify(err)
	if errors.Is(err, store.ErrMalformed) || errors.Is(err, store.ErrBadCharacter) || errors.Is(err, store.ErrOutOfRange) {
		return refusedValue(err)
	}
	if errors.Is(err, store.ErrNotConfirmed) {
		q := problem(http.StatusServiceUnavailable, CodeCommitNotConfirmed,
			"the change was not confirmed by a standby database in time, so it is not guaranteed to survive a failover; "+
				"it is in force on the primary already. Repeat the request (it is safe) after the time in Retry-After; if this persists, check the PostgreSQL standby")
		q.retryAfter = databaseRetryAfter
		q.cause = err
		return q
	}
	if errors.Is(err, store.ErrUnavailable) {
		return databaseUnavailable(err)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		q := problem(http.StatusServiceUnavailable, CodeUnavailable, "the request took too long; retry later")
		q.cause = err
		q.retryAfter = 1
		return q
	}
	q := problem(http.StatusInternalServerError, CodeInternal, "internal error; the server log has details")
	q.cause = err
	return q
}

// refusedValue is the backstop for a value PostgreSQL refused (store.ErrMalformed, ErrBadCharacter,
// ErrOutOfRange): the request's fault, so a 400 with the code the API's own validation would have given,
// never a 500. The database's message is logged, never sent.
func refusedValue(err error) *Problem {
	var q *Problem
	switch {
	case errors.Is(err, store.ErrBadCharacter):
		q = badRequest(CodeInvalidCharacter, "a text value holds a character that cannot be stored (such as NUL, \\u0000); remove it")
	case errors.Is(err, store.ErrOutOfRange):
		q = badRequest(CodeNumberOutOfRange, "a number is out of the range that can be stored")
	default:
		q = badRequest(CodeValidation, "a value does not have the form its field needs (for JSON text: a lone UTF-16 surrogate such as \\ud800 cannot be stored)")
	}
	q.cause = err
	return q
}

// databaseRetryAfter is the Retry-After of database_unavailable: about how long a restart or fail-over
// of PostgreSQL takes to be noticed (the pool dials afresh on the next request).
const databaseRetryAfter = 5

// databaseUnavailable is the answer while PostgreSQL is down: 503 with Retry-After, the
// cause kept for the log only, never a 500 that hides an outage (docs/security.md, H5).
func databaseUnavailable(cause error) *Problem {
	q := problem(http.StatusServiceUnavailable, CodeDatabaseUnavailable, "the database is unavailable; retry after the time in Retry-After")
	q.retryAfter = databaseRetryAfter
	q.cause = cause
	return q
}

// writeProblem sends p as application/problem+json.
func writeProblem(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	for k, v := range p.header {
		h[k] = v
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Del("ETag")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
