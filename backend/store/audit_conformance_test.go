package store_test

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// testAudit: Audit, AuditMany (all or nothing), ListAudit (paging both ways and every filter).
func testAudit(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	agent := "agent:" + unknownUUID
	wantErr(t, "Audit", st.AuditTrail.Audit(ctx, store.AuditEvent{Actor: "user:1", Action: "login", RemoteAddr: "10.0.0.1", Detail: map[string]any{"n": 1}}), nil)
	wantErr(t, "Audit defaults", st.AuditTrail.Audit(ctx, store.AuditEvent{Action: "login_failed", Outcome: store.OutcomeFailure}), nil)
	wantErr(t, "AuditMany", st.AuditTrail.AuditMany(ctx, []store.AuditEvent{{Actor: agent, Action: "mqtt_connect"}, {Actor: "user:1", Action: "agent_update", Target: agent}}), nil)
	// A batch with one event the database refuses writes none of them; so does a detail JSON cannot hold.
	wantErr(t, "AuditMany with a refused event", st.AuditTrail.AuditMany(ctx, []store.AuditEvent{{Actor: "x", Action: "batch"}, badAudit("batch")}), store.ErrBadCharacter)
	wantErr(t, "Audit refused", st.AuditTrail.Audit(ctx, badAudit("single")), store.ErrBadCharacter)
	if err := st.AuditTrail.Audit(ctx, store.AuditEvent{Action: "bad_detail", Detail: map[string]any{"f": func() {}}}); err == nil {
		t.Fatal("an event whose detail cannot be encoded was accepted")
	}
	if n := d.count("audit_events", "action IN ('batch', 'single', 'bad_detail')"); n != 0 {
		t.Fatalf("%d refused events were written", n)
	}

	all, more, err := st.AuditTrail.ListAudit(ctx, store.AuditPage{})
	wantErr(t, "ListAudit", err, nil)
	if len(all) != 4 || more || all[0].Action != "agent_update" || all[3].Action != "login" {
		t.Fatalf("ListAudit: %d events, more %v", len(all), more)
	}
	if e := all[3]; e.Actor != "user:1" || e.RemoteAddr != "10.0.0.1" || e.Outcome != store.OutcomeSuccess || e.Detail["n"] != float64(1) || e.At.IsZero() {
		t.Fatalf("stored event %+v", e)
	}
	if e := all[2]; e.Actor != "anonymous" || e.Outcome != store.OutcomeFailure {
		t.Fatalf("defaults: actor %q outcome %q", e.Actor, e.Outcome)
	}
	// Paging newest first by BeforeID, oldest first by AfterID.
	page, more, _ := st.AuditTrail.ListAudit(ctx, store.AuditPage{Limit: 3})
	rest, more2, _ := st.AuditTrail.ListAudit(ctx, store.AuditPage{Limit: 3, BeforeID: page[2].ID})
	if len(page) != 3 || !more || len(rest) != 1 || more2 || rest[0].ID != all[3].ID {
		t.Fatalf("pages of 3: %d (more %v) then %d (more %v)", len(page), more, len(rest), more2)
	}
	asc, _, _ := st.AuditTrail.ListAudit(ctx, store.AuditPage{Ascending: true, AfterID: all[3].ID})
	if len(asc) != 3 || asc[0].ID != all[2].ID {
		t.Fatalf("ascending after the first: %d events", len(asc))
	}
	// Filters.
	for name, c := range map[string]struct {
		p    store.AuditPage
		want int
	}{
		"action":          {store.AuditPage{Action: "login"}, 1},
		"actor":           {store.AuditPage{Actor: "user:1"}, 2},
		"agent":           {store.AuditPage{Agent: unknownUUID}, 2},
		"since":           {store.AuditPage{Since: all[1].At}, 2},
		"until":           {store.AuditPage{Until: all[3].At}, 0},
		"since and until": {store.AuditPage{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour)}, 4},
	} {
		got, _, err := st.AuditTrail.ListAudit(ctx, c.p)
		if err != nil || len(got) != c.want {
			t.Errorf("ListAudit by %s: %d events, %v; want %d", name, len(got), err, c.want)
		}
	}
}

// testCredentials: what the broker reads: LookupCredential, LookupAppCredential, LookupCredentials,
// ActiveCredentials, TouchKeys.
func testCredentials(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	a, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "gw"})
	wantErr(t, "CreateAgent", err, nil)
	ak, akey, apw, err := st.Keys.CreateAppKey(ctx, store.NewAppKeyParams{Name: "svc", Topics: []store.AppTopic{{Access: "read", Pattern: "agents/+/x"}}}, audit("app_key_create"))
	wantErr(t, "CreateAppKey", err, nil)
	dev, app := secret.DigestOf(a.APIKey.Reveal()), secret.DigestOf(akey.Reveal())

	c, err := st.Credentials.LookupCredential(ctx, dev)
	wantErr(t, "LookupCredential", err, nil)
	if c.Digest != dev || c.KeyID != a.KeyID || c.AgentUUID != a.AgentUUID || c.AgentStatus != store.StatusActive || c.KeyRevoked || c.App ||
		c.PasswordHash != passhash.SHA256Hex(a.MQTTPassword.Reveal()) {
		t.Fatalf("LookupCredential = %+v", c)
	}
	c, err = st.Credentials.LookupAppCredential(ctx, app)
	wantErr(t, "LookupAppCredential", err, nil)
	if !c.App || c.AgentUUID != ak.ID || c.PasswordHash != passhash.SHA256Hex(apw.Reveal()) || len(c.Rules) != 1 || c.Rules[0] != (credential.Rule{Access: "read", Pattern: "agents/+/x"}) {
		t.Fatalf("LookupAppCredential = %+v", c)
	}
	// Each lookup reads its own table only.
	_, err = st.Credentials.LookupCredential(ctx, app)
	wantErr(t, "LookupCredential of an application key", err, store.ErrNotFound)
	_, err = st.Credentials.LookupAppCredential(ctx, dev)
	wantErr(t, "LookupAppCredential of a device key", err, store.ErrNotFound)

	unknown := secret.DigestOf("unknown")
	m, err := st.Credentials.LookupCredentials(ctx, []secret.Digest{dev, app, unknown})
	wantErr(t, "LookupCredentials", err, nil)
	if len(m) != 2 || m[dev].KeyID != a.KeyID || !m[app].App {
		t.Fatalf("LookupCredentials: %d credentials", len(m))
	}

	active := func() map[secret.Digest]bool {
		seen := map[secret.Digest]bool{}
		wantErr(t, "ActiveCredentials", st.Credentials.ActiveCredentials(ctx, func(c credential.Credential) { seen[c.Digest] = true }), nil)
		return seen
	}
	if s := active(); len(s) != 2 || !s[dev] || !s[app] {
		t.Fatalf("ActiveCredentials: %d", len(s))
	}
	if _, err := st.Keys.RevokeAppKey(ctx, ak.ID, audit("app_key_revoke")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "SetAgentStatus", st.Agents.SetAgentStatus(ctx, a.AgentUUID, store.StatusDisabled), nil)
	if s := active(); len(s) != 0 {
		t.Fatalf("ActiveCredentials after a revoke and a disable: %d", len(s))
	}
	if c, _ := st.Credentials.LookupCredential(ctx, dev); c.AgentStatus != store.StatusDisabled {
		t.Fatalf("a disabled agent's credential says %q", c.AgentStatus)
	}

	wantErr(t, "TouchKeys", st.Credentials.TouchKeys(ctx, []secret.Digest{dev, app, unknown}), nil)
	if d.count("api_keys", "id = $1 AND last_used_at IS NOT NULL", a.KeyID) != 1 || d.count("app_keys", "id = $1 AND last_used_at IS NOT NULL", ak.ID) != 1 {
		t.Fatal("TouchKeys did not record both uses")
	}
}

// testDenials: DenySubject (record and renew), Denials, PruneDenials.
func testDenials(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	start := time.Now().Add(-time.Second)
	wantErr(t, "DenySubject", st.Credentials.DenySubject(ctx, "oidc:idp", "provider removed"), nil)
	first, err := st.Credentials.Denials(ctx, start)
	wantErr(t, "Denials", err, nil)
	if len(first) != 1 || first[0].Subject != "oidc:idp" {
		t.Fatalf("Denials = %+v", first)
	}
	wantErr(t, "DenySubject again", st.Credentials.DenySubject(ctx, "oidc:idp", "again"), nil)
	again, _ := st.Credentials.Denials(ctx, start)
	if len(again) != 1 || !again[0].DeniedAt.After(first[0].DeniedAt) {
		t.Fatalf("a second denial did not renew the first: %+v", again)
	}
	wantErr(t, "DenySubject without a kind", st.Credentials.DenySubject(ctx, "nokind", ""), store.ErrInvalid)
	if later, _ := st.Credentials.Denials(ctx, time.Now().Add(time.Hour)); len(later) != 0 {
		t.Fatalf("Denials after the last: %d", len(later))
	}
	n, err := st.Credentials.PruneDenials(ctx, time.Now().Add(time.Hour))
	wantErr(t, "PruneDenials", err, nil)
	if n != 1 || d.count("subject_denials", "true") != 0 {
		t.Fatalf("PruneDenials deleted %d", n)
	}
}

// testLoginAttempts: the shared login throttle counter.
func testLoginAttempts(t *testing.T, d *db) {
	ctx, la := d.ctx, d.st.Accounts.LoginAttempts()
	now, window := time.Now().Truncate(time.Second), time.Minute
	for i := 1; i <= 4; i++ {
		n, start, err := la.Add(ctx, "ip:1", now, window, 3)
		wantErr(t, "Add", err, nil)
		if want := min(i, 4); n != want || !start.Equal(now) {
			t.Fatalf("Add #%d = %d from %v, want %d from %v", i, n, start, want, now)
		}
	}
	if n, _, _ := la.Get(ctx, "ip:1", now, window); n != 4 {
		t.Fatalf("Get = %d, want max+1 = 4", n)
	}
	wantErr(t, "Sub", la.Sub(ctx, "ip:1"), nil)
	if n, _, _ := la.Get(ctx, "ip:1", now, window); n != 3 {
		t.Fatalf("Get after Sub = %d, want 3", n)
	}
	// A window that ended starts afresh; Get does not see it.
	later := now.Add(2 * window)
	if n, _, _ := la.Get(ctx, "ip:1", later, window); n != 0 {
		t.Fatalf("Get in a later window = %d", n)
	}
	if n, start, _ := la.Add(ctx, "ip:1", later, window, 3); n != 1 || !start.Equal(later) {
		t.Fatalf("Add in a later window = %d from %v", n, start)
	}
	wantErr(t, "Delete", la.Delete(ctx, "ip:1"), nil)
	if n, _, _ := la.Get(ctx, "ip:1", later, window); n != 0 {
		t.Fatal("Delete kept the count")
	}
	if _, _, err := la.Add(ctx, "ip:2", now, window, 3); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Prune", la.Prune(ctx, now), nil)
	if d.count("login_attempts", "true") != 0 {
		t.Fatal("Prune kept an ended window")
	}
}
