package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/backend/store"
)

// Principal is the operator behind a request's access token, as the database has them now.
type Principal struct {
	UserID string
	Email  string
	Role   string
}

type principalKey struct{}
type deviceKey struct{}
type appKeyKey struct{}

// AppCaller is the application key behind a request's Authorization: Bearer iotak_…, as the database
// has it at this request (never cached beyond it).
type AppCaller struct {
	KeyID  string
	Name   string
	Rights []string
	// Topics are the key's MQTT topics: the most a token exchange through it may grant.
	Topics []store.AppTopic
	// ExpiresAt is the key's expiry (nil: never); no credential exchanged through it outlives it.
	ExpiresAt *time.Time
}

// AppCallerFrom returns the authenticated application key of a route that admits one.
func AppCallerFrom(ctx context.Context) (AppCaller, bool) {
	a, ok := ctx.Value(appKeyKey{}).(AppCaller)
	return a, ok
}

// appKeyScheme is the prefix shared by live and test application keys.
const appKeyScheme = "iotak_"

// isAppKeyBearer reports whether the request presents an application key as its Bearer credential.
func isAppKeyBearer(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(strings.TrimSpace(tok), appKeyScheme)
}

// authAppKey checks an application key presented as a Bearer token (docs/app-keys.md; docs/security.md, A1, S2, S6):
// a well-formed key of this deployment's kind, known, not revoked or expired (read from the database on
// every request, so a revoke bites at once), holding the route's right. A route without a right (users,
// application keys, the caller's own session) never admits a key. Every refusal is audited.
func (s *Server) authAppKey(r *http.Request, rt Route) (*http.Request, error) {
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	invalid := unauthorized(CodeInvalidToken, "the application key is invalid, revoked or expired; ask an admin for a new one")
	refuse := func(keyID, reason string) {
		e := auditOf(r, "app_key_refused", map[string]any{"reason": reason, "route": rt.Pattern()})
		e.Outcome = store.OutcomeFailure
		if keyID != "" {
			e.Actor, e.Target = "app-key:"+keyID, "app-key:"+keyID
		}
		if err := s.st.AuditTrail.Audit(r.Context(), e); err != nil {
			s.log.Warn("could not audit a refused application key", "error", err.Error())
		}
	}
	// Only refusals that name a known key are audited: a malformed or unknown key is anyone's guess, and
	// auditing it would let anyone fill the audit trail without authenticating (docs/security.md, O1).
	if secret.Check(s.cfg.appKeyKind, tok) != nil {
		return r, invalid
	}
	k, err := s.st.Keys.AppKeyByDigest(r.Context(), secret.DigestOf(tok))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return r, invalid
	case err != nil:
		return r, err
	}
	if k.RevokedAt != nil {
		refuse(k.ID, "revoked")
		return r, invalid
	}
	if k.ExpiresAt != nil && !s.now().Before(*k.ExpiresAt) {
		refuse(k.ID, "expired")
		return r, invalid
	}
	if rt.Right == "" {
		refuse(k.ID, "route takes an operator's access token only")
		detail := "this route takes an operator's access token only: application keys never reach users, roles, application keys or an operator's session"
		if rt.KeyRefusal != "" {
			detail = rt.KeyRefusal
		}
		return r, problem(http.StatusForbidden, CodeForbidden, detail)
	}
	if !slices.Contains(k.Rights, rt.Right) {
		refuse(k.ID, "missing right "+rt.Right)
		return r, problem(http.StatusForbidden, CodeMissingRight, "this application key lacks the right "+rt.Right+
			"; an admin must create a key that holds it (rights are fixed at creation)")
	}
	_ = s.st.Keys.TouchAppKey(r.Context(), k.ID)
	return r.WithContext(context.WithValue(r.Context(), appKeyKey{}, AppCaller{KeyID: k.ID, Name: k.Name, Rights: k.Rights, Topics: k.Topics, ExpiresAt: k.ExpiresAt})), nil
}

// PrincipalFrom returns the authenticated operator of a Bearer route.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Device is the agent behind a request's X-Device-API-Key.
type Device struct {
	AgentUUID string
	KeyID     string
}

// DeviceFrom returns the authenticated agent of a device route.
func DeviceFrom(ctx context.Context) (Device, bool) {
	d, ok := ctx.Value(deviceKey{}).(Device)
	return d, ok
}

// DeviceKeyHeader carries a device API key on device routes.
const DeviceKeyHeader = "X-Device-API-Key"

func unauthorized(code, detail string) *Problem {
	p := problem(http.StatusUnauthorized, code, detail)
	switch code {
	case CodeAuthRequired:
		p.header = http.Header{"Www-Authenticate": {`Bearer realm="iotauth"`}}
	case CodeInvalidToken:
		p.header = http.Header{"Www-Authenticate": {`Bearer realm="iotauth", error="invalid_token"`}}
	}
	return p
}

// authBearer checks the access token and the caller's role (docs/security.md, J1–J8, H6). The user must still
// exist and be enabled, tokens issued before the user's last password change, disable or re-enable
// are refused, and the role comes from the database, not the token.
func (s *Server) authBearer(r *http.Request, roles []string) (*http.Request, error) {
	invalid := unauthorized(CodeInvalidToken, "the access token is invalid or expired; log in again or use your refresh token")
	var u store.User
	if id, ok := consoleOperator(r.Context()); ok {
		// The console's in-process request: its session was checked in the database (and ends with
		// any disable, password or role change), so only the user's current state is checked here.
		var err error
		if u, err = s.st.Accounts.UserByID(r.Context(), id); errors.Is(err, store.ErrNotFound) {
			return r, invalid
		} else if err != nil {
			return r, err
		}
		if u.Disabled {
			return r, invalid
		}
	} else {
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			return r, unauthorized(CodeAuthRequired, "send Authorization: Bearer <access token> (POST /api/v1/auth/login gives one)")
		}
		a, err := s.tokens.ParseAccess(strings.TrimSpace(tok))
		if err != nil {
			return r, invalid
		}
		u, err = s.st.Accounts.UserByID(r.Context(), a.UserID)
		if errors.Is(err, store.ErrNotFound) {
			return r, invalid
		}
		if err != nil {
			return r, err
		}
		if u.Disabled || !issuedAfter(a.IssuedAt, u) {
			return r, invalid
		}
	}
	if len(roles) == 0 {
		return r, problem(http.StatusForbidden, CodeForbidden, "this route takes an application key (Authorization: Bearer iotak_…) holding its right, not an operator's access token")
	}
	if !slices.Contains(roles, u.Role) {
		return r, problem(http.StatusForbidden, CodeForbidden, "your role ("+u.Role+") may not do this; it needs one of: "+strings.Join(roles, ", "))
	}
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, Principal{UserID: u.ID, Email: u.Email, Role: u.Role})), nil
}

// authDevice checks X-Device-API-Key (docs/security.md, S2, S4, S6, S7): a well-formed key of this
// deployment's kind, known, not revoked or expired, of an active agent, with the device_state right, and
// belonging to the agent named in the path. A key of agent A on agent B's path gets the same 404 whether
// B exists or not.
func (s *Server) authDevice(r *http.Request) (*http.Request, error) {
	invalid := unauthorized(CodeInvalidDeviceKey, "send this agent's device API key in the X-Device-API-Key header")
	key := r.Header.Get(DeviceKeyHeader)
	if secret.Check(s.cfg.KeyKind, key) != nil {
		return r, invalid
	}
	c, err := s.st.Credentials.LookupCredential(r.Context(), secret.DigestOf(key))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return r, invalid
	case errors.Is(err, store.ErrCorrupt):
		s.log.Warn("device key row cannot be trusted; denying", "keyId", c.KeyID, "agent", c.AgentUUID)
		return r, invalid
	case err != nil:
		return r, err
	}
	if c.KeyRevoked || (!c.KeyExpiresAt.IsZero() && !s.now().Before(c.KeyExpiresAt)) || c.AgentStatus != store.StatusActive {
		return r, invalid
	}
	if !slices.Contains(c.Rights, store.RightDeviceState) {
		return r, problem(http.StatusForbidden, CodeInsufficientKeyRights, "this device API key lacks the device_state right")
	}
	if r.PathValue("uuid") != c.AgentUUID {
		return r, notFound()
	}
	_ = s.st.Keys.TouchAPIKey(r.Context(), c.KeyID)
	return r.WithContext(context.WithValue(r.Context(), deviceKey{}, Device{AgentUUID: c.AgentUUID, KeyID: c.KeyID})), nil
}

// credentialParams are query parameter names that only ever carry credentials.
var credentialParams = []string{"key", "apikey", "api_key", "token", "access_token", "refresh_token", "accesstoken",
	"refreshtoken", "password", "secret", "x-device-api-key", "authorization", "jwt"}

// secretInURL refuses credentials in the path or query string (docs/security.md, H3): URLs end up in proxy
// logs, browser history and Referer headers.
func secretInURL(r *http.Request) *Problem {
	bad := problem(http.StatusBadRequest, CodeSecretInURL,
		"credentials are never accepted in a URL; send keys in the X-Device-API-Key header or the JSON body, and tokens in Authorization")
	if secret.LooksLikeAny(r.URL.Path) || redact.Contains(r.URL.Path) || secret.LooksLikeAny(r.URL.RawPath) {
		return bad
	}
	if r.URL.RawQuery == "" {
		return nil
	}
	raw, _ := url.QueryUnescape(r.URL.RawQuery)
	if secret.LooksLikeAny(r.URL.RawQuery) || secret.LooksLikeAny(raw) || redact.Contains(raw) {
		return bad
	}
	q, _ := url.ParseQuery(r.URL.RawQuery)
	for name := range q {
		if slices.Contains(credentialParams, strings.ToLower(name)) {
			return bad
		}
	}
	return nil
}

// scrubPath is the path as it may be logged.
func scrubPath(p string) string {
	if len(p) > 256 {
		p = p[:256] + "…"
	}
	return redact.String(p)
}

// handleCORS adds CORS headers for allowed origins and answers their preflight requests. It reports
// whether the request has been answered. With no allowed origins it does nothing at all.
func (s *Server) handleCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if len(s.cors) == 0 || origin == "" || !s.cors[origin] {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "ETag, Retry-After, X-Request-Id, Location")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match, "+DeviceKeyHeader)
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// publishableScheme is the prefix shared by live and test publishable keys.
const publishableScheme = "iotpk_"

type publishableKey struct{}

// PublishableFrom returns the publishable key of a request on a Publishable route.
func PublishableFrom(ctx context.Context) (store.PublishableKey, bool) {
	k, ok := ctx.Value(publishableKey{}).(store.PublishableKey)
	return k, ok
}

// isPublishableBearer reports whether the request presents a publishable key as its Bearer credential.
func isPublishableBearer(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(strings.TrimSpace(tok), publishableScheme)
}

// authPublishable checks a publishable key (docs/security.md, T4): only on a Publishable route (every other
// route refuses one, whatever else the request carries), well formed, of this deployment's kind, known,
// active, and presented from one of its origins exactly. The answer then carries CORS headers for that
// origin. Refusals naming a known key are audited.
func (s *Server) authPublishable(w http.ResponseWriter, r *http.Request, rt Route) (*http.Request, error) {
	if !rt.Publishable {
		return r, problem(http.StatusForbidden, CodePublishableOnly,
			"a publishable key only starts a token exchange (POST "+ExchangePath+"); use an access token or an application key here")
	}
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	invalid := unauthorized(CodeInvalidPublishable, "the publishable key is invalid, revoked or expired; ask an admin for a new one")
	if secret.Check(secret.PublishableKindFor(s.cfg.KeyKind), tok) != nil {
		return r, invalid
	}
	k, err := s.st.Keys.PublishableKeyByDigest(r.Context(), secret.DigestOf(tok))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return r, invalid
	case err != nil:
		return r, err
	}
	refuse := func(reason string, p *Problem) (*http.Request, error) {
		if !s.x.svc.AuditAllowed("pk:" + k.ID) {
			s.log.Info("publishable key refused (audit budget spent)", "pk", k.ID, "reason", reason)
			return r, p
		}
		e := auditOf(r, "publishable_key_refused", map[string]any{"reason": reason, "route": rt.Pattern()})
		e.Outcome, e.Actor, e.Target = store.OutcomeFailure, "pk:"+k.ID, "pk:"+k.ID
		if err := s.st.AuditTrail.Audit(r.Context(), e); err != nil {
			s.log.Warn("could not audit a refused publishable key", "error", err.Error())
		}
		return r, p
	}
	if !k.Active(s.now()) {
		return refuse("revoked or expired", invalid)
	}
	origin := r.Header.Get("Origin")
	if origin == "" || !slices.Contains(k.Origins, origin) {
		return refuse("origin not listed", problem(http.StatusForbidden, CodeOriginNotAllowed,
			"a publishable key works only from the origins listed for it; this request's Origin is not one of them"))
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "Retry-After, X-Request-Id")
	_ = s.st.Keys.TouchPublishableKey(r.Context(), k.ID)
	return r.WithContext(context.WithValue(r.Context(), publishableKey{}, k)), nil
}
