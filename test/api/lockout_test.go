package api_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/throttle"
	"github.com/iotauth/iotauth/backend/throttle/throttletest"
	"github.com/iotauth/iotauth/test/harness"
)

// loginKey is the login key the replicas of one test share (as `iotauth serve` derives it from the
// JWT key every replica has).
var loginKey = bytes.Repeat([]byte("k"), 32)

// replica starts a second API server on e's database, as another `iotauth serve` would be. It logs
// into e's buffer, so the leak checks cover it.
func (e *env) replica(cfg func(*api.Config)) *env {
	e.t.Helper()
	r := &env{t: e.t, dsn: e.dsn, st: e.st, tokens: e.tokens, logs: e.logs}
	c := api.Config{Store: e.st, Tokens: e.tokens, Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), MaxConcurrentHashes: 2}
	if cfg != nil {
		cfg(&c)
	}
	var err error
	if r.srv, err = api.New(c); err != nil {
		e.t.Fatal(err)
	}
	r.http = httptest.NewServer(r.srv)
	e.t.Cleanup(func() {
		r.http.Close()
		e.mu.Lock()
		r.secrets = append(r.secrets, e.secrets...)
		e.mu.Unlock()
		r.checkNoSecretsLeaked()
	})
	return r
}

// loginWith sends a login with extra headers (a cookie, X-Forwarded-For).
func loginWith(email, password string, header map[string]string) req {
	r := loginReq(email, password)
	r.Header = header
	return r
}

// deviceCookie returns the device cookie a successful login set, checking its attributes.
func (e *env) deviceCookie(res resp, secure bool) string {
	e.t.Helper()
	for _, line := range res.Header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Name != api.DeviceCookieName {
			continue
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/api/v1/auth/login" || c.MaxAge < 30*24*3600 || c.Secure != secure {
			e.t.Fatalf("device cookie attributes: %q (want HttpOnly, SameSite=Strict, Path=/api/v1/auth/login, long Max-Age, Secure=%v)", line, secure)
		}
		e.remember(c.Value)
		return c.Value
	}
	e.t.Fatalf("no %s cookie in a successful login's answer: %v", api.DeviceCookieName, res.Header)
	return ""
}

func cookieHeader(v string) map[string]string {
	return map[string]string{"Cookie": api.DeviceCookieName + "=" + v}
}

// TestLoginAttemptsConformance runs the throttle's counter suite against PostgreSQL's counter (the one
// `iotauth serve` uses), including 30 parallel attempts that must let exactly the limit through.
func TestLoginAttemptsConformance(t *testing.T) {
	throttletest.Run(t, func(t *testing.T) throttle.Counter {
		return harness.OpenStore(t, pg.NewDatabase(t)).Accounts.LoginAttempts()
	})
}

// TestLoginBudgetSharedByReplicas is U2's "shared by every replica": two API servers on one database
// (replica B used to accept 5 more tries). Failures alternate between them and the
// account locks after the limit on both; the window passes on the API clock; the table is pruned.
func TestLoginBudgetSharedByReplicas(t *testing.T) {
	clock := &testClock{now: time.Now()}
	cfg := func(c *api.Config) {
		c.Now = clock.Now
		c.LoginWindow = time.Minute
		c.LoginMaxFailures = 4
		c.LoginKey = loginKey
	}
	a := newEnv(t, withConfig(cfg))
	b := a.replica(cfg)
	a.createUser("admin@example.com", "correct horse battery", "admin")
	a.remember("guess")
	for i := 0; i < 4; i++ {
		[]*env{a, b}[i%2].expect(loginReq("admin@example.com", "guess"), 401, "invalid_credentials")
	}
	for _, r := range []*env{a, b} {
		res := r.expect(loginReq("admin@example.com", "correct horse battery"), 429, "login_throttled")
		if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Fatalf("Retry-After %q", res.Header.Get("Retry-After"))
		}
	}
	// Parallel guesses spread over both replicas cannot outrun the limit either.
	clock.advance(time.Minute)
	statuses := make(chan int, 20)
	for i := 0; i < 20; i++ {
		go func() { statuses <- []*env{a, b}[i%2].do(loginReq("admin@example.com", "guess")).Status }()
	}
	counts := map[int]int{}
	for i := 0; i < 20; i++ {
		counts[<-statuses]++
	}
	if counts[401] != 4 || counts[429] != 16 {
		t.Fatalf("20 parallel guesses over two replicas: %v; want 4 checked and 16 throttled", counts)
	}
	clock.advance(time.Minute)
	b.login("admin@example.com", "correct horse battery")
	// Ended windows are pruned: a minute later (PruneInterval) nothing old is left.
	clock.advance(2 * time.Minute)
	a.expect(loginReq("nobody@example.com", "guess"), 401, "invalid_credentials")
	if n := a.count("login_attempts", "window_start < $1", clock.Now().Add(-time.Minute)); n != 0 {
		t.Fatalf("%d ended windows left after a prune", n)
	}
	if a.count("login_attempts", "budget_key LIKE '%example.com%'") != 0 {
		t.Fatal("the throttle stores emails in plaintext")
	}
}

// TestMadeUpEmailsDoNotLockOutTheAdmin is U2 against a reported attack: twenty failed logins with made-up
// emails from one address used to lock the real admin out for 15 minutes, everywhere. Now they spend only
// that address's budget: past it, logins from there without a known device are refused before any
// password is checked (an unknown email and the admin's alike, so the answer tells nothing about which
// accounts exist, and the address cannot go on spraying passwords). The admin gets in from that address
// with the device cookie of an earlier login, and from any other address; the made-up emails spent none of
// the admin's own budget.
func TestMadeUpEmailsDoNotLockOutTheAdmin(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})) // default limits: 5 per email, 20 per address, 15 minutes
	e.createUser("admin@example.com", "correct horse battery", "admin")
	e.remember("guess")
	attacker := map[string]string{"X-Forwarded-For": "203.0.113.66"}
	dev := e.deviceCookie(e.do(loginWith("admin@example.com", "correct horse battery", attacker)), false)
	for i := 0; i < 20; i++ {
		e.expect(loginWith("made-up-"+strconv.Itoa(i)+"@example.com", "guess", attacker), 401, "invalid_credentials")
	}
	unknown := e.expect(loginWith("made-up-x@example.com", "guess", attacker), 429, "login_throttled")
	known := e.expect(loginWith("admin@example.com", "correct horse battery", attacker), 429, "login_throttled")
	if !bytes.Equal(unknown.Body, known.Body) || unknown.Header.Get("Retry-After") != known.Header.Get("Retry-After") {
		t.Fatalf("an unknown email and a known one differ past the address budget:\n%s %s\n%s %s",
			unknown.Body, unknown.Header.Get("Retry-After"), known.Body, known.Header.Get("Retry-After"))
	}
	withCookie := cookieHeader(dev)
	withCookie["X-Forwarded-For"] = "203.0.113.66"
	e.expect(loginWith("admin@example.com", "correct horse battery", withCookie), 200, "")
	// From another address, without a cookie: the made-up emails spent none of the admin's budget (5).
	elsewhere := map[string]string{"X-Forwarded-For": "198.51.100.1"}
	for i := 0; i < 4; i++ {
		e.expect(loginWith("admin@example.com", "guess", elsewhere), 401, "invalid_credentials")
	}
	e.expect(loginWith("admin@example.com", "correct horse battery", elsewhere), 200, "")
}

// TestDeviceCookieSurvivesAccountLockout is U2's known-good device: after a login the API sets a signed
// device cookie bound to the user; an attacker's failures lock the admin's account for clients without
// it, but the admin's device logs in. A cookie of another user, a tampered one and none at all do not
// pass; the device has a budget of its own, which the window restores.
func TestDeviceCookieSurvivesAccountLockout(t *testing.T) {
	clock := &testClock{now: time.Now()}
	e := newEnv(t, withConfig(func(c *api.Config) {
		c.Now = clock.Now
		c.LoginWindow = 10 * time.Minute
		c.LoginMaxFailures = 3
		c.LoginMaxFailuresPerAddr = 1000
	}))
	e.createUser("admin@example.com", "correct horse battery", "admin")
	e.createUser("ops@example.com", "operator password", "operator")
	e.remember("guess")
	adminDev := e.deviceCookie(e.do(loginReq("admin@example.com", "correct horse battery")), false)
	opsDev := e.deviceCookie(e.do(loginReq("ops@example.com", "operator password")), false)

	// The attacker locks the admin's account.
	for i := 0; i < 3; i++ {
		e.expect(loginReq("admin@example.com", "guess"), 401, "invalid_credentials")
	}
	e.expect(loginReq("admin@example.com", "correct horse battery"), 429, "login_throttled")
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(opsDev)), 429, "login_throttled")
	tampered := []byte(adminDev)
	tampered[3] ^= 1
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(string(tampered))), 429, "login_throttled")
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader("garbage")), 429, "login_throttled")

	// The admin's own device gets in, and gets its cookie renewed (same device).
	res := e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(adminDev)), 200, "")
	renewed := e.deviceCookie(res, false)

	// The device's own budget: wrong passwords from it lock it, not forever.
	for i := 0; i < 3; i++ {
		e.expect(loginWith("admin@example.com", "guess", cookieHeader(renewed)), 401, "invalid_credentials")
	}
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(renewed)), 429, "login_throttled")
	clock.advance(10 * time.Minute)
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(renewed)), 200, "")
	// A device cookie is honoured for DeviceCookieTTL (180 days), then no longer.
	clock.advance(181 * 24 * time.Hour)
	for i := 0; i < 3; i++ {
		e.expect(loginReq("admin@example.com", "guess"), 401, "invalid_credentials")
	}
	e.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(renewed)), 429, "login_throttled")
	if e.count("audit_events", "action = 'login' AND outcome = 'success' AND detail->>'knownDevice' = 'true'") != 2 {
		t.Fatal("logins from a known device not audited as such")
	}
}

// TestDeviceCookieWorksOnEveryReplica: a cookie set by one replica is honoured by another sharing the
// login key, while the account is locked on both.
func TestDeviceCookieWorksOnEveryReplica(t *testing.T) {
	cfg := func(c *api.Config) { c.LoginMaxFailures = 2; c.LoginKey = loginKey }
	a := newEnv(t, withConfig(cfg))
	b := a.replica(cfg)
	a.createUser("admin@example.com", "correct horse battery", "admin")
	a.remember("guess")
	dev := a.deviceCookie(a.do(loginReq("admin@example.com", "correct horse battery")), false)
	a.expect(loginReq("admin@example.com", "guess"), 401, "invalid_credentials")
	b.expect(loginReq("admin@example.com", "guess"), 401, "invalid_credentials")
	b.expect(loginReq("admin@example.com", "correct horse battery"), 429, "login_throttled")
	b.expect(loginWith("admin@example.com", "correct horse battery", cookieHeader(dev)), 200, "")
}

// TestTrustedProxies is U2's X-Forwarded-For rule: from a peer that is not a configured proxy the
// header is ignored (a client cannot dodge its address budget by writing one); from a trusted proxy the
// right-most address that is not a proxy is the client (entries further left are the client's own
// words), and X-Forwarded-Proto https makes the device cookie Secure.
func TestTrustedProxies(t *testing.T) {
	limits := func(c *api.Config) { c.LoginMaxFailures = 100; c.LoginMaxFailuresPerAddr = 2 }
	t.Run("untrusted peer", func(t *testing.T) {
		e := newEnv(t, withConfig(limits))
		e.remember("guess")
		// X-Forwarded-Proto from an untrusted peer does not make the cookie Secure.
		e.createUser("admin@example.com", "correct horse battery", "admin")
		res := e.expect(loginWith("admin@example.com", "correct horse battery", map[string]string{"X-Forwarded-Proto": "https"}), 200, "")
		e.deviceCookie(res, false)
		for i := 0; i < 2; i++ {
			e.expect(loginWith("x@example.com", "guess", map[string]string{"X-Forwarded-For": "198.51.100." + strconv.Itoa(i)}), 401, "invalid_credentials")
		}
		e.expect(loginWith("x@example.com", "guess", map[string]string{"X-Forwarded-For": "198.51.100.99"}), 429, "login_throttled")
		// The admin's login and two failures; the third failure was refused before its password was
		// checked (and so not audited as a login).
		if n := e.count("audit_events", "action = 'login' AND remote_addr = '127.0.0.1'"); n != 3 {
			t.Fatalf("%d logins audited from the peer 127.0.0.1, want 3 (the header must be ignored)", n)
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		e := newEnv(t, withConfig(func(c *api.Config) {
			limits(c)
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
		}))
		e.remember("guess")
		// Two failures from client A, through two proxies, with a forged entry on the left.
		for _, xff := range []string{"203.0.113.1, 198.51.100.7, 10.1.2.3", "198.51.100.250, 198.51.100.7:4711"} {
			e.expect(loginWith("x@example.com", "guess", map[string]string{"X-Forwarded-For": xff}), 401, "invalid_credentials")
		}
		e.expect(loginWith("x@example.com", "guess", map[string]string{"X-Forwarded-For": "198.51.100.7"}), 429, "login_throttled")
		// Client B behind the same proxy has a budget of its own; so does the proxy itself.
		e.expect(loginWith("y@example.com", "guess", map[string]string{"X-Forwarded-For": "198.51.100.8"}), 401, "invalid_credentials")
		e.expect(loginReq("z@example.com", "guess"), 401, "invalid_credentials")
		// A malformed hop ends the walk at the last trusted hop: the proxy 10.9.9.9, not the forgery.
		e.expect(loginWith("z@example.com", "guess", map[string]string{"X-Forwarded-For": "203.0.113.5, not-an-ip, 10.9.9.9"}), 401, "invalid_credentials")
		if n := e.count("audit_events", "action = 'login' AND remote_addr = '10.9.9.9'"); n != 1 {
			t.Fatalf("%d logins audited from 10.9.9.9 after a malformed hop, want 1", n)
		}
		if n := e.count("audit_events", "action = 'login' AND remote_addr = '198.51.100.7'"); n != 2 {
			t.Fatalf("%d logins audited from 198.51.100.7, want 2 (the third was refused unchecked)", n)
		}
		if n := e.count("audit_events", "remote_addr IN ('203.0.113.1', '198.51.100.250')"); n != 0 {
			t.Fatal("a client-written X-Forwarded-For entry was believed")
		}
		e.createUser("admin@example.com", "correct horse battery", "admin")
		res := e.expect(loginWith("admin@example.com", "correct horse battery",
			map[string]string{"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"}), 200, "")
		e.deviceCookie(res, true)
	})
}

// TestParseTrustedProxies: TRUSTED_PROXIES takes CIDRs and single addresses; anything else is refused
// with a message that shows the accepted forms.
func TestParseTrustedProxies(t *testing.T) {
	got, err := api.ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.7 ,::1,,fd00::/8")
	if err != nil || len(got) != 4 || got[1].String() != "192.0.2.7/32" || got[2].String() != "::1/128" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example.com", "10.0.0.1:80"} {
		if _, err := api.ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") || !strings.Contains(err.Error(), "10.0.0.0/8") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// Trusting everyone would let any client write its own X-Forwarded-For; a mapped prefix never matches.
	for _, bad := range []string{"0.0.0.0/0", "::/0", "::ffff:10.0.0.0/104"} {
		if _, err := api.ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
}
