package api_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// TestProvisioningKeySingleUse is P1: 50 concurrent redemptions of one key give exactly one 201; the
// other 49 get the ordinary 401, and exactly one agent exists.
func TestProvisioningKeySingleUse(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	key := e.provisioningKey(adm.Access)
	const n = 50
	var created, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res := e.do(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "racer"}})
			switch {
			case res.Status == 201:
				created.Add(1)
			case res.Status == 401 && strings.Contains(string(res.Body), `"invalid_provisioning_key"`):
				refused.Add(1)
			default:
				t.Errorf("unexpected answer %d: %s", res.Status, res.Body)
			}
		}()
	}
	close(start)
	wg.Wait()
	if created.Load() != 1 || refused.Load() != n-1 {
		t.Fatalf("%d created, %d refused; want 1 and %d", created.Load(), refused.Load(), n-1)
	}
	if a, k, c := e.count("agents", ""), e.count("api_keys", ""), e.count("mqtt_credentials", ""); a != 1 || k != 1 || c != 1 {
		t.Fatalf("%d agents, %d keys, %d mqtt credentials; want 1 each", a, k, c)
	}
	if e.count("provisioning_keys", "") != 0 {
		t.Fatal("the key survived its redemption")
	}
	if e.count("audit_events", "action = 'agent_provision' AND outcome = 'success'") != 1 {
		t.Fatal("the redemption was not audited exactly once")
	}
}

// TestProvisioningAllOrNothing is P2: when a step after consuming the key fails (here the MQTT
// credentials insert, made to fail by a trigger), the request gets an opaque 500, the key is still
// there and no half-made agent or key remains; once the fault is gone the same key works.
func TestProvisioningAllOrNothing(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	key := e.provisioningKey(adm.Access)
	e.exec(`CREATE FUNCTION fail_mqtt_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure in mqtt_credentials'; END $$`)
	e.exec(`CREATE TRIGGER fail_mqtt BEFORE INSERT ON mqtt_credentials FOR EACH ROW EXECUTE FUNCTION fail_mqtt_insert()`)
	before := e.fingerprint()
	res := e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "half"}}, 500, "internal_error")
	if strings.Contains(string(res.Body), "injected") || strings.Contains(string(res.Body), "mqtt_credentials") {
		t.Fatalf("500 body leaks the cause: %s", res.Body)
	}
	if after := e.fingerprint(); after != before {
		t.Fatalf("a failed registration changed the database:\n%s\n%s", before, after)
	}
	if e.count("provisioning_keys", "") != 1 || e.count("agents", "") != 0 || e.count("api_keys", "") != 0 {
		t.Fatal("key consumed or half-made agent left behind")
	}
	if !strings.Contains(e.logs.String(), "injected failure") {
		t.Fatal("the cause of the 500 is not in the server log")
	}
	e.exec(`DROP TRIGGER fail_mqtt ON mqtt_credentials`)
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "whole"}}, 201, "")
	if e.count("agents", "") != 1 || e.count("provisioning_keys", "") != 0 {
		t.Fatal("the retried registration did not complete")
	}
}

// TestProvisioningKeyRefusalsAreIdentical is P3: an expired, a used, an unknown (well-formed) and a
// malformed key get byte-identical 401 answers, and nothing changes.
func TestProvisioningKeyRefusalsAreIdentical(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	expired := e.provisioningKey(adm.Access)
	e.exec(`UPDATE provisioning_keys SET expires_at = now() - interval '1 second'`)
	used := e.provisioningKey(adm.Access)
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": used, "agentName": "first"}}, 201, "")
	unknown, _ := secret.Generate(secret.ProvisioningKey)
	apiKey, _ := secret.Generate(secret.APIKey)
	flipped := []byte(unknown.Reveal())
	flipped[10] ^= 1
	e.remember(unknown.Reveal(), apiKey.Reveal(), string(flipped))
	before := e.fingerprint()
	var first []byte
	for name, k := range map[string]string{"expired": expired, "used": used, "unknown": unknown.Reveal(), "flipped": string(flipped),
		"device key": apiKey.Reveal(), "garbage": "prov_x"} {
		res := e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": k, "agentName": "late"}}, 401, "invalid_provisioning_key")
		if first == nil {
			first = res.Body
		} else if string(res.Body) != string(first) {
			t.Errorf("%s: answer differs:\n%s\n%s", name, res.Body, first)
		}
	}
	if e.fingerprint() != before {
		t.Fatal("refused registrations changed the database")
	}
	if e.count("provisioning_keys", "") != 1 {
		t.Fatal("the expired key was consumed by a refused attempt")
	}
}

// limitLicenser is a Licenser with a device limit and an optional refusal, as backend/license provides.
type limitLicenser struct {
	max     int
	refusal error
}

func (l limitLicenser) CheckRegistration(context.Context) error { return l.refusal }
func (l limitLicenser) CheckFeature(string) error               { return l.refusal }
func (l limitLicenser) MaxDevices() (int, bool)                 { return l.max, l.max > 0 }

type licenseRefusal struct{}

func (licenseRefusal) Error() string       { return "no license is installed: set LICENSE_KEY" }
func (licenseRefusal) ProblemCode() string { return "license_missing" }

var _ api.Licenser = limitLicenser{}

// TestDeviceLimitUnderConcurrency is P4: with a limit of 5 and 40 concurrent registrations (each with
// its own key), exactly 5 agents are made; the rest get 403 device_limit_reached and keep their keys.
func TestDeviceLimitUnderConcurrency(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.Licenser = limitLicenser{max: 5} }))
	adm := e.admin()
	const n = 40
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.provisioningKey(adm.Access)
	}
	var created, limited atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(key string) {
			defer wg.Done()
			<-start
			res := e.do(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "fleet"}})
			switch {
			case res.Status == 201:
				created.Add(1)
			case res.Status == 403 && strings.Contains(string(res.Body), `"device_limit_reached"`):
				limited.Add(1)
			default:
				t.Errorf("unexpected answer %d: %s", res.Status, res.Body)
			}
		}(keys[i])
	}
	close(start)
	wg.Wait()
	if created.Load() != 5 || limited.Load() != n-5 {
		t.Fatalf("%d created, %d limited; want 5 and %d", created.Load(), limited.Load(), n-5)
	}
	if a := e.count("agents", ""); a != 5 {
		t.Fatalf("%d agents, want 5", a)
	}
	if k := e.count("provisioning_keys", ""); k != n-5 {
		t.Fatalf("%d provisioning keys left, want %d: refused registrations must not burn keys", k, n-5)
	}
	// Decommissioning one frees a slot.
	var victim string
	if err := harness.QueryRow(t, e.dsn, `SELECT uuid::text FROM agents LIMIT 1`).Scan(&victim); err != nil {
		t.Fatal(err)
	}
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + victim, Token: adm.Access}, 204, "")
	fresh := e.provisioningKey(adm.Access)
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": fresh, "agentName": "replacement"}}, 201, "")
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": e.provisioningKey(adm.Access), "agentName": "one too many"}}, 403, "device_limit_reached")
}

// TestRestrictedLicenseKeepsKeys is P5: a licenser refusal with its own code is answered 403 with that
// code, before the provisioning key is consumed.
func TestRestrictedLicenseKeepsKeys(t *testing.T) {
	e := newEnv(t, withConfig(func(c *api.Config) { c.Licenser = limitLicenser{refusal: licenseRefusal{}} }))
	adm := e.admin()
	key := e.provisioningKey(adm.Access)
	before := e.fingerprint()
	res := e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "blocked"}}, 403, "license_missing")
	if !strings.Contains(res.Problem(t).Detail, "LICENSE_KEY") {
		t.Fatalf("the licenser's detail is not passed on: %s", res.Body)
	}
	if e.fingerprint() != before {
		t.Fatal("a refused registration changed the database (key consumed?)")
	}
	// Restricted mode leaves everything else working: logins, reads, revocation.
	e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: adm.Access}, 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/provision/keys/" + firstID(t, e, adm.Access), Token: adm.Access}, 204, "")
	// An error without a code is refused with the generic code.
	e2 := newEnv(t, withConfig(func(c *api.Config) { c.Licenser = limitLicenser{refusal: errors.New("signature invalid")} }))
	adm2 := e2.admin()
	key2 := e2.provisioningKey(adm2.Access)
	res = e2.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key2, "agentName": "blocked"}}, 403, "license_restricted")
	if strings.Contains(string(res.Body), "signature invalid") {
		t.Fatalf("an uncoded licenser error leaked its text: %s", res.Body)
	}
}

func firstID(t *testing.T, e *env, tok string) string {
	t.Helper()
	items := e.expect(req{Method: "GET", Path: "/api/v1/provision/keys", Token: tok}, 200, "").JSON(t)["items"].([]any)
	if len(items) == 0 {
		t.Fatal("no provisioning keys listed")
	}
	return items[0].(map[string]any)["id"].(string)
}
