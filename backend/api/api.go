// Package api owns iotauth's REST API: the route table on a Go 1.22 method-and-path
// http.ServeMux, operator authentication with JWTs and roles, device authentication with
// X-Device-API-Key, strict JSON decoding, RFC 9457 problem details with a stable `code`, the request
// middleware (panics, logging with secrets scrubbed, security headers, CORS, deadlines, metrics), the
// login throttle wiring, audit events, and the OpenAPI document. Storage is backend/store, tokens
// backend/token, licensing whatever implements Licenser.
package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/backend/service/agents"
	"github.com/iotauth/iotauth/backend/service/audit"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/service/users"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/throttle"
	"github.com/iotauth/iotauth/backend/token"
)

// Config configures a Server. Store and Tokens are required; everything else has a default.
type Config struct {
	Store  *store.Store
	Tokens *token.Manager
	// Logger receives one line per request and the details of every 500. Build it with
	// redact.Options so that nothing secret-shaped can reach the output. Default: discard.
	Logger *slog.Logger
	// Licenser decides registrations and premium features; Unlimited when nil (embedding and tests only:
	// `iotauth serve` always passes a license.Manager, which is restricted when no license is installed).
	Licenser Licenser

	// MQTTHost and MQTTPort are what a newly provisioned agent is told to connect to.
	MQTTHost string // default "localhost"
	MQTTPort int    // default 1883
	// KeyKind is the kind of device API key this deployment issues and accepts: secret.APIKey (live,
	// the default) or secret.TestAPIKey. The other kind is always refused.
	KeyKind secret.Kind

	// RefreshFamilyTTL is the absolute lifetime of a refresh-token family from login; rotation never
	// extends it (default 30 days).
	RefreshFamilyTTL time.Duration
	// LoginWindow, LoginMaxFailures and LoginMaxFailuresPerAddr configure the login throttle
	// (docs/security.md, L3, U2). Each email has a budget of LoginMaxFailures failures per window (default 5; an unknown
	// email's failures spend only its own), and so has each known-good device of an account (a login
	// with a valid device cookie is judged by its device's budget, not the account's). A client address
	// has LoginMaxFailuresPerAddr (default 20) for failures without a device cookie: past it, failed
	// logins from there answer 429 instead of 401, while a right password still gets in. Windows last
	// LoginWindow (default 15 minutes).
	LoginWindow             time.Duration
	LoginMaxFailures        int
	LoginMaxFailuresPerAddr int
	// LoginCounter holds the throttle's counts. Default: the Store's login_attempts table, which every
	// replica on the database shares.
	LoginCounter throttle.Counter
	// LoginKey signs device cookies and keys the throttle's budgets; replicas must share it (`iotauth
	// serve` derives it from the JWT signing key). Default: random, which suits a single replica only.
	LoginKey []byte
	// DeviceCookieTTL is how long a device cookie is honoured after the login that set it (default 180
	// days; every successful login renews it).
	DeviceCookieTTL time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed:
	// when the connection's peer is one, the client is the right-most X-Forwarded-For address that is
	// not. Empty (the default): the peer is the client and those headers are ignored.
	TrustedProxies []netip.Prefix
	// MaxConcurrentHashes caps concurrent argon2id computations (default: the number of CPUs).
	MaxConcurrentHashes int
	// RequestTimeout bounds every request's database work (default 15 s).
	RequestTimeout time.Duration
	// MaxBodyBytes bounds ordinary request bodies (default 64 KiB; state bodies may be 1 MiB).
	MaxBodyBytes int64
	// ProvisioningKeyTTL is the default lifetime of a provisioning key (24 h); MaxProvisioningKeyTTL the
	// longest a caller may ask for (30 days).
	ProvisioningKeyTTL    time.Duration
	MaxProvisioningKeyTTL time.Duration
	// CORSOrigins lists the exact origins (scheme://host[:port]) allowed to call the API from a browser.
	// Empty: CORS is off and no CORS header is ever sent.
	CORSOrigins []string
	// ExtraRoutes are registered after the built-in ones (a deployment's or a test's own routes). Each must
	// carry its OpenAPI operation.
	ExtraRoutes []Route
	// Pages are handlers that are not part of the REST API (the /live page), by ServeMux pattern. They
	// are registered on the same mux and pass through the same middleware (security headers, logging,
	// 404/405 as problem details), but they are not authenticated here and not in the OpenAPI document:
	// they must serve only what anyone may read.
	Pages []Page
	// Now is the clock (default time.Now).
	Now func() time.Time

	// Exchange configures POST /api/v1/tokens/exchange and publishable keys (docs/token-exchange.md).
	Exchange ExchangeConfig
	// Publisher sends what POST /api/v1/publish accepts to the broker (backend/bridge). Nil: the route
	// answers 503 broker_unavailable with how to configure the bridge.
	Publisher Publisher
	// PublishMaxPayload caps a publish's payload in bytes once decoded (default 256 KiB); the body limit
	// follows from it (its base64 size plus 8 KiB) and is enforced before the body is read.
	PublishMaxPayload int
	// PublishRate and PublishBurst are each application key's token bucket for publishes (default 10 a
	// second, burst 20).
	PublishRate  float64
	PublishBurst int
	// PublishTimeout bounds one publish, its wait for an in-flight slot and for the PUBACK included
	// (default 5 s; past it: 504 publish_timeout, or 503 publish_busy when no slot came free).
	PublishTimeout time.Duration

	appKeyKind secret.Kind // follows KeyKind: iotak_live_ or iotak_test_
}

// HandlerFunc is an API handler: it writes a success answer itself and returns an error for anything
// else, which the server turns into problem details (a *Problem as is, store.ErrNotFound as 404, a
// licenser error as 403, anything unknown as an opaque 500).
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Route is one entry of the route table.
type Route struct {
	// Method and Path form the ServeMux pattern, e.g. "GET" and "/api/v1/agents/{uuid}".
	Method string
	Path   string
	// Roles that may call the route with a Bearer access token. Nil (and Device false) makes the route
	// public.
	Roles []string
	// Right, when set, also admits an application key (Authorization: Bearer iotak_…) that holds it
	// (docs/app-keys.md). Without it only an operator's access token is accepted: users, roles and application
	// keys themselves are never reachable with an application key.
	Right string
	// KeyRefusal, on a route without Right, is the detail an application key is refused with (403
	// forbidden) when the route's own reason says more than the general one.
	KeyRefusal string
	// Device routes authenticate with X-Device-API-Key; the key's agent must match the {uuid} path value.
	Device bool
	// Publishable routes also admit a publishable key (Authorization: Bearer iotpk_…) from one of its
	// origins. Every other route refuses one (docs/security.md, T4).
	Publishable bool
	// Handler serves the route.
	Handler HandlerFunc
	// MaxBody overrides Config.MaxBodyBytes for this route.
	MaxBody int64
	// OpenAPI is the route's OpenAPI 3 operation object; required for ExtraRoutes (the built-in routes'
	// operations live in openapi.json).
	OpenAPI json.RawMessage
}

// Page is a non-API handler mounted beside the route table (see Config.Pages).
type Page struct {
	Pattern string
	Handler http.Handler
}

// Pattern is the ServeMux pattern of the route.
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// Role sets.
var (
	anyRole   = []string{store.RoleAdmin, store.RoleOperator, store.RoleViewer}
	adminOnly = []string{store.RoleAdmin}
	adminOrOp = []string{store.RoleAdmin, store.RoleOperator}
	// appKeyOnly authenticates but admits no operator role: only an application key holding the route's
	// Right gets in (an operator's access token gets 403).
	appKeyOnly   = []string{}
	publicAccess []string
)

// AnyRole returns the roles that every operator has, for ExtraRoutes.
func AnyRole() []string { return append([]string(nil), anyRole...) }

// Server is the REST API as an http.Handler.
type Server struct {
	cfg     Config
	st      *store.Store
	tokens  *token.Manager
	log     *slog.Logger
	lic     Licenser
	now     func() time.Time
	hashSem throttle.Semaphore
	metrics *metrics
	mux     *http.ServeMux
	routes  []Route
	openapi []byte
	cors    map[string]bool

	// The handlers of each domain, over its service.
	login  *loginAPI
	keys   keysAPI
	users  usersAPI
	agents *agentsAPI
	bridge *publishAPI
	x      *exchangeAPI
	admin  adminAPI
}

// New builds a Server.
func New(c Config) (*Server, error) {
	if c.Store == nil || c.Tokens == nil {
		return nil, errors.New("api: Store and Tokens are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Licenser == nil {
		c.Licenser = Unlimited{}
	}
	if c.MQTTHost == "" {
		c.MQTTHost = "localhost"
	}
	if c.MQTTPort == 0 {
		c.MQTTPort = 1883
	}
	if c.KeyKind.Prefix() == "" {
		c.KeyKind = secret.APIKey
	}
	if c.KeyKind != secret.APIKey && c.KeyKind != secret.TestAPIKey {
		return nil, errors.New("api: KeyKind must be secret.APIKey or secret.TestAPIKey")
	}
	c.appKeyKind = secret.AppKindFor(c.KeyKind)
	if c.RefreshFamilyTTL <= 0 {
		c.RefreshFamilyTTL = 30 * 24 * time.Hour
	}
	if c.LoginMaxFailuresPerAddr <= 0 {
		c.LoginMaxFailuresPerAddr = 20
	}
	if c.LoginCounter == nil {
		c.LoginCounter = c.Store.Accounts.LoginAttempts()
	}
	if len(c.LoginKey) == 0 {
		c.LoginKey = make([]byte, 32)
		if _, err := rand.Read(c.LoginKey); err != nil {
			return nil, fmt.Errorf("api: make a login key: %w", err)
		}
	} else if len(c.LoginKey) < 32 {
		return nil, errors.New("api: LoginKey must be at least 32 bytes (or leave it empty for a random one)")
	}
	if c.DeviceCookieTTL <= 0 {
		c.DeviceCookieTTL = 180 * 24 * time.Hour
	}
	if c.MaxConcurrentHashes <= 0 {
		c.MaxConcurrentHashes = runtime.NumCPU()
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 15 * time.Second
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = defaultMaxBody
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PublishMaxPayload <= 0 {
		c.PublishMaxPayload = DefaultPublishMaxPayload
	}
	if c.PublishRate <= 0 {
		c.PublishRate = DefaultPublishRate
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = DefaultPublishBurst
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	s := &Server{
		cfg: c, st: c.Store, tokens: c.Tokens, log: c.Logger, lic: c.Licenser, now: c.Now,
		hashSem: throttle.NewSemaphore(c.MaxConcurrentHashes),
		metrics: newMetrics(),
		mux:     http.NewServeMux(),
		cors:    map[string]bool{},
	}
	for _, o := range c.CORSOrigins {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" || strings.HasSuffix(o, "/") || !(strings.HasPrefix(o, "https://") || strings.HasPrefix(o, "http://")) {
			return nil, fmt.Errorf("api: CORS origin %q must be an exact scheme://host[:port] with no path or wildcard", o)
		}
		s.cors[o] = true
	}
	// The dummy hash makes a login for an unknown email cost the same argon2id verify as a real one
	// (docs/security.md, L2).
	dh, err := passhash.HashPassword(token.NewID())
	if err != nil {
		return nil, err
	}
	dummy, err := passhash.Parse(dh)
	if err != nil {
		return nil, err
	}
	s.login = &loginAPI{cfg: c, st: s.st, tokens: s.tokens, log: s.log, metrics: s.metrics, now: c.Now, hashSem: s.hashSem,
		acct:     throttle.New(c.LoginCounter, throttle.Config{Window: c.LoginWindow, MaxFailures: c.LoginMaxFailures, Now: c.Now}),
		addr:     throttle.New(c.LoginCounter, throttle.Config{Window: c.LoginWindow, MaxFailures: c.LoginMaxFailuresPerAddr, Now: c.Now}),
		dev:      throttle.New(c.LoginCounter, throttle.Config{Window: c.LoginWindow, MaxFailures: c.LoginMaxFailures, Now: c.Now}),
		loginKey: c.LoginKey, dummy: dummy, audit: s.audit}
	ks, err := keys.New(s.st.Keys, keys.Config{KeyKind: c.KeyKind, ProvisioningKeyTTL: c.ProvisioningKeyTTL,
		MaxProvisioningKeyTTL: c.MaxProvisioningKeyTTL, Now: c.Now, CheckProvider: providerCheck(c.Exchange.Providers)})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.keys = keysAPI{svc: ks, now: c.Now}
	s.users = usersAPI{svc: users.New(s.st.Accounts, users.Config{HashSem: s.hashSem})}
	s.agents = &agentsAPI{svc: agents.New(agents.StoreOf(s.st), agents.Config{KeyKind: c.KeyKind, Licenser: c.Licenser, Logger: c.Logger}),
		st: s.st, log: s.log, metrics: s.metrics, mqttHost: c.MQTTHost, mqttPort: c.MQTTPort, audit: s.audit}
	s.bridge = &publishAPI{cfg: c, metrics: s.metrics, svc: newPublishService(s.st.AuditTrail, c)}
	s.bridge.registerPublishMetrics()
	s.admin = adminAPI{st: s.st, audit: audit.New(s.st.AuditTrail), lic: c.Licenser, now: c.Now}
	xs, err := newExchangeService(s.st.AuditTrail, c.Exchange, c.Now, s.log)
	if err != nil {
		return nil, err
	}
	s.x = &exchangeAPI{cfg: c, st: s.st, svc: xs}
	s.routes = append(s.builtinRoutes(), c.ExtraRoutes...)
	for _, rt := range s.routes {
		if rt.Handler == nil {
			return nil, fmt.Errorf("api: route %s has no handler", rt.Pattern())
		}
		s.mux.Handle(rt.Pattern(), s.wrap(rt))
	}
	for _, p := range c.Pages {
		if err := s.handlePage(p); err != nil {
			return nil, err
		}
	}
	if s.openapi, err = buildOpenAPI(c.ExtraRoutes); err != nil {
		return nil, err
	}
	return s, nil
}

// handlePage registers a page, turning the mux's panic on a bad or clashing pattern into an error.
func (s *Server) handlePage(p Page) (err error) {
	if p.Handler == nil || !strings.HasPrefix(p.Pattern, "GET /") {
		return fmt.Errorf("api: page %q must be a GET pattern with a handler", p.Pattern)
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("api: page %q: %v", p.Pattern, v)
		}
	}()
	s.mux.Handle(p.Pattern, p.Handler)
	return nil
}

// Routes returns the registered route table (for documentation and tests).
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// ServeHTTP runs the middleware chain around the route table: security headers, panic recovery,
// secrets-in-URL refusal, CORS, 404/405 as problem details, the request deadline, logging and metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r = s.withClient(r)
	rid := newRequestID()
	sw := &statusWriter{ResponseWriter: w}
	h := sw.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Request-Id", rid)
	_, pattern := s.mux.Handler(r)
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			s.log.Error("panic serving request", "requestId", rid, "route", pattern, "panic", redact.String(fmt.Sprint(v)), "stack", string(buf))
			if !sw.wroteHeader {
				writeProblem(sw, problem(http.StatusInternalServerError, CodeInternal, "internal error; the server log has details"))
			}
		}
		s.finish(sw, r, pattern, rid, start)
	}()
	if p := secretInURL(r); p != nil {
		sw.problem = p
		writeProblem(sw, p)
		return
	}
	if s.handleCORS(sw, r) {
		return
	}
	if s.x.exchangePreflight(sw, r) {
		return
	}
	if pattern == "" {
		s.unmatched(sw, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, requestStartKey{}, start)
	s.mux.ServeHTTP(sw, r.WithContext(context.WithValue(ctx, requestIDKey{}, rid)))
}

// unmatched answers a request no pattern matched: 405 with Allow when the path exists for another
// method, 404 otherwise, both as problem details (the mux's own answers are plain text).
func (s *Server) unmatched(w *statusWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	rec := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		p := problem(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "this path does not support "+sanitizeMethod(r.Method)+"; see the Allow header")
		w.problem = p
		writeProblem(w, p)
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// Path cleaning: pass the mux's redirect on.
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
	default:
		p := notFound()
		w.problem = p
		writeProblem(w, p)
	}
}

// finish logs the request and records its metrics. The path is scrubbed and the query string is never
// logged; headers and bodies are never logged.
func (s *Server) finish(w *statusWriter, r *http.Request, pattern, rid string, start time.Time) {
	d := time.Since(start)
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	method := sanitizeMethod(r.Method)
	s.metrics.observe(pattern, method, status, d)
	attrs := []any{
		"requestId", rid, "method", method, "route", pattern, "path", scrubPath(r.URL.Path),
		"status", status, "durationMs", float64(d.Microseconds()) / 1000, "bytes", w.bytes, "remote", clientAddr(r),
	}
	if w.problem != nil {
		attrs = append(attrs, "code", w.problem.Code)
	}
	switch {
	case status == http.StatusServiceUnavailable:
		// An outage or overload, not a bug: one warning per request, with the cause.
		if w.problem != nil && w.problem.cause != nil {
			attrs = append(attrs, "error", w.problem.cause.Error())
		}
		s.log.Warn("request not served", attrs...)
	case status >= 500:
		if w.problem != nil && w.problem.cause != nil {
			attrs = append(attrs, "error", w.problem.cause.Error())
		}
		s.log.Error("request failed", attrs...)
	default:
		s.log.Info("request", attrs...)
	}
}

// wrap turns a route into an http.Handler: authentication and role check, then the handler, then the
// error mapping.
func (s *Server) wrap(rt Route) http.Handler {
	maxBody := rt.MaxBody
	if maxBody == 0 {
		maxBody = s.cfg.MaxBodyBytes
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), maxBodyKey{}, maxBody))
		var err error
		switch {
		case isPublishableBearer(r):
			r, err = s.authPublishable(w, r, rt)
		case rt.Device:
			r, err = s.authDevice(r)
		case rt.Roles != nil && isAppKeyBearer(r):
			r, err = s.authAppKey(r, rt)
		case rt.Roles != nil:
			r, err = s.authBearer(r, rt.Roles)
		}
		if err == nil {
			err = rt.Handler(w, r)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

// fail writes the problem for err and keeps it for the request log.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := toProblem(err)
	if sw, ok := w.(*statusWriter); ok {
		sw.problem = p
		if sw.wroteHeader {
			return
		}
	}
	writeProblem(w, p)
}

type requestIDKey struct{}
type maxBodyKey struct{}

func maxBodyOf(r *http.Request) int64 {
	if v, ok := r.Context().Value(maxBodyKey{}).(int64); ok {
		return v
	}
	return defaultMaxBody
}

func newRequestID() string { return strings.ReplaceAll(token.NewID(), "-", "")[:16] }

func sanitizeMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// statusWriter remembers what was written, for logging and metrics.
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	problem     *Problem
}

func (w *statusWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.status, w.wroteHeader = code, true
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// headerRecorder captures the status and headers of the mux's own 404/405/redirect handlers.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}
func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return len(b), nil
}

type requestStartKey struct{}

// requestStart is when the request arrived, before any credential was checked (zero outside ServeHTTP).
func requestStart(ctx context.Context) time.Time {
	t, _ := ctx.Value(requestStartKey{}).(time.Time)
	return t
}
