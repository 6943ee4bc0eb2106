package live

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestParseWebSocketURL(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"ws://127.0.0.1:9001/", "ws://127.0.0.1:9001/"},
		{"ws://127.0.0.1:9001", "ws://127.0.0.1:9001/"},
		{" wss://mqtt.example.com/mqtt ", "wss://mqtt.example.com/mqtt"},
		{"ws://[::1]:9001/", "ws://[::1]:9001/"},
	} {
		u, err := ParseWebSocketURL(tc.in)
		if err != nil || u.String() != tc.want {
			t.Errorf("ParseWebSocketURL(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
	for _, bad := range []string{
		"", "127.0.0.1:9001", "http://127.0.0.1:9001/", "tcp://127.0.0.1:1883", "ws:///mqtt", "ws://:9001/",
		"ws://user:pass@127.0.0.1:9001/", "ws://127.0.0.1:9001/?token=x", "ws://127.0.0.1:9001/#x", "ws:opaque",
	} {
		_, err := ParseWebSocketURL(bad)
		if !errors.Is(err, ErrBadWebSocketURL) {
			t.Errorf("ParseWebSocketURL(%q) accepted (err %v)", bad, err)
			continue
		}
		if strings.Contains(err.Error(), "pass@") {
			t.Errorf("the error echoes a password: %v", err)
		}
	}
}

func servePages(t *testing.T, wsURL string) http.Handler {
	t.Helper()
	pages, err := Pages(Config{MQTTWebSocketURL: wsURL})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range pages {
		mux.Handle(p.Pattern, p.Handler)
	}
	return mux
}

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

// TestPagesHeaders: every file is served with its type, nosniff, no framing and a CSP that allows no
// inline script or style and WebSockets only to the broker's origin.
func TestPagesHeaders(t *testing.T) {
	h := servePages(t, "ws://127.0.0.1:9001/mqtt")
	for path, ctype := range map[string]string{
		"/live":             "text/html",
		"/live/":            "text/html",
		"/live/live.js":     "text/javascript",
		"/live/watch.js":    "text/javascript",
		"/live/live.css":    "text/css",
		"/live/config.json": "application/json",
	} {
		w := get(h, path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		csp := w.Header().Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self';", "style-src 'self';", "connect-src 'self' ws://127.0.0.1:9001;", "frame-ancestors 'none'", "form-action 'none'", "object-src 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") || strings.Contains(csp, "data:") || strings.Contains(csp, "blob:") {
			t.Errorf("GET %s: CSP %q allows too much", path, csp)
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, w.Header())
		}
	}
	var cfg map[string]any
	if err := json.Unmarshal(get(h, "/live/config.json").Body.Bytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg) != 1 || cfg["mqttWsUrl"] != "ws://127.0.0.1:9001/mqtt" {
		t.Fatalf("config.json = %v", cfg)
	}
	if BundleBuilt() != (get(h, BundleURL).Code == 200) {
		t.Fatalf("the bundle is built: %v, but GET %s answers %d", BundleBuilt(), BundleURL, get(h, BundleURL).Code)
	}
}

// TestNoInlineCodeNoStorage checks the page's own files: no inline script, style or event handler
// (the CSP would block them), and no browser storage in our script (docs/security.md, U1: tokens live in
// memory only; the browser test checks the storage too).
func TestNoInlineCodeNoStorage(t *testing.T) {
	html, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(string(html), -1) {
		if !strings.Contains(m, ` src="/live/`) {
			t.Errorf("index.html has an inline or foreign script: %s", m)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<style`), regexp.MustCompile(`(?i)\sstyle=`), regexp.MustCompile(`(?i)\son[a-z]+=`),
		regexp.MustCompile(`(?i)javascript:`), regexp.MustCompile(`(?i)https?://`),
	} {
		if m := bad.FindString(string(html)); m != "" {
			t.Errorf("index.html contains %q", m)
		}
	}
	for _, name := range []string{"live.js", "watch.js"} {
		js, err := static.ReadFile("static/" + name)
		if err != nil {
			t.Fatal(err)
		}
		// Comments name what the code avoids; check the code only (neither script has "//" inside strings).
		code := regexp.MustCompile(`//.*`).ReplaceAllString(string(js), "")
		for _, bad := range []string{"localStorage", "sessionStorage", "document.cookie", "indexedDB", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"} {
			if strings.Contains(code, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}
