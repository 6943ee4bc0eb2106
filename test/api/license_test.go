package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/license"
)

// TestLicenseStatusRoute: GET /api/v1/license shows an admin the evaluation of a real signed license
// (status, customer, maxDevices, features, expiry, warning) and the device count of agents that are not
// decommissioned; other roles get 403 forbidden and anonymous callers 401, both as problem+json. The
// token itself is never in the answer. Inside the warning window the status says so and nothing is
// blocked.
func TestLicenseStatusRoute(t *testing.T) {
	e, l := newLicensedEnv(t, 5, []string{license.FeatureDataExport, license.FeatureAI})
	adm := e.admin()
	a := e.provision(adm.Access, "one")
	e.provision(adm.Access, "two")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + a.AgentUUID, Token: adm.Access}, 204, "")

	res := e.expect(req{Method: "GET", Path: "/api/v1/license", Token: adm.Access}, 200, "")
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	st := res.JSON(t)
	exp := l.t0.Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if st["status"] != "valid" || st["restricted"] != false || st["warning"] != false || st["customer"] != "ACME Test Corp" ||
		st["maxDevices"] != float64(5) || st["deviceCount"] != float64(1) || st["expiresAt"] != exp ||
		strings.Join(toStrings(st["features"]), ",") != "data_export,ai" {
		t.Fatalf("license status: %s", res.Body)
	}
	if _, ok := st["reason"]; ok {
		t.Fatalf("a valid license reports a reason: %s", res.Body)
	}
	if strings.Contains(string(res.Body), l.material.Token) || secretPattern.Match(res.Body) {
		t.Fatalf("the status shows the license token: %s", res.Body)
	}
	for _, role := range []string{"operator", "viewer"} {
		res := e.expect(req{Method: "GET", Path: "/api/v1/license", Token: e.userWithRole(role).Access}, 403, "forbidden")
		res.Problem(t)
	}
	e.expect(req{Method: "GET", Path: "/api/v1/license"}, 401, "authentication_required")

	// Three days before expiry: warning, still unrestricted.
	l.clock.set(l.t0.Add(362 * 24 * time.Hour))
	l.tick()
	st = e.expect(req{Method: "GET", Path: "/api/v1/license", Token: adm.Access}, 200, "").JSON(t)
	if st["status"] != "warning" || st["warning"] != true || st["restricted"] != false || !strings.Contains(st["message"].(string), "expires") {
		t.Fatalf("warning window: %v", st)
	}
	e.provision(adm.Access, "three")
	if !strings.Contains(e.logs.String(), "license expires soon") {
		t.Fatal("the warning was not logged")
	}
}

// TestExpiryFlipsWhileRunning is P7's clock half: a license that expires while the server runs turns
// the server restricted at the next periodic evaluation (every minute in `iotauth serve`; here the test
// moves the clock and delivers the tick), with no reload and no restart. Existing agents keep polling.
func TestExpiryFlipsWhileRunning(t *testing.T) {
	l := newLicensed(t, edVendor().pubPEM, "")
	exp := l.t0.Add(time.Hour)
	l.material.Token = edVendor().issue(t, license.Terms{IssuedAt: l.t0.Add(-time.Hour), ExpiresAt: exp, MaxDevices: 10, Features: []string{license.FeatureDataExport}})
	e := newEnv(t, l.option())
	l.attach(e)
	adm := e.admin()
	a := e.provision(adm.Access, "before-expiry")
	key := e.provisioningKey(adm.Access)

	l.clock.set(exp.Add(-time.Second))
	l.tick()
	if l.mgr.Restricted() {
		t.Fatal("restricted a second before expiry")
	}
	l.clock.set(exp.Add(time.Second))
	if l.mgr.Restricted() {
		t.Fatal("restricted before any evaluation ran: the gate must answer from the last evaluation")
	}
	l.tick()
	st := l.mgr.Status()
	if !st.Restricted || st.Reason != license.CodeExpired || st.Customer != "ACME Test Corp" {
		t.Fatalf("after expiry: %+v", st)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "after-expiry"}}, 403, "license_expired")
	e.expect(req{Method: "GET", Path: "/api/v1/agents/export", Token: adm.Access}, 403, "license_expired")
	e.expect(stateReq(a.AgentUUID, a.APIKey), 200, "")
	if e.count("provisioning_keys", "") != 1 {
		t.Fatal("the refused registration consumed the key")
	}
	if !strings.Contains(e.logs.String(), `"reason":"license_expired"`) || !strings.Contains(e.logs.String(), `"trigger":"clock"`) {
		t.Fatalf("the flip was not logged:\n%s", e.logs.String())
	}
}

// TestDeviceLimitWithSignedLicense is P4 with a real signed license (maxDevices 5): 40 parallel
// registrations, each with its own key, make exactly 5 agents; the 35 others get 403
// device_limit_reached and keep their keys. Then a reloaded license with a lower limit (3, below the 5
// registered) disconnects nobody — every agent's live MQTT session survives and still round-trips, and
// every agent still polls — but refuses new agents; a license with a higher limit lets exactly one
// more in.
func TestDeviceLimitWithSignedLicense(t *testing.T) {
	e, l := newLicensedEnv(t, 5, nil, withBroker)
	adm := e.admin()
	const n = 40
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.provisioningKey(adm.Access)
	}
	var mu sync.Mutex
	var agents []provisioned
	var limited atomic.Int32
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
				var p provisioned
				if err := json.Unmarshal(res.Body, &p); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				agents = append(agents, p)
				mu.Unlock()
			case res.Status == 403 && strings.Contains(string(res.Body), `"code":"device_limit_reached"`):
				limited.Add(1)
			default:
				t.Errorf("unexpected answer %d: %s", res.Status, res.Body)
			}
		}(keys[i])
	}
	close(start)
	wg.Wait()
	if len(agents) != 5 || limited.Load() != n-5 {
		t.Fatalf("%d created, %d limited; want 5 and %d", len(agents), limited.Load(), n-5)
	}
	if c := e.count("agents", ""); c != 5 {
		t.Fatalf("%d agents in the database, want 5", c)
	}
	if k := e.count("provisioning_keys", ""); k != n-5 {
		t.Fatalf("%d provisioning keys left, want %d: refused registrations must not burn keys", k, n-5)
	}

	sessions := make([]*session, len(agents))
	for i, a := range agents {
		s, err := connectAgent(t, a)
		if err != nil {
			t.Fatalf("agent %d could not connect: %v", i, err)
		}
		sessions[i] = s
	}

	// Lower the limit below the count.
	lower := edVendor().issue(t, l.validTerms(3))
	if st := l.install(edVendor().pubPEM, lower); st.Restricted || *st.MaxDevices != 3 {
		t.Fatalf("lowered license: %+v", st)
	}
	st := e.expect(req{Method: "GET", Path: "/api/v1/license", Token: adm.Access}, 200, "").JSON(t)
	if st["maxDevices"] != float64(3) || st["deviceCount"] != float64(5) || st["restricted"] != false {
		t.Fatalf("status after lowering: %v", st)
	}
	for i, a := range agents {
		roundTrip(t, sessions[i], a.AgentUUID)
		e.expect(stateReq(a.AgentUUID, a.APIKey), 200, "")
	}
	for i, s := range sessions {
		select {
		case <-s.lost:
			t.Fatalf("agent %d was disconnected by the lower limit", i)
		default:
		}
	}
	var left []string
	for _, k := range keys {
		d := secret.DigestOf(k)
		if e.count("provisioning_keys", "digest = $1", d[:]) == 1 {
			left = append(left, k)
		}
	}
	if len(left) != n-5 {
		t.Fatalf("%d unredeemed keys found, want %d", len(left), n-5)
	}
	before := e.fingerprint()
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": left[0], "agentName": "over"}}, 403, "device_limit_reached")
	if e.fingerprint() != before {
		t.Fatal("a registration over the lowered limit changed the database")
	}

	// A larger license lets exactly one more in.
	if st := l.install(edVendor().pubPEM, edVendor().issue(t, l.validTerms(6))); st.Restricted {
		t.Fatalf("raised license: %+v", st)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": left[1], "agentName": "sixth"}}, 201, "")
	e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": left[2], "agentName": "seventh"}}, 403, "device_limit_reached")
	if c := e.count("agents", ""); c != 6 {
		t.Fatalf("%d agents, want 6", c)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestLicenseStatusOfPlainLicensers: GET /api/v1/license also describes a Licenser that does not report
// its own status (the permissive default of embedded and test servers, or another implementation) from
// the Licenser interface alone: restricted with the refusal's code, or the features and limit it allows.
func TestLicenseStatusOfPlainLicensers(t *testing.T) {
	for _, tc := range []struct {
		name string
		lic  api.Licenser
		want map[string]any
	}{
		{"unlimited default", nil, map[string]any{"status": "valid", "restricted": false, "maxDevices": nil, "features": []any{"advanced_anomaly", "data_export", "ai"}}},
		{"limit", limitLicenser{max: 5}, map[string]any{"status": "valid", "restricted": false, "maxDevices": float64(5)}},
		{"refusal", limitLicenser{refusal: licenseRefusal{}}, map[string]any{"status": "restricted", "restricted": true, "reason": "license_missing", "features": []any{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *api.Config) { c.Licenser = tc.lic }))
			st := e.expect(req{Method: "GET", Path: "/api/v1/license", Token: e.admin().Access}, 200, "").JSON(t)
			for k, v := range tc.want {
				if !reflect.DeepEqual(st[k], v) {
					t.Errorf("%s = %#v, want %#v", k, st[k], v)
				}
			}
			if st["deviceCount"] != float64(0) {
				t.Errorf("deviceCount %v", st["deviceCount"])
			}
		})
	}
}
