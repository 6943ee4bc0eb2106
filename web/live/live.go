// Package live serves iotauth's browser client (docs/live.md): the /live page, where an operator signs in,
// exchanges the access token for short-lived MQTT credentials (POST /api/v1/tokens/exchange with
// {"provider":"iotauth"}) and watches one agent's messages over MQTT/WebSockets.
//
// The page is static: HTML, our own scripts (live.js: sign-in and exchange; watch.js: the MQTT session
// and the message list, which the console's Watch live runs too, see SharedFile) and style sheet, and
// MQTT.js's browser bundle, all embedded in the binary. The bundle comes from npm (package.json and package-lock.json beside this file pin
// it); `make build` runs `npm ci` and copies node_modules/mqtt/dist/mqtt.min.js into static/vendor/,
// which is git-ignored. A build without that step still compiles: the page then says that the bundle
// is missing (BundleBuilt reports it).
//
// Every answer carries a strict Content-Security-Policy (scripts and styles from this origin only, no
// inline code, WebSocket connections to the configured broker only, no framing, no native form
// submission), so that the tokens the page holds in memory cannot be read by injected script. Nothing
// served here is secret: the configuration endpoint tells the broker's WebSocket URL and no more.
package live

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed static
var static embed.FS

// BundlePath is where MQTT.js's browser bundle is embedded from (relative to this package), and
// BundleURL where the page loads it.
const (
	BundlePath = "static/vendor/mqtt.min.js"
	BundleURL  = "/live/vendor/mqtt.min.js"
)

// Config configures the page.
type Config struct {
	// MQTTWebSocketURL is the broker's MQTT-over-WebSockets listener as the browser reaches it
	// (ws://127.0.0.1:9001/ or wss://mqtt.example.com/mqtt). Required; see ParseWebSocketURL.
	MQTTWebSocketURL string
}

// ErrBadWebSocketURL is returned for an MQTT_WS_URL the page cannot use.
var ErrBadWebSocketURL = errors.New("MQTT_WS_URL must be a ws:// or wss:// URL with a host, and no user, password, query or fragment (e.g. ws://127.0.0.1:9001/ or wss://mqtt.example.com/mqtt)")

// ParseWebSocketURL checks an MQTT_WS_URL: ws or wss, a host, no credentials (they would be a secret in
// a URL the page hands to everyone), no query or fragment.
func ParseWebSocketURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %q does not parse", ErrBadWebSocketURL, raw)
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.Hostname() == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: got %q", ErrBadWebSocketURL, u.Redacted())
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return u, nil
}

// Page is one route of the page: a ServeMux pattern and its handler.
type Page struct {
	Pattern string
	Handler http.Handler
}

// BundleBuilt reports whether MQTT.js's bundle was embedded (false in a build that skipped `make`'s
// npm step: the page then loads but cannot connect, and says why).
func BundleBuilt() bool {
	_, err := fs.Stat(static, BundlePath)
	return err == nil
}

// Pages returns the page's routes: GET /live (and /live/), its script, style sheet and MQTT.js bundle,
// and GET /live/config.json. Unknown paths under /live/ are left to the caller's mux (a 404).
func Pages(c Config) ([]Page, error) {
	u, err := ParseWebSocketURL(c.MQTTWebSocketURL)
	if err != nil {
		return nil, err
	}
	csp := ContentSecurityPolicy(u)
	cfg, err := json.Marshal(pageConfig{MQTTWebSocketURL: u.String()})
	if err != nil {
		return nil, err
	}
	file := func(name, ctype string) http.Handler {
		body, ferr := static.ReadFile("static/" + name)
		if ferr != nil {
			err = errors.Join(err, fmt.Errorf("live: embedded %s: %w", name, ferr))
		}
		return serveBytes(csp, ctype, body)
	}
	index := file("index.html", "text/html; charset=utf-8")
	pages := []Page{
		{"GET /live", index},
		{"GET /live/{$}", index},
		{"GET /live/live.js", file("live.js", "text/javascript; charset=utf-8")},
		{"GET /live/watch.js", file("watch.js", "text/javascript; charset=utf-8")},
		{"GET /live/live.css", file("live.css", "text/css; charset=utf-8")},
		{"GET /live/config.json", serveBytes(csp, "application/json", cfg)},
	}
	if BundleBuilt() {
		pages = append(pages, Page{"GET " + BundleURL, file("vendor/mqtt.min.js", "text/javascript; charset=utf-8")})
	}
	if err != nil {
		return nil, err
	}
	return pages, nil
}

// Shared files: the page's MQTT part and MQTT.js's bundle, which the console's Watch live serves too
// (docs/console.md), so that the client code exists once.
const (
	WatchScript = "watch.js"
	BundleFile  = "vendor/mqtt.min.js"
)

// SharedFile returns one of the shared files (WatchScript or BundleFile) as embedded; BundleFile is
// missing (fs.ErrNotExist) in a build that skipped `make`'s npm step.
func SharedFile(name string) ([]byte, error) {
	if name != WatchScript && name != BundleFile {
		return nil, fs.ErrNotExist
	}
	return static.ReadFile("static/" + name)
}

// pageConfig is GET /live/config.json: what the page needs to know that is not in its files. Never a
// secret.
type pageConfig struct {
	MQTTWebSocketURL string `json:"mqttWsUrl"`
}

// ContentSecurityPolicy is the policy of every answer under /live: only this origin's scripts and
// styles (no inline code, no eval), fetches to this origin and WebSockets to the broker's origin only,
// no plugins, no <base>, no framing, and no native form submission (the page's script sends the login
// itself; were it blocked, the browser must not fall back to sending the password in a URL).
func ContentSecurityPolicy(ws *url.URL) string {
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self' " + ws.Scheme + "://" + ws.Host + "; " +
		"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// serveBytes answers with body and the page's security headers.
func serveBytes(csp, ctype string, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Content-Type", ctype)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}
