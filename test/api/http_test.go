package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestRolesOnEveryRoute is H6: for every role-checked route of the table, every role it does not
// allow gets 403 forbidden and a missing token 401, and nothing changes.
func TestRolesOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	byRole := map[string]tokens{"admin": adm, "operator": e.userWithRole("operator"), "viewer": e.userWithRole("viewer")}
	before := e.fingerprint()
	checked := 0
	for _, rt := range e.srv.Routes() {
		if rt.Roles == nil {
			continue
		}
		path := strings.NewReplacer("{uuid}", a.AgentUUID, "{id}", a.KeyID).Replace(rt.Path)
		r := req{Method: rt.Method, Path: path}
		if rt.Method != "GET" && rt.Method != "DELETE" {
			r.Body = `{}`
		}
		e.expect(r, 401, "authentication_required")
		for role, tk := range byRole {
			if slices.Contains(rt.Roles, role) {
				continue
			}
			r.Token = tk.Access
			e.expect(r, 403, "forbidden")
			checked++
		}
	}
	if checked < 15 {
		t.Fatalf("only %d role refusals checked", checked)
	}
	if e.fingerprint() != before {
		t.Fatal("refused requests changed the database")
	}
}

// TestHTTPHardening is H1, H4 and H6 over a real connection: 405 with Allow, 413, 415, 400 for unknown
// fields and trailing data on authenticated routes (with nothing changed), security headers, and
// secrets in URLs refused without being logged.
func TestHTTPHardening(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	before := e.fingerprint()
	for _, tc := range []struct {
		name   string
		r      req
		status int
		code   string
	}{
		{"PUT on login", req{Method: "PUT", Path: "/api/v1/auth/login", Body: `{}`}, 405, "method_not_allowed"},
		{"DELETE on users", req{Method: "DELETE", Path: "/api/v1/users", Token: adm.Access}, 405, "method_not_allowed"},
		{"POST on an agent", req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID, Token: adm.Access, Body: `{}`}, 405, "method_not_allowed"},
		{"PUT on device state", req{Method: "PUT", Path: "/api/v1/device/" + a.AgentUUID + "/state", Body: `{}`}, 405, "method_not_allowed"},
		{"unknown field", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
			Body: `{"email":"x@example.com","password":"long enough pw","role":"admin","superuser":true}`}, 400, "invalid_json"},
		{"trailing data", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
			Body: `{"email":"x@example.com","password":"long enough pw","role":"viewer"} {"role":"admin"}`}, 400, "invalid_json"},
		{"duplicate member", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
			Body: `{"email":"x@example.com","password":"long enough pw","role":"viewer","role":"admin"}`}, 400, "invalid_json"},
		{"wrong content type", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access, CType: "text/plain",
			Body: `{"email":"x@example.com","password":"long enough pw","role":"viewer"}`}, 415, "unsupported_media_type"},
		{"no content type", req{Method: "POST", Path: "/api/v1/provision/agent", CType: "-", Body: `{"key":"prov_x","agentName":"a"}`}, 415, "unsupported_media_type"},
		{"oversized", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
			Body: `{"email":"x@example.com","password":"` + strings.Repeat("p", 100<<10) + `","role":"viewer"}`}, 413, "body_too_large"},
		{"oversized state", req{Method: "PUT", Path: "/api/v1/agents/" + a.AgentUUID + "/target-state", Token: adm.Access,
			Body: `{"targetState":{"blob":"` + strings.Repeat("s", 2<<20) + `"}}`}, 413, "body_too_large"},
		{"state not an object", req{Method: "PUT", Path: "/api/v1/agents/" + a.AgentUUID + "/target-state", Token: adm.Access,
			Body: `{"targetState":[1,2]}`}, 400, "validation_failed"},
		{"short password", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access, Body: `{"email":"x@example.com","password":"short","role":"viewer"}`}, 400, "validation_failed"},
		{"bad role", req{Method: "POST", Path: "/api/v1/users", Token: adm.Access, Body: `{"email":"x@example.com","password":"long enough pw","role":"root"}`}, 400, "validation_failed"},
		{"key in query", req{Method: "GET", Path: "/api/v1/device/" + a.AgentUUID + "/state?apiKey=" + a.APIKey}, 400, "secret_in_url"},
		{"key in another parameter", req{Method: "GET", Path: "/api/v1/agents?q=" + a.APIKey, Token: adm.Access}, 400, "secret_in_url"},
		{"token in query", req{Method: "GET", Path: "/api/v1/agents?access_token=" + adm.Access}, 400, "secret_in_url"},
		{"provisioning key in path", req{Method: "POST", Path: "/api/v1/provision/agent/" + e.provisioningKeyNoRemember(), Body: `{}`}, 400, "secret_in_url"},
		{"unknown path", req{Method: "GET", Path: "/api/v1/nope"}, 404, "not_found"},
		{"unknown agent", req{Method: "GET", Path: "/api/v1/agents/00000000-0000-4000-8000-000000000000", Token: adm.Access}, 404, "not_found"},
		{"malformed agent uuid", req{Method: "GET", Path: "/api/v1/agents/xyz", Token: adm.Access}, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.expect(tc.r, tc.status, tc.code)
			if res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no X-Content-Type-Options: nosniff")
			}
			if tc.status == 405 && res.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if secretPattern.Match(res.Body) {
				t.Errorf("error body holds a secret: %s", res.Body)
			}
			if res.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Error("CORS header sent while CORS is off")
			}
		})
	}
	if e.fingerprint() != before {
		t.Fatal("refused requests changed the database")
	}
	// Secret-bearing answers are not cached; ordinary ones are not either, and no CORS without config.
	res := e.expect(req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID + "/mqtt-password", Token: adm.Access,
		Header: map[string]string{"Origin": "https://evil.example"}}, 200, "")
	if res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("rotation answer headers: %v", res.Header)
	}
}

// provisioningKeyNoRemember returns a well-formed provisioning key that exists nowhere, for URL tests.
func (e *env) provisioningKeyNoRemember() string {
	return "prov_" + strings.Repeat("A", 38)
}

// TestHealthAndMetrics: liveness and readiness against the database on the public listener, Prometheus
// metrics without secrets or raw paths on a handler of their own (not on the API: 404 there,
// docs/security.md, O2), and the OpenAPI document.
func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	e.expect(stateReq(a.AgentUUID, a.APIKey), 200, "")
	e.expect(req{Method: "GET", Path: "/healthz"}, 200, "")
	e.expect(req{Method: "GET", Path: "/readyz"}, 200, "")
	e.expect(req{Method: "GET", Path: "/metrics"}, 404, "not_found")
	ms := httptest.NewServer(e.srv.MetricsHandler())
	defer ms.Close()
	mres, err := http.Get(ms.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	body := string(raw)
	if !strings.Contains(body, `iotauth_http_requests_total{code="200",method="GET",route="GET /api/v1/device/{uuid}/state"}`) ||
		!strings.Contains(body, `iotauth_login_attempts_total{outcome="success"}`) {
		t.Fatalf("metrics lack expected series:\n%.2000s", body)
	}
	if strings.Contains(body, a.AgentUUID) || secretPattern.MatchString(body) {
		t.Fatal("metrics carry ids or secrets")
	}
	res := e.expect(req{Method: "GET", Path: "/api/v1/openapi.json"}, 200, "")
	if !strings.Contains(string(res.Body), `"openapi":"3.`) {
		t.Fatalf("openapi: %.200s", res.Body)
	}
	if res.Header.Get("Content-Type") != "application/json" || res.Status != http.StatusOK {
		t.Fatal("openapi content type")
	}
}
