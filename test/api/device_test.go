package api_test

import (
	"testing"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/token"
)

func stateReq(uuid, key string) req {
	return req{Method: "GET", Path: "/api/v1/device/" + uuid + "/state", Header: map[string]string{"X-Device-API-Key": key}}
}

// TestDeviceKeyKinds is S2 and S4: only a live device API key is accepted in X-Device-API-Key. A
// provisioning key, a test key on a live deployment, the MQTT password, access and refresh JWTs, a key
// with one flipped character and a well-formed unknown key all get the same 401, and change nothing.
func TestDeviceKeyKinds(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	prov := e.provisioningKey(adm.Access)
	testKey, _ := secret.Generate(secret.TestAPIKey)
	unknown, _ := secret.Generate(secret.APIKey)
	flipped := []byte(a.APIKey)
	flipped[len(secret.APIKey.Prefix())+3] ^= 1
	// A test key that really exists in the database for this agent is refused on a live deployment.
	d := secret.DigestOf(testKey.Reveal())
	e.exec(`INSERT INTO api_keys (agent_uuid, name, digest, prefix) VALUES ($1, 'test', $2, 'iotsk_test_')`, a.AgentUUID, d[:])
	e.remember(testKey.Reveal(), unknown.Reveal(), string(flipped))
	before := e.fingerprint()
	var first string
	for name, key := range map[string]string{
		"missing":          "",
		"provisioning key": prov,
		"test key on live": testKey.Reveal(),
		"mqtt password":    a.MQTT.Password,
		"access token":     adm.Access,
		"refresh token":    adm.Refresh,
		"flipped checksum": string(flipped),
		"unknown key":      unknown.Reveal(),
		"bearer prefix":    "Bearer " + a.APIKey,
	} {
		res := e.expect(stateReq(a.AgentUUID, key), 401, "invalid_device_key")
		if first == "" {
			first = string(res.Body)
		} else if string(res.Body) != first {
			t.Errorf("%s: answer differs: %s", name, res.Body)
		}
	}
	// An operator's Bearer token does not open device routes either.
	e.expect(req{Method: "GET", Path: "/api/v1/device/" + a.AgentUUID + "/state", Token: adm.Access}, 401, "invalid_device_key")
	if e.fingerprint() != before {
		t.Fatal("refused device requests changed the database")
	}
	e.expect(stateReq(a.AgentUUID, a.APIKey), 200, "")
}

// TestDeviceKeyLifecycle is S6: revoked and expired keys and decommissioned agents are refused on every
// use; a key without the device_state right is refused with 403.
func TestDeviceKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "gw")
	// A key limited to MQTT.
	res := e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access,
		Body: map[string]any{"name": "mqtt only", "agentUuid": a.AgentUUID, "rights": []string{"mqtt"}}}, 201, "")
	mqttOnly := res.JSON(t)["apiKey"].(string)
	e.expect(stateReq(a.AgentUUID, mqttOnly), 403, "insufficient_key_rights")
	// Expiry.
	res = e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access,
		Body: map[string]any{"name": "short", "agentUuid": a.AgentUUID, "expiresAt": "2999-01-01T00:00:00Z"}}, 201, "")
	short := res.JSON(t)
	e.expect(stateReq(a.AgentUUID, short["apiKey"].(string)), 200, "")
	e.exec(`UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, short["id"])
	e.expect(stateReq(a.AgentUUID, short["apiKey"].(string)), 401, "invalid_device_key")
	e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access,
		Body: map[string]any{"name": "past", "agentUuid": a.AgentUUID, "expiresAt": "2001-01-01T00:00:00Z"}}, 400, "validation_failed")
	// Revocation.
	e.expect(stateReq(a.AgentUUID, a.APIKey), 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + a.KeyID, Token: adm.Access}, 204, "")
	e.expect(stateReq(a.AgentUUID, a.APIKey), 401, "invalid_device_key")
	e.expect(req{Method: "PATCH", Path: "/api/v1/device/" + a.AgentUUID + "/state", Header: map[string]string{"X-Device-API-Key": a.APIKey},
		Body: `{"reportedState":{}}`}, 401, "invalid_device_key")
	// Decommission: every key dies.
	b := e.provision(adm.Access, "gw-b")
	e.expect(stateReq(b.AgentUUID, b.APIKey), 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + b.AgentUUID, Token: adm.Access}, 204, "")
	e.expect(stateReq(b.AgentUUID, b.APIKey), 401, "invalid_device_key")
	if e.count("mqtt_credentials", "agent_uuid = $1", b.AgentUUID) != 0 || e.count("api_keys", "agent_uuid = $1 AND revoked_at IS NULL", b.AgentUUID) != 0 {
		t.Fatal("decommission left credentials")
	}
	// Disabled agent (plain SQL, as an operator might): refused.
	c := e.provision(adm.Access, "gw-c")
	e.exec(`UPDATE agents SET status = 'disabled' WHERE uuid = $1`, c.AgentUUID)
	e.expect(stateReq(c.AgentUUID, c.APIKey), 401, "invalid_device_key")
}

// TestDeviceKeyReachesOnlyItsAgent is S7 (BOLA): agent A's key on agent B's uuid, on a uuid that does
// not exist, and on a malformed uuid get the same 404; nothing of B is read or changed.
func TestDeviceKeyReachesOnlyItsAgent(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	a := e.provision(adm.Access, "a")
	b := e.provision(adm.Access, "b")
	before := e.fingerprint()
	var first string
	for _, target := range []string{b.AgentUUID, token.NewID(), "not-a-uuid", a.AgentUUID + "x"} {
		res := e.expect(stateReq(target, a.APIKey), 404, "not_found")
		if first == "" {
			first = string(res.Body)
		} else if string(res.Body) != first {
			t.Errorf("answer for %s differs: %s", target, res.Body)
		}
		e.expect(req{Method: "PATCH", Path: "/api/v1/device/" + target + "/state", Header: map[string]string{"X-Device-API-Key": a.APIKey},
			Body: `{"reportedState":{"owned":true}}`}, 404, "not_found")
	}
	if e.fingerprint() != before {
		t.Fatal("cross-agent requests changed the database")
	}
	e.expect(stateReq(b.AgentUUID, b.APIKey), 200, "")
}
