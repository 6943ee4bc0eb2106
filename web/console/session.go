package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// Cookie names. The session cookie is scoped to the console's path; the device cookie to its login.
const (
	SessionCookie = "iotauth_console"
	DeviceCookie  = "iotauth_console_device"
	loginPath     = Prefix + "login"
)

// Session lifetimes (defaults of Config.IdleTimeout and Config.MaxLifetime).
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxLifetime = 12 * time.Hour
)

// Store is what the console reads and writes in the database itself: its sessions (so that every
// replica sees a sign-out, a disabled user or a changed password or role at the next request), and the
// totals of the lists it pages through. storeOf builds one from a *store.Store.
type Store interface {
	CreateConsoleSession(ctx context.Context, cs store.ConsoleSession) error
	TouchConsoleSession(ctx context.Context, digest []byte, now time.Time, idle time.Duration) (store.ConsoleSession, error)
	EndConsoleSession(ctx context.Context, digest []byte, audit store.AuditEvent) error

	CountAgentList(ctx context.Context, p store.AgentPage) (int64, error)
	CountAPIKeys(ctx context.Context, agentUUID string) (int64, error)
	CountAppKeys(ctx context.Context) (int64, error)
	CountPublishableKeys(ctx context.Context) (int64, error)
	CountProvisioningKeys(ctx context.Context) (int64, error)
	CountUsers(ctx context.Context) (int64, error)
	CountAudit(ctx context.Context, p store.AuditPage) (int64, error)
	RefNames(ctx context.Context, refs []string) (map[string]string, error)
	PresenceActivity(ctx context.Context, since time.Time, step time.Duration, n int) ([]store.ActivityPoint, error)
}

// storeOf is the console's Store on st: the domains it reads and writes.
func storeOf(st *store.Store) Store {
	return struct {
		store.Accounts
		store.Agents
		store.Keys
		store.AuditTrail
		store.Presence
	}{st.Accounts, st.Agents, st.Keys, st.AuditTrail, st.Presence}
}

// session is a browser's console session. The cookie carries only ID, 32 random bytes: no token, no
// user id. Signed in means the database holds a live session under the id's digest; otherwise the id
// is anonymous and serves only to bind the sign-in form's CSRF token.
type session struct {
	ID     string
	UserID string

	dirty bool // a new id: write the cookie
}

func (s *session) signedIn() bool { return s != nil && s.UserID != "" }

// sessionIDLen is the length of an encoded session id (32 bytes, unpadded base64url).
const sessionIDLen = 43

func newSessionID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// digestOf is what the database keeps of a session id.
func digestOf(id string) []byte {
	d := sha256.Sum256([]byte(id))
	return d[:]
}

func validSessionID(v string) bool {
	if len(v) != sessionIDLen {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 32
}

// sessions keeps the browsers' console sessions: the session cookie, the session's row in the
// database (checked and touched on every request), and the CSRF token bound to it.
type sessions struct {
	db interface {
		TouchConsoleSession(ctx context.Context, digest []byte, now time.Time, idle time.Duration) (store.ConsoleSession, error)
	}
	api  interface{ ClientHTTPS(r *http.Request) bool }
	key  []byte // the CSRF key, derived from Config.Key
	now  func() time.Time
	idle time.Duration
}

func (c *sessions) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, c.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// sessionOf returns the request's session: nil without a well-formed cookie, signed in when the
// database holds a live session for it (checked on every request, and touched for the idle timeout).
// An error means the database could not answer; the caller must not treat it as signed out.
func (c *sessions) sessionOf(r *http.Request) (*session, error) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || !validSessionID(ck.Value) {
		return nil, nil
	}
	s := &session{ID: ck.Value}
	cs, err := c.db.TouchConsoleSession(r.Context(), digestOf(s.ID), c.now(), c.idle)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s, nil
	case err != nil:
		return s, err
	}
	s.UserID = cs.UserID
	return s, nil
}

// cookie builds one of the console's cookies: HttpOnly, SameSite=Strict, Secure when the client came
// over TLS (directly or through a trusted proxy, as the API judges it).
func (c *sessions) cookie(r *http.Request, name, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: c.api.ClientHTTPS(r), SameSite: http.SameSiteStrictMode}
}

// saveSession writes the session cookie (a browser-session cookie: it ends with the browser; the
// server-side lifetimes bound it too).
func (c *sessions) saveSession(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, c.cookie(r, SessionCookie, s.ID, Prefix, 0))
	s.dirty = false
}

// clearSession deletes the session cookie.
func (c *sessions) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, c.cookie(r, SessionCookie, "", Prefix, -1))
}

// csrfToken is the session's synchronizer token: a MAC of its id, so it is bound to the session and
// changes with every sign-in, and cannot be made without the console key.
func (c *sessions) csrfToken(s *session) string {
	if s == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(c.mac("csrf", s.ID))
}

// checkCSRF checks a state-changing request: its form must carry the session's CSRF token, and an
// Origin header, when the browser sends one (every current browser does on POST), must be this
// console's own origin. It returns false for a missing or foreign token or origin.
func (c *sessions) checkCSRF(r *http.Request, s *session) bool {
	if s == nil {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && !c.sameOrigin(r, o) {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(r.PostFormValue("csrf"))
	if err != nil || len(got) == 0 {
		return false
	}
	want := c.mac("csrf", s.ID)
	return hmac.Equal(got, want)
}

// sameOrigin compares an Origin header's host with the host the request was made to. The scheme is not
// compared: a TLS-terminating proxy that is not in TRUSTED_PROXIES would otherwise break every form. A
// reverse proxy must pass the Host header on (nginx: proxy_set_header Host $host).
func (c *sessions) sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}
