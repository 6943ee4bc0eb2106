package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// result is an API answer read from an in-process request.
type result struct {
	Status int
	Header http.Header
	Body   []byte
}

// ok reports a 2xx answer.
func (r result) ok() bool { return r.Status >= 200 && r.Status < 300 }

// decode reads the JSON body into v.
func (r result) decode(v any) error { return json.Unmarshal(r.Body, v) }

// problem is an API error as the console shows it: the API's own safe detail and code.
type problem struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Field  string `json:"field"`
}

func (p *problem) Error() string { return p.Detail }

// problemOf reads a non-2xx answer's problem details.
func (r result) problem() *problem {
	p := &problem{Status: r.Status}
	if json.Unmarshal(r.Body, p) != nil || p.Detail == "" {
		p.Detail = http.StatusText(r.Status)
	}
	p.Status = r.Status
	return p
}

// errSignedOut means the session's tokens no longer work (expired family, logout elsewhere, disabled
// user): the operator must sign in again.
var errSignedOut = errors.New("console: the session has ended; sign in again")

// recorder is a minimal http.ResponseWriter that keeps an in-process API answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// serve sends one request through the API's handler in-process. It carries what the API judges a
// client by: the peer address, the TLS state, the Host and the forwarding headers (believed only from
// TRUSTED_PROXIES, exactly as for a direct call), so throttles and the audit trail see the operator's
// browser, not the console. extra headers (Authorization, If-Match, Cookie) are added.
func (c *Console) serve(r *http.Request, method, path string, body any, extra http.Header) result {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return result{Status: http.StatusInternalServerError, Body: []byte(`{"detail":"the console could not encode its request"}`)}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return result{Status: http.StatusInternalServerError, Body: []byte(`{"detail":"the console could not build its request"}`)}
	}
	req.RemoteAddr, req.TLS, req.Host = r.RemoteAddr, r.TLS, r.Host
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "User-Agent"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range extra {
		req.Header[k] = v
	}
	rec := &recorder{header: http.Header{}}
	c.api.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return result{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

// call makes an operator request with the session's access token. When the API says the access token
// is no longer valid, the console spends the refresh token for a new pair (marking the session to be
// written back) and tries once more; when that fails too, errSignedOut.
func (c *Console) call(r *http.Request, s *session, method, path string, body any, extra http.Header) (result, error) {
	if !s.signedIn() {
		return result{}, errSignedOut
	}
	h := http.Header{}
	for k, v := range extra {
		h[k] = v
	}
	h.Set("Authorization", "Bearer "+s.Access)
	res := c.serve(r, method, path, body, h)
	if res.Status != http.StatusUnauthorized {
		return res, nil
	}
	if !c.refresh(r, s) {
		return res, errSignedOut
	}
	h.Set("Authorization", "Bearer "+s.Access)
	res = c.serve(r, method, path, body, h)
	if res.Status == http.StatusUnauthorized {
		return res, errSignedOut
	}
	return res, nil
}

// refresh rotates the session's token pair through POST /api/v1/auth/refresh. Two requests of one
// browser that find the access token expired at the same moment (two tabs, a reload during a page load)
// would otherwise both spend the same refresh token, and the second spend revokes the whole family
// (docs/security.md, R2), signing the operator out. So refreshes are serialised, and for refreshGrace the
// pair a refresh token was swapped for is handed to another request of the same session holding that
// same spent token. The pairs are kept in memory only and are never logged.
func (c *Console) refresh(r *http.Request, s *session) bool {
	key := sha256.Sum256([]byte(s.Refresh))
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	now := c.now()
	for k, p := range c.recent {
		if !now.Before(p.until) {
			delete(c.recent, k)
		}
	}
	if p, ok := c.recent[key]; ok && p.session == s.ID {
		s.Access, s.Refresh, s.dirty = p.access, p.refresh, true
		return true
	}
	res := c.serve(r, http.MethodPost, "/api/v1/auth/refresh", map[string]string{"refreshToken": s.Refresh}, nil)
	if !res.ok() {
		return false
	}
	var pair tokenPair
	if res.decode(&pair) != nil || pair.AccessToken == "" || pair.RefreshToken == "" {
		return false
	}
	c.recent[key] = refreshed{session: s.ID, access: pair.AccessToken, refresh: pair.RefreshToken, until: now.Add(refreshGrace)}
	s.Access, s.Refresh, s.dirty = pair.AccessToken, pair.RefreshToken, true
	return true
}

// refreshGrace is how long a spent refresh token's successor pair is handed to the same session's
// other requests.
const refreshGrace = 30 * time.Second

// refreshed is the pair a refresh token was swapped for, for refreshGrace.
type refreshed struct {
	session         string
	access, refresh string
	until           time.Time
}

// apiPath joins an API path and a query string.
func apiPath(path string, q map[string]string) string {
	var b strings.Builder
	b.WriteString(path)
	sep := "?"
	for _, k := range sortedKeys(q) {
		if q[k] == "" {
			continue
		}
		b.WriteString(sep + k + "=" + urlQueryEscape(q[k]))
		sep = "&"
	}
	return b.String()
}
