package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// cliSecret matches every kind of secret the CLI could print.
var cliSecret = regexp.MustCompile(`(iotsk|iotak|iotmp|prov)_[A-Za-z0-9_]{20,}`)

// cli runs the real iotauth binary against dsn with extra environment and returns stdout, stderr and
// the exit code.
func cli(t *testing.T, dsn string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=" + dsn}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("iotauth %v: %v", args, err)
	return "", "", 0
}

// mustCLI is cli that expects exit 0.
func mustCLI(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, dsn, nil, args...)
	if code != 0 {
		t.Fatalf("iotauth %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// jsonLines decodes JSON Lines output: every line one object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var items []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", sc.Text(), err)
		}
		items = append(items, m)
	}
	return items
}

// TestCLIGroupHelp: `iotauth <group> -h` lists the group's commands and exits 0 for every group; a
// bare group or an unknown command in it is a usage error (2); a command's -h exits 0.
func TestCLIGroupHelp(t *testing.T) {
	t.Parallel()
	for group, wants := range map[string][]string{
		"agent":   {"agent create", "agent list", "agent show", "agent disable", "agent enable", "agent rotate-password"},
		"key":     {"key list", "key revoke"},
		"user":    {"user create", "user list", "user disable", "user enable"},
		"app-key": {"app-key create", "app-key list", "app-key revoke"},
		"license": {"license keygen", "license issue", "license verify"},
		"audit":   {"audit tail"},
	} {
		for _, h := range []string{"-h", "--help", "help"} {
			out, errOut, code := cli(t, "", nil, group, h)
			if code != 0 {
				t.Fatalf("iotauth %s %s: exit %d\n%s", group, h, code, errOut)
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("iotauth %s %s does not list %q:\n%s", group, h, w, out)
				}
			}
		}
		if _, errOut, code := cli(t, "", nil, group); code != 2 || !strings.Contains(errOut, wants[0]) {
			t.Errorf("bare iotauth %s: exit %d, want 2 with the group's commands:\n%s", group, code, errOut)
		}
		if _, errOut, code := cli(t, "", nil, group, "nosuch"); code != 2 || !strings.Contains(errOut, "unknown command") {
			t.Errorf("iotauth %s nosuch: exit %d, want 2:\n%s", group, code, errOut)
		}
		if _, errOut, code := cli(t, "", nil, wants[0][len(group)+1:] /* not a group */); code != 2 {
			t.Errorf("a command word alone: exit %d:\n%s", code, errOut)
		}
	}
	for _, c := range [][]string{{"agent", "list", "-h"}, {"agent", "show", "-h"}, {"key", "list", "-h"}, {"user", "list", "-h"}, {"app-key", "list", "-h"}, {"audit", "tail", "-h"}, {"version", "-h"}} {
		if _, errOut, code := cli(t, "", nil, c...); code != 0 || !strings.Contains(errOut, "-json") {
			t.Errorf("iotauth %v: exit %d, want 0 and the flags (with -json):\n%s", c, code, errOut)
		}
	}
	if _, _, code := cli(t, "", nil, "agent", "list", "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

// TestCLIListShowAndExitCodes runs docs/cli.md's list commands with the real binary and PostgreSQL: agent list|show,
// key list, user list|disable|enable, app-key list and version, each with --json (JSON Lines, the REST
// API's fields, no secret), exit codes 3 (not found) and 4 (refused), and every change audited with
// the actor cli:<os user>.
func TestCLIListShowAndExitCodes(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	var created []map[string]any
	for _, name := range []string{"gw-1", "gw-2", "gw-3"} {
		var a map[string]any
		if err := json.Unmarshal([]byte(mustCLI(t, dsn, "agent", "create", "-name", name)), &a); err != nil {
			t.Fatal(err)
		}
		created = append(created, a)
	}
	agents := jsonLines(t, mustCLI(t, dsn, "agent", "list", "--json"))
	if len(agents) != 3 || agents[0]["uuid"] != created[0]["agentUuid"] || agents[2]["name"] != "gw-3" || agents[0]["status"] != "active" {
		t.Fatalf("agent list --json: %v", agents)
	}
	if n := len(jsonLines(t, mustCLI(t, dsn, "agent", "list", "--json", "--limit", "2"))); n != 2 {
		t.Fatalf("--limit 2 printed %d", n)
	}
	table := mustCLI(t, dsn, "agent", "list")
	if !strings.HasPrefix(table, "UUID") || strings.Count(table, "\n") != 4 {
		t.Fatalf("agent list table:\n%s", table)
	}
	first := created[0]["agentUuid"].(string)
	mustCLI(t, dsn, "agent", "disable", first)
	if got := jsonLines(t, mustCLI(t, dsn, "agent", "list", "--status", "disabled", "--json")); len(got) != 1 || got[0]["uuid"] != first {
		t.Fatalf("agent list --status disabled: %v", got)
	}
	// show: flags after the argument work too; the keys are shown by prefix only.
	show := jsonLines(t, mustCLI(t, dsn, "agent", "show", first, "--json"))
	if len(show) != 1 {
		t.Fatalf("agent show --json printed %d lines", len(show))
	}
	agent, keys := show[0]["agent"].(map[string]any), show[0]["keys"].([]any)
	if agent["uuid"] != first || agent["status"] != "disabled" || len(keys) != 1 || keys[0].(map[string]any)["id"] != created[0]["keyId"] {
		t.Fatalf("agent show: %v", show[0])
	}
	if p := keys[0].(map[string]any)["prefix"].(string); !strings.HasPrefix(created[0]["apiKey"].(string), p) {
		t.Fatalf("key prefix %q", p)
	}
	if text := mustCLI(t, dsn, "agent", "show", first); !strings.Contains(text, "status:") || !strings.Contains(text, created[0]["keyId"].(string)) {
		t.Fatalf("agent show text:\n%s", text)
	}
	if n := len(jsonLines(t, mustCLI(t, dsn, "key", "list", "--json"))); n != 3 {
		t.Fatalf("key list: %d keys, want 3", n)
	}
	if got := jsonLines(t, mustCLI(t, dsn, "key", "list", "--agent", first, "--json")); len(got) != 1 || got[0]["agentUuid"] != first {
		t.Fatalf("key list --agent: %v", got)
	}
	mustCLI(t, dsn, "key", "revoke", created[1]["keyId"].(string))
	mustCLI(t, dsn, "app-key", "create", "--name", "dash", "--right", "agents:read")
	if got := jsonLines(t, mustCLI(t, dsn, "app-key", "list", "--json")); len(got) != 1 || got[0]["name"] != "dash" {
		t.Fatalf("app-key list --json: %v", got)
	}

	// Users: the last admin cannot be disabled (4); by email or id; unknown → 3.
	env := []string{"IOTAUTH_PASSWORD=a long enough passphrase"}
	for _, u := range [][2]string{{"root@example.com", "admin"}, {"ops@example.com", "operator"}} {
		if out, errOut, code := cli(t, dsn, env, "user", "create", "--email", u[0], "--role", u[1]); code != 0 {
			t.Fatalf("user create: %d %s%s", code, out, errOut)
		}
	}
	users := jsonLines(t, mustCLI(t, dsn, "user", "list", "--json"))
	if len(users) != 2 || users[0]["email"] != "root@example.com" || users[0]["disabled"] != false {
		t.Fatalf("user list: %v", users)
	}
	if _, errOut, code := cli(t, dsn, nil, "user", "disable", "ROOT@example.com"); code != 4 || !strings.Contains(errOut, "last enabled admin") {
		t.Fatalf("disabling the last admin: exit %d %s", code, errOut)
	}
	mustCLI(t, dsn, "user", "disable", users[1]["id"].(string))
	if got := jsonLines(t, mustCLI(t, dsn, "user", "list", "--json")); got[1]["disabled"] != true {
		t.Fatalf("user not disabled: %v", got)
	}
	mustCLI(t, dsn, "user", "enable", "ops@example.com")

	const missing = "00000000-0000-4000-8000-000000000000"
	for _, c := range [][]string{{"agent", "show", missing}, {"agent", "show", "junk"}, {"agent", "disable", missing}, {"agent", "rotate-password", missing},
		{"key", "revoke", missing}, {"app-key", "revoke", missing}, {"user", "disable", "nobody@example.com"}, {"user", "disable", missing}} {
		if _, errOut, code := cli(t, dsn, nil, c...); code != 3 {
			t.Errorf("iotauth %v: exit %d, want 3 (not found):\n%s", c, code, errOut)
		}
	}
	if _, _, code := cli(t, dsn, env, "user", "create", "--email", "root@example.com", "--role", "admin"); code != 4 {
		t.Errorf("duplicate user: exit %d, want 4", code)
	}
	if _, _, code := cli(t, dsn, nil, "agent", "show"); code != 2 {
		t.Errorf("agent show without uuid: exit %d, want 2", code)
	}
	if _, errOut, code := cli(t, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2", nil, "agent", "list"); code != 1 || !strings.Contains(errOut, "cannot reach PostgreSQL") {
		t.Errorf("unreachable database: exit %d, want 1:\n%s", code, errOut)
	}

	var v map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, dsn, "version", "--json")), &v); err != nil || v["schemaVersion"].(float64) < 5 || v["version"] == "" {
		t.Fatalf("version --json: %v %v", v, err)
	}

	// Nothing listed holds a secret.
	for _, c := range [][]string{{"agent", "list", "--json"}, {"agent", "show", first, "--json"}, {"key", "list", "--json"}, {"app-key", "list", "--json"}, {"user", "list", "--json"}} {
		if s := cliSecret.FindString(mustCLI(t, dsn, c...)); s != "" {
			t.Errorf("iotauth %v prints a secret %s…", c, s[:8])
		}
	}
	// Every change above is in the audit trail, by cli:<os user>.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	actor := "cli:" + me.Username
	for _, action := range []string{"agent_create", "agent_disable", "api_key_revoke", "app_key_create", "user_create", "user_update"} {
		var n int
		if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM audit_events WHERE action = $1 AND actor = $2`, action, actor).Scan(&n); err != nil || n == 0 {
			t.Errorf("no audit event %s by %s (%v)", action, actor, err)
		}
	}
	var target string
	if err := harness.QueryRow(t, dsn, `SELECT target FROM audit_events WHERE action = 'agent_disable'`).Scan(&target); err != nil || target != "agent:"+first {
		t.Errorf("agent_disable target %q (%v)", target, err)
	}
}
