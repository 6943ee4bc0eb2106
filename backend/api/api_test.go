package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/token"
)

// offlineServer builds a Server whose store points at a closed port: enough for everything that is
// decided before the database (routing, decoding, authentication headers, the OpenAPI document).
func offlineServer(t *testing.T, mod ...func(*Config)) *Server {
	t.Helper()
	st, err := store.Open("postgres://nobody@127.0.0.1:1/none?connect_timeout=1", store.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	tm, err := token.New(token.Config{Secret: []byte("Zq8LmW2xVt5RbN7cPy3KdF6hJs9GaE1uQo4Ti0")})
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Store: st, Tokens: tm}
	for _, m := range mod {
		m(&c)
	}
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func call(s *Server, method, path, ctype, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func problemOf(t *testing.T, w *httptest.ResponseRecorder) Problem {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json (status %d, body %s)", ct, w.Code, w.Body)
	}
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenAPIMatchesRoutes keeps openapi.json in step with the route table: the same set of method and
// path pairs, and for each the same authentication (security) and roles (x-roles).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := offlineServer(t)
	w := call(s, "GET", "/api/v1/openapi.json", "", "")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	ids := map[string]bool{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			var op struct {
				OperationID string                `json:"operationId"`
				Security    []map[string][]string `json:"security"`
				Roles       []string              `json:"x-roles"`
				Right       string                `json:"x-right"`
				Responses   map[string]any        `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			key := strings.ToUpper(method) + " " + path
			documented[key] = true
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s: missing or duplicate operationId %q", key, op.OperationID)
			}
			ids[op.OperationID] = true
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses documented", key)
			}
			i := slices.IndexFunc(s.Routes(), func(r Route) bool { return r.Pattern() == key })
			if i < 0 {
				t.Errorf("documented but not routed: %s", key)
				continue
			}
			rt := s.Routes()[i]
			wantSec := ""
			switch {
			case rt.Device:
				wantSec = "deviceKey"
			case rt.Roles != nil:
				wantSec = "bearerAuth"
			}
			gotSec := ""
			if len(op.Security) == 1 {
				for k := range op.Security[0] {
					gotSec = k
				}
			} else if len(op.Security) > 1 {
				gotSec = "several"
			}
			if gotSec != wantSec {
				t.Errorf("%s: security %q documented, route uses %q", key, gotSec, wantSec)
			}
			gotRoles, wantRoles := slices.Clone(op.Roles), slices.Clone(rt.Roles)
			sort.Strings(gotRoles)
			sort.Strings(wantRoles)
			if !slices.Equal(gotRoles, wantRoles) {
				t.Errorf("%s: x-roles %v documented, route allows %v", key, gotRoles, wantRoles)
			}
			if op.Right != rt.Right {
				t.Errorf("%s: x-right %q documented, route needs %q from an application key", key, op.Right, rt.Right)
			}
			if rt.Roles != nil && op.Responses["403"] == nil {
				t.Errorf("%s: role-checked route does not document 403", key)
			}
		}
	}
	for _, rt := range s.Routes() {
		if !documented[rt.Pattern()] {
			t.Errorf("routed but not documented in openapi.json: %s", rt.Pattern())
		}
	}
}

func TestExtraRoutesNeedOpenAPI(t *testing.T) {
	st, _ := store.Open("postgres://nobody@127.0.0.1:1/none", store.PoolOptions{})
	defer st.Close()
	tm, _ := token.New(token.Config{Secret: []byte("Zq8LmW2xVt5RbN7cPy3KdF6hJs9GaE1uQo4Ti0")})
	h := func(w http.ResponseWriter, r *http.Request) error { return nil }
	_, err := New(Config{Store: st, Tokens: tm, ExtraRoutes: []Route{{Method: "GET", Path: "/api/v1/extra", Roles: adminOnly, Handler: h}}})
	if err == nil || !strings.Contains(err.Error(), "OpenAPI") {
		t.Fatalf("extra route without OpenAPI accepted: %v", err)
	}
	s, err := New(Config{Store: st, Tokens: tm, ExtraRoutes: []Route{{Method: "GET", Path: "/api/v1/extra", Roles: adminOnly, Handler: h,
		OpenAPI: json.RawMessage(`{"operationId":"extra","security":[{"bearerAuth":[]}],"x-roles":["admin"],"responses":{"200":{"description":"ok"},"403":{"description":"no"}}}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(call(s, "GET", "/api/v1/openapi.json", "", "").Body.String(), `"/api/v1/extra"`) {
		t.Fatal("extra route missing from the served document")
	}
}

// TestStrictJSON proves H1 on the login route, which decodes before touching the database.
func TestStrictJSON(t *testing.T) {
	s := offlineServer(t)
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		code              string
	}{
		{"no content type", "", `{"email":"a@b.c","password":"x"}`, 415, CodeUnsupportedMediaType},
		{"text/plain", "text/plain", `{"email":"a@b.c","password":"x"}`, 415, CodeUnsupportedMediaType},
		{"form", "application/x-www-form-urlencoded", `email=a`, 415, CodeUnsupportedMediaType},
		{"other charset", "application/json; charset=latin1", `{"email":"a@b.c","password":"x"}`, 415, CodeUnsupportedMediaType},
		{"unknown field", "application/json", `{"email":"a@b.c","password":"x","admin":true}`, 400, CodeInvalidJSON},
		{"trailing object", "application/json", `{"email":"a@b.c","password":"x"}{"email":"b"}`, 400, CodeInvalidJSON},
		{"trailing garbage", "application/json", `{"email":"a@b.c","password":"x"} x`, 400, CodeInvalidJSON},
		{"duplicate member", "application/json", `{"email":"a@b.c","email":"d@e.f","password":"x"}`, 400, CodeInvalidJSON},
		{"differently cased member", "application/json", `{"EMAIL":"a@b.c","password":"x"}`, 400, CodeInvalidJSON},
		{"array", "application/json", `[1]`, 400, CodeInvalidJSON},
		{"wrong type", "application/json", `{"email":1,"password":"x"}`, 400, CodeInvalidJSON},
		{"truncated", "application/json", `{"email":"a@b.c"`, 400, CodeInvalidJSON},
		{"empty", "application/json", ``, 400, CodeInvalidJSON},
		{"missing password", "application/json", `{"email":"a@b.c"}`, 400, CodeValidation},
		{"oversized", "application/json", `{"email":"a@b.c","password":"` + strings.Repeat("x", 70<<10) + `"}`, 413, CodeBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := call(s, "POST", "/api/v1/auth/login", tc.ctype, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if p := problemOf(t, w); p.Code != tc.code || p.Status != tc.status {
				t.Fatalf("problem %+v, want code %s", p, tc.code)
			}
		})
	}
}

func TestUnmatchedRoutesAreProblems(t *testing.T) {
	s := offlineServer(t)
	w := call(s, "PUT", "/api/v1/auth/login", "application/json", `{}`)
	if w.Code != 405 || problemOf(t, w).Code != CodeMethodNotAllowed || w.Header().Get("Allow") == "" {
		t.Fatalf("405 expected with Allow: %d %v %s", w.Code, w.Header(), w.Body)
	}
	w = call(s, "DELETE", "/api/v1/users", "", "")
	if w.Code != 405 || !strings.Contains(w.Header().Get("Allow"), "GET") {
		t.Fatalf("405 expected: %d %v", w.Code, w.Header())
	}
	w = call(s, "GET", "/api/v1/nothing", "", "")
	if w.Code != 404 || problemOf(t, w).Code != CodeNotFound {
		t.Fatalf("404 expected: %d %s", w.Code, w.Body)
	}
	for _, h := range []string{"X-Content-Type-Options", "Cache-Control", "X-Request-Id"} {
		if w.Header().Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
}

func TestBearerRequired(t *testing.T) {
	s := offlineServer(t)
	w := call(s, "GET", "/api/v1/agents", "", "")
	if w.Code != 401 || problemOf(t, w).Code != CodeAuthRequired || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
	}
	w = call(s, "GET", "/api/v1/agents", "", "", "Authorization", "Bearer not-a-jwt")
	if w.Code != 401 || problemOf(t, w).Code != CodeInvalidToken {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	w = call(s, "GET", "/api/v1/agents", "", "", "Authorization", "Basic YTpi")
	if w.Code != 401 || problemOf(t, w).Code != CodeAuthRequired {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

func TestSecretsInURLRefused(t *testing.T) {
	s := offlineServer(t)
	for _, u := range []string{
		"/api/v1/agents?key=iotsk_live_0123456789abcdefghijABCDEFGHIJ01abcdef",
		"/api/v1/agents?x=iotmp_abc",
		"/api/v1/agents?token=abc",
		"/api/v1/agents?access_token=abc",
		"/api/v1/agents?jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
		"/api/v1/device/prov_0123456789abcdefghijABCDEFGHIJ01abcdef/state",
		"/api/v1/agents/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
		"/api/v1/agents?c=%69otsk_live_abcd",
	} {
		w := call(s, "GET", u, "", "")
		if w.Code != 400 || problemOf(t, w).Code != CodeSecretInURL {
			t.Errorf("%s: %d %s", u, w.Code, w.Body)
		}
		if strings.Contains(w.Body.String(), "iotsk_live_0") || strings.Contains(w.Body.String(), "eyJ") {
			t.Errorf("%s: secret echoed: %s", u, w.Body)
		}
	}
	// Ordinary query parameters pass the filter (and then need a token).
	if w := call(s, "GET", "/api/v1/agents?limit=5&cursor=123-0b5e8400-e29b-41d4-a716-446655440000", "", ""); w.Code != 401 {
		t.Errorf("ordinary query refused: %d %s", w.Code, w.Body)
	}
}

func TestCORS(t *testing.T) {
	off := offlineServer(t)
	w := call(off, "OPTIONS", "/api/v1/auth/login", "", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	if w.Header().Get("Access-Control-Allow-Origin") != "" || w.Code != 405 {
		t.Fatalf("CORS answered while off: %d %v", w.Code, w.Header())
	}
	on := offlineServer(t, func(c *Config) { c.CORSOrigins = []string{"https://dash.example"} })
	w = call(on, "OPTIONS", "/api/v1/auth/login", "", "", "Origin", "https://dash.example", "Access-Control-Request-Method", "POST")
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatalf("preflight of allowed origin: %d %v", w.Code, w.Header())
	}
	w = call(on, "OPTIONS", "/api/v1/auth/login", "", "", "Origin", "https://dash.example.evil", "Access-Control-Request-Method", "POST")
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS granted to an origin not on the list: %v", w.Header())
	}
	st, _ := store.Open("postgres://nobody@127.0.0.1:1/none", store.PoolOptions{})
	defer st.Close()
	tm, _ := token.New(token.Config{Secret: []byte("Zq8LmW2xVt5RbN7cPy3KdF6hJs9GaE1uQo4Ti0")})
	for _, bad := range []string{"*", "https://a.example/", "a.example"} {
		if _, err := New(Config{Store: st, Tokens: tm, CORSOrigins: []string{bad}}); err == nil {
			t.Errorf("CORS origin %q accepted", bad)
		}
	}
}

type codedErr struct{ code string }

func (e codedErr) Error() string       { return "no license is installed; set LICENSE_KEY" }
func (e codedErr) ProblemCode() string { return e.code }

func TestToProblem(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{licenseError(codedErr{"license_missing"}), 403, "license_missing"},
		{licenseError(errors.New("opaque")), 403, CodeLicenseRestricted},
		{store.ErrNotFound, 404, CodeNotFound},
		{context.DeadlineExceeded, 503, CodeUnavailable},
		{fmt.Errorf("revoke key: %w", store.ErrNotConfirmed), 503, CodeCommitNotConfirmed},
		{errors.New(`pq: relation "users" SELECT secret`), 500, CodeInternal},
	} {
		p := toProblem(tc.err)
		if p.Status != tc.status || p.Code != tc.code {
			t.Errorf("%v → %d %s, want %d %s", tc.err, p.Status, p.Code, tc.status, tc.code)
		}
		if tc.status == 500 && strings.Contains(p.Detail, "relation") {
			t.Errorf("500 detail leaks the cause: %s", p.Detail)
		}
	}
}

func TestPanicsBecomeOpaque500(t *testing.T) {
	s := offlineServer(t, func(c *Config) {
		c.ExtraRoutes = []Route{{Method: "GET", Path: "/boom", Roles: publicAccess, OpenAPI: json.RawMessage(`{"responses":{}}`),
			Handler: func(http.ResponseWriter, *http.Request) error { panic("boom with iotsk_live_secretsecret") }}}
	})
	w := call(s, "GET", "/boom", "", "")
	body, _ := io.ReadAll(w.Body)
	if w.Code != 500 || strings.Contains(string(body), "boom") || strings.Contains(string(body), "iotsk") {
		t.Fatalf("%d %s", w.Code, body)
	}
}

func TestHelpers(t *testing.T) {
	if !etagMatches(`W/"3", "4"`, `"4"`) || !etagMatches(`*`, `"1"`) || etagMatches(`"3"`, `"4"`) {
		t.Error("etagMatches")
	}
	if _, _, ok := parseCursor("123-0b5e8400-e29b-41d4-a716-446655440000"); !ok {
		t.Error("valid cursor refused")
	}
	for _, c := range []string{"", "x", "-1-0b5e8400-e29b-41d4-a716-446655440000", "12-notauuid"} {
		if _, _, ok := parseCursor(c); ok {
			t.Errorf("cursor %q accepted", c)
		}
	}
	for e, ok := range map[string]bool{"a@b.c": true, "admin@example.com": true, "a b@c.d": false, "@b.c": false, "a@": false, "ab": false, "a@b@c": false} {
		if ValidEmail(e) != ok {
			t.Errorf("ValidEmail(%q) != %v", e, ok)
		}
	}
}

func TestThrottleNet(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":             "192.0.2.7",
		"2001:db8:1:2:aaaa::1":  "2001:db8:1:2::/64",
		"2001:db8:1:2:bbbb::ff": "2001:db8:1:2::/64",
		"::ffff:192.0.2.7":      "::ffff:192.0.2.7",
		"not an address":        "not an address",
	} {
		if got := throttleNet(in); got != want {
			t.Errorf("throttleNet(%q) = %q, want %q", in, got, want)
		}
	}
}
