package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/oidc"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/exchange"
	"github.com/iotauth/iotauth/backend/store"
)

// TestServiceErrorsToProblems: every kind of service refusal becomes its status, its code (the
// refusal's own, or the kind's), its message and field, wrapped or not; the cause stays for the log.
func TestServiceErrorsToProblems(t *testing.T) {
	cause := errors.New("the store's reason")
	cases := []struct {
		err    error
		status int
		code   string
		detail string
		field  string
	}{
		{service.Invalid("name", "name is required"), 400, CodeValidation, "name is required", "name"},
		{fmt.Errorf("wrapped: %w", service.Invalid("topics", "bad topic")), 400, CodeValidation, "bad topic", "topics"},
		{&service.Error{Kind: service.ErrUnauthenticated, Code: service.CodeInvalidProvisioning, Msg: "ask for a new key"}, 401, CodeInvalidProvisioning, "ask for a new key", ""},
		{&service.Error{Kind: service.ErrForbidden, Code: service.CodeDeviceLimit, Msg: "limit"}, 403, CodeDeviceLimit, "limit", ""},
		{service.NotFound("agentUuid", "no agent with this uuid", cause), 404, CodeNotFound, "no agent with this uuid", "agentUuid"},
		{service.NotFoundIfMissing(store.ErrNotFound), 404, CodeNotFound, "no such resource", ""},
		{service.Conflict(service.CodeEmailTaken, "taken", cause), 409, CodeEmailTaken, "taken", ""},
		{service.Conflict(service.CodeLastAdmin, "last", cause), 409, CodeLastAdmin, "last", ""},
		{&service.Error{Kind: service.ErrPrecondition, Code: service.CodePreconditionFailed, Msg: "stale"}, 412, CodePreconditionFailed, "stale", ""},
		{service.LicenseRefusal(errors.New("opaque")), 403, CodeLicenseRestricted, "the license does not allow this", ""},
	}
	for _, c := range cases {
		p := toProblem(c.err)
		if p.Status != c.status || p.Code != c.code || p.Detail != c.detail || p.Field != c.field {
			t.Errorf("%v: got %d %s %q field %q, want %d %s %q field %q", c.err, p.Status, p.Code, p.Detail, p.Field, c.status, c.code, c.detail, c.field)
		}
		if c.status == http.StatusUnauthorized && p.header.Get("Www-Authenticate") != "" {
			t.Errorf("%v: a provisioning refusal asks for a bearer token", c.err)
		}
	}
	if p := toProblem(service.NotFound("", "gone", cause)); !errors.Is(p, cause) {
		t.Error("the cause of a refusal is lost for the log")
	}
}

// TestServiceRetryAfter: a throttled, unavailable or too-large refusal, or one from upstream, answers
// 429, 503, 413, 502 or 504 with its own code (or its kind's) and a Retry-After rounded up to whole
// seconds; the exchange's refusals keep the codes clients know.
func TestServiceRetryAfter(t *testing.T) {
	cases := []struct {
		err        error
		status     int
		code       string
		retryAfter int
	}{
		{&service.Error{Kind: service.ErrThrottled, Code: CodeExchangeThrottled, Msg: "slow down", RetryAfter: 1500 * time.Millisecond}, 429, "exchange_throttled", 2},
		{&service.Error{Kind: service.ErrThrottled, Msg: "slow down", RetryAfter: time.Second}, 429, CodeThrottled, 1},
		{&service.Error{Kind: service.ErrUnavailable, Code: CodeExchangeUnavailable, Msg: "not configured"}, 503, "token_exchange_unavailable", 0},
		{&service.Error{Kind: service.ErrUnavailable, Msg: "later", RetryAfter: 5 * time.Second}, 503, CodeUnavailable, 5},
		{&service.Error{Kind: service.ErrTooLarge, Code: CodeBodyTooLarge, Field: "payload", Msg: "too big"}, 413, "body_too_large", 0},
		{&service.Error{Kind: service.ErrUpstream, Code: CodePublishRefused, Msg: "refused"}, 502, "publish_refused", 0},
		{&service.Error{Kind: service.ErrUpstreamTimeout, Code: CodePublishTimeout, Msg: "late", RetryAfter: time.Second}, 504, "publish_timeout", 1},
		{&service.Error{Kind: service.ErrUpstreamTimeout, Msg: "late"}, 504, CodeGatewayTimeout, 0},
	}
	for _, c := range cases {
		p := toProblem(c.err)
		if p.Status != c.status || p.Code != c.code || p.retryAfter != c.retryAfter {
			t.Errorf("%v: got %d %s retry after %d, want %d %s %d", c.err, p.Status, p.Code, p.retryAfter, c.status, c.code, c.retryAfter)
		}
	}
	if exchange.OperatorProvider != oidc.ReservedName {
		t.Errorf("the exchange's operator provider %q is not the name identity providers may not take (%q)", exchange.OperatorProvider, oidc.ReservedName)
	}
}
