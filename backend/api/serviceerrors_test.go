package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/iotauth/iotauth/backend/service"
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
