package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/store"
)

// TestBadInputIsRefusedBeforePostgres is H1 (docs/security.md): values PostgreSQL cannot store (NUL, a lone
// UTF-16 surrogate, a number beyond numeric's range) and duplicate members at any depth are refused
// with 400 problem details and a clear code before the database sees them, never a 500 or a wrong 404,
// and no such request leaves an ERROR line in the log (an unauthenticated caller could flood it). A
// refused registration does not consume its provisioning key.
func TestBadInputIsRefusedBeforePostgres(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	target := func(body string) req {
		return req{Method: "PUT", Path: "/api/v1/agents/" + a.AgentUUID + "/target-state", Token: adm.Access, Body: body}
	}
	before := e.fingerprint()
	for _, tc := range []struct {
		name, body, code, field string
	}{
		{"NUL in a value", `{"targetState": {"a": "x\u0000y"}}`, "invalid_character", "targetState"},
		{"NUL in a member name", `{"targetState": {"a\u0000": 1}}`, "invalid_character", "targetState"},
		{"lone high surrogate", `{"targetState": {"a": ["ok", "\ud800"]}}`, "invalid_character", "targetState"},
		{"lone low surrogate", `{"targetState": {"a": "\udc00x"}}`, "invalid_character", "targetState"},
		{"high surrogate then a non-surrogate", `{"targetState": {"a": "\ud800\u0041"}}`, "invalid_character", "targetState"},
		{"huge exponent", `{"targetState": {"a": 1e999999}}`, "number_out_of_range", "targetState"},
		{"too many integer digits", `{"targetState": {"a": 1234e131069}}`, "number_out_of_range", "targetState"},
		{"too many fraction digits", `{"targetState": {"a": 1.5e-16383}}`, "number_out_of_range", "targetState"},
		{"nested duplicate member", `{"targetState": {"a": {"b": 1, "b": 2}}}`, "invalid_json", "targetState"},
		{"duplicate member in an array's object", `{"targetState": {"l": [{"k": 1}, {"k": 1, "k": 1}]}}`, "invalid_json", "targetState"},
	} {
		res := e.do(target(tc.body))
		if res.Status != 400 {
			t.Errorf("%s: status %d, want 400: %s", tc.name, res.Status, res.Body)
			continue
		}
		if p := res.Problem(t); p.Code != tc.code || p.Field != tc.field || p.Detail == "" {
			t.Errorf("%s: code %q field %q (want %q %q), detail %q", tc.name, p.Code, p.Field, tc.code, tc.field, p.Detail)
		}
	}
	// Well-formed neighbours of the refused values are stored: the limits are PostgreSQL's own.
	for _, body := range []string{
		`{"targetState": {"a": "\ud83d\ude00", "b": "\\u0000", "c": 123e131069, "d": -1e-16383, "e": 0e999999}}`,
		`{"targetState": {"a": {"b": 1}, "c": {"b": 2}, "": 3}}`,
	} {
		e.expect(target(body), 200, "")
	}

	// Names, the login and a new user: NUL (and a lone surrogate, which encoding/json would silently
	// have turned into U+FFFD).
	key := e.provisioningKey(adm.Access)
	before = e.fingerprint()
	for _, r := range []req{
		{Method: "POST", Path: "/api/v1/provision/agent", Body: `{"key": "` + key + `", "agentName": "gw\u0000"}`},
		{Method: "POST", Path: "/api/v1/provision/agent", Body: `{"key": "` + key + `", "agentName": "gw\ud800"}`},
		{Method: "POST", Path: "/api/v1/provision/keys", Token: adm.Access, Body: `{"name": "batch\u0000"}`},
		{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: `{"name": "k\u0000", "agentUuid": "` + a.AgentUUID + `"}`},
		{Method: "POST", Path: "/api/v1/auth/login", Body: `{"email": "admin@example.com\u0000", "password": "correct horse battery"}`},
		{Method: "POST", Path: "/api/v1/auth/login", Body: `{"email": "admin@example.com", "password": "x\u0000"}`},
		{Method: "POST", Path: "/api/v1/users", Token: adm.Access, Body: `{"email": "a\u0000@example.com", "password": "long enough passphrase", "role": "viewer"}`},
	} {
		res := e.do(r)
		if res.Status != 400 {
			t.Errorf("%s %s %s: status %d, want 400: %s", r.Method, r.Path, r.Body, res.Status, res.Body)
		} else if c := res.Problem(t).Code; c != "invalid_character" {
			t.Errorf("%s %s: code %q, want invalid_character", r.Method, r.Path, c)
		}
	}
	if after := e.fingerprint(); after != before {
		t.Errorf("refused requests changed the database:\n%s\n%s", before, after)
	}
	for _, body := range []string{`{"reportedState": {"a": "\u0000"}}`, `{"reportedState": {"a": 1e999999}}`, `{"reportedState": {"a": 1, "a": 2}}`} {
		if res := e.do(req{Method: "PATCH", Path: "/api/v1/device/" + a.AgentUUID + "/state", Header: map[string]string{"X-Device-API-Key": a.APIKey}, Body: body}); res.Status != 400 {
			t.Errorf("report %s: status %d, want 400: %s", body, res.Status, res.Body)
		}
	}
	if n := e.count("agents", "reported_state IS NOT NULL"); n != 0 {
		t.Fatalf("a refused report was stored")
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "gw2"}}, 201, "")

	// The backstop: a value that reaches PostgreSQL anyway is a data exception the API answers with 400,
	// and an invalid-text error in a target state is no longer mistaken for an unknown agent.
	_, err := e.st.Agents.SetTargetState(context.Background(), a.AgentUUID, []byte(`{"a": "\ud800"}`), 0, store.AuditEvent{Actor: "test", Action: "x"})
	if !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("SetTargetState with a lone surrogate: %v, want store.ErrMalformed", err)
	}
	_, err = e.st.Agents.ReportState(context.Background(), a.AgentUUID, []byte(`{"a": "\u0000"}`))
	if !errors.Is(err, store.ErrBadCharacter) {
		t.Fatalf("ReportState with NUL: %v, want store.ErrBadCharacter", err)
	}

	if logs := e.logs.String(); strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("client mistakes were logged as errors:\n%.2000s", logs)
	}
}
