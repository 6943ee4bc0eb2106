package presence_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// TestImportedUsernameNeverInPresence: an imported device whose client id is its legacy username (an
// import with --clientid '%u') reads in presence as imported-<agent uuid>. Usernames are kept only as
// digests elsewhere, and presence is readable by every role and by event subscribers.
func TestImportedUsernameNeverInPresence(t *testing.T) {
	e := newEnv(t)
	b := e.broker("b-legacy", "30s")
	const user, pass = "legacy-sensor-17", "an imported password"
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.st.Credentials.ImportLegacy(ctx, []store.LegacyAccount{{Username: user, PasswordHash: string(hash), ClientID: user,
		Rules: []store.LegacyRule{{Access: "readwrite", Pattern: "devices/%u/#"}}}},
		store.AuditEvent{Actor: "test", Action: "legacy_import"})
	if err != nil || len(res.Agents) != 1 {
		t.Fatalf("import: %v %+v", err, res)
	}
	agent := res.Agents[0].AgentUUID
	ch, _, _ := subscribeEvents(t, e, b)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := harness.Connect(b, user, pass, user)
		if err == nil {
			defer c.Disconnect(50)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the imported device could not connect: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := "imported-" + agent
	ev := nextEvent(t, ch)
	if ev["clientId"] != want {
		t.Errorf("the connected event names client id %v, want %s", ev["clientId"], want)
	}
	p := e.waitPresence(agent, 5*time.Second, "online", onlineOn(1))
	if p.Sessions[0].ClientID != want {
		t.Errorf("REST presence names client id %q, want %s", p.Sessions[0].ClientID, want)
	}
	var n int
	if err := harness.QueryRow(t, e.dsn, `SELECT count(*) FROM presence_sessions WHERE strpos(client_id, $1) > 0`, user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var sessions map[string]any
	e.call("GET", "/api/v1/agents/"+agent+"/sessions", nil, 200, &sessions)
	if body, _ := json.Marshal(sessions); n != 0 || strings.Contains(string(body), user) {
		t.Errorf("the legacy username reached presence (%d rows; sessions %s)", n, body)
	}
}
