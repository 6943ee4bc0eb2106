package console

import (
	"net/http"

	"github.com/iotauth/iotauth/backend/api"
)

// loginPage shows the sign-in form. A browser without a session gets a fresh anonymous one first, so
// that the form carries a CSRF token too (no login CSRF).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	s := c.sessionOf(r)
	if s.signedIn() {
		http.Redirect(w, r, Prefix+"agents", http.StatusSeeOther)
		return
	}
	if s == nil {
		s = &session{ID: newSessionID(), dirty: true}
	}
	v := &view{Title: "Sign in", CSRF: c.csrfToken(s)}
	if r.URL.Query().Get("done") == "logout" {
		v.Notice = "You are signed out."
	}
	c.render(w, r, s, http.StatusOK, "login", v)
}

type tokenPair struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
}

// loginSubmit signs in through POST /api/v1/auth/login itself, so the API's lock-out, throttles,
// known-device budgets and audit apply exactly as to any other client. The API's device cookie is kept
// by the browser under the console's login path and handed back to the API on the next sign-in.
func (c *Console) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	s := c.sessionOf(r)
	if !c.checkCSRF(r, s) {
		c.log.Warn("console sign-in refused: missing or wrong CSRF token, or a foreign Origin")
		if s == nil {
			s = &session{ID: newSessionID(), dirty: true}
		}
		c.render(w, r, s, http.StatusForbidden, "login", &view{Title: "Sign in", CSRF: c.csrfToken(s),
			Error: "This form expired or was not sent from the console; try again."})
		return
	}
	email := r.PostFormValue("email")
	extra := http.Header{}
	if dc, err := r.Cookie(DeviceCookie); err == nil && dc.Value != "" {
		extra.Set("Cookie", (&http.Cookie{Name: api.DeviceCookieName, Value: dc.Value}).String())
	}
	res := c.serve(r, http.MethodPost, "/api/v1/auth/login", map[string]string{"email": email, "password": r.PostFormValue("password")}, extra)
	var pair tokenPair
	if !res.ok() || res.decode(&pair) != nil || pair.AccessToken == "" {
		p := res.problem()
		if ra := res.Header.Get("Retry-After"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		v := &view{Title: "Sign in", CSRF: c.csrfToken(s), Error: p.Detail, Data: map[string]string{"Email": email}}
		c.render(w, r, s, p.Status, "login", v)
		return
	}
	for _, line := range res.Header.Values("Set-Cookie") {
		if ck, err := http.ParseSetCookie(line); err == nil && ck.Name == api.DeviceCookieName {
			http.SetCookie(w, c.cookie(r, DeviceCookie, ck.Value, loginPath, ck.MaxAge))
		}
	}
	// A new session id on sign-in: a CSRF token seen before it is worthless after.
	c.saveSession(w, r, &session{ID: newSessionID(), Access: pair.AccessToken, Refresh: pair.RefreshToken})
	http.Redirect(w, r, Prefix+"agents", http.StatusSeeOther)
}

// logoutSubmit revokes the session's refresh-token family through POST /api/v1/auth/logout and
// deletes the cookie.
func (c *Console) logoutSubmit(w http.ResponseWriter, r *http.Request) {
	s := c.sessionOf(r)
	if !c.checkCSRF(r, s) {
		c.errorPage(w, r, s, nil, &problem{Status: http.StatusForbidden, Code: "csrf_failed",
			Detail: "this form expired or was not sent from the console; reload the page and try again"})
		return
	}
	if s.signedIn() {
		res := c.serve(r, http.MethodPost, "/api/v1/auth/logout", map[string]string{"refreshToken": s.Refresh}, nil)
		if !res.ok() && res.Status != http.StatusUnauthorized {
			c.errorPage(w, r, s, nil, res.problem())
			return
		}
	}
	c.clearSession(w, r)
	http.Redirect(w, r, loginPath+"?done=logout", http.StatusSeeOther)
}
