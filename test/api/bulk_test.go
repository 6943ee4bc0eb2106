package api_test

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/test/harness"
)

// TestBulkAgentCreate is bulk provisioning (docs/cli.md) with the real binary, PostgreSQL and Mosquitto: `agent create
// --count 10000 --format csv --out FILE` makes 10,000 agents whose printed credentials connect, writes
// the file 0600 and never overwrites one, audits each agent, and prints no secret to stderr; jsonl to
// stdout works too.
func TestBulkAgentCreate(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	lic := devLicenseEnv(t)
	out := filepath.Join(t.TempDir(), "fleet.csv")
	start := time.Now()
	stdout, stderr, code := cli(t, dsn, lic, "agent", "create", "--count", "10000", "--name-prefix", "factory-", "--format", "csv", "--out", out)
	if code != 0 {
		t.Fatalf("bulk create: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("10,000 agents in %v (the binary says: %s)", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr))
	if stdout != "" || cliSecret.MatchString(stderr) {
		t.Fatalf("secrets outside the out file: stdout %q stderr %q", stdout, stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("out file mode %v (%v), want 0600", fi.Mode(), err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 10001 || strings.Join(recs[0], ",") != "agent_uuid,name,key_id,api_key,mqtt_password,client_id" {
		t.Fatalf("%d CSV records, header %v", len(recs), recs[0])
	}
	uuids := map[string]bool{}
	for _, r := range recs[1:] {
		uuids[r[0]] = true
		if r[5] != "agent-"+r[0] || !strings.HasPrefix(r[3], "iotsk_live_") || !strings.HasPrefix(r[4], "iotmp_") {
			t.Fatalf("bad record %v", r[:3])
		}
	}
	if len(uuids) != 10000 || recs[1][1] != "factory-00001" || recs[10000][1] != "factory-10000" {
		t.Fatalf("%d distinct agents; names %s … %s", len(uuids), recs[1][1], recs[10000][1])
	}
	var agents, keys, creds, audits int
	if err := harness.QueryRow(t, dsn, `SELECT (SELECT count(*) FROM agents), (SELECT count(*) FROM api_keys), (SELECT count(*) FROM mqtt_credentials),
		(SELECT count(*) FROM audit_events WHERE action = 'agent_create' AND actor LIKE 'cli:%' AND target LIKE 'agent:%')`).Scan(&agents, &keys, &creds, &audits); err != nil {
		t.Fatal(err)
	}
	if agents != 10000 || keys != 10000 || creds != 10000 || audits != 10000 {
		t.Fatalf("database holds %d agents, %d keys, %d credentials, %d audit events; want 10000 each", agents, keys, creds, audits)
	}
	// The printed credentials connect, first and last.
	b := harness.PluginBroker(t, dsn)
	for _, r := range [][]string{recs[1], recs[10000]} {
		c, err := harness.Connect(b, r[3], r[4], r[5])
		if err != nil {
			t.Fatalf("bulk credentials of %s do not connect: %v", r[1], err)
		}
		c.Disconnect(10)
	}
	// Never overwritten.
	if _, errOut, code := cli(t, dsn, lic, "agent", "create", "--count", "1", "--out", out); code != 1 || !strings.Contains(errOut, "never overwritten") {
		t.Fatalf("existing --out file: exit %d\n%s", code, errOut)
	}
	// jsonl on stdout.
	stdout, _, code = cli(t, dsn, lic, "agent", "create", "--count", "3", "--format", "jsonl")
	lines := jsonLines(t, stdout)
	if code != 0 || len(lines) != 3 || lines[2]["name"] != "agent-3" || lines[0]["clientId"] != "agent-"+lines[0]["agentUuid"].(string) || lines[0]["mqttPassword"] == "" {
		t.Fatalf("jsonl: exit %d %v", code, lines)
	}
	var n int
	if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM agents`).Scan(&n); err != nil || n != 10003 {
		t.Fatalf("%d agents, want 10003 (%v)", n, err)
	}
	for _, bad := range [][]string{{"--count", "0"}, {"--count", "2", "--format", "xml"}, {"--count", "2", "-name", "x"}, {"--format", "csv"}} {
		if _, _, code := cli(t, dsn, lic, append([]string{"agent", "create"}, bad...)...); code != 2 {
			t.Errorf("agent create %v: exit %d, want 2", bad, code)
		}
	}
}

// TestBulkAgentCreateDeviceLimit: bulk creation respects the license like REST registration: a
// restricted license refuses (exit 4), and a count that would pass maxDevices creates nothing (exit 4);
// one that fits is made.
func TestBulkAgentCreateDeviceLimit(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	now := time.Now()
	tok := edVendor().issue(t, license.Terms{IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(24 * time.Hour), MaxDevices: 5})
	lic := licenseFiles(t, t.TempDir(), edVendor().pubPEM, tok)
	count := func() int {
		var n int
		if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM agents`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, errOut, code := cli(t, dsn, nil, "agent", "create", "--count", "2"); code != 4 || !strings.Contains(errOut, "license") || count() != 0 {
		t.Fatalf("without a license: exit %d, %d agents\n%s", code, count(), errOut)
	}
	if out, errOut, code := cli(t, dsn, lic, "agent", "create", "--count", "3"); code != 0 || len(jsonLines(t, out)) != 3 {
		t.Fatalf("3 of 5: exit %d\n%s", code, errOut)
	}
	out, errOut, code := cli(t, dsn, lic, "agent", "create", "--count", "3", "--batch-size", "1")
	if code != 4 || out != "" || count() != 3 || !strings.Contains(errOut, "device limit") {
		t.Fatalf("3 more past 5: exit %d, %d agents, stdout %q\n%s", code, count(), out, errOut)
	}
	// Refused before anything started: no --out file is left behind (so the same command works once there
	// is room), and the message says that nothing was created and why.
	outFile := filepath.Join(t.TempDir(), "f.jsonl")
	_, errOut, code = cli(t, dsn, lic, "agent", "create", "--count", "3", "--out", outFile)
	if _, statErr := os.Stat(outFile); code != 4 || count() != 3 || !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("3 more past 5 with --out: exit %d, %d agents, file: %v\n%s", code, count(), statErr, errOut)
	}
	for _, want := range []string{"nothing was created", "allows 5 devices and 3 are registered", "no room for 3 more", "create at most 2"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "0 of 3") {
		t.Errorf("a refusal before anything started reads like a partial failure:\n%s", errOut)
	}
	if _, errOut, code := cli(t, dsn, lic, "agent", "create", "--count", "2", "--format", "csv", "--out", outFile); code != 0 || count() != 5 {
		t.Fatalf("2 more up to 5 into the same --out: exit %d, %d agents\n%s", code, count(), errOut)
	}
	if b, err := os.ReadFile(outFile); err != nil || strings.Count(string(b), "\n") != 3 {
		t.Fatalf("--out after the refusal: %v\n%s", err, b)
	}
	// The break-glass single create still works past the limit, as documented.
	var one map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, dsn, "agent", "create", "-name", "spare")), &one); err != nil || count() != 6 {
		t.Fatalf("single create past the limit: %v, %d agents", err, count())
	}

	// Concurrent bulk creations cannot pass the limit together: both pass the first check (0 + 3 ≤ 5),
	// then every batch (of one here) counts under the registration lock, so exactly 5 agents exist.
	dsn2 := pg.NewDatabase(t)
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			_, _, code := cli(t, dsn2, lic, "agent", "create", "--count", "3", "--batch-size", "1")
			codes <- code
		}()
	}
	c1, c2 := <-codes, <-codes
	var n int
	if err := harness.QueryRow(t, dsn2, `SELECT count(*) FROM agents`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 5 || (c1 == 0 && c2 == 0) || (c1 != 0 && c1 != 4) || (c2 != 0 && c2 != 4) {
		t.Fatalf("concurrent bulk creations: exits %d and %d, %d agents (limit 5)", c1, c2, n)
	}
}
