package plugin_test

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// runImportCLI runs the iotauth binary against e's database and returns stdout, stderr and the exit code
// (a bad import is an expected outcome here, not a test failure).
func (e *env) runImportCLI(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	bin, err := harness.BinPath()
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), "DATABASE_URL="+e.dsn)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("iotauth %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// writePasswd makes a real Mosquitto password_file with mosquitto_passwd: users[i] = {name, password,
// -H option ("" for the default)}.
func writePasswd(t *testing.T, users [][3]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	for i, u := range users {
		args := []string{"-b"}
		if u[2] != "" {
			args = append(args, "-H", u[2])
		}
		if i == 0 {
			args = append(args, "-c")
		}
		args = append(args, path, u[0], u[1])
		if out, err := runCmd("mosquitto_passwd", args...); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
		}
	}
	return path
}

// eventually retries f until it succeeds or d passes, and fails the test with f's last error.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connectEventually connects once the broker has learnt of an import (the NOTIFY reaches it within a
// second; 5 s leaves margin on a loaded machine).
func connectEventually(t *testing.T, b *harness.Broker, user, pass, clientID string) mqtt.Client {
	t.Helper()
	var c mqtt.Client
	eventually(t, 5*time.Second, "imported device "+user+" connects", func() (err error) {
		c, err = harness.Connect(b, user, pass, clientID)
		return err
	})
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func (e *env) legacyAgent(username string) (agentUUID, keyID string) {
	e.t.Helper()
	if err := harness.QueryRow(e.t, e.dsn, `SELECT agent_uuid::text, id::text FROM api_keys WHERE legacy_username = $1`, username).Scan(&agentUUID, &keyID); err != nil {
		e.t.Fatalf("legacy username %s: %v", username, err)
	}
	return agentUUID, keyID
}

func (e *env) passwordHash(agent string) string {
	e.t.Helper()
	var h string
	if err := harness.QueryRow(e.t, e.dsn, `SELECT password_hash FROM mqtt_credentials WHERE agent_uuid = $1::uuid`, agent).Scan(&h); err != nil {
		e.t.Fatal(err)
	}
	return h
}

func subscribeResult(t *testing.T, c mqtt.Client, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, func(mqtt.Client, mqtt.Message) {})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// Importing (docs/import.md): a real mosquitto_passwd file ($7$ default and sha512-pbkdf2, $6$ sha512) imported
// into a running broker's database: the devices connect UNCHANGED with mosquitto_pub and their old
// client ids, wrong passwords and other client ids are refused, their topics are the imported ones,
// unknown names cost no lookup, and the first connect records a fast hash without closing the session.
func TestImportPasswordFileConnectsUnchanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	passwd := writePasswd(t, [][3]string{
		{"dev-a", "pw-a correct horse", ""},
		{"dev-b", "pw-b", "sha512"},
		{"dev-c", "pw-c", "sha512-pbkdf2"},
	})
	raw, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dev-a:$7$", "dev-b:$6$", "dev-c:$7$"} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("mosquitto_passwd wrote no %s line:\n%s", want, raw)
		}
	}
	out, stderr, code := e.runImportCLI("import", "-format", "passwd", "--clientid", "%u", "--topic", "devices/%u/#", passwd)
	if code != 0 || !strings.Contains(out, "3 created") {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, stderr)
	}

	args := append(harness.CLIArgs(e.b, "dev-a", "pw-a correct horse", "dev-a"), "-q", "1", "-t", "devices/dev-a/status", "-m", "up")
	eventually(t, 5*time.Second, "mosquitto_pub as the imported dev-a", func() error {
		if out, code := harness.CLI(t, "mosquitto_pub", args...); code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	for _, tc := range []struct{ name, user, pass, id string }{
		{"wrong password", "dev-a", "pw-a wrong", "dev-a"},
		{"other client id", "dev-a", "pw-a correct horse", "dev-b"},
		{"unknown legacy-looking name", "dev-zzz", "pw-a correct horse", "dev-zzz"},
		{"another device's password", "dev-b", "pw-c", "dev-b"},
	} {
		out, code := harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, tc.user, tc.pass, tc.id), "-t", "devices/"+tc.user+"/x", "-m", "x")...)
		if code != 5 || !strings.Contains(out, "not authorised") {
			t.Errorf("%s: mosquitto_pub exit %d %q, want 5 and not authorised", tc.name, code, out)
		}
	}

	// Unknown names (and garbage) are refused from memory: no lookup. A forged key, which does cost a
	// lookup, shows the counter sees the connect path.
	before := e.lookups()
	for i := range 20 {
		_, err := harness.Connect(e.b, fmt.Sprintf("dev-unknown-%d", i), "pw", fmt.Sprintf("dev-unknown-%d", i))
		refused(t, err, "unknown legacy-looking name")
	}
	if n := e.lookups() - before; n != 0 {
		t.Fatalf("20 unknown legacy-looking names cost %d credential lookups, want 0", n)
	}
	forged, err := secret.Generate(secret.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = harness.Connect(e.b, forged.Reveal(), "iotmp_x", "agent-x")
	refused(t, err, "a forged well-formed key")
	if n := e.lookups() - before; n != 1 {
		t.Fatalf("a forged key cost %d lookups, want 1: is the lookup counter looking at the connect path?", n)
	}

	// dev-c ($7$, sha512-pbkdf2 option) and dev-b ($6$) connect with paho too; their topics are their own.
	agentA, _ := e.legacyAgent("dev-a")
	if h := e.passwordHash(agentA); !strings.HasPrefix(h, "$7$") && !strings.HasPrefix(h, "sha256$") {
		t.Fatalf("dev-a's stored hash %q", h)
	}
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(e.b, "dev-c", "pw-c", "dev-c")
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	var cc mqtt.Client
	eventually(t, 5*time.Second, "dev-c connects", func() (err error) { cc, err = harness.ConnectWith(o); return err })
	t.Cleanup(func() { cc.Disconnect(50) })
	if code := subscribeResult(t, cc, "devices/dev-c/#"); code >= 0x80 {
		t.Errorf("dev-c's own imported topic refused (%#x)", code)
	}
	if code := subscribeResult(t, cc, "devices/dev-a/#"); code < 0x80 {
		t.Errorf("dev-c may subscribe to dev-a's topics (%#x)", code)
	}
	cb := connectEventually(t, e.b, "dev-b", "pw-b", "dev-b")
	if !cb.IsConnected() {
		t.Fatal("dev-b not connected")
	}

	// The first connect recorded the fast hash (sha256$ of the same password), off the broker thread,
	// and the live session was not closed by that change.
	agentC, _ := e.legacyAgent("dev-c")
	sum := sha256.Sum256([]byte("pw-c"))
	want := "sha256$" + hex.EncodeToString(sum[:])
	eventually(t, 5*time.Second, "dev-c's fast hash recorded", func() error {
		if h := e.passwordHash(agentC); h != want {
			return fmt.Errorf("stored hash is %.12s…", h)
		}
		return nil
	})
	stillOpenAfter(t, lost, 1500*time.Millisecond, "dev-c's session after its fast hash was recorded")
	agentB, _ := e.legacyAgent("dev-b")
	if h := e.passwordHash(agentB); !strings.HasPrefix(h, "$6$") {
		t.Errorf("dev-b's $6$ hash (already fast) was replaced: %.12s…", h)
	}
	// With the fast hash, the device still connects with its old password (and only with it).
	c2, err := harness.Connect(e.b, "dev-c", "pw-c", "dev-c")
	if err != nil {
		t.Fatalf("dev-c after its fast hash was recorded: %v", err)
	}
	c2.Disconnect(50)
	_, err = harness.Connect(e.b, "dev-c", "pw-x", "dev-c")
	refused(t, err, "dev-c with a wrong password after its fast hash was recorded")

	// A broker started now knows the imported names from its start-up load, before its listener opens
	// (plugin init waits for it with the preload): the first connect needs no retry.
	b2 := harness.PluginBroker(t, e.dsn)
	if log := b2.Log(); !strings.Contains(log, "loaded legacy usernames count=3") {
		t.Fatalf("second broker opened its listener before loading the legacy usernames:\n%s", log)
	}
	c3, err := harness.Connect(b2, "dev-a", "pw-a correct horse", "dev-a")
	if err != nil {
		t.Fatalf("dev-a on a broker started after the import: %v", err)
	}
	c3.Disconnect(50)

	// The broker log names sessions by agent uuid, never by the legacy username, and shows no password.
	log := e.b.Log()
	for _, s := range []string{"pw-a correct horse", "pw-b", "pw-c", "u'dev-a'", "u'dev-c'"} {
		if strings.Contains(log, s) {
			t.Errorf("the broker log holds %q", s)
		}
	}
	if !strings.Contains(log, "iotauth-agent-custom:"+agentC) {
		t.Errorf("the broker log does not name dev-c's session iotauth-agent-custom:%s", agentC)
	}

	// Re-importing the same file changes nothing (and keeps the recorded fast hash).
	out, stderr, code = e.runImportCLI("import", "-format", "passwd", "--clientid", "%u", "--topic", "devices/%u/#", passwd)
	if code != 0 || !strings.Contains(out, "3 unchanged") {
		t.Fatalf("re-import: exit %d\n%s\n%s", code, out, stderr)
	}
	if h := e.passwordHash(agentC); h != want {
		t.Errorf("re-import replaced the recorded fast hash with %.12s…", h)
	}
}

// goAuthPBKDF2 makes a hash as mosquitto-go-auth's pw utility does with its defaults (sha512, 100000
// iterations, 16-byte salt, base64 salt encoding, 64-byte key).
func goAuthPBKDF2(t *testing.T, password string) string {
	t.Helper()
	salt := make([]byte, 16)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha512.New, password, salt, 100000, 64)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("PBKDF2$sha512$100000$%s$%s", base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key))
}

// Importing (docs/import.md): a CSV export of mosquitto-go-auth's user table with PBKDF2 and bcrypt hashes;
// the client id rule "any" admits any client id but an agent's.
func TestImportGoAuthCSVConnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt-pw"), 10)
	if err != nil {
		t.Fatal(err)
	}
	csv := "id,username,password_hash,is_admin\n" +
		"1,sensor-pbkdf2," + goAuthPBKDF2(t, "pbkdf2-pw") + ",false\n" +
		"2,sensor-bcrypt," + string(bc) + ",false\n"
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := e.runImportCLI("import", "-format", "go-auth", "-topic", "read cmd/%u", "-topic", "telemetry/%u/#", "-json", path)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, stderr)
	}
	var rep struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Counts["created"] != 2 {
		t.Fatalf("import report %v: %s", err, out)
	}
	for _, d := range []struct{ user, pass string }{{"sensor-pbkdf2", "pbkdf2-pw"}, {"sensor-bcrypt", "bcrypt-pw"}} {
		c := connectEventually(t, e.b, d.user, d.pass, "whatever-"+d.user)
		if code := subscribeResult(t, c, "telemetry/"+d.user+"/#"); code >= 0x80 {
			t.Errorf("%s: own imported topic refused (%#x)", d.user, code)
		}
		_, err := harness.Connect(e.b, d.user, d.pass+"x", "other-"+d.user)
		refused(t, err, d.user+" with a wrong password")
		_, err = harness.Connect(e.b, d.user, d.pass, "agent-"+d.user)
		refused(t, err, d.user+" with an agent's client id")
	}
	out, code = harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, "sensor-bcrypt", "bcrypt-pw", "gw-17"), "-t", "telemetry/sensor-bcrypt/t", "-m", "1")...)
	if code != 0 {
		t.Fatalf("mosquitto_pub as the imported bcrypt device: exit %d %s", code, out)
	}
}

// Importing (docs/import.md): `agent rotate-password` moves an imported device to iotauth keys (its old username
// stops working and its live session closes), and revoking an imported agent's legacy username kicks it.
func TestImportRotateMovesAndRevokeKicks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	passwd := writePasswd(t, [][3]string{{"dev-move", "pw-move", ""}, {"dev-revoke", "pw-revoke", ""}, {"dev-disable", "pw-disable", "sha512"}})
	if out, stderr, code := e.runImportCLI("import", "-clientid", "%u", passwd); code != 0 {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, stderr)
	}
	watchLegacy := func(user, pass string) <-chan time.Time {
		lost := make(chan time.Time, 1)
		o := harness.ClientOptions(e.b, user, pass, user)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
		var c mqtt.Client
		eventually(t, 5*time.Second, user+" connects", func() (err error) { c, err = harness.ConnectWith(o); return err })
		t.Cleanup(func() { c.Disconnect(50) })
		return lost
	}
	lostMove := watchLegacy("dev-move", "pw-move")
	lostRevoke := watchLegacy("dev-revoke", "pw-revoke")
	lostDisable := watchLegacy("dev-disable", "pw-disable")

	// On SIGHUP Mosquitto re-checks every client with its stored (renamed) username: imported devices'
	// sessions stay.
	if err := e.b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e.b.WaitLog("Reloading config", 3*time.Second) {
		t.Fatal("no reload")
	}
	stillOpenAfter(t, lostMove, 1500*time.Millisecond, "an imported device's session after SIGHUP")

	agent, _ := e.legacyAgent("dev-move")
	out, stderr, code := e.runImportCLI("agent", "rotate-password", agent)
	if code != 0 {
		t.Fatalf("rotate-password: exit %d\n%s\n%s", code, out, stderr)
	}
	var moved struct {
		AgentUUID string `json:"agentUuid"`
		MQTT      struct {
			Username, Password, ClientID string
		} `json:"mqtt"`
		Retired string `json:"retiredLegacyUsername"`
	}
	if err := json.Unmarshal([]byte(out), &moved); err != nil || moved.Retired != "dev-move" || !strings.HasPrefix(moved.MQTT.Username, "iotsk_live_") {
		t.Fatalf("rotate-password output %v: %s", err, out)
	}
	// Revocation reaches live sessions within 1 s (docs/security.md, M8); 3 s leaves margin on a loaded machine.
	closedBy(t, lostMove, 3*time.Second, "dev-move's legacy session after rotate-password")
	_, err := harness.Connect(e.b, "dev-move", "pw-move", "dev-move")
	refused(t, err, "the retired legacy username")
	c, err := harness.Connect(e.b, moved.MQTT.Username, moved.MQTT.Password, moved.MQTT.ClientID)
	if err != nil {
		t.Fatalf("the moved device with its new key: %v", err)
	}
	c.Disconnect(50)
	if out, _, _ := e.runImportCLI("import", "-clientid", "%u", passwd); !strings.Contains(out, "1 retired") {
		t.Errorf("re-import after the move: want the moved name reported retired, got\n%s", out)
	}
	_, err = harness.Connect(e.b, "dev-move", "pw-move", "dev-move")
	refused(t, err, "the retired legacy username after a re-import")

	_, keyID := e.legacyAgent("dev-revoke")
	if out, stderr, code := e.runImportCLI("key", "revoke", keyID); code != 0 {
		t.Fatalf("key revoke: exit %d\n%s\n%s", code, out, stderr)
	}
	closedBy(t, lostRevoke, 3*time.Second, "dev-revoke's session after its legacy username was revoked")
	_, err = harness.Connect(e.b, "dev-revoke", "pw-revoke", "dev-revoke")
	refused(t, err, "a revoked legacy username")

	disabled, _ := e.legacyAgent("dev-disable")
	if out, stderr, code := e.runImportCLI("agent", "disable", disabled); code != 0 {
		t.Fatalf("agent disable: exit %d\n%s\n%s", code, out, stderr)
	}
	closedBy(t, lostDisable, 3*time.Second, "dev-disable's session after its agent was disabled")
	_, err = harness.Connect(e.b, "dev-disable", "pw-disable", "dev-disable")
	refused(t, err, "a disabled imported agent")
}

// A file with bad lines imports nothing and names every bad line; -skip-invalid imports the good ones.
func TestImportRefusesBadFiles(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	e := &env{t: t, dsn: dsn, st: harness.OpenStore(t, dsn)}
	good := writePasswd(t, [][3]string{{"good-1", "pw1", ""}, {"good-2", "pw2", ""}})
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	hash := strings.SplitN(lines[0], ":", 2)[1]
	body := strings.Join([]string{
		lines[0],                              // 1 good
		"bad/name:" + hash,                    // 2 slash
		"iotauth-agent:x:" + hash,             // 3 reserved (and a colon)
		"plain:password",                      // 4 plaintext
		lines[1],                              // 5 good
		"good-1:" + hash,                      // 6 duplicate
		strings.Repeat("x", 257) + ":" + hash, // 7 too long
		"iotsk_live_looks_like_a_key:" + hash, // 8 secret-like
		"# a comment",                         // 9 skipped
	}, "\n")
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := e.runImportCLI("import", path)
	if code != 1 {
		t.Fatalf("import of a bad file: exit %d, want 1\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"line 2 ", "line 3 ", "line 4 ", "line 6 ", "line 7 ", "line 8 ", "nothing was imported"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("report lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "line 1 ") || strings.Contains(stderr, "line 5 ") || strings.Contains(stderr, "looks_like_a_key") {
		t.Errorf("report names good lines or echoes a secret-like name:\n%s", stderr)
	}
	var n int
	if err := harness.QueryRow(t, dsn, `SELECT count(*) FROM agents`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a file with errors created %d agents (%v)", n, err)
	}
	out, stderr, code = e.runImportCLI("import", "-skip-invalid", path)
	if code != 0 || !strings.Contains(out, "2 created") || !strings.Contains(out, "6 invalid line(s) skipped") {
		t.Fatalf("import -skip-invalid: exit %d\n%s\n%s", code, out, stderr)
	}
	var events, batches int
	if err := harness.QueryRow(t, dsn, `SELECT count(*) FILTER (WHERE action = 'agent_import'), count(*) FILTER (WHERE action = 'legacy_import' AND (detail ->> 'created')::int = 2)
FROM audit_events`).Scan(&events, &batches); err != nil || events != 2 || batches != 1 {
		t.Fatalf("audit: %d agent_import events and %d batch events (%v), want 2 and 1", events, batches, err)
	}
}

// Re-importing a username with a new client id rule, topics or password updates it in place: the live
// session, which no longer qualifies, is closed; the name stays known throughout.
func TestReimportUpdatesInPlace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := writePasswd(t, [][3]string{{"dev-u", "pw-1", ""}})
	if out, stderr, code := e.runImportCLI("import", "-clientid", "%u", "-topic", "old/%u/#", first); code != 0 {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, stderr)
	}
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(e.b, "dev-u", "pw-1", "dev-u")
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	var c mqtt.Client
	eventually(t, 5*time.Second, "dev-u connects", func() (err error) { c, err = harness.ConnectWith(o); return err })
	t.Cleanup(func() { c.Disconnect(50) })

	out, stderr, code := e.runImportCLI("import", "-clientid", "any", "-topic", "new/%u/#", first)
	if code != 0 || !strings.Contains(out, "1 updated") {
		t.Fatalf("re-import: exit %d\n%s\n%s", code, out, stderr)
	}
	closedBy(t, lost, 3*time.Second, "dev-u's session after its client id rule and topics changed")
	c2 := connectEventually(t, e.b, "dev-u", "pw-1", "any-id-now")
	if code := subscribeResult(t, c2, "new/dev-u/#"); code >= 0x80 {
		t.Errorf("the re-imported topic is refused (%#x)", code)
	}
	if code := subscribeResult(t, c2, "old/dev-u/#"); code < 0x80 {
		t.Errorf("the old topic is still granted (%#x)", code)
	}

	second := writePasswd(t, [][3]string{{"dev-u", "pw-2", ""}})
	if out, stderr, code := e.runImportCLI("import", "-clientid", "any", "-topic", "new/%u/#", second); code != 0 || !strings.Contains(out, "1 updated") {
		t.Fatalf("re-import with a new password: exit %d\n%s\n%s", code, out, stderr)
	}
	eventually(t, 5*time.Second, "the old password is refused", func() error {
		c, err := harness.Connect(e.b, "dev-u", "pw-1", "x1")
		if err == nil {
			c.Disconnect(10)
			return errors.New("old password still accepted")
		}
		return nil
	})
	connectEventually(t, e.b, "dev-u", "pw-2", "x2")
}
