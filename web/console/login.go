package console

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/store"
)

// loginScreen signs operators in and out through the API's own login, and keeps the browser's
// preferences (the time zone).
type loginScreen struct {
	api *apiClient
	db  interface {
		CreateConsoleSession(ctx context.Context, cs store.ConsoleSession) error
		EndConsoleSession(ctx context.Context, digest []byte, audit store.AuditEvent) error
	}
	sess    *sessions
	ui      *ui
	log     *slog.Logger
	now     func() time.Time
	maxLife time.Duration
}

// loginPage shows the sign-in form. A browser without a session gets a fresh anonymous one first, so
// that the form carries a CSRF token too (no login CSRF).
func (c *loginScreen) loginPage(w http.ResponseWriter, r *http.Request) {
	s, err := c.sess.sessionOf(r)
	if err != nil {
		c.ui.unavailable(w, r, err)
		return
	}
	if s.signedIn() {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	if s == nil {
		s = &session{ID: newSessionID(), dirty: true}
	}
	v := &view{Title: "Sign in", CSRF: c.sess.csrfToken(s)}
	if r.URL.Query().Get("done") == "logout" {
		v.Notice = "You are signed out."
	}
	c.ui.render(w, r, s, http.StatusOK, "login", v)
}

type tokenPair struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
}

// loginSubmit signs in through POST /api/v1/auth/login itself, so the API's lock-out, throttles,
// known-device budgets and audit apply exactly as to any other client. The API's device cookie is kept
// by the browser under the console's login path and handed back to the API on the next sign-in. The
// token pair never reaches the browser: the console records a session under a new random id, tied to
// the pair's refresh family (revoked at sign-out), and forgets the pair.
func (c *loginScreen) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	s, err := c.sess.sessionOf(r)
	if err != nil {
		c.ui.unavailable(w, r, err)
		return
	}
	if !c.sess.checkCSRF(r, s) {
		c.log.Warn("console sign-in refused: missing or wrong CSRF token, or a foreign Origin")
		if s == nil {
			s = &session{ID: newSessionID(), dirty: true}
		}
		c.ui.render(w, r, s, http.StatusForbidden, "login", &view{Title: "Sign in", CSRF: c.sess.csrfToken(s),
			Error: "This form expired or was not sent from the console; try again."})
		return
	}
	email := r.PostFormValue("email")
	extra := http.Header{}
	if dc, err := r.Cookie(DeviceCookie); err == nil && dc.Value != "" {
		extra.Set("Cookie", (&http.Cookie{Name: api.DeviceCookieName, Value: dc.Value}).String())
	}
	res := c.api.serve(r, http.MethodPost, "/api/v1/auth/login", map[string]string{"email": email, "password": r.PostFormValue("password")}, extra)
	var pair tokenPair
	if !res.ok() || res.decode(&pair) != nil || pair.AccessToken == "" {
		p := res.problem()
		if ra := res.Header.Get("Retry-After"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		v := &view{Title: "Sign in", CSRF: c.sess.csrfToken(s), Error: p.Detail, Data: map[string]string{"Email": email}}
		c.ui.render(w, r, s, p.Status, "login", v)
		return
	}
	for _, line := range res.Header.Values("Set-Cookie") {
		if ck, err := http.ParseSetCookie(line); err == nil && ck.Name == api.DeviceCookieName {
			http.SetCookie(w, c.sess.cookie(r, DeviceCookie, ck.Value, loginPath, ck.MaxAge))
		}
	}
	user, family, err := c.api.RefreshFamily(pair.RefreshToken)
	if err != nil {
		c.ui.unavailable(w, r, err)
		return
	}
	if s.signedIn() {
		// Another account's session in this browser ends before the new one starts.
		c.endSession(r, s)
	}
	// A new session id on sign-in: a CSRF token or cookie seen before it is worthless after.
	now := c.now()
	ns := &session{ID: newSessionID(), UserID: user}
	if err := c.db.CreateConsoleSession(r.Context(), store.ConsoleSession{Digest: digestOf(ns.ID), UserID: user, Family: family,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(c.maxLife)}); err != nil {
		c.ui.unavailable(w, r, err)
		return
	}
	c.sess.saveSession(w, r, ns)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// endSession deletes the session's server-side state and revokes its refresh family, audited as the
// API audits a logout. The session is refused on every replica from then on.
func (c *loginScreen) endSession(r *http.Request, s *session) error {
	err := c.db.EndConsoleSession(r.Context(), digestOf(s.ID), store.AuditEvent{Action: "logout", RemoteAddr: c.api.ClientAddr(r),
		Detail: map[string]any{"via": "console"}})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// logoutSubmit ends the session (server-side, so that a copy of the cookie is worthless too) and
// deletes the cookie.
func (c *loginScreen) logoutSubmit(w http.ResponseWriter, r *http.Request) {
	s, err := c.sess.sessionOf(r)
	if err != nil {
		c.ui.unavailable(w, r, err)
		return
	}
	if !c.sess.checkCSRF(r, s) {
		c.ui.errorPage(w, r, s, nil, &problem{Status: http.StatusForbidden, Code: "csrf_failed",
			Detail: "this form expired or was not sent from the console; reload the page and try again"})
		return
	}
	if s.signedIn() {
		if err := c.endSession(r, s); err != nil {
			c.ui.unavailable(w, r, err)
			return
		}
	}
	c.sess.clearSession(w, r)
	http.Redirect(w, r, loginPath+"?done=logout", http.StatusSeeOther)
}
