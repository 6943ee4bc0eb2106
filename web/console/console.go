// Package console owns the operator console: server-rendered HTML pages at /console/, built
// from templates and static files embedded in the binary, that drive the REST API in-process. Every
// action is an ordinary API request (the same handlers, role checks, rights, throttles and audit events
// as over HTTP) made on behalf of the signed-in operator; the console itself decides nothing about who
// may do what. It adds only what a browser needs: a session cookie (HttpOnly, SameSite=Strict, Secure
// under TLS) holding an opaque id whose state lives in PostgreSQL and is checked on every request, a
// CSRF token bound to the session on every form, and strict security headers (docs/security.md, U1, H3, H4).
package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/web/live"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Prefix is where the console is mounted.
const Prefix = "/console/"

// ContentSecurityPolicy is sent with every console answer: no inline script or style, nothing from
// another origin, no framing, forms post only here. QR codes are data: images.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"

// API is what the console needs of the REST API: its handler (requests are served through it
// in-process), its route table (to show only the buttons the operator's role may use), and its
// judgement of whether a client came over TLS (for the cookies' Secure flag). *api.Server is one.
type API interface {
	http.Handler
	Routes() []api.Route
	ClientHTTPS(r *http.Request) bool
	// ClientAddr is the client's address as the API judges it (for the sign-out's audit event).
	ClientAddr(r *http.Request) string
	// RefreshFamily checks a refresh token from the API's login and names its user and family.
	RefreshFamily(refreshToken string) (userID, family string, err error)
}

// Config configures a Console.
type Config struct {
	// API serves every request the console makes; required.
	API API
	// Store keeps the console's sessions and counts its lists. Default: the API's own database, when
	// API offers it (ConsoleSessions() *store.Store, as *api.Server does); otherwise required.
	Store Store
	// Key derives the CSRF tokens; at least 32 bytes. Replicas behind one load balancer must share it
	// (`iotauth serve` derives it from the JWT signing key). Default: random, which suits a single
	// replica only (a restart then invalidates the forms open in browsers).
	Key []byte
	// IdleTimeout ends a session not used for this long (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxLifetime ends a session this long after sign-in, used or not (default DefaultMaxLifetime).
	MaxLifetime time.Duration
	// Logger receives console errors (never a cookie, token or key). Default: discard.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MQTTWebSocketURL is the broker's MQTT-over-WebSockets URL as browsers reach it (MQTT_WS_URL, as
	// for /live). Set, the console offers Watch live (the agent page and /console/live); empty, not.
	MQTTWebSocketURL string
}

// Console is the operator console as an http.Handler for the paths under Prefix. It owns the route
// table and the wrapping every page and action shares (the session, the CSRF check, the operator from
// the API); each screen is its own type holding only what it uses.
type Console struct {
	mux   *http.ServeMux
	roles map[string][]string // "METHOD /api/path" → roles, from the API's route table
	ws    *url.URL            // the broker's WebSocket URL for Watch live; nil: not offered
	log   *slog.Logger
	sess  *sessions
	api   *apiClient
	ui    *ui

	// The screens.
	login    *loginScreen
	overview *overviewScreen
	agents   *agentsScreen
	keys     *keysScreen
	admin    *adminScreen
	live     *liveScreen
}

// New builds a Console.
func New(c Config) (*Console, error) {
	if c.API == nil {
		return nil, errors.New("console: API is required")
	}
	if c.Store == nil {
		if src, ok := c.API.(interface{ ConsoleSessions() *store.Store }); ok && src.ConsoleSessions() != nil {
			c.Store = storeOf(src.ConsoleSessions())
		} else {
			return nil, errors.New("console: Store is required (the API does not offer its own)")
		}
	}
	if len(c.Key) == 0 {
		c.Key = make([]byte, 32)
		if _, err := rand.Read(c.Key); err != nil {
			return nil, fmt.Errorf("console: make a CSRF key: %w", err)
		}
	} else if len(c.Key) < 32 {
		return nil, errors.New("console: Key must be at least 32 bytes (or leave it empty for a random one)")
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = DefaultMaxLifetime
	}
	if c.IdleTimeout < 0 || c.MaxLifetime < 0 {
		return nil, errors.New("console: IdleTimeout and MaxLifetime must be positive (or zero for the defaults)")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var ws *url.URL
	if c.MQTTWebSocketURL != "" {
		u, err := live.ParseWebSocketURL(c.MQTTWebSocketURL)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		ws = u
	}
	k := hmac.New(sha256.New, c.Key)
	k.Write([]byte("iotauth console v1"))
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	masters, err := parsePages()
	if err != nil {
		return nil, err
	}
	sess := &sessions{db: c.Store, api: c.API, key: k.Sum(nil), now: c.Now, idle: c.IdleTimeout}
	client := &apiClient{API: c.API}
	ui := &ui{log: c.Logger, pages: pages, masters: masters, sess: sess}
	names := &namer{db: c.Store, api: client, log: c.Logger}
	con := &Console{mux: http.NewServeMux(), roles: map[string][]string{}, ws: ws, log: c.Logger, sess: sess, api: client, ui: ui,
		login:    &loginScreen{api: client, db: c.Store, sess: sess, ui: ui, log: c.Logger, now: c.Now, maxLife: c.MaxLifetime},
		overview: &overviewScreen{api: client, db: c.Store, ui: ui, names: names, now: c.Now},
		agents:   &agentsScreen{api: client, db: c.Store, ui: ui, names: names, now: c.Now, ws: ws},
		keys:     &keysScreen{api: client, db: c.Store, ui: ui, names: names},
		admin:    &adminScreen{api: client, db: c.Store, ui: ui, names: names, now: c.Now},
		live:     &liveScreen{api: client, sess: sess, ui: ui, names: names, log: c.Logger, ws: ws},
	}
	for _, rt := range c.API.Routes() {
		con.roles[rt.Pattern()] = rt.Roles
	}
	con.routes()
	return con, nil
}

// Mount returns a handler that serves the console under Prefix and everything else with next (the
// REST API): what `iotauth serve` listens with.
func Mount(con *Console, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Prefix, con)
	mux.Handle("GET /console", http.RedirectHandler(Prefix, http.StatusFound))
	mux.Handle("/", next)
	return mux
}

// ServeHTTP sets the security headers and serves the console's routes.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the console's own
	// form posts, and the Origin check needs the real one. Console URLs never carry secrets.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		// Pages may show a secret once; none is ever kept by the browser or a proxy.
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// static serves the embedded CSS and JS.
func (c *Console) static() http.Handler {
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

// may reports whether role may call the API route pattern ("DELETE /api/v1/auth/api-keys/{id}"), as
// the API's own route table says.
func (c *Console) may(role, pattern string) bool {
	roles, ok := c.roles[pattern]
	if !ok {
		return false
	}
	for _, r := range roles {
		if r == role {
			return true
		}
	}
	return false
}
