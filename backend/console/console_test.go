package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/api"
)

// fakeAPI stands in for the REST API in unit tests: a route table, a TLS verdict, and a handler that
// accepts only the access token "good" (and swaps the refresh token "r1" for the pair good/r2).
type fakeAPI struct {
	https     bool
	refreshes int
	seen      []*http.Request
}

func (f *fakeAPI) Routes() []api.Route {
	return []api.Route{
		{Method: "GET", Path: "/api/v1/agents", Roles: []string{"admin", "operator", "viewer"}},
		{Method: "DELETE", Path: "/api/v1/auth/api-keys/{id}", Roles: []string{"admin"}},
	}
}

func (f *fakeAPI) ClientHTTPS(*http.Request) bool { return f.https }

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.seen = append(f.seen, r)
	if r.URL.Path == "/api/v1/auth/refresh" {
		var body struct{ RefreshToken string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.RefreshToken != "r1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.refreshes++
		_, _ = io.WriteString(w, `{"accessToken":"good","refreshToken":"r2"}`)
		return
	}
	if r.Header.Get("Authorization") != "Bearer good" {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"code":"invalid_token","detail":"expired"}`)
		return
	}
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func newTestConsole(t *testing.T, f *fakeAPI) *Console {
	t.Helper()
	c, err := New(Config{API: f, Key: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSessionCookieIsSigned(t *testing.T) {
	c := newTestConsole(t, &fakeAPI{})
	other, _ := New(Config{API: &fakeAPI{}, Key: []byte(strings.Repeat("o", 32))})
	v := c.encode(&session{ID: "sid", Access: "a", Refresh: "r"})
	if s := c.decode(v); s == nil || s.ID != "sid" || s.Access != "a" || s.Refresh != "r" {
		t.Fatalf("round trip: %+v", s)
	}
	payload, mac, _ := strings.Cut(v, ".")
	for name, bad := range map[string]string{
		"other key":       other.encode(&session{ID: "sid", Access: "a", Refresh: "r"}),
		"edited payload":  strings.ToUpper(payload[:4]) + payload[4:] + "." + mac,
		"no mac":          payload,
		"empty":           "",
		"mac of another":  c.encode(&session{ID: "x"})[:len(payload)] + "." + mac,
		"garbage":         "%%%.%%%",
		"empty id signed": c.encode(&session{}),
	} {
		if s := c.decode(bad); s != nil {
			t.Errorf("%s: decoded to %+v", name, s)
		}
	}
}

func TestCSRFCheck(t *testing.T) {
	c := newTestConsole(t, &fakeAPI{})
	s := &session{ID: "sid"}
	good := c.csrfToken(s)
	for _, tc := range []struct {
		name    string
		token   string
		origin  string
		site    string
		session *session
		want    bool
	}{
		{"token and same origin", good, "http://console.test", "same-origin", s, true},
		{"token, no origin header", good, "", "", s, true},
		{"https origin of the same host", good, "https://console.test", "", s, true},
		{"no token", "", "http://console.test", "", s, false},
		{"token of another session", c.csrfToken(&session{ID: "other"}), "http://console.test", "", s, false},
		{"foreign origin", good, "http://evil.test", "", s, false},
		{"null origin", good, "null", "", s, false},
		{"cross-site fetch", good, "", "cross-site", s, false},
		{"no session", good, "", "", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://console.test/console/keys/1/revoke", strings.NewReader(url.Values{"csrf": {tc.token}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.site != "" {
				r.Header.Set("Sec-Fetch-Site", tc.site)
			}
			if got := c.checkCSRF(r, tc.session); got != tc.want {
				t.Fatalf("checkCSRF = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCookieFlagsFollowTLS(t *testing.T) {
	for _, https := range []bool{false, true} {
		c := newTestConsole(t, &fakeAPI{https: https})
		rec := httptest.NewRecorder()
		c.saveSession(rec, httptest.NewRequest("GET", "/console/", nil), &session{ID: "sid"})
		ck := rec.Result().Cookies()[0]
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure != https || ck.Path != Prefix {
			t.Fatalf("https %v: cookie %+v", https, ck)
		}
	}
}

func TestRolesComeFromTheRouteTable(t *testing.T) {
	c := newTestConsole(t, &fakeAPI{})
	for _, tc := range []struct {
		role, pattern string
		want          bool
	}{
		{"viewer", "GET /api/v1/agents", true},
		{"viewer", "DELETE /api/v1/auth/api-keys/{id}", false},
		{"admin", "DELETE /api/v1/auth/api-keys/{id}", true},
		{"admin", "POST /api/v1/nowhere", false},
	} {
		if got := c.may(tc.role, tc.pattern); got != tc.want {
			t.Errorf("may(%s, %s) = %v", tc.role, tc.pattern, got)
		}
	}
}

// TestCallRefreshesOnce: an expired access token is swapped once through the refresh route and the
// request retried; the session is marked to be written back. A refused refresh ends the session.
func TestCallRefreshesOnce(t *testing.T) {
	f := &fakeAPI{}
	c := newTestConsole(t, f)
	r := httptest.NewRequest("GET", "/console/agents", nil)
	r.RemoteAddr = "192.0.2.7:4711"
	s := &session{ID: "sid", Access: "stale", Refresh: "r1"}
	res, err := c.call(r, s, "GET", "/api/v1/agents", nil, nil)
	if err != nil || !res.ok() || f.refreshes != 1 || !s.dirty || s.Access != "good" || s.Refresh != "r2" {
		t.Fatalf("call: %v %d refreshes %d session %+v", err, res.Status, f.refreshes, s)
	}
	for _, seen := range f.seen {
		if seen.RemoteAddr != r.RemoteAddr {
			t.Fatalf("the API saw the client as %q, want the browser's %q", seen.RemoteAddr, r.RemoteAddr)
		}
	}
	// A second request of the same session that still holds the spent token (another tab) gets the same
	// new pair without spending the token again (which would revoke the family).
	again := &session{ID: "sid", Access: "stale", Refresh: "r1"}
	if res, err := c.call(r, again, "GET", "/api/v1/agents", nil, nil); err != nil || !res.ok() || f.refreshes != 1 || again.Refresh != "r2" {
		t.Fatalf("concurrent refresh: %v, %d refreshes, session %+v", err, f.refreshes, again)
	}
	// Another session presenting that token gets nothing from the grace.
	thief := &session{ID: "other", Access: "stale", Refresh: "r1"}
	if _, err := c.call(r, thief, "GET", "/api/v1/agents", nil, nil); err != nil || f.refreshes != 2 {
		t.Fatalf("another session's refresh went to the API? %v, %d refreshes", err, f.refreshes)
	}
	s = &session{ID: "sid", Access: "stale", Refresh: "spent"}
	if _, err := c.call(r, s, "GET", "/api/v1/agents", nil, nil); err != errSignedOut {
		t.Fatalf("refused refresh: %v, want errSignedOut", err)
	}
}
