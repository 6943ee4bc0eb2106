package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// Cookie names. The session cookie is scoped to the console's path; the device cookie to its login.
const (
	SessionCookie = "iotauth_console"
	DeviceCookie  = "iotauth_console_device"
	loginPath     = Prefix + "login"
)

// session is what the session cookie carries: a random id (the CSRF token is derived from it) and,
// once signed in, the API's token pair. The cookie is MACed under the console key, so it cannot be
// forged or mixed from two sessions; the tokens are the API's own and are checked by the API.
type session struct {
	ID      string `json:"s"`
	Access  string `json:"a,omitempty"`
	Refresh string `json:"r,omitempty"`

	dirty bool // changed during this request: write the cookie again
}

func (s *session) signedIn() bool { return s != nil && s.Access != "" && s.Refresh != "" }

func newSessionID() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *Console) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, c.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// encode is the cookie value: payload "." MAC.
func (c *Console) encode(s *session) string {
	b, _ := json.Marshal(s)
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(c.mac("session", p))
}

// decode reads a cookie value; nil when it is missing, malformed or not ours.
func (c *Console) decode(v string) *session {
	p, m, ok := strings.Cut(v, ".")
	if !ok {
		return nil
	}
	mac, err := base64.RawURLEncoding.DecodeString(m)
	if err != nil || !hmac.Equal(mac, c.mac("session", p)) {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil
	}
	var s session
	if json.Unmarshal(b, &s) != nil || s.ID == "" {
		return nil
	}
	return &s
}

// sessionOf returns the request's session, nil without a valid cookie.
func (c *Console) sessionOf(r *http.Request) *session {
	ck, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil
	}
	return c.decode(ck.Value)
}

// cookie builds one of the console's cookies: HttpOnly, SameSite=Strict, Secure when the client came
// over TLS (directly or through a trusted proxy, as the API judges it).
func (c *Console) cookie(r *http.Request, name, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: c.api.ClientHTTPS(r), SameSite: http.SameSiteStrictMode}
}

// saveSession writes the session cookie (a browser-session cookie: it ends with the browser; the
// refresh token's own lifetime bounds it too).
func (c *Console) saveSession(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, c.cookie(r, SessionCookie, c.encode(s), Prefix, 0))
	s.dirty = false
}

// clearSession deletes the session cookie.
func (c *Console) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, c.cookie(r, SessionCookie, "", Prefix, -1))
}

// csrfToken is the session's synchronizer token: a MAC of its id, so it is bound to the session and
// changes with every sign-in, and cannot be made without the console key.
func (c *Console) csrfToken(s *session) string {
	if s == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(c.mac("csrf", s.ID))
}

// checkCSRF checks a state-changing request: its form must carry the session's CSRF token, and an
// Origin header, when the browser sends one (every current browser does on POST), must be this
// console's own origin. It returns false for a missing or foreign token or origin.
func (c *Console) checkCSRF(r *http.Request, s *session) bool {
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
func (c *Console) sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}
