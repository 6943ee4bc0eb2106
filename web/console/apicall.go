package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/iotauth/iotauth/backend/api"
)

// apiClient makes the console's requests to the REST API, in-process through its handler. It also
// offers the rest of what the console asks of the API (its route table, its judgement of a client's
// TLS and address, its refresh families).
type apiClient struct {
	API
}

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
func (c *apiClient) serve(r *http.Request, method, path string, body any, extra http.Header) result {
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
	c.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return result{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

// call makes an operator request on behalf of the session's user: in-process, marked with
// api.AsConsoleOperator, so that the API applies that user's current role and state. No token is
// involved. When the API refuses the user (gone or disabled since the session was read), errSignedOut.
func (c *apiClient) call(r *http.Request, s *session, method, path string, body any, extra http.Header) (result, error) {
	if !s.signedIn() {
		return result{}, errSignedOut
	}
	res := c.serve(r.WithContext(api.AsConsoleOperator(r.Context(), s.UserID)), method, path, body, extra)
	if res.Status == http.StatusUnauthorized {
		return res, errSignedOut
	}
	return res, nil
}

// get is a GET through the API that must succeed, decoded into v.
func (c *apiClient) get(r *http.Request, s *session, path string, v any) error {
	res, err := c.call(r, s, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	return res.decode(v)
}

// do makes one API request that must succeed.
func (c *apiClient) do(r *http.Request, s *session, method, path string, body any) error {
	res, err := c.call(r, s, method, path, body, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	return nil
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
