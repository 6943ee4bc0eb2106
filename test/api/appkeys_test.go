package api_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// appKey is what POST /api/v1/auth/app-keys returned.
type appKey struct {
	ID, Key, Prefix string
	Password        string
}

// createAppKey creates an application key as the admin and returns it.
func (e *env) createAppKey(adminTok string, body map[string]any) appKey {
	e.t.Helper()
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adminTok, Body: body}, 201, "")
	m := res.JSON(e.t)
	mq := m["mqtt"].(map[string]any)
	return appKey{ID: m["id"].(string), Key: m["key"].(string), Prefix: m["prefix"].(string), Password: mq["password"].(string)}
}

// TestAppKeyCreateListRevoke is the application keys' lifecycle over REST (docs/security.md, S1,
// S5): shown once with no-store, listed with prefixes only and paginated, revoked with 204, audited.
func TestAppKeyCreateListRevoke(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adm.Access, Body: map[string]any{
		"name": "telemetry-consumer", "rights": []string{"agents:read"},
		"topics":    []map[string]string{{"access": "read", "pattern": "agents/+/telemetry"}},
		"expiresAt": exp,
	}}, 201, "")
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	m := res.JSON(t)
	key := m["key"].(string)
	mq := m["mqtt"].(map[string]any)
	if !regexp.MustCompile(`^iotak_live_[0-9A-Za-z]{38}$`).MatchString(key) || secret.Check(secret.AppKey, key) != nil {
		t.Fatalf("key %.14q… is not a well-formed application key", key)
	}
	if mq["username"] != key || secret.Check(secret.MQTTPassword, mq["password"].(string)) != nil {
		t.Fatalf("mqtt login is not {key, iotmp_ password}: %v", mq["username"] == key)
	}
	if m["prefix"] != key[:len("iotak_live_")+8] || m["name"] != "telemetry-consumer" {
		t.Errorf("prefix/name: %v %v", m["prefix"], m["name"])
	}
	if fmt.Sprint(m["rights"]) != "[agents:read]" || fmt.Sprint(m["topics"]) != "[map[access:read pattern:agents/+/telemetry]]" {
		t.Errorf("rights/topics: %v %v", m["rights"], m["topics"])
	}
	if got, _ := time.Parse(time.RFC3339, m["expiresAt"].(string)); !got.Equal(exp) {
		t.Errorf("expiresAt %v, want %v", m["expiresAt"], exp)
	}
	id := m["id"].(string)
	second := e.createAppKey(adm.Access, map[string]any{"name": "ci", "rights": []string{"license:read"}})

	// Listing: prefixes only, paginated like agents.
	page := e.expect(req{Method: "GET", Path: "/api/v1/auth/app-keys?limit=1", Token: adm.Access}, 200, "")
	if strings.Contains(string(page.Body), key) || strings.Contains(string(page.Body), "iotmp_") {
		t.Fatal("S5: the list shows a secret")
	}
	pm := page.JSON(t)
	items := pm["items"].([]any)
	cursor, _ := pm["nextCursor"].(string)
	if len(items) != 1 || items[0].(map[string]any)["id"] != id || cursor == "" {
		t.Fatalf("first page: %s", page.Body)
	}
	page = e.expect(req{Method: "GET", Path: "/api/v1/auth/app-keys?limit=1&cursor=" + cursor, Token: adm.Access}, 200, "")
	pm = page.JSON(t)
	if items := pm["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != second.ID || pm["nextCursor"] != nil {
		t.Fatalf("second page: %s", page.Body)
	}
	e.expect(req{Method: "GET", Path: "/api/v1/auth/app-keys?cursor=nonsense", Token: adm.Access}, 400, "validation_failed")

	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + id, Token: adm.Access}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + id, Token: adm.Access}, 204, "") // idempotent
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/00000000-0000-4000-8000-000000000000", Token: adm.Access}, 404, "not_found")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/not-a-uuid", Token: adm.Access}, 404, "not_found")
	if n := e.count("app_keys", "id = $1 AND revoked_at IS NOT NULL", id); n != 1 {
		t.Fatal("the key is not revoked")
	}
	if n := e.count("audit_events", "action = 'app_key_create' AND target = $1", "app-key:"+id); n != 1 {
		t.Errorf("%d create audit events, want 1", n)
	}
	if n := e.count("audit_events", "action = 'app_key_revoke' AND target = $1", "app-key:"+id); n != 2 {
		t.Errorf("%d revoke audit events, want 2", n)
	}
}

// TestAppKeyValidation: a key's rights and topics are checked before anything is stored.
func TestAppKeyValidation(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	before := e.count("app_keys", "")
	for _, tt := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no name", map[string]any{"rights": []string{"agents:read"}}, "name"},
		{"unknown right", map[string]any{"name": "x", "rights": []string{"users:write"}}, "rights"},
		{"duplicate right", map[string]any{"name": "x", "rights": []string{"agents:read", "agents:read"}}, "rights"},
		{"nothing granted", map[string]any{"name": "x"}, "rights"},
		{"bad access", map[string]any{"name": "x", "topics": []map[string]string{{"access": "deny", "pattern": "a"}}}, "topics"},
		{"$ topic", map[string]any{"name": "x", "topics": []map[string]string{{"access": "read", "pattern": "$SYS/#"}}}, "topics"},
		{"# not last", map[string]any{"name": "x", "topics": []map[string]string{{"access": "read", "pattern": "a/#/b"}}}, "topics"},
		{"+ inside a level", map[string]any{"name": "x", "topics": []map[string]string{{"access": "read", "pattern": "a/b+"}}}, "topics"},
		{"template marker", map[string]any{"name": "x", "topics": []map[string]string{{"access": "read", "pattern": "agents/%u/#"}}}, "topics"},
		{"empty pattern", map[string]any{"name": "x", "topics": []map[string]string{{"access": "read", "pattern": ""}}}, "topics"},
		{"expired already", map[string]any{"name": "x", "rights": []string{"agents:read"}, "expiresAt": time.Now().Add(-time.Minute)}, "expiresAt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := e.expect(req{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adm.Access, Body: tt.body}, 400, "")
			if p := res.Problem(t); p.Field != tt.field {
				t.Errorf("field %q, want %q: %s", p.Field, tt.field, res.Body)
			}
		})
	}
	e.expect(req{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adm.Access, Body: `{"name":"x","rights":[],"extra":1}`}, 400, "invalid_json")
	if e.count("app_keys", "") != before {
		t.Fatal("a refused create stored a key")
	}
}

// routePath fills a route's path parameters.
func routePath(rt string, a provisioned) string {
	return strings.NewReplacer("{uuid}", a.AgentUUID, "{id}", a.KeyID).Replace(rt)
}

// TestAppKeyRightsMatrix: for each right alone, every operator route answers as the route table says
// (docs/app-keys.md): allowed where the route names that right, 403 missing_right (naming the right) where it
// names another, 403 forbidden where it takes an operator's token only.
func TestAppKeyRightsMatrix(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	checked := map[string]int{}
	for _, right := range store.AppRights() {
		a := e.provision(adm.Access, "gw-"+strings.ReplaceAll(right, ":", "-"))
		k := e.createAppKey(adm.Access, map[string]any{"name": "only " + right, "rights": []string{right}})
		for _, rt := range e.srv.Routes() {
			if rt.Roles == nil || rt.Device {
				continue
			}
			r := req{Method: rt.Method, Path: routePath(rt.Path, a), Token: k.Key}
			if rt.Method != "GET" && rt.Method != "DELETE" {
				r.Body = `{}`
			}
			if strings.HasPrefix(rt.Path, "/api/v1/auth/app-keys/") {
				r.Path = "/api/v1/auth/app-keys/" + k.ID
			}
			res := e.do(r)
			switch {
			case rt.Right == right:
				if res.Status == 401 || res.Status == 403 {
					t.Errorf("%s with %s: %d %s, want it allowed", rt.Pattern(), right, res.Status, res.Body)
				}
				checked["allowed"]++
			case rt.Right == "":
				if p := res.Problem(t); res.Status != 403 || p.Code != "forbidden" {
					t.Errorf("%s with %s: %d %s, want 403 forbidden", rt.Pattern(), right, res.Status, res.Body)
				}
				checked["operator only"]++
			default:
				p := res.Problem(t)
				if res.Status != 403 || p.Code != "missing_right" || !strings.Contains(p.Detail, rt.Right) {
					t.Errorf("%s with %s: %d %s, want 403 missing_right naming %s", rt.Pattern(), right, res.Status, res.Body, rt.Right)
				}
				checked["missing right"]++
			}
		}
	}
	if checked["allowed"] < 12 || checked["missing right"] < 80 || checked["operator only"] < 40 {
		t.Fatalf("too few cases checked: %v", checked)
	}
	if n := e.count("audit_events", "action = 'app_key_refused' AND outcome = 'failure'"); n < 120 {
		t.Errorf("%d refused uses audited, want one per refusal", n)
	}
}

// TestAppKeyEscalation is A1 (docs/security.md): an application key holding every right can neither create,
// list nor revoke application keys, nor touch users, nor read an operator's session; nothing changes.
func TestAppKeyEscalation(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	all := e.createAppKey(adm.Access, map[string]any{"name": "everything", "rights": store.AppRights(),
		"topics": []map[string]string{{"access": "readwrite", "pattern": "#"}}})
	agent := e.provision(adm.Access, "not yours")
	before := e.fingerprint()
	nKeys := e.count("app_keys", "")
	for _, r := range []req{
		{Method: "POST", Path: "/api/v1/auth/app-keys", Body: map[string]any{"name": "wider", "rights": store.AppRights()}},
		{Method: "GET", Path: "/api/v1/auth/app-keys"},
		{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + all.ID},
		{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"email": "evil@example.com", "password": "long enough password", "role": "admin"}},
		{Method: "GET", Path: "/api/v1/users"},
		{Method: "PATCH", Path: "/api/v1/users/00000000-0000-4000-8000-000000000000", Body: map[string]any{"role": "admin"}},
		{Method: "GET", Path: "/api/v1/auth/me"},
		// A device key or a device's MQTT password would be an agent's MQTT identity, wider than "#"
		// needs to be (the review's escalation: keys:write + agents:write gave an agent's login).
		{Method: "POST", Path: "/api/v1/auth/api-keys", Body: map[string]any{"name": "mine", "agentUuid": agent.AgentUUID}},
		{Method: "POST", Path: "/api/v1/agents/" + agent.AgentUUID + "/mqtt-password"},
		// So would a provisioning key: redeemed, it registers a new agent with client id agent-<uuid>.
		{Method: "POST", Path: "/api/v1/provision/keys", Body: map[string]any{"name": "mine"}},
	} {
		r.Token = all.Key
		e.expect(r, 403, "forbidden")
		r.Header = map[string]string{"Authorization": "bearer  " + all.Key}
		r.Token = ""
		e.expect(r, 403, "forbidden")
	}
	if e.fingerprint() != before || e.count("app_keys", "revoked_at IS NULL") != nKeys {
		t.Fatal("an escalation attempt changed the database")
	}
	if n := e.count("audit_events", "action = 'app_key_refused'"); n < 16 {
		t.Errorf("%d refused uses audited, want 16", n)
	}
}

// TestAppKeyCannotMintADevice: a key with provision:write and topics "read agents/+/telemetry" tried to
// create a provisioning key, register an agent with it and connect as that agent with readwrite
// agents/<new>/#, a device identity wider than the key. Creating a provisioning key takes an admin's or
// operator's token (docs/app-keys.md); the key still lists and deletes provisioning keys.
func TestAppKeyCannotMintADevice(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	k := e.createAppKey(adm.Access, map[string]any{"name": "provisioner", "rights": []string{"provision:write"},
		"topics": []map[string]string{{"access": "read", "pattern": "agents/+/telemetry"}}})
	before := e.fingerprint()
	for _, body := range []any{nil, map[string]any{"name": "factory"}, map[string]any{"expiresIn": 600}} {
		res := e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: k.Key, Body: body}, 403, "forbidden")
		if p := res.Problem(t); !strings.Contains(p.Detail, "admin's or operator's access token") || !strings.Contains(p.Detail, "agent-") {
			t.Errorf("the refusal does not say why or what to do: %s", res.Body)
		}
	}
	if e.fingerprint() != before || e.count("provisioning_keys", "") != 0 {
		t.Fatal("an application key created a provisioning key")
	}
	if n := e.count("audit_events", "action = 'app_key_refused' AND actor = $1", "app-key:"+k.ID); n != 3 {
		t.Errorf("%d refusals audited, want 3", n)
	}

	// What provision:write still does: list and delete the keys an operator made.
	op := e.userWithRole("operator")
	made := e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: op.Access, Body: map[string]any{"name": "line 3"}}, 201, "").JSON(t)
	list := e.expect(req{Method: "GET", Path: "/api/v1/provision/keys", Token: k.Key}, 200, "")
	if !strings.Contains(string(list.Body), made["id"].(string)) || strings.Contains(string(list.Body), made["key"].(string)) {
		t.Fatalf("list with provision:write: %s", list.Body)
	}
	e.expect(req{Method: "DELETE", Path: "/api/v1/provision/keys/" + made["id"].(string), Token: k.Key}, 204, "")
	if e.count("provisioning_keys", "") != 0 {
		t.Fatal("provision:write did not delete the key")
	}
}

// TestAppKeyRevokedOrExpiredFailsAtOnce is S6 and A4 (docs/security.md) on the REST side: right after the
// revoke, 50 parallel calls with the key all fail; an expired key, a test key on a live deployment and
// an unknown well-formed key fail the same way.
func TestAppKeyRevokedOrExpiredFailsAtOnce(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	k := e.createAppKey(adm.Access, map[string]any{"name": "reader", "rights": []string{"agents:read"}})
	e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: k.Key}, 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + k.ID, Token: adm.Access}, 204, "")
	var wg sync.WaitGroup
	statuses := make([]int, 50)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr, _ := http.NewRequest("GET", e.http.URL+"/api/v1/agents", nil)
			hr.Header.Set("Authorization", "Bearer "+k.Key)
			res, err := e.http.Client().Do(hr)
			if err != nil {
				return
			}
			res.Body.Close()
			statuses[i] = res.StatusCode
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 401 {
			t.Fatalf("call %d after the revoke: status %d, want 401", i, s)
		}
	}
	if n := e.count("audit_events", "action = 'app_key_refused' AND target = $1", "app-key:"+k.ID); n != 50 {
		t.Errorf("%d refused uses audited, want 50", n)
	}

	exp := e.createAppKey(adm.Access, map[string]any{"name": "short-lived", "rights": []string{"agents:read"}})
	e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: exp.Key}, 200, "")
	e.exec(`UPDATE app_keys SET expires_at = now() - interval '1 second', created_at = now() - interval '1 hour' WHERE id = $1`, exp.ID)
	e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: exp.Key}, 401, "invalid_token")

	testKey, _ := secret.Generate(secret.TestAppKey)
	unknown, _ := secret.Generate(secret.AppKey)
	for _, key := range []string{testKey.Reveal(), unknown.Reveal(), exp.Key[:20]} {
		e.remember(key)
		e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: key}, 401, "invalid_token")
	}
	// An application key is never a device key (S2).
	a := e.provision(adm.Access, "gw")
	live := e.createAppKey(adm.Access, map[string]any{"name": "reader2", "rights": []string{"agents:read"}})
	e.expect(req{Method: "GET", Path: "/api/v1/device/" + a.AgentUUID + "/state", Header: map[string]string{"X-Device-API-Key": live.Key}}, 401, "invalid_device_key")
}

// TestAuditTrailByRight: GET /api/v1/audit serves the trail newest first, paginated, to an admin and to an
// application key holding audit:read; the refusals of other keys are there, with no secret.
func TestAuditTrailByRight(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	auditor := e.createAppKey(adm.Access, map[string]any{"name": "auditor", "rights": []string{"audit:read"}})
	reader := e.createAppKey(adm.Access, map[string]any{"name": "reader", "rights": []string{"agents:read"}})
	e.expect(req{Method: "GET", Path: "/api/v1/license", Token: reader.Key}, 403, "missing_right")
	e.expect(req{Method: "GET", Path: "/api/v1/audit", Token: reader.Key}, 403, "missing_right")

	res := e.expect(req{Method: "GET", Path: "/api/v1/audit?action=app_key_refused&limit=1", Token: auditor.Key}, 200, "")
	m := res.JSON(t)
	items := m["items"].([]any)
	if len(items) != 1 || m["nextCursor"] == nil {
		t.Fatalf("first page: %s", res.Body)
	}
	first := items[0].(map[string]any)
	if first["actor"] != "app-key:"+reader.ID || first["outcome"] != "failure" ||
		!strings.Contains(fmt.Sprint(first["detail"]), "missing right audit:read") {
		t.Fatalf("newest refusal: %v", first)
	}
	res = e.expect(req{Method: "GET", Path: "/api/v1/audit?action=app_key_refused&cursor=" + m["nextCursor"].(string), Token: auditor.Key}, 200, "")
	items = res.JSON(t)["items"].([]any)
	if len(items) != 1 || !strings.Contains(fmt.Sprint(items[0]), "missing right license:read") {
		t.Fatalf("second page: %s", res.Body)
	}
	res = e.expect(req{Method: "GET", Path: "/api/v1/audit?action=app_key_create", Token: adm.Access}, 200, "")
	if n := len(res.JSON(t)["items"].([]any)); n != 2 {
		t.Fatalf("%d app_key_create events, want 2", n)
	}
	if secretPattern.Match(res.Body) {
		t.Fatal("the audit trail shows a secret")
	}
	e.expect(req{Method: "GET", Path: "/api/v1/audit?cursor=x", Token: adm.Access}, 400, "validation_failed")
}
