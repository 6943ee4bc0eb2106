package api_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLookAlikeEmailsAreRefused: an address that only looks like an existing one
// (a zero-width space, a Cyrillic а, a right-to-left override, a Greek ο in the domain) is refused
// with a 400 that says why, by the API and by `iotauth user create`, and logging in with one fails
// like an unknown email; compatibility forms fold to the address they stand for (NFKC), at creation
// and at login alike.
func TestLookAlikeEmailsAreRefused(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	create := func(addr string) req {
		return req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
			Body: map[string]string{"email": addr, "password": "a long enough passphrase", "role": "admin"}}
	}
	e.remember("a long enough passphrase")
	users := e.count("users", "")
	for _, addr := range []string{
		"admin@example.com\u200b",
		"ad\u200bmin@example.com",
		"\u0430dmin@example.com",
		"\u202eadmin@example.com",
		"admin@ex\u0430mple.com",
		"admin@examp\u03bfle.com",
		"admin\u2060@example.com",
		"admin\u3164@example.com",
		"admin\u00ad@example.com",
	} {
		res := e.do(create(addr))
		if res.Status != 400 {
			t.Errorf("%+q: status %d, want 400: %s", addr, res.Status, res.Body)
			continue
		}
		if p := res.Problem(t); p.Code != "validation_failed" || p.Field != "email" || p.Detail == "" {
			t.Errorf("%+q: %+v", addr, p)
		}
		// At login a look-alike is an unknown account (one answer, docs/security.md, L1), even with the real
		// account's password.
		e.expect(req{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]string{"email": addr, "password": "correct horse battery"}}, 401, "invalid_credentials")
	}
	if n := e.count("users", ""); n != users {
		t.Fatalf("%d users were created from look-alike addresses", n-users)
	}
	// Compatibility and case forms are the same address: taken at creation, found at login.
	for _, addr := range []string{"ａｄｍｉｎ@example.com", " Admin@EXAMPLE.com", "ADMIN＠ｅｘａｍｐｌｅ．ｃｏｍ"} {
		e.expect(create(addr), 409, "email_taken")
		e.login(addr, "correct horse battery")
	}
	// One script other than Latin is fine, and its upper case logs in.
	e.expect(create("σοφία@παράδειγμα.ελ"), 201, "")
	e.login("ΣΟΦΊΑ@ΠΑΡΆΔΕΙΓΜΑ.ΕΛ", "a long enough passphrase")

	// The CLI applies the same rules.
	cmd := exec.Command(binary(t), "user", "create", "--email", "\u0430dmin@example.com", "--role", "admin")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + e.dsn, "IOTAUTH_PASSWORD=another long passphrase"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mixes letters of the Cyrillic and Latin scripts") {
		t.Fatalf("user create accepted a look-alike address or did not say why (%v):\n%s", err, out)
	}
}
