package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// testLegacy: ImportLegacy (created, unchanged, updated, retired; all or nothing), LegacyDigests,
// RecordFastHashes, MoveLegacyToKeys.
func testLegacy(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	h1, h2 := passhash.SHA256Hex("pw-1"), passhash.SHA256Hex("pw-2")
	accounts := []store.LegacyAccount{
		{Username: "dev-1", PasswordHash: h1, ClientID: "dev-1", Rules: []store.LegacyRule{{Access: "readwrite", Pattern: "devices/dev-1/#"}}, Line: 1},
		{Username: "dev-2", PasswordHash: h1, Line: 2},
	}
	res, err := st.Credentials.ImportLegacy(ctx, accounts, audit("legacy_import"))
	wantErr(t, "ImportLegacy", err, nil)
	if res.Counts[store.ImportCreated] != 2 || len(res.Agents) != 2 || d.audits("agent_import") != 2 ||
		d.count("audit_events", "action = 'legacy_import' AND (detail->>'created')::int = 2") != 1 {
		t.Fatalf("ImportLegacy = %+v", res.Counts)
	}
	dev1 := res.Agents[0].AgentUUID
	if d.count("acl_rules", "agent_uuid = $1 AND pattern = 'devices/dev-1/#'", dev1) != 1 ||
		d.count("api_keys", "agent_uuid = $1 AND legacy_username = 'dev-1' AND legacy_client_id = 'dev-1'", dev1) != 1 {
		t.Fatal("ImportLegacy did not store the rules or the legacy username")
	}
	digests, err := st.Credentials.LegacyDigests(ctx)
	wantErr(t, "LegacyDigests", err, nil)
	if _, ok := digests[secret.DigestOf("dev-1")]; !ok || len(digests) != 2 {
		t.Fatalf("LegacyDigests: %d", len(digests))
	}

	// Again: unchanged; with a new hash: updated. A bad account anywhere rolls the whole import back.
	accounts[1].PasswordHash = h2
	res, err = st.Credentials.ImportLegacy(ctx, accounts, audit("legacy_import"))
	wantErr(t, "ImportLegacy again", err, nil)
	if res.Counts[store.ImportUnchanged] != 1 || res.Counts[store.ImportUpdated] != 1 || d.audits("agent_import_update") != 1 {
		t.Fatalf("ImportLegacy again = %+v", res.Counts)
	}
	bad := append(append([]store.LegacyAccount(nil), accounts...), store.LegacyAccount{Username: "dev-3", PasswordHash: h1,
		Rules: []store.LegacyRule{{Access: "root", Pattern: "x"}}, Line: 3})
	bad[0].PasswordHash = h2
	_, err = st.Credentials.ImportLegacy(ctx, bad, audit("legacy_import"))
	wantErr(t, "ImportLegacy with a bad rule", err, store.ErrInvalid)
	if d.count("agents", "true") != 2 || d.count("mqtt_credentials", "agent_uuid = $1 AND password_hash = $2", dev1, h1) != 1 || d.audits("legacy_import") != 2 {
		t.Fatal("a failed import changed something")
	}

	// RecordFastHashes: only while the stored hash is still the old one; nothing to do writes no event.
	n, err := st.Credentials.RecordFastHashes(ctx, []store.FastHash{{Agent: dev1, Old: h1, New: passhash.SHA256Hex("fast")}, {Agent: dev1, Old: "stale", New: "x"}}, audit("fast_hash"))
	wantErr(t, "RecordFastHashes", err, nil)
	if n != 1 || d.audits("fast_hash") != 1 {
		t.Fatalf("RecordFastHashes replaced %d", n)
	}
	n, err = st.Credentials.RecordFastHashes(ctx, []store.FastHash{{Agent: dev1, Old: h1, New: "x"}}, audit("fast_hash"))
	wantErr(t, "RecordFastHashes stale", err, nil)
	if n != 0 || d.audits("fast_hash") != 1 {
		t.Fatalf("a stale fast hash replaced %d or wrote an event", n)
	}

	// MoveLegacyToKeys: a new key, the legacy username retired (and never revived by an import).
	m, err := st.Credentials.MoveLegacyToKeys(ctx, dev1, secret.APIKey, audit("legacy_move"))
	wantErr(t, "MoveLegacyToKeys", err, nil)
	if m.LegacyUsername != "dev-1" || secret.Check(secret.APIKey, m.APIKey.Reveal()) != nil ||
		d.count("api_keys", "agent_uuid = $1 AND legacy_username IS NOT NULL AND revoked_at IS NULL", dev1) != 0 {
		t.Fatalf("MoveLegacyToKeys = %+v", m)
	}
	if c, err := st.Credentials.LookupCredential(ctx, secret.DigestOf(m.APIKey.Reveal())); err != nil || c.AgentUUID != dev1 {
		t.Fatalf("the moved agent's new key: %v", err)
	}
	_, err = st.Credentials.MoveLegacyToKeys(ctx, dev1, secret.APIKey, audit("legacy_move"))
	wantErr(t, "MoveLegacyToKeys again", err, store.ErrNoLegacyUsername)
	_, err = st.Credentials.MoveLegacyToKeys(ctx, unknownUUID, secret.APIKey, audit("legacy_move"))
	wantErr(t, "MoveLegacyToKeys unknown", err, store.ErrNotFound)
	dev2 := res.Agents[1].AgentUUID
	_, err = st.Credentials.MoveLegacyToKeys(ctx, dev2, secret.APIKey, badAudit("legacy_move"))
	wantErr(t, "MoveLegacyToKeys, audit refused", err, store.ErrBadCharacter)
	if d.count("api_keys", "agent_uuid = $1 AND legacy_username IS NOT NULL AND revoked_at IS NULL", dev2) != 1 || d.audits("legacy_move") != 1 {
		t.Fatal("a move whose audit failed retired the legacy username")
	}
	wantErr(t, "DecommissionAgent", st.Agents.DecommissionAgent(ctx, dev2, audit("agent_decommission")), nil)
	_, err = st.Credentials.MoveLegacyToKeys(ctx, dev2, secret.APIKey, audit("legacy_move"))
	wantErr(t, "MoveLegacyToKeys decommissioned", err, store.ErrDecommissioned)
	res, err = st.Credentials.ImportLegacy(ctx, accounts, audit("legacy_import"))
	wantErr(t, "ImportLegacy after retirement", err, nil)
	if res.Counts[store.ImportRetired] != 2 {
		t.Fatalf("ImportLegacy of retired usernames = %+v", res.Counts)
	}
	if digests, _ := st.Credentials.LegacyDigests(ctx); len(digests) != 0 {
		t.Fatalf("LegacyDigests after retirement: %d", len(digests))
	}
}

// testBulk: CreateAgentsBulk in batches, its audit events, the device limit, and emit's errors.
func testBulk(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	_, err := st.Agents.CreateAgentsBulk(ctx, store.BulkAgents{Count: 0, NamePrefix: "f-"}, func([]store.BulkAgent) error { return nil })
	wantErr(t, "CreateAgentsBulk of 0", err, store.ErrInvalid)
	var batches [][]store.BulkAgent
	n, err := st.Agents.CreateAgentsBulk(ctx, store.BulkAgents{Count: 3, NamePrefix: "f-", BatchSize: 2, Audit: audit("agent_create")},
		func(b []store.BulkAgent) error { batches = append(batches, b); return nil })
	wantErr(t, "CreateAgentsBulk", err, nil)
	if n != 3 || len(batches) != 2 || len(batches[0]) != 2 || batches[1][0].Name != "f-3" || d.audits("agent_create") != 3 {
		t.Fatalf("CreateAgentsBulk made %d in %d batches", n, len(batches))
	}
	a := batches[0][0]
	if c, err := st.Credentials.LookupCredential(ctx, secret.DigestOf(a.APIKey.Reveal())); err != nil || c.AgentUUID != a.AgentUUID ||
		c.PasswordHash != passhash.SHA256Hex(a.MQTTPassword.Reveal()) {
		t.Fatalf("a bulk agent's credential: %+v, %v", c, err)
	}
	_, err = st.Agents.CreateAgentsBulk(ctx, store.BulkAgents{Count: 2, NamePrefix: "g-", MaxDevices: 4, Limited: true}, func([]store.BulkAgent) error { return nil })
	wantErr(t, "CreateAgentsBulk over the limit", err, store.ErrDeviceLimit)
	stop := errors.New("printer jammed")
	n, err = st.Agents.CreateAgentsBulk(ctx, store.BulkAgents{Count: 4, NamePrefix: "h-", BatchSize: 1}, func([]store.BulkAgent) error { return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("CreateAgentsBulk with a failing emit: %d, %v", n, err)
	}
	if c, _ := st.Agents.CountAgents(ctx); c != 4 {
		t.Fatalf("%d agents, want 4", c)
	}
}

// testListen: a change is announced to a listener, and Ping answers.
func testListen(t *testing.T, d *db) {
	wantErr(t, "Ping", d.st.Ping(d.ctx), nil)
	a, err := d.st.Agents.CreateAgent(d.ctx, store.CreateAgentParams{Name: "gw"})
	wantErr(t, "CreateAgent", err, nil)
	ctx, cancel := context.WithCancel(d.ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	connected, changed := make(chan bool, 4), make(chan store.Change, 16)
	go func() {
		defer close(done)
		d.st.Listen(ctx, store.ListenHandler{Changed: func(c store.Change) { changed <- c }, Connected: func(re bool) { connected <- re }}, store.ListenOptions{})
	}()
	select {
	case re := <-connected:
		if re {
			t.Fatal("the first LISTEN reported a reconnect")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Listen did not connect within 30 s")
	}
	if _, err := d.st.Keys.RevokeAPIKey(d.ctx, a.KeyID, audit("key_revoke")); err != nil {
		t.Fatal(err)
	}
	want := secret.DigestOf(a.APIKey.Reveal())
	deadline := time.After(30 * time.Second)
	for {
		select {
		case c := <-changed:
			if dg, ok := c.Digest(); c.Table == "api_keys" && ok && dg == want && c.Agent == a.AgentUUID {
				return
			}
		case <-deadline:
			t.Fatal(fmt.Sprintf("no api_keys change for agent %s within 30 s", a.AgentUUID))
		}
	}
}
