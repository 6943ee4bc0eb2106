package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/store"
	zxdecoder "github.com/makiuchi-d/gozxing/qrcode/decoder"
	qrcode "github.com/skip2/go-qrcode"
)

// fakeAPI stands in for the REST API in unit tests: a route table, a TLS verdict, and a handler that
// answers 401 to a request for the user "gone" and 200 to any other.
type fakeAPI struct {
	https bool
	seen  []*http.Request
}

func (f *fakeAPI) Routes() []api.Route {
	return []api.Route{
		{Method: "GET", Path: "/api/v1/agents", Roles: []string{"admin", "operator", "viewer"}},
		{Method: "DELETE", Path: "/api/v1/auth/api-keys/{id}", Roles: []string{"admin"}},
	}
}

func (f *fakeAPI) ClientHTTPS(*http.Request) bool { return f.https }

func (f *fakeAPI) ClientAddr(r *http.Request) string { return r.RemoteAddr }

func (f *fakeAPI) RefreshFamily(string) (string, string, error) {
	return "", "", errors.New("not in unit tests")
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.seen = append(f.seen, r)
	if r.Header.Get("X-Test-User") == "gone" {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"code":"invalid_token","detail":"gone"}`)
		return
	}
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// noSessions is a session store that knows no session.
type noSessions struct{}

func (noSessions) CreateConsoleSession(context.Context, store.ConsoleSession) error { return nil }
func (noSessions) TouchConsoleSession(context.Context, []byte, time.Time, time.Duration) (store.ConsoleSession, error) {
	return store.ConsoleSession{}, store.ErrNotFound
}
func (noSessions) EndConsoleSession(context.Context, []byte, store.AuditEvent) error {
	return store.ErrNotFound
}

func (noSessions) CountAgentList(context.Context, store.AgentPage) (int64, error) { return 0, nil }
func (noSessions) CountAPIKeys(context.Context, string) (int64, error)            { return 0, nil }
func (noSessions) CountAppKeys(context.Context) (int64, error)                    { return 0, nil }
func (noSessions) CountPublishableKeys(context.Context) (int64, error)            { return 0, nil }
func (noSessions) CountProvisioningKeys(context.Context) (int64, error)           { return 0, nil }
func (noSessions) RefNames(context.Context, []string) (map[string]string, error)  { return nil, nil }
func (noSessions) PresenceActivity(context.Context, time.Time, time.Duration, int) ([]store.ActivityPoint, error) {
	return nil, nil
}
func (noSessions) CountUsers(context.Context) (int64, error)                  { return 0, nil }
func (noSessions) CountAudit(context.Context, store.AuditPage) (int64, error) { return 0, nil }

func newTestConsole(t *testing.T, f *fakeAPI) *Console {
	t.Helper()
	c, err := New(Config{API: f, Store: noSessions{}, Key: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSessionCookieIsOpaque: the cookie holds 32 random bytes and nothing else; anything else is no
// session at all, and the database keeps only the id's digest.
func TestSessionCookieIsOpaque(t *testing.T) {
	c := newTestConsole(t, &fakeAPI{})
	id := newSessionID()
	if !validSessionID(id) || id == newSessionID() {
		t.Fatalf("session id %q: not 32 random bytes", id)
	}
	if d := digestOf(id); len(d) != 32 || strings.Contains(string(d), id) {
		t.Fatalf("digest of the id: %x", d)
	}
	for name, v := range map[string]string{
		"a signed payload": "eyJzIjoic2lkIiwiYSI6ImEifQ.bWFj",
		"short":            id[:20],
		"long":             id + "A",
		"not base64url":    strings.Repeat("%", sessionIDLen),
		"empty":            "",
	} {
		r := httptest.NewRequest("GET", "/console/agents", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v})
		if s, err := c.sess.sessionOf(r); s != nil || err != nil {
			t.Errorf("%s: session %+v, %v", name, s, err)
		}
	}
	r := httptest.NewRequest("GET", "/console/agents", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: id})
	if s, err := c.sess.sessionOf(r); err != nil || s == nil || s.ID != id || s.signedIn() {
		t.Fatalf("an id unknown to the store: %+v, %v (want anonymous)", s, err)
	}
}

func TestCSRFCheck(t *testing.T) {
	c := newTestConsole(t, &fakeAPI{})
	s := &session{ID: "sid"}
	good := c.sess.csrfToken(s)
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
		{"token of another session", c.sess.csrfToken(&session{ID: "other"}), "http://console.test", "", s, false},
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
			if got := c.sess.checkCSRF(r, tc.session); got != tc.want {
				t.Fatalf("checkCSRF = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCookieFlagsFollowTLS(t *testing.T) {
	for _, https := range []bool{false, true} {
		c := newTestConsole(t, &fakeAPI{https: https})
		rec := httptest.NewRecorder()
		c.sess.saveSession(rec, httptest.NewRequest("GET", "/console/", nil), &session{ID: "sid"})
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

// TestCallIsTheOperators: the console's API requests carry the browser's address and the session's
// user (never a token), and an API refusal of the user ends the session.
func TestCallIsTheOperators(t *testing.T) {
	f := &fakeAPI{}
	c := newTestConsole(t, f)
	r := httptest.NewRequest("GET", "/console/agents", nil)
	r.RemoteAddr = "192.0.2.7:4711"
	res, err := c.api.call(r, &session{ID: "sid", UserID: "u1"}, "GET", "/api/v1/agents", nil, nil)
	if err != nil || !res.ok() {
		t.Fatalf("call: %v %d", err, res.Status)
	}
	for _, seen := range f.seen {
		if seen.RemoteAddr != r.RemoteAddr {
			t.Fatalf("the API saw the client as %q, want the browser's %q", seen.RemoteAddr, r.RemoteAddr)
		}
		if seen.Header.Get("Authorization") != "" {
			t.Fatalf("the console sent an Authorization header")
		}
	}
	if _, err := c.api.call(r, &session{ID: "sid"}, "GET", "/api/v1/agents", nil, nil); err != errSignedOut {
		t.Fatalf("anonymous session: %v, want errSignedOut", err)
	}
	if _, err := c.api.call(r, &session{ID: "sid", UserID: "u1"}, "GET", "/api/v1/agents", nil, http.Header{"X-Test-User": {"gone"}}); err != errSignedOut {
		t.Fatalf("user refused by the API: %v, want errSignedOut", err)
	}
}

// TestQRCodeModulesDecode: the console's QR code for many random provisioning keys, read back from its
// module grid by an independent decoder, always gives the payload (no image detection involved, so the
// check is deterministic; the browser test compares the page's image with this encoder's drawing).
func TestQRCodeModulesDecode(t *testing.T) {
	for i := 0; i < 300; i++ {
		want, _ := json.Marshal(QRPayload{URL: "https://console.example:8443/api/v1/provision/agent", Key: "prov_" + newSessionID()[:38]})
		q, err := qrcode.New(string(want), QRLevel)
		if err != nil {
			t.Fatal(err)
		}
		q.DisableBorder = true
		res, err := zxdecoder.NewDecoder().DecodeBoolMapWithoutHint(q.Bitmap())
		if err != nil || res.GetText() != string(want) {
			t.Fatalf("payload %d: decoded %v, %v", i, res, err)
		}
	}
}
