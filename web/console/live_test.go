package console

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/web/live"
)

// TestWatchLiveConfiguration: without MQTT_WS_URL there is no Watch live (no credential route, no live
// screen, no shared scripts, /console/session says not signed in); with one, the routes exist and a
// credential request without a session's CSRF token is refused with a JSON 403; a bad URL stops New.
func TestWatchLiveConfiguration(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	if _, err := New(Config{API: &fakeAPI{}, Store: noSessions{}, Key: key, MQTTWebSocketURL: "http://127.0.0.1:9001/"}); err == nil {
		t.Fatal("New accepted an http:// broker URL for Watch live")
	}
	serve := func(c *Console, method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		c.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	off := newTestConsole(t, &fakeAPI{})
	for _, p := range []string{"/console/live/credential", "/console/static/live/watch.js"} {
		m := http.MethodGet
		if strings.HasSuffix(p, "credential") {
			m = http.MethodPost
		}
		if w := serve(off, m, p); w.Code != http.StatusNotFound {
			t.Errorf("without a broker URL %s %s answers %d, want 404", m, p, w.Code)
		}
	}
	if w := serve(off, http.MethodGet, "/console/session"); w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"signedIn":false}` {
		t.Errorf("GET /console/session: %d %s", w.Code, w.Body.String())
	}

	on, err := New(Config{API: &fakeAPI{}, Store: noSessions{}, Key: key, MQTTWebSocketURL: "wss://mqtt.example.com/mqtt"})
	if err != nil {
		t.Fatal(err)
	}
	w := serve(on, http.MethodPost, "/console/live/credential")
	if w.Code != http.StatusForbidden || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") ||
		w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("a credential request without a session: %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Header().Get("Cache-Control"))
	}
	js := serve(on, http.MethodGet, "/console/static/live/watch.js")
	want, _ := live.SharedFile(live.WatchScript)
	if js.Code != 200 || js.Body.String() != string(want) || !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") {
		t.Errorf("GET watch.js: %d %q (%d bytes, want /live's %d)", js.Code, js.Header().Get("Content-Type"), js.Body.Len(), len(want))
	}
	if got := watchCSP(on.ws); !strings.HasSuffix(got, "; connect-src 'self' wss://mqtt.example.com") || strings.Contains(got, "unsafe") {
		t.Errorf("watch pages' CSP: %q", got)
	}
}

// TestWatchTemplatesHoldNoInlineCode: the Watch live markup adds no inline script, style or handler.
func TestWatchTemplatesHoldNoInlineCode(t *testing.T) {
	for _, name := range []string{"templates/live.html", "templates/agent.html", "templates/layout.html"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(string(b), -1) {
			if !strings.Contains(m, ` src="/console/static/`) {
				t.Errorf("%s has an inline or foreign script: %s", name, m)
			}
		}
		for _, bad := range []*regexp.Regexp{regexp.MustCompile(`(?i)<style`), regexp.MustCompile(`(?i)\sstyle=`),
			regexp.MustCompile(`(?i)\son[a-z]+=`), regexp.MustCompile(`(?i)javascript:`)} {
			if m := bad.FindString(string(b)); m != "" {
				t.Errorf("%s contains %q", name, m)
			}
		}
	}
}
