package api_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/test/harness"
)

// restrictedCase is one way a license can fail: the material installed, the license clock, and the
// reason code every blocked route must answer with.
type restrictedCase struct {
	name  string
	pub   []byte
	token string
	at    time.Time
	code  string
}

// TestRestrictedModeMatrix is P5 and P6 over every restricted reason × every route class, against the
// real PostgreSQL and the real Mosquitto with the plugin, with the license clock in the test's hands.
//
// For each reason (no license; no public key; malformed; unsigned alg none; bad signature; claims edited
// under the old signature; signed by another vendor key; an RS256 license against the Ed25519 key; HS256
// forged with the public key as HMAC secret; an operator's access token; expired; iat in the future;
// nbf in the future) the license is swapped in and reloaded as SIGHUP does, and then:
//   - kept working: an existing agent's MQTT connect and publish/subscribe through the broker, its state
//     poll with X-Device-API-Key, login, refresh, reads, and revocation (DELETE api-key kicks the live
//     MQTT session and reconnecting is refused);
//   - blocked with 403 and the reason's code: POST /provision/agent (the database unchanged and the
//     provisioning key not consumed) and the premium CSV export;
//   - GET /api/v1/license says restricted with that reason.
//
// The valid license is checked first with the same route classes (registration and export succeed), and
// at the end every provisioning key refused during the matrix still redeems once a valid license is back.
func TestRestrictedModeMatrix(t *testing.T) {
	e, l := newLicensedEnv(t, 0, []string{license.FeatureDataExport}, withBroker)
	adm := e.admin()
	ops := e.userWithRole("operator")
	existing := e.provision(ops.Access, "existing-agent")

	v := edVendor()
	valid := l.material.Token
	exp := l.t0.Add(365 * 24 * time.Hour)
	rsaTok := rsaVendor().issue(t, l.validTerms(0, license.FeatureDataExport))
	otherTok := otherVendor().issue(t, l.validTerms(0, license.FeatureDataExport))
	nbfTerms := l.validTerms(0, license.FeatureDataExport)
	nbfTerms.NotBefore = l.t0.Add(24 * time.Hour)
	nbfTok := v.issue(t, nbfTerms)
	tampered := tamper(t, valid, func(c map[string]any) {
		c["maxDevices"] = 100000
		c["features"] = license.KnownFeatures()
	})
	unsigned := noneToken(t, valid)
	forged := hsForged(t, v.pubPEM)
	e.remember(rsaTok, otherTok, nbfTok, tampered, unsigned, forged)

	cases := []restrictedCase{
		{"no license", v.pubPEM, "", l.t0, license.CodeMissing},
		{"no public key", nil, valid, l.t0, license.CodeInvalid},
		{"malformed", v.pubPEM, "this-is-not-a-license", l.t0, license.CodeInvalid},
		{"alg none", v.pubPEM, unsigned, l.t0, license.CodeInvalid},
		{"bad signature", v.pubPEM, flipSignature(t, valid), l.t0, license.CodeInvalid},
		{"tampered claims with the old signature", v.pubPEM, tampered, l.t0, license.CodeInvalid},
		{"signed by another key", v.pubPEM, otherTok, l.t0, license.CodeInvalid},
		{"RS256 license against the Ed25519 key", v.pubPEM, rsaTok, l.t0, license.CodeInvalid},
		{"HS256 forged with the public key", v.pubPEM, forged, l.t0, license.CodeInvalid},
		{"access token as LICENSE_KEY", v.pubPEM, adm.Access, l.t0, license.CodeInvalid},
		{"expired", v.pubPEM, valid, exp.Add(time.Minute), license.CodeExpired},
		{"iat in the future", v.pubPEM, valid, l.t0.Add(-2 * time.Hour), license.CodeInvalid},
		{"nbf in the future", v.pubPEM, nbfTok, l.t0, license.CodeInvalid},
	}

	m := &routeMatrix{e: e, l: l, adminEmail: "admin@example.com", adminPassword: "correct horse battery", ops: ops, agent: existing}
	t.Run("valid license", func(t *testing.T) { m.check(t, "") })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l.clock.set(c.at)
			st := l.install(c.pub, c.token)
			if !st.Restricted || st.Reason != c.code {
				t.Fatalf("license status %s/%q, want restricted %q: %s", st.Status, st.Reason, c.code, st.Message)
			}
			if c.token != "" && strings.Contains(st.Message, c.token) {
				t.Fatal("the operator message quotes the token")
			}
			m.check(t, c.code)
		})
	}

	// Back to the valid license: every key refused above was kept and redeems now.
	l.clock.set(l.t0)
	if st := l.install(v.pubPEM, valid); st.Restricted {
		t.Fatalf("valid license restricted after the matrix: %s", st.Message)
	}
	if len(m.refusedKeys) != len(cases) {
		t.Fatalf("%d refused keys kept, want %d", len(m.refusedKeys), len(cases))
	}
	for _, key := range m.refusedKeys {
		e.expect(req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "after-restore"}}, 201, "")
	}
}

// routeMatrix runs every route class against the current license.
type routeMatrix struct {
	e                         *env
	l                         *licensed
	adminEmail, adminPassword string
	ops                       tokens
	agent                     provisioned
	refusedKeys               []string
}

// check exercises each route class; code is the expected restriction code, or "" for a usable license.
func (m *routeMatrix) check(t *testing.T, code string) {
	e := m.e
	e.t = t // failures are reported on the subtest
	defer func() { e.t = m.l.t }()

	// MQTT: the existing agent connects through the real broker and round-trips a message.
	s, err := connectAgent(t, m.agent)
	if err != nil {
		t.Fatalf("MQTT connect of an existing agent refused: %v", err)
	}
	roundTrip(t, s, m.agent.AgentUUID)
	s.c.Disconnect(50)

	// Device state poll.
	e.expect(stateReq(m.agent.AgentUUID, m.agent.APIKey), 200, "")

	// Login and refresh.
	adm := e.login(m.adminEmail, m.adminPassword)
	e.expect(refreshReq(adm.Refresh), 200, "")

	// Reads.
	e.expect(req{Method: "GET", Path: "/api/v1/agents", Token: m.ops.Access}, 200, "")
	e.expect(req{Method: "GET", Path: "/api/v1/agents/" + m.agent.AgentUUID, Token: m.ops.Access}, 200, "")

	// Revocation: an agent made with the break-glass CLI path is connected, its key revoked over REST;
	// the broker closes the session and refuses the key from then on.
	victim := harness.CreateAgent(t, e.st, "victim")
	e.remember(victim.Key, victim.Password)
	vs, err := connectWith(t, "127.0.0.1", e.broker.Port, victim.Key, victim.Password, victim.ClientID)
	if err != nil {
		t.Fatalf("victim could not connect: %v", err)
	}
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + victim.KeyID, Token: adm.Access}, 204, "")
	select {
	case <-vs.lost:
	case <-time.After(10 * time.Second):
		t.Fatal("revocation did not close the live MQTT session")
	}
	_, err = connectWith(t, "127.0.0.1", e.broker.Port, victim.Key, victim.Password, victim.ClientID)
	refused(t, err, "revoked key")

	// License status.
	st := e.expect(req{Method: "GET", Path: "/api/v1/license", Token: adm.Access}, 200, "").JSON(t)
	if st["restricted"] != (code != "") || (code != "" && st["reason"] != code) {
		t.Fatalf("GET /api/v1/license: restricted %v reason %v, want code %q", st["restricted"], st["reason"], code)
	}

	// Registration and the premium export.
	key := e.provisioningKey(m.ops.Access)
	register := req{Method: "POST", Path: "/api/v1/provision/agent", Body: map[string]string{"key": key, "agentName": "new-agent"}}
	export := req{Method: "GET", Path: "/api/v1/agents/export?format=csv", Token: m.ops.Access}
	if code == "" {
		e.expect(register, 201, "")
		e.expect(export, 200, "")
		return
	}
	before := e.fingerprint()
	res := e.expect(register, 403, code)
	if strings.Contains(string(res.Body), "LICENSE_") || secretPattern.Match(res.Body) {
		t.Fatalf("the refusal shows configuration or key material to an anonymous client: %s", res.Body)
	}
	e.expect(export, 403, code)
	if after := e.fingerprint(); after != before {
		t.Fatalf("a refused registration changed the database (was the provisioning key consumed?)\nbefore: %s\nafter:  %s", before, after)
	}
	m.refusedKeys = append(m.refusedKeys, key)
}

// flipSignature changes one character in the middle of a JWS signature.
func flipSignature(t *testing.T, token string) string {
	t.Helper()
	i := strings.LastIndexByte(token, '.') + 10
	b := []byte(token)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// noneToken is token's payload under an "alg":"none" header with an empty signature.
func noneToken(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
}

// hsForged is the classic algorithm-confusion forgery: a license with sound claims, signed HS256 with
// the vendor's public key PEM as the HMAC secret.
func hsForged(t *testing.T, pubPEM []byte) string {
	t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": license.DefaultIssuer, "aud": license.DefaultAudience, "sub": "Mallory", "typ": license.TokenType,
		"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(365 * 24 * time.Hour).Unix(), "features": license.KnownFeatures(),
	}).SignedString(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
