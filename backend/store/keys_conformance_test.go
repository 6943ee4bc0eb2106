package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// testAPIKeys: CreateAPIKey, ListAPIKeys, RevokeAPIKey, TouchAPIKey.
func testAPIKeys(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	a, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "gw"})
	wantErr(t, "CreateAgent", err, nil)

	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	k, key, err := st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: a.AgentUUID, Name: "second", Expires: exp}, audit("key_create"))
	wantErr(t, "CreateAPIKey", err, nil)
	if secret.Check(secret.APIKey, key.Reveal()) != nil || k.AgentUUID != a.AgentUUID || k.Name != "second" || k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) ||
		len(k.Rights) != 2 || k.Prefix != secret.DisplayPrefix(secret.APIKey, key.Reveal()) {
		t.Fatalf("CreateAPIKey = %+v", k)
	}
	d1 := secret.DigestOf(key.Reveal())
	if d.count("api_keys", "id = $1 AND digest = $2", k.ID, d1[:]) != 1 ||
		d.count("audit_events", "action = 'key_create' AND target = $1 AND detail->>'agentUuid' = $2", "api-key:"+k.ID, a.AgentUUID) != 1 {
		t.Fatal("CreateAPIKey stored no digest or no audit event")
	}
	only, _, err := st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: a.AgentUUID, Name: "mqtt only", Rights: []string{store.RightMQTT}}, audit("key_create"))
	wantErr(t, "CreateAPIKey with rights", err, nil)
	if len(only.Rights) != 1 || only.Rights[0] != store.RightMQTT {
		t.Fatalf("rights %v", only.Rights)
	}

	// Refusals write no key and no event.
	_, _, err = st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: unknownUUID, Name: "x"}, audit("key_create"))
	wantErr(t, "CreateAPIKey for an unknown agent", err, store.ErrNotFound)
	_, _, err = st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: "nope", Name: "x"}, audit("key_create"))
	wantErr(t, "CreateAPIKey for a malformed agent id", err, store.ErrNotFound)
	_, _, err = st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: a.AgentUUID, Name: ""}, audit("key_create"))
	wantErr(t, "CreateAPIKey with an empty name", err, store.ErrInvalid)
	_, _, err = st.Keys.CreateAPIKey(ctx, store.NewKeyParams{AgentUUID: a.AgentUUID, Name: "x"}, badAudit("key_create"))
	wantErr(t, "CreateAPIKey, audit refused", err, store.ErrBadCharacter)
	if n := d.count("api_keys", "agent_uuid = $1", a.AgentUUID); n != 3 || d.audits("key_create") != 2 {
		t.Fatalf("%d keys and %d events after refusals, want 3 and 2", n, d.audits("key_create"))
	}

	// ListAPIKeys: newest first, per agent or all, paged.
	page, more, err := st.Keys.ListAPIKeys(ctx, a.AgentUUID, store.Page{Limit: 2})
	wantErr(t, "ListAPIKeys", err, nil)
	if len(page) != 2 || !more || page[0].ID != only.ID || page[1].ID != k.ID {
		t.Fatalf("first page: %d keys, more %v", len(page), more)
	}
	rest, more, err := st.Keys.ListAPIKeys(ctx, "", store.Page{Limit: 2, AfterTime: page[1].CreatedAt, AfterID: page[1].ID})
	wantErr(t, "ListAPIKeys page 2", err, nil)
	if len(rest) != 1 || more || rest[0].ID != a.KeyID {
		t.Fatalf("second page: %d keys, more %v", len(rest), more)
	}
	if none, _, err := st.Keys.ListAPIKeys(ctx, unknownUUID, store.Page{}); err != nil || len(none) != 0 {
		t.Fatalf("keys of an unknown agent: %d, %v", len(none), err)
	}
	_, _, err = st.Keys.ListAPIKeys(ctx, "", store.Page{AfterTime: time.Now(), AfterID: "nope"})
	wantErr(t, "ListAPIKeys with a malformed cursor", err, store.ErrInvalid)

	// RevokeAPIKey: once, then again without moving the time; refused audits revoke nothing.
	_, err = st.Keys.RevokeAPIKey(ctx, k.ID, badAudit("key_revoke"))
	wantErr(t, "RevokeAPIKey, audit refused", err, store.ErrBadCharacter)
	if d.count("api_keys", "id = $1 AND revoked_at IS NULL", k.ID) != 1 {
		t.Fatal("a revoke whose audit failed revoked the key")
	}
	r1, err := st.Keys.RevokeAPIKey(ctx, k.ID, audit("key_revoke"))
	wantErr(t, "RevokeAPIKey", err, nil)
	r2, err := st.Keys.RevokeAPIKey(ctx, k.ID, audit("key_revoke"))
	wantErr(t, "RevokeAPIKey again", err, nil)
	if r1.RevokedAt == nil || r2.RevokedAt == nil || !r1.RevokedAt.Equal(*r2.RevokedAt) {
		t.Fatalf("revoked at %v then %v", r1.RevokedAt, r2.RevokedAt)
	}
	for _, id := range []string{unknownUUID, "nope"} {
		_, err := st.Keys.RevokeAPIKey(ctx, id, audit("key_revoke"))
		wantErr(t, "RevokeAPIKey("+id+")", err, store.ErrNotFound)
	}

	// TouchAPIKey: records the use (the agent's last seen time); an unknown key is a no-op.
	wantErr(t, "TouchAPIKey", st.Keys.TouchAPIKey(ctx, only.ID), nil)
	wantErr(t, "TouchAPIKey unknown", st.Keys.TouchAPIKey(ctx, unknownUUID), nil)
	if got, _ := st.Agents.GetAgent(ctx, a.AgentUUID); got.LastSeenAt == nil {
		t.Fatal("TouchAPIKey did not record the use")
	}
}

// testAppKeys: CreateAppKey, ListAppKeys, RevokeAppKey, AppKeyByDigest, TouchAppKey.
func testAppKeys(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	topics := []store.AppTopic{{Access: "read", Pattern: "agents/+/telemetry"}}
	k, key, pw, err := st.Keys.CreateAppKey(ctx, store.NewAppKeyParams{Name: "svc", Rights: []string{store.RightAgentsRead}, Topics: topics}, audit("app_key_create"))
	wantErr(t, "CreateAppKey", err, nil)
	if secret.Check(secret.AppKey, key.Reveal()) != nil || secret.Check(secret.MQTTPassword, pw.Reveal()) != nil ||
		k.Name != "svc" || len(k.Rights) != 1 || len(k.Topics) != 1 || k.Topics[0] != topics[0] || k.CreatedBy != nil {
		t.Fatalf("CreateAppKey = %+v", k)
	}
	if d.count("audit_events", "action = 'app_key_create' AND target = $1 AND detail->'topics'->0->>'pattern' = 'agents/+/telemetry'", "app-key:"+k.ID) != 1 {
		t.Fatal("CreateAppKey wrote no matching audit event")
	}
	bare, _, _, err := st.Keys.CreateAppKey(ctx, store.NewAppKeyParams{Name: "bare"}, audit("app_key_create"))
	wantErr(t, "CreateAppKey without rights or topics", err, nil)
	if bare.Rights == nil || bare.Topics == nil || len(bare.Rights)+len(bare.Topics) != 0 {
		t.Fatalf("bare key: rights %v topics %v, want empty (not nil)", bare.Rights, bare.Topics)
	}

	// The database checks again what the caller should have: rights, the topic count, the expiry.
	many := make([]store.AppTopic, 101)
	for i := range many {
		many[i] = topics[0]
	}
	for name, p := range map[string]store.NewAppKeyParams{
		"an unknown right":    {Name: "x", Rights: []string{"root"}},
		"101 topics":          {Name: "x", Topics: many},
		"an expiry passed":    {Name: "x", Expires: time.Now().Add(-time.Hour)},
		"an empty name":       {Name: ""},
		"an unknown creator":  {Name: "x", CreatedBy: unknownUUID},
		"a malformed creator": {Name: "x", CreatedBy: "nope"},
	} {
		_, _, _, err := st.Keys.CreateAppKey(ctx, p, audit("app_key_create"))
		if name == "a malformed creator" {
			// A malformed creator id names nobody: CreateAppKey answers not found.
			wantErr(t, "CreateAppKey with "+name, err, store.ErrNotFound)
			continue
		}
		wantErr(t, "CreateAppKey with "+name, err, store.ErrInvalid)
	}
	_, _, _, err = st.Keys.CreateAppKey(ctx, store.NewAppKeyParams{Name: "x"}, badAudit("app_key_create"))
	wantErr(t, "CreateAppKey, audit refused", err, store.ErrBadCharacter)
	if d.count("app_keys", "true") != 2 || d.audits("app_key_create") != 2 {
		t.Fatal("refused application keys left rows or events")
	}

	// AppKeyByDigest: found by the key's digest only.
	got, err := st.Keys.AppKeyByDigest(ctx, secret.DigestOf(key.Reveal()))
	wantErr(t, "AppKeyByDigest", err, nil)
	if got.ID != k.ID {
		t.Fatalf("AppKeyByDigest = %s, want %s", got.ID, k.ID)
	}
	_, err = st.Keys.AppKeyByDigest(ctx, secret.DigestOf(pw.Reveal()))
	wantErr(t, "AppKeyByDigest of the password", err, store.ErrNotFound)

	// ListAppKeys: oldest first, paged.
	page, more, err := st.Keys.ListAppKeys(ctx, store.AppKeyPage{Limit: 1})
	wantErr(t, "ListAppKeys", err, nil)
	if len(page) != 1 || !more || page[0].ID != k.ID {
		t.Fatalf("first page: %d keys, more %v", len(page), more)
	}
	page, more, err = st.Keys.ListAppKeys(ctx, store.AppKeyPage{Limit: 1, AfterTime: page[0].CreatedAt, AfterID: page[0].ID})
	wantErr(t, "ListAppKeys page 2", err, nil)
	if len(page) != 1 || more || page[0].ID != bare.ID {
		t.Fatalf("second page: %d keys, more %v", len(page), more)
	}

	// RevokeAppKey: audited, idempotent, not found; a refused audit revokes nothing.
	_, err = st.Keys.RevokeAppKey(ctx, k.ID, badAudit("app_key_revoke"))
	wantErr(t, "RevokeAppKey, audit refused", err, store.ErrBadCharacter)
	if got, _ := st.Keys.AppKeyByDigest(ctx, secret.DigestOf(key.Reveal())); got.RevokedAt != nil {
		t.Fatal("a revoke whose audit failed revoked the key")
	}
	r1, err := st.Keys.RevokeAppKey(ctx, k.ID, audit("app_key_revoke"))
	wantErr(t, "RevokeAppKey", err, nil)
	r2, err := st.Keys.RevokeAppKey(ctx, k.ID, audit("app_key_revoke"))
	wantErr(t, "RevokeAppKey again", err, nil)
	if r1.RevokedAt == nil || r2.RevokedAt == nil || !r1.RevokedAt.Equal(*r2.RevokedAt) ||
		d.count("audit_events", "action = 'app_key_revoke' AND target = $1", "app-key:"+k.ID) != 2 {
		t.Fatalf("revoked at %v then %v", r1.RevokedAt, r2.RevokedAt)
	}
	for _, id := range []string{unknownUUID, "nope"} {
		_, err := st.Keys.RevokeAppKey(ctx, id, audit("app_key_revoke"))
		wantErr(t, "RevokeAppKey("+id+")", err, store.ErrNotFound)
	}

	// TouchAppKey.
	wantErr(t, "TouchAppKey", st.Keys.TouchAppKey(ctx, bare.ID), nil)
	if d.count("app_keys", "id = $1 AND last_used_at IS NOT NULL", bare.ID) != 1 {
		t.Fatal("TouchAppKey did not record the use")
	}
}

// testPublishableKeys: CreatePublishableKey, ListPublishableKeys, RevokePublishableKey (with its
// denial), PublishableKeyByDigest, OriginListed, TouchPublishableKey.
func testPublishableKeys(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	p := store.NewPublishableKeyParams{Name: "web", Origins: []string{"https://app.example.com"},
		Topics: []store.AppTopic{{Access: "read", Pattern: "users/#"}}, Providers: []string{"idp"}}
	k, key, err := st.Keys.CreatePublishableKey(ctx, p, audit("publishable_key_create"))
	wantErr(t, "CreatePublishableKey", err, nil)
	if secret.Check(secret.PublishableKey, key.Reveal()) != nil || k.Name != "web" || len(k.Origins) != 1 || len(k.Topics) != 1 || len(k.Providers) != 1 ||
		!k.Active(time.Now()) {
		t.Fatalf("CreatePublishableKey = %+v", k)
	}
	if d.count("audit_events", "action = 'publishable_key_create' AND target = $1", "pk:"+k.ID) != 1 {
		t.Fatal("CreatePublishableKey wrote no audit event")
	}
	noOrigin, noTopic := p, p
	noOrigin.Origins, noTopic.Topics = nil, []store.AppTopic{}
	for name, bad := range map[string]store.NewPublishableKeyParams{"no origin": noOrigin, "no topic": noTopic} {
		_, _, err := st.Keys.CreatePublishableKey(ctx, bad, audit("publishable_key_create"))
		wantErr(t, "CreatePublishableKey with "+name, err, store.ErrInvalid)
	}
	_, _, err = st.Keys.CreatePublishableKey(ctx, p, badAudit("publishable_key_create"))
	wantErr(t, "CreatePublishableKey, audit refused", err, store.ErrBadCharacter)
	if d.count("publishable_keys", "true") != 1 || d.audits("publishable_key_create") != 1 {
		t.Fatal("refused publishable keys left rows or events")
	}

	got, err := st.Keys.PublishableKeyByDigest(ctx, secret.DigestOf(key.Reveal()))
	wantErr(t, "PublishableKeyByDigest", err, nil)
	if got.ID != k.ID {
		t.Fatal("PublishableKeyByDigest found another key")
	}
	_, err = st.Keys.PublishableKeyByDigest(ctx, secret.Digest{})
	wantErr(t, "PublishableKeyByDigest unknown", err, store.ErrNotFound)
	if ok, err := st.Keys.OriginListed(ctx, "https://app.example.com"); err != nil || !ok {
		t.Fatalf("OriginListed(listed) = %v, %v", ok, err)
	}
	if ok, err := st.Keys.OriginListed(ctx, "https://other.example.com"); err != nil || ok {
		t.Fatalf("OriginListed(other) = %v, %v", ok, err)
	}
	if page, more, err := st.Keys.ListPublishableKeys(ctx, store.AppKeyPage{}); err != nil || more || len(page) != 1 || page[0].ID != k.ID {
		t.Fatalf("ListPublishableKeys: %d keys, more %v, %v", len(page), more, err)
	}
	wantErr(t, "TouchPublishableKey", st.Keys.TouchPublishableKey(ctx, k.ID), nil)
	if d.count("publishable_keys", "id = $1 AND last_used_at IS NOT NULL", k.ID) != 1 {
		t.Fatal("TouchPublishableKey did not record the use")
	}

	// RevokePublishableKey denies "pk:<id>" in the same transaction; a refused audit does neither.
	_, err = st.Keys.RevokePublishableKey(ctx, k.ID, badAudit("publishable_key_revoke"))
	wantErr(t, "RevokePublishableKey, audit refused", err, store.ErrBadCharacter)
	if d.count("subject_denials", "subject = $1", "pk:"+k.ID) != 0 || d.count("publishable_keys", "revoked_at IS NOT NULL") != 0 {
		t.Fatal("a revoke whose audit failed revoked the key or denied its subject")
	}
	r, err := st.Keys.RevokePublishableKey(ctx, k.ID, audit("publishable_key_revoke"))
	wantErr(t, "RevokePublishableKey", err, nil)
	if r.RevokedAt == nil || r.Active(time.Now()) || d.count("subject_denials", "subject = $1", "pk:"+k.ID) != 1 {
		t.Fatal("RevokePublishableKey did not revoke the key and deny its subject")
	}
	if ok, _ := st.Keys.OriginListed(ctx, "https://app.example.com"); ok {
		t.Fatal("a revoked key's origin is still listed")
	}
	for _, id := range []string{unknownUUID, "nope"} {
		_, err := st.Keys.RevokePublishableKey(ctx, id, audit("publishable_key_revoke"))
		wantErr(t, "RevokePublishableKey("+id+")", err, store.ErrNotFound)
	}
}

// testProvisioningKeys: CreateProvisioningKey, ListProvisioningKeys, DeleteProvisioningKey,
// RedeemProvisioningKey (one redemption per key, expiry, the device limit, all or nothing).
func testProvisioningKeys(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	pk, key, err := st.Keys.CreateProvisioningKey(ctx, "batch-1", time.Now().Add(time.Hour), "", audit("provisioning_key_create"))
	wantErr(t, "CreateProvisioningKey", err, nil)
	if secret.Check(secret.ProvisioningKey, key.Reveal()) != nil || pk.Name != "batch-1" || pk.CreatedBy != "" ||
		d.count("audit_events", "action = 'provisioning_key_create' AND target = $1", "provisioning-key:"+pk.ID) != 1 {
		t.Fatalf("CreateProvisioningKey = %+v", pk)
	}
	_, _, err = st.Keys.CreateProvisioningKey(ctx, strings.Repeat("n", 201), time.Now().Add(time.Hour), "", audit("provisioning_key_create"))
	wantErr(t, "CreateProvisioningKey with a long name", err, store.ErrInvalid)
	_, _, err = st.Keys.CreateProvisioningKey(ctx, "x", time.Now().Add(time.Hour), unknownUUID, audit("provisioning_key_create"))
	wantErr(t, "CreateProvisioningKey by an unknown user", err, store.ErrInvalid)
	_, _, err = st.Keys.CreateProvisioningKey(ctx, "x", time.Now().Add(time.Hour), "", badAudit("provisioning_key_create"))
	wantErr(t, "CreateProvisioningKey, audit refused", err, store.ErrBadCharacter)
	if d.count("provisioning_keys", "true") != 1 || d.audits("provisioning_key_create") != 1 {
		t.Fatal("refused provisioning keys left rows or events")
	}
	expired, expiredKey, err := st.Keys.CreateProvisioningKey(ctx, "old", time.Now().Add(-time.Minute), "", audit("provisioning_key_create"))
	wantErr(t, "CreateProvisioningKey expired", err, nil)

	// List: newest first, expired ones included.
	page, more, err := st.Keys.ListProvisioningKeys(ctx, store.Page{Limit: 1})
	wantErr(t, "ListProvisioningKeys", err, nil)
	if len(page) != 1 || !more || page[0].ID != expired.ID {
		t.Fatalf("first page: %d keys, more %v", len(page), more)
	}
	page, more, err = st.Keys.ListProvisioningKeys(ctx, store.Page{Limit: 1, AfterTime: page[0].CreatedAt, AfterID: page[0].ID})
	wantErr(t, "ListProvisioningKeys page 2", err, nil)
	if len(page) != 1 || more || page[0].ID != pk.ID {
		t.Fatalf("second page: %d keys, more %v", len(page), more)
	}

	redeem := func(k secret.Secret, name string, limit int, a store.AuditEvent) (store.Redeemed, error) {
		return st.Agents.RedeemProvisioningKey(ctx, store.Redemption{Digest: secret.DigestOf(k.Reveal()), Agent: store.CreateAgentParams{Name: name},
			MaxDevices: limit, Limited: limit > 0, Audit: a})
	}
	// All or nothing: a redemption that fails (its agent refused, its audit refused, the device limit)
	// leaves the key usable, no agent and no event.
	_, err = redeem(key, "", 0, audit("agent_register"))
	wantErr(t, "RedeemProvisioningKey with an invalid agent", err, store.ErrInvalid)
	_, err = redeem(key, "gw", 0, badAudit("agent_register"))
	wantErr(t, "RedeemProvisioningKey, audit refused", err, store.ErrBadCharacter)
	if _, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "existing"}); err != nil {
		t.Fatal(err)
	}
	_, err = redeem(key, "gw", 1, audit("agent_register"))
	wantErr(t, "RedeemProvisioningKey over the device limit", err, store.ErrDeviceLimit)
	if d.count("provisioning_keys", "id = $1", pk.ID) != 1 || d.count("agents", "true") != 1 || d.audits("agent_register") != 0 {
		t.Fatal("a failed redemption consumed the key, made an agent or wrote an event")
	}
	r, err := redeem(key, "gw", 2, audit("agent_register"))
	wantErr(t, "RedeemProvisioningKey", err, nil)
	if r.ProvisioningKeyID != pk.ID || d.count("provisioning_keys", "id = $1", pk.ID) != 0 ||
		d.count("audit_events", "action = 'agent_register' AND target = $1 AND detail->>'provisioningKeyId' = $2", "agent:"+r.AgentUUID, pk.ID) != 1 {
		t.Fatalf("RedeemProvisioningKey = %+v", r)
	}
	if got, err := st.Agents.GetAgent(ctx, r.AgentUUID); err != nil || got.Name != "gw" {
		t.Fatalf("the redeemed agent: %+v, %v", got, err)
	}
	// Not found: redeemed already, expired, never issued.
	for name, k := range map[string]secret.Secret{"redeemed": key, "expired": expiredKey, "unknown": "iotpv_unknown"} {
		_, err := redeem(k, "again", 0, audit("agent_register"))
		wantErr(t, "RedeemProvisioningKey "+name, err, store.ErrNotFound)
	}

	// Delete: audited; unknown and malformed ids are not found; a refused audit deletes nothing.
	wantErr(t, "DeleteProvisioningKey, audit refused", st.Keys.DeleteProvisioningKey(ctx, expired.ID, badAudit("provisioning_key_delete")), store.ErrBadCharacter)
	if d.count("provisioning_keys", "id = $1", expired.ID) != 1 {
		t.Fatal("a delete whose audit failed deleted the key")
	}
	wantErr(t, "DeleteProvisioningKey", st.Keys.DeleteProvisioningKey(ctx, expired.ID, audit("provisioning_key_delete")), nil)
	for _, id := range []string{expired.ID, unknownUUID, "nope"} {
		wantErr(t, "DeleteProvisioningKey("+id+")", st.Keys.DeleteProvisioningKey(ctx, id, audit("provisioning_key_delete")), store.ErrNotFound)
	}
	if d.audits("provisioning_key_delete") != 1 {
		t.Fatalf("%d delete events, want 1", d.audits("provisioning_key_delete"))
	}
}
