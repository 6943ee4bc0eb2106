package plugin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// TestKicksAreAudited is O1 (docs/security.md): when the plugin disconnects a live session because its
// credentials were revoked (by the CLI or by plain SQL), it writes the audit event session_kick (actor
// mosquitto-iotauth, target the agent or the application key, with the client id, key id and reason),
// never a secret; the CLI's own change is audited with the actor cli:<os user>.
func TestKicksAreAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		revoke func(a harness.Agent)
		reason string
	}{
		{"cli key revoke", func(a harness.Agent) { e.iotauthCLI("key", "revoke", a.KeyID) }, "revoked"},
		{"sql agent disable", func(a harness.Agent) { e.exec(`UPDATE agents SET status = 'disabled' WHERE uuid = $1`, a.UUID) }, "disabled"},
	} {
		a := e.agent(tc.name)
		_, lost := watch(t, e.b, a)
		tc.revoke(a)
		closedBy(t, lost, 3*time.Second, "the revoked agent's session")
		// The plugin writes its queue once a second: allow 10 s on a loaded machine.
		var detail []byte
		var actor string
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := harness.QueryRow(t, e.dsn, `SELECT actor, detail::text FROM audit_events WHERE action = 'session_kick' AND target = $1`, "agent:"+a.UUID).Scan(&actor, &detail)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no session_kick audit event within 10 s (%v)", tc.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		var d map[string]any
		if err := json.Unmarshal(detail, &d); err != nil {
			t.Fatal(err)
		}
		if actor != "mosquitto-iotauth" || d["clientId"] != a.ClientID || d["keyId"] != a.KeyID || !strings.Contains(d["reason"].(string), tc.reason) {
			t.Errorf("%s: session_kick by %q with detail %s", tc.name, actor, detail)
		}
		if strings.Contains(string(detail), a.Key) || strings.Contains(string(detail), a.Password) || secretPattern.Match(detail) {
			t.Errorf("%s: the kick's audit event holds a secret", tc.name)
		}
	}
	// An application key's session: the target is the key.
	k := e.appKey("svc", time.Time{}, "read agents/+/telemetry")
	_, lost := watchApp(t, e.b, k, "svc-1")
	e.iotauthCLI("app-key", "revoke", k.ID)
	closedBy(t, lost, 3*time.Second, "the revoked application key's session")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var detail string
		err := harness.QueryRow(t, e.dsn, `SELECT detail::text FROM audit_events WHERE action = 'session_kick' AND target = $1`, "app-key:"+k.ID).Scan(&detail)
		if err == nil {
			if !strings.Contains(detail, `"clientId": "svc-1"`) || strings.Contains(detail, k.Key) || strings.Contains(detail, k.Password) {
				t.Errorf("application key kick: detail %s", detail)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session_kick audit event for the application key within 10 s (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var actor string
	if err := harness.QueryRow(t, e.dsn, `SELECT actor FROM audit_events WHERE action = 'api_key_revoke'`).Scan(&actor); err != nil || !strings.HasPrefix(actor, "cli:") || len(actor) < 5 {
		t.Errorf("the CLI's revocation is audited by %q (%v), want cli:<os user>", actor, err)
	}
}
