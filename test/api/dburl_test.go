package api_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runBin runs the iotauth binary with env (plus PATH) and returns its combined output and exit code.
func runBin(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%v: %v", args, err)
	return "", 0
}

// TestDatabaseURLFlagPasswordWarns is O3 (docs/security.md) with the real binary: every command that takes
// the database URL warns on stderr when -database-url carries a password (it shows in ps) and says to
// use DATABASE_URL or -database-url-file / DATABASE_URL_FILE instead, without echoing the password;
// the file variants work (trailing newline ignored) and an unreadable file is a clear error naming it.
func TestDatabaseURLFlagPasswordWarns(t *testing.T) {
	dsn := pg.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	const pw = "pw-in-argv-8Hq2"
	u.User = url.UserPassword(u.User.Username(), pw) // trust authentication ignores it
	withPW := u.String()
	const warning = "the -database-url value carries a password"

	checkWarned := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, warning) || !strings.Contains(out, "DATABASE_URL") || !strings.Contains(out, "-database-url-file") || !strings.Contains(out, "ps") {
			t.Errorf("%s: no warning about the password in -database-url:\n%s", what, out)
		}
		if strings.Contains(out, pw) {
			t.Errorf("%s: the output repeats the password:\n%s", what, out)
		}
	}
	out, code := runBin(t, []string{"IOTAUTH_PASSWORD=a long enough passphrase"}, "user", "create", "-database-url", withPW, "--email", "ops@example.com", "--role", "operator")
	if code != 0 {
		t.Fatalf("user create: %d\n%s", code, out)
	}
	checkWarned("user create", out)
	out, code = runBin(t, nil, "agent", "create", "-database-url", withPW, "-name", "gw")
	if code != 0 {
		t.Fatalf("agent create: %d\n%s", code, out)
	}
	checkWarned("agent create", out)
	var agent struct {
		AgentUUID string `json:"agentUuid"`
		KeyID     string `json:"keyId"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &agent); err != nil {
		t.Fatalf("agent create output: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"migrate", "-database-url", withPW},
		{"agent", "disable", "-database-url", withPW, agent.AgentUUID},
		{"agent", "enable", "-database-url", withPW, agent.AgentUUID},
		{"agent", "rotate-password", "-database-url", withPW, agent.AgentUUID},
		{"key", "revoke", "-database-url", withPW, agent.KeyID},
	} {
		out, code := runBin(t, nil, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", args[:2], code, out)
		}
		checkWarned(strings.Join(args[:2], " "), out)
	}
	// serve warns before anything else (here it then stops for want of a signing key).
	out, code = runBin(t, nil, "serve", "-database-url", withPW)
	if code != 1 {
		t.Fatalf("serve without a signing key: exit %d\n%s", code, out)
	}
	checkWarned("serve", out)

	// No password in the flag: no warning. The password in DATABASE_URL: no warning either.
	if out, code := runBin(t, nil, "migrate", "-database-url", dsn); code != 0 || strings.Contains(out, warning) {
		t.Errorf("migrate with a password-less URL: %d\n%s", code, out)
	}
	if out, code := runBin(t, []string{"DATABASE_URL=" + withPW}, "migrate"); code != 0 || strings.Contains(out, warning) {
		t.Errorf("migrate with DATABASE_URL: %d\n%s", code, out)
	}
	// serve -h does not print the URL from the environment as a flag default.
	if out, _ := runBin(t, []string{"DATABASE_URL=" + withPW}, "serve", "-h"); strings.Contains(out, pw) || !strings.Contains(out, "-database-url-file") {
		t.Errorf("serve -h shows the database password or lacks -database-url-file:\n%s", out)
	}

	// The URL in a file, by flag or by variable; the trailing newline is ignored.
	file := filepath.Join(t.TempDir(), "database-url")
	if err := os.WriteFile(file, []byte(withPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runBin(t, nil, "migrate", "-database-url-file", file); code != 0 || !strings.Contains(out, "up to date") || strings.Contains(out, warning) {
		t.Errorf("migrate -database-url-file: %d\n%s", code, out)
	}
	if out, code := runBin(t, []string{"DATABASE_URL_FILE=" + file}, "agent", "disable", agent.AgentUUID); code != 0 || strings.Contains(out, warning) {
		t.Errorf("agent disable with DATABASE_URL_FILE: %d\n%s", code, out)
	}
	if out, code := runBin(t, nil, "serve", "-database-url-file", file); code != 1 || !strings.Contains(out, "JWT_SECRET") || strings.Contains(out, pw) {
		t.Errorf("serve -database-url-file (no signing key): %d\n%s", code, out)
	}
	// An unreadable file is an error that names it, for every command.
	missing := filepath.Join(t.TempDir(), "no-such-file")
	for _, args := range [][]string{
		{"migrate", "-database-url-file", missing},
		{"serve", "-database-url-file", missing},
		{"agent", "create", "-database-url-file", missing, "-name", "x"},
	} {
		if out, code := runBin(t, []string{"JWT_SECRET=" + string(hsSecret)}, args...); code != 1 || !strings.Contains(out, missing) || !strings.Contains(out, "cannot read the database URL") {
			t.Errorf("%v: exit %d, want 1 and an error naming the file:\n%s", args[:2], code, out)
		}
	}
	if out, code := runBin(t, []string{"DATABASE_URL_FILE=" + missing}, "migrate"); code != 1 || !strings.Contains(out, missing) || !strings.Contains(out, "DATABASE_URL_FILE") {
		t.Errorf("migrate with an unreadable DATABASE_URL_FILE: exit %d:\n%s", code, out)
	}
}
