package api_test

import (
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// TestUsersAdministration: create (201, Location), duplicate email (409 email_taken, any case), list,
// change role, the last enabled admin cannot be demoted or disabled (409 last_admin), unknown user 404.
func TestUsersAdministration(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	res := e.expect(req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
		Body: `{"email":"Carol@Example.com","password":"carol's long password","role":"viewer"}`}, 201, "")
	e.remember("carol's long password")
	carol := res.JSON(t)
	if carol["email"] != "carol@example.com" || carol["role"] != "viewer" || res.Header.Get("Location") != "/api/v1/users/"+carol["id"].(string) {
		t.Fatalf("created: %s %v", res.Body, res.Header)
	}
	if strings.Contains(string(res.Body), "argon2") || strings.Contains(string(res.Body), "password") {
		t.Fatalf("user answer shows the password or its hash: %s", res.Body)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/users", Token: adm.Access,
		Body: `{"email":"CAROL@example.com","password":"another password","role":"admin"}`}, 409, "email_taken")
	res = e.expect(req{Method: "GET", Path: "/api/v1/users", Token: adm.Access}, 200, "")
	if n := len(res.JSON(t)["items"].([]any)); n != 2 {
		t.Fatalf("%d users listed, want 2", n)
	}
	me := e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: adm.Access}, 200, "").JSON(t)
	adminID := me["id"].(string)
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + adminID, Token: adm.Access, Body: `{"role":"operator"}`}, 409, "last_admin")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + adminID, Token: adm.Access, Body: `{"disabled":true}`}, 409, "last_admin")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + carol["id"].(string), Token: adm.Access, Body: `{"role":"admin"}`}, 200, "")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + adminID, Token: adm.Access, Body: `{"role":"operator"}`}, 200, "")
	// The demoted admin's token now carries operator rights only (role from the database).
	e.expect(req{Method: "GET", Path: "/api/v1/users", Token: adm.Access}, 403, "forbidden")
	carolTok := e.login("carol@example.com", "carol's long password")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/00000000-0000-4000-8000-000000000000", Token: carolTok.Access, Body: `{"role":"viewer"}`}, 404, "not_found")
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + adminID, Token: carolTok.Access, Body: `{}`}, 400, "validation_failed")
	if n := e.count("audit_events", "action IN ('user_create', 'user_update') AND actor LIKE 'user:%'"); n != 3 {
		t.Fatalf("%d user changes audited, want 3", n)
	}
}

// TestAPIKeysAndAgents: key listing shows display prefixes only, revocation is idempotent and audited,
// target state is versioned with If-Match, password rotation shows the password once, decommission
// revokes everything, and the agent list paginates.
func TestAPIKeysAndAgents(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	ops := e.userWithRole("operator")
	viewer := e.userWithRole("viewer")
	var agents []provisioned
	for i := 0; i < 5; i++ {
		agents = append(agents, e.provision(ops.Access, "gw-"+string(rune('a'+i))))
	}
	a := agents[0]
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": "extra", "agentUuid": a.AgentUUID}}, 201, "")
	extra := res.JSON(t)
	// Listing never shows a key.
	res = e.expect(req{Method: "GET", Path: "/api/v1/auth/api-keys?agentUuid=" + a.AgentUUID, Token: adm.Access}, 200, "")
	items := res.JSON(t)["items"].([]any)
	if len(items) != 2 || strings.Contains(string(res.Body), a.APIKey) || strings.Contains(string(res.Body), extra["apiKey"].(string)) || secretPattern.Match(res.Body) {
		t.Fatalf("key listing: %s", res.Body)
	}
	for _, it := range items {
		p := it.(map[string]any)["prefix"].(string)
		if len(p) != len("iotsk_live_")+8 || !(strings.HasPrefix(a.APIKey, p) || strings.HasPrefix(extra["apiKey"].(string), p)) {
			t.Fatalf("prefix %q", p)
		}
	}
	res = e.expect(req{Method: "GET", Path: "/api/v1/auth/api-keys", Token: adm.Access}, 200, "")
	if n := len(res.JSON(t)["items"].([]any)); n != 6 {
		t.Fatalf("%d keys in total, want 6", n)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": "x", "agentUuid": "00000000-0000-4000-8000-000000000000"}}, 404, "not_found")
	e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": "", "agentUuid": a.AgentUUID}}, 400, "validation_failed")
	// Revoke twice: both 204, one revocation time.
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + extra["id"].(string), Token: adm.Access}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + extra["id"].(string), Token: adm.Access}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/00000000-0000-4000-8000-000000000000", Token: adm.Access}, 404, "not_found")
	// Target state with If-Match.
	path := "/api/v1/agents/" + a.AgentUUID + "/target-state"
	res = e.expect(req{Method: "PUT", Path: path, Token: ops.Access, Header: map[string]string{"If-Match": `"1"`}, Body: `{"targetState":{"v":1}}`}, 200, "")
	if res.Header.Get("ETag") != `"2"` || res.JSON(t)["targetVersion"].(float64) != 2 {
		t.Fatalf("target state: %s %v", res.Body, res.Header)
	}
	e.expect(req{Method: "PUT", Path: path, Token: ops.Access, Header: map[string]string{"If-Match": `"1"`}, Body: `{"targetState":{"v":2}}`}, 412, "precondition_failed")
	e.expect(req{Method: "PUT", Path: path, Token: viewer.Access, Body: `{"targetState":{"v":2}}`}, 403, "forbidden")
	res = e.expect(req{Method: "GET", Path: "/api/v1/agents/" + a.AgentUUID, Token: viewer.Access}, 200, "")
	if d := res.JSON(t); d["targetVersion"].(float64) != 2 || d["targetState"].(map[string]any)["v"].(float64) != 1 {
		t.Fatalf("agent detail: %s", res.Body)
	}
	// Rotation: new password in the answer only; the stored hash changes.
	var oldHash, newHash string
	_ = harness.QueryRow(t, e.dsn, `SELECT password_hash FROM mqtt_credentials WHERE agent_uuid = $1`, a.AgentUUID).Scan(&oldHash)
	res = e.expect(req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID + "/mqtt-password", Token: adm.Access}, 200, "")
	pw := res.JSON(t)["password"].(string)
	_ = harness.QueryRow(t, e.dsn, `SELECT password_hash FROM mqtt_credentials WHERE agent_uuid = $1`, a.AgentUUID).Scan(&newHash)
	if !strings.HasPrefix(pw, "iotmp_") || pw == a.MQTT.Password || oldHash == newHash || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("rotation did not produce a new password")
	}
	e.expect(req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID + "/mqtt-password", Token: ops.Access}, 403, "forbidden")
	// Decommission, then nothing new for it.
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + a.AgentUUID, Token: ops.Access}, 403, "forbidden")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + a.AgentUUID, Token: adm.Access}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + a.AgentUUID, Token: adm.Access}, 204, "")
	e.expect(req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID + "/mqtt-password", Token: adm.Access}, 409, "agent_decommissioned")
	e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": "x", "agentUuid": a.AgentUUID}}, 409, "agent_decommissioned")
	e.expect(req{Method: "PUT", Path: path, Token: ops.Access, Body: `{"targetState":{}}`}, 409, "agent_decommissioned")
	// Pagination over the four that remain, two at a time.
	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		p := "/api/v1/agents?limit=2"
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		m := e.expect(req{Method: "GET", Path: p, Token: viewer.Access}, 200, "").JSON(t)
		pages++
		for _, it := range m["items"].([]any) {
			id := it.(map[string]any)["uuid"].(string)
			if seen[id] {
				t.Fatalf("agent %s on two pages", id)
			}
			seen[id] = true
		}
		next, ok := m["nextCursor"].(string)
		if !ok {
			break
		}
		cursor = next
	}
	if len(seen) != 4 || pages != 2 || seen[a.AgentUUID] {
		t.Fatalf("pagination saw %d agents in %d pages", len(seen), pages)
	}
	m := e.expect(req{Method: "GET", Path: "/api/v1/agents?status=decommissioned", Token: viewer.Access}, 200, "").JSON(t)
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["status"] != "decommissioned" {
		t.Fatalf("decommissioned listing: %v", items)
	}
	e.expect(req{Method: "GET", Path: "/api/v1/agents?limit=0", Token: viewer.Access}, 400, "validation_failed")
	e.expect(req{Method: "GET", Path: "/api/v1/agents?cursor=junk", Token: viewer.Access}, 400, "validation_failed")
	// Provisioning keys: list shows prefixes, delete works once.
	e.provisioningKey(ops.Access)
	id := firstID(t, e, ops.Access)
	res = e.expect(req{Method: "GET", Path: "/api/v1/provision/keys", Token: ops.Access}, 200, "")
	if secretPattern.Match(res.Body) {
		t.Fatalf("provisioning key listing shows a key: %s", res.Body)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: ops.Access, Body: `{"expiresIn": 5}`}, 400, "validation_failed")
	e.expect(req{Method: "DELETE", Path: "/api/v1/provision/keys/" + id, Token: ops.Access}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/provision/keys/" + id, Token: ops.Access}, 404, "not_found")
}

// TestAuditTrail: every security-relevant action leaves an audit event, and none holds a secret (the
// dump check of every test covers the latter).
func TestAuditTrail(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	e.expect(loginReq("admin@example.com", "wrong password"), 401, "invalid_credentials")
	e.remember("wrong password")
	// A key pasted into the email field is refused like any failure and not recorded (the dump check
	// at the end of the test proves it).
	pasted, _ := secret.Generate(secret.APIKey)
	e.remember(pasted.Reveal())
	e.expect(loginReq(pasted.Reveal(), "x"), 401, "invalid_credentials")
	a := e.provision(adm.Access, "gw")
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": "k", "agentUuid": a.AgentUUID}}, 201, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + res.JSON(t)["id"].(string), Token: adm.Access}, 204, "")
	e.expect(req{Method: "POST", Path: "/api/v1/agents/" + a.AgentUUID + "/mqtt-password", Token: adm.Access}, 200, "")
	e.expect(req{Method: "PUT", Path: "/api/v1/agents/" + a.AgentUUID + "/target-state", Token: adm.Access, Body: `{"targetState":{}}`}, 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + a.AgentUUID, Token: adm.Access}, 204, "")
	e.expect(req{Method: "POST", Path: "/api/v1/users", Token: adm.Access, Body: `{"email":"v@example.com","password":"viewer password","role":"viewer"}`}, 201, "")
	e.remember("viewer password")
	e.expect(req{Method: "POST", Path: "/api/v1/auth/logout", Body: map[string]string{"refreshToken": adm.Refresh}}, 204, "")
	for _, action := range []string{"login", "provisioning_key_create", "agent_provision", "api_key_create", "api_key_revoke",
		"mqtt_password_rotate", "target_state_set", "agent_decommission", "user_create", "logout"} {
		if e.count("audit_events", "action = $1", action) == 0 {
			t.Errorf("no audit event %s", action)
		}
	}
	if e.count("audit_events", "action = 'login' AND outcome = 'failure' AND remote_addr = '127.0.0.1'") != 2 {
		t.Error("failed login not audited with its address")
	}
	if e.count("audit_events", "action = 'agent_provision' AND target = $1", "agent:"+a.AgentUUID) != 1 {
		t.Error("provisioning not audited against its agent")
	}
}
