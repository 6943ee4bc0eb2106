package api_test

import (
	"strings"
	"testing"
)

// TestSeedFlows walks the first flows an integrator follows, in order: login → Bearer on GET /api/v1/agents;
// refresh; operator creates a provisioning key (no body), the agent self-registers with it and the key is
// gone afterwards; admin creates an API key for the agent; the agent polls its state with
// X-Device-API-Key.
func TestSeedFlows(t *testing.T) {
	e := newEnv(t)
	e.createUser("user@example.com", "your-password", "admin")
	e.createUser("ops@example.com", "operator-password", "operator")

	// Obtaining a token.
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/login", Body: `{"email": "user@example.com", "password": "your-password"}`}, 200, "")
	m := res.JSON(t)
	access, refresh := m["accessToken"].(string), m["refreshToken"].(string)
	if !strings.HasPrefix(access, "eyJ") || !strings.HasPrefix(refresh, "eyJ") || m["expiresIn"].(float64) != 3600 || m["tokenType"] != "Bearer" {
		t.Fatalf("login answer: %s", res.Body)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token answer without Cache-Control: no-store")
	}

	// Using the token.
	res = e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: access}, 200, "")
	if items := res.JSON(t)["items"].([]any); len(items) != 0 {
		t.Fatalf("agents of a fresh install: %v", items)
	}

	// Refreshing.
	res = e.expect(req{Method: "POST", Path: "/api/v1/auth/refresh", Body: `{"refreshToken": "` + refresh + `"}`}, 200, "")
	m = res.JSON(t)
	if m["accessToken"] == access || m["refreshToken"] == refresh || m["expiresIn"].(float64) != 3600 {
		t.Fatalf("refresh answer: %s", res.Body)
	}
	access = m["accessToken"].(string)

	// Provisioning flow: 1. operator creates a provisioning key (with no body).
	ops := e.login("ops@example.com", "operator-password")
	res = e.expect(req{Method: "POST", Path: "/api/v1/provision/keys", Token: ops.Access}, 201, "")
	m = res.JSON(t)
	provKey, _ := m["key"].(string)
	if !strings.HasPrefix(provKey, "prov_") || m["expiresAt"] == nil || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("provisioning key answer: %v %v", res.Header, m["expiresAt"])
	}
	// 3. Agent calls self-registration with the key.
	res = e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: `{ "key": "` + provKey + `", "agentName": "gateway-01" }`}, 201, "")
	m = res.JSON(t)
	apiKey, _ := m["apiKey"].(string)
	agentUUID, _ := m["agentUuid"].(string)
	if !strings.HasPrefix(apiKey, "iotsk_live_") || len(agentUUID) != 36 || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("registration answer: %v", m["agentUuid"])
	}
	mqtt := m["mqtt"].(map[string]any)
	if mqtt["username"] != apiKey || mqtt["clientId"] != "agent-"+agentUUID || !strings.HasPrefix(mqtt["password"].(string), "iotmp_") ||
		mqtt["host"] != "127.0.0.1" || mqtt["port"].(float64) != 1883 {
		t.Fatalf("mqtt block: host=%v port=%v clientId=%v", mqtt["host"], mqtt["port"], mqtt["clientId"])
	}
	// The provisioning key is single-use and deleted after registration.
	if n := e.count("provisioning_keys", ""); n != 0 {
		t.Fatalf("%d provisioning keys left after registration", n)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": provKey, "agentName": "gateway-02"}}, 401, "invalid_provisioning_key")
	res = e.expect(req{Method: "GET", Path: "/api/v1/provision/keys", Token: ops.Access}, 200, "")
	if items := res.JSON(t)["items"].([]any); len(items) != 0 {
		t.Fatalf("provisioning keys listed after redemption: %v", items)
	}

	// Generating a key manually (admin).
	res = e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: access,
		Body: `{"name": "factory-gateway-01", "agentUuid": "` + agentUUID + `"}`}, 201, "")
	m = res.JSON(t)
	if !strings.HasPrefix(m["apiKey"].(string), "iotsk_live_") || res.Header.Get("Cache-Control") != "no-store" || m["agentUuid"] != agentUUID {
		t.Fatalf("api key answer: agent %v", m["agentUuid"])
	}
	manual := m["apiKey"].(string)

	// The agent lists in GET /api/v1/agents.
	res = e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: access}, 200, "")
	items := res.JSON(t)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["uuid"] != agentUUID || items[0].(map[string]any)["name"] != "gateway-01" {
		t.Fatalf("agents: %s", res.Body)
	}

	// Using an API key (HTTP): both the provisioned and the manual key poll the state.
	for _, key := range []string{apiKey, manual} {
		res = e.expect(req{Method: "GET", Path: "/api/v1/device/" + agentUUID + "/state", Header: map[string]string{"X-Device-API-Key": key}}, 200, "")
		m = res.JSON(t)
		if m["agentUuid"] != agentUUID || m["targetVersion"].(float64) != 1 || res.Header.Get("ETag") != `"1"` {
			t.Fatalf("state: %s etag %q", res.Body, res.Header.Get("ETag"))
		}
	}
	// Polling with the ETag answers 304 until the target changes.
	e.expect(req{Method: "GET", Path: "/api/v1/device/" + agentUUID + "/state", Header: map[string]string{"X-Device-API-Key": apiKey, "If-None-Match": `"1"`}}, 304, "")
	e.expect(req{Method: "PUT", Path: "/api/v1/agents/" + agentUUID + "/target-state", Token: ops.Access, Body: `{"targetState": {"firmware": "2.1.0"}}`}, 200, "")
	res = e.expect(req{Method: "GET", Path: "/api/v1/device/" + agentUUID + "/state", Header: map[string]string{"X-Device-API-Key": apiKey, "If-None-Match": `"1"`}}, 200, "")
	m = res.JSON(t)
	if m["targetVersion"].(float64) != 2 || m["targetState"].(map[string]any)["firmware"] != "2.1.0" || res.Header.Get("ETag") != `"2"` {
		t.Fatalf("new state: %s", res.Body)
	}
	// The agent reports what it runs.
	e.expect(req{Method: "PATCH", Path: "/api/v1/device/" + agentUUID + "/state", Header: map[string]string{"X-Device-API-Key": apiKey},
		Body: `{"reportedState": {"firmware": "2.1.0"}}`}, 204, "")
	res = e.expect(req{Method: "GET", Path: "/api/v1/agents/" + agentUUID, Token: access}, 200, "")
	if rs := res.JSON(t)["reportedState"].(map[string]any); rs["firmware"] != "2.1.0" {
		t.Fatalf("reported state: %s", res.Body)
	}
	// me.
	res = e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: access}, 200, "")
	if me := res.JSON(t); me["email"] != "user@example.com" || me["role"] != "admin" {
		t.Fatalf("me: %s", res.Body)
	}
}
