package api_test

import (
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/test/harness"
)

func loginReq(email, password string) req {
	return req{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]string{"email": email, "password": password}}
}

// TestLoginFailuresAreIdentical is L1: unknown email, wrong password and a disabled account get one
// byte-identical 401.
func TestLoginFailuresAreIdentical(t *testing.T) {
	e := newEnv(t)
	e.createUser("alice@example.com", "alice's password", "operator")
	u := e.createUser("bob@example.com", "bob's password!", "viewer")
	disabled := true
	harness.Exec(t, e.dsn, `UPDATE users SET disabled = $2 WHERE id = $1`, u.ID, disabled)
	e.remember("wrong password")
	before := e.fingerprint()
	var bodies []string
	for _, r := range []req{
		loginReq("nobody@example.com", "alice's password"),
		loginReq("alice@example.com", "wrong password"),
		loginReq("bob@example.com", "bob's password!"),
		loginReq("ALICE@example.com", "wrong password"),
	} {
		res := e.expect(r, 401, "invalid_credentials")
		bodies = append(bodies, string(res.Body))
		if res.Header.Get("Retry-After") != "" {
			t.Fatal("a plain failure carries Retry-After")
		}
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Fatalf("answers differ:\n%s\n%s", bodies[0], b)
		}
	}
	if e.fingerprint() != before {
		t.Fatal("failed logins changed the database")
	}
	if n := e.count("audit_events", "action = 'login' AND outcome = 'failure'"); n != 4 {
		t.Fatalf("%d failed logins audited, want 4", n)
	}
	// Emails are case-insensitive for the real user too.
	e.login("Alice@Example.com", "alice's password")
}

// TestLoginTimingEqualised is L2: a login for an unknown email costs an argon2id verify like a wrong
// password does (medians within a generous factor, as the machine is shared).
func TestLoginTimingEqualised(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.LoginMaxFailures = 100; c.LoginMaxFailuresPerAddr = 100 }))
	e.createUser("alice@example.com", "alice's password", "operator")
	e.remember("not the password")
	median := func(email string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			e.expect(loginReq(email, "not the password"), 401, "invalid_credentials")
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	known, unknown := median("alice@example.com"), median("nobody@example.com")
	if unknown < known/3 || known < unknown/3 {
		t.Fatalf("unknown email %s vs wrong password %s: an attacker can tell them apart", unknown, known)
	}
}

// TestLoginThrottle is L3: after the allowed failures an account gets 429 with Retry-After, even with
// the right password; after the window the real admin gets in. A client address hammering many
// accounts is throttled too. The windows pass on the API's clock, which the test moves.
func TestLoginThrottle(t *testing.T) {
	clock := &testClock{now: time.Now()}
	e := newEnv(t, withConfig(func(c *api.Config) {
		c.Now = clock.Now
		c.LoginWindow = 2 * time.Second
		c.LoginMaxFailures = 3
		c.LoginMaxFailuresPerAddr = 8
	}))
	e.createUser("admin@example.com", "correct horse battery", "admin")
	e.remember("guess-1", "guess-2", "guess-3", "guess-4")
	for i := 1; i <= 3; i++ {
		e.expect(loginReq("admin@example.com", "guess-"+strconv.Itoa(i)), 401, "invalid_credentials")
	}
	res := e.expect(loginReq("admin@example.com", "guess-4"), http.StatusTooManyRequests, "login_throttled")
	ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q, want 1..2 seconds", res.Header.Get("Retry-After"))
	}
	// The right password does not get through the lockout either (no oracle).
	e.expect(loginReq("admin@example.com", "correct horse battery"), http.StatusTooManyRequests, "login_throttled")
	// Another account from the same address is not locked by this one's failures.
	e.createUser("ops@example.com", "operator password", "operator")
	e.login("ops@example.com", "operator password")
	// After the window, the admin gets in.
	clock.advance(time.Duration(ra)*time.Second + 100*time.Millisecond)
	e.login("admin@example.com", "correct horse battery")

	// Per address: failures spread over many accounts still hit the address limit.
	clock.advance(2100 * time.Millisecond)
	for i := 0; i < 8; i++ {
		e.expect(loginReq("user"+strconv.Itoa(i)+"@example.com", "guess-1"), 401, "invalid_credentials")
	}
	e.expect(loginReq("someone-else@example.com", "guess-1"), http.StatusTooManyRequests, "login_throttled")
	if e.count("audit_events", "action = 'login' AND outcome = 'success'") != 2 {
		t.Fatal("successful logins not audited")
	}
}

// TestNoDefaultAccount is L6: a fresh installation has no user, so no login works.
func TestNoDefaultAccount(t *testing.T) {
	e := newEnv(t)
	if e.count("users", "") != 0 {
		t.Fatal("a fresh database has users")
	}
	for _, c := range [][2]string{{"admin@example.com", "admin"}, {"admin", "admin"}, {"admin@localhost", "password"}} {
		e.expect(loginReq(c[0], c[1]), 401, "invalid_credentials")
	}
}

// TestLoginThrottleHoldsUnderConcurrency is L3 against a parallel burst: attempts are reserved before
// the password is checked, so 40 simultaneous guesses get no more than the allowed number of answers.
func TestLoginThrottleHoldsUnderConcurrency(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) {
		c.LoginWindow = time.Minute
		c.LoginMaxFailures = 3
		c.LoginMaxFailuresPerAddr = 100
	}))
	e.createUser("admin@example.com", "correct horse battery", "admin")
	e.remember("parallel-guess")
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do(loginReq("admin@example.com", "parallel-guess"))
			mu.Lock()
			counts[r.Status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[401] != 3 || counts[429] != 37 {
		t.Fatalf("40 parallel wrong passwords: %v; want exactly 3 checked (401) and 37 throttled (429)", counts)
	}
}
