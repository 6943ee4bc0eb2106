package api_test

import (
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/iotauth/iotauth/web/console"
)

// serveConsoleClient is a plain HTTP console client of a running `iotauth serve` replica.
func serveConsoleClient(e *env, base string) *consoleClient {
	hc := &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &consoleClient{ce: &consoleEnv{env: e, url: base}, hc: hc, base: base, setCookies: map[string]*http.Cookie{}}
}

// copyOf is a second client (another machine) holding a copy of c's session cookie, on base.
func (c *consoleClient) copyOf(base string) *consoleClient {
	cp := serveConsoleClient(c.ce.env, base)
	ck := *c.setCookies[console.SessionCookie]
	cp.setCookies[console.SessionCookie] = &ck
	return cp
}

// live checks that the client's session opens the agent list (and picks up the page's CSRF token).
func (c *consoleClient) live(t *testing.T, what string) {
	t.Helper()
	if res := c.get(t, "/console/agents"); res.StatusCode != 200 || res.Path != "/console/agents" {
		t.Fatalf("%s: /console/agents answered %d at %s, want the agent list", what, res.StatusCode, res.Path)
	}
}

// dead checks that the client's session is over: pages send it to the sign-in page, and a form post
// with the session's own CSRF token is sent there too and creates nothing.
func (c *consoleClient) dead(t *testing.T, what string) {
	t.Helper()
	e := c.ce.env
	for _, p := range []string{"/console/agents", "/console/keys", "/console/audit"} {
		if res := c.get(t, p); res.Path != "/console/login" {
			t.Fatalf("%s: %s answered %d at %s, want the sign-in page", what, p, res.StatusCode, res.Path)
		}
	}
	before := e.count("provisioning_keys", "true")
	res := c.post(t, "/console/provisioning", url.Values{"csrf": {c.csrf}, "name": {"after-end"}}, c.base)
	if res.Path != "/console/login" {
		t.Fatalf("%s: a form post answered %d at %s, want the sign-in page", what, res.StatusCode, res.Path)
	}
	if n := e.count("provisioning_keys", "true"); n != before {
		t.Fatalf("%s: a form post with an ended session created a provisioning key", what)
	}
}

// TestConsoleSessionEndsOnEveryReplica: two `iotauth serve` replicas on one database. A session cookie
// copied before sign-out works on the other replica until the sign-out, then nowhere: pages redirect
// to the sign-in page and a form post with the page's CSRF token changes nothing. The same for a
// session whose user is disabled (CLI), whose password changes (REST) or whose role changes (REST,
// and plain SQL). The cookie holds an opaque id, not a token; the database holds only its digest.
func TestConsoleSessionEndsOnEveryReplica(t *testing.T) {
	e := newEnv(t)
	admin := e.createUser("admin@example.com", "correct horse battery", "admin")
	ops := e.createUser("ops@example.com", "password-of-ops", "operator")
	r1 := startServe(t, e.dsn)
	r2 := startServe(t, e.dsn)

	// Sign-out on replica 1 ends the copy on replica 2.
	a := serveConsoleClient(e, r1.base)
	a.signIn(t, "admin@example.com", "correct horse battery")
	id := a.setCookies[console.SessionCookie].Value
	if len(id) != 43 || strings.ContainsAny(id, ".") {
		t.Fatalf("the session cookie is not an opaque id: %d characters", len(id))
	}
	d := sha256.Sum256([]byte(id))
	if e.count("console_sessions", "digest = $1", d[:]) != 1 || e.count("console_sessions", "encode(digest, 'escape') LIKE '%' || $1 || '%'", id) != 0 {
		t.Fatal("the database does not hold the session id's digest (or holds the id itself)")
	}
	copied := a.copyOf(r2.base)
	copied.live(t, "a copied cookie on replica 2 before sign-out")
	if res := a.post(t, "/console/logout", url.Values{"csrf": {a.csrf}}, a.base); res.Path != "/console/login" {
		t.Fatalf("sign-out: %d at %s", res.StatusCode, res.Path)
	}
	copied.dead(t, "a cookie copied before sign-out, on the other replica")
	if e.count("refresh_tokens", "user_id = $1::uuid AND revoked_at IS NULL", admin.ID) != 0 {
		t.Fatal("sign-out left the session's refresh family alive")
	}
	if e.count("audit_events", "action = 'logout' AND actor = $1", "user:"+admin.ID) != 1 {
		t.Fatal("sign-out was not audited as a logout")
	}

	adm := e.login("admin@example.com", "correct horse battery")
	for _, tc := range []struct {
		name   string
		change func()
	}{
		{"user disable (CLI)", func() {
			if out, errOut, code := cli(t, e.dsn, nil, "user", "disable", "ops@example.com"); code != 0 {
				t.Fatalf("user disable: %d %s %s", code, out, errOut)
			}
		}},
		{"password change (REST)", func() {
			e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + ops.ID, Token: adm.Access, Body: map[string]any{"password": "a-new-password-for-ops"}}, 200, "")
		}},
		{"role change (REST)", func() {
			e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + ops.ID, Token: adm.Access, Body: map[string]any{"role": "viewer"}}, 200, "")
		}},
		{"role change (SQL)", func() {
			e.exec("UPDATE users SET role = 'operator' WHERE id = $1::uuid", ops.ID)
		}},
	} {
		if tc.name == "password change (REST)" {
			if out, errOut, code := cli(t, e.dsn, nil, "user", "enable", "ops@example.com"); code != 0 {
				t.Fatalf("user enable: %d %s %s", code, out, errOut)
			}
		}
		password := "password-of-ops"
		if strings.HasPrefix(tc.name, "role") {
			password = "a-new-password-for-ops"
		}
		c := serveConsoleClient(e, r1.base)
		c.signIn(t, "ops@example.com", password)
		other := c.copyOf(r2.base)
		other.live(t, tc.name+": the copy before")
		tc.change()
		c.dead(t, tc.name+": replica 1")
		other.dead(t, tc.name+": replica 2")
	}
	e.remember("a-new-password-for-ops")
}

// TestConsoleSignOutInBrowser: an operator signs out with the console's button in headless Chromium;
// a copy of the cookie taken before is sent to the sign-in page and cannot post.
func TestConsoleSignOutInBrowser(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	e.createUser("admin@example.com", "correct horse battery", "admin")
	b := newBrowser(t, ce.url)
	b.signIn("admin@example.com", "correct horse battery")
	ck := b.cookie(console.SessionCookie)
	if ck == nil {
		t.Fatal("no session cookie in the browser")
	}
	copied := ce.client(t)
	copied.setCookies[console.SessionCookie] = &http.Cookie{Name: ck.Name, Value: ck.Value, Path: ck.Path}
	copied.live(t, "the copied cookie before sign-out")
	if res := copied.post(t, "/console/provisioning", url.Values{"csrf": {copied.csrf}, "name": {"before"}}, copied.base); res.StatusCode != http.StatusCreated {
		t.Fatalf("the copied cookie could not post before sign-out (%d), so the test proves nothing", res.StatusCode)
	}
	b.do(chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	copied.dead(t, "the copied cookie after sign-out in the browser")
	b.open("/console/agents", "#login-form")
}

// TestConsoleSessionLifetimes: a session ends after IdleTimeout without use and after MaxLifetime
// however much it is used (the console's clock is injected; the database compares with it).
func TestConsoleSessionLifetimes(t *testing.T) {
	e := newEnv(t)
	clk := &testClock{now: time.Now()}
	con, err := console.New(console.Config{API: e.srv, Now: clk.Now, IdleTimeout: 30 * time.Minute, MaxLifetime: 8 * time.Hour,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(console.Mount(con, e.srv))
	t.Cleanup(srv.Close)
	ce := &consoleEnv{env: e, srv: srv, url: srv.URL}
	e.createUser("admin@example.com", "correct horse battery", "admin")

	c := ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	clk.advance(29 * time.Minute)
	c.live(t, "29 minutes idle")
	clk.advance(31 * time.Minute)
	c.dead(t, "31 minutes idle")

	c = ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	for i := 0; i < 31; i++ { // 31 × 15 min = 7 h 45 min, used all along
		clk.advance(15 * time.Minute)
		c.live(t, "in use within the absolute lifetime")
	}
	clk.advance(16 * time.Minute)
	c.dead(t, "past the absolute lifetime, though in use")
}
