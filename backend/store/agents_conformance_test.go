package store_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// testAgents: CreateAgent, CreateAgentAudited, GetAgent, ListAgents, SetAgentStatus,
// UpdateAgentStatus, SetAgentActive, RotateAgentPassword, DecommissionAgent, CountAgents, EachAgent.
func testAgents(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st

	// CreateAgent: agent, first key and MQTT password in one transaction.
	a, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "gw-1"})
	wantErr(t, "CreateAgent", err, nil)
	if secret.Check(secret.APIKey, a.APIKey.Reveal()) != nil || secret.Check(secret.MQTTPassword, a.MQTTPassword.Reveal()) != nil {
		t.Fatal("CreateAgent returned malformed secrets")
	}
	got, err := st.Agents.GetAgent(ctx, a.AgentUUID)
	wantErr(t, "GetAgent", err, nil)
	if got.UUID != a.AgentUUID || got.Name != "gw-1" || got.Status != store.StatusActive || got.TargetVersion != 1 || got.LastSeenAt != nil {
		t.Fatalf("GetAgent = %+v", got)
	}
	if d.count("api_keys", "id = $1 AND agent_uuid = $2 AND name = 'gw-1'", a.KeyID, a.AgentUUID) != 1 ||
		d.count("mqtt_credentials", "agent_uuid = $1 AND password_hash = $2", a.AgentUUID, passhash.SHA256Hex(a.MQTTPassword.Reveal())) != 1 {
		t.Fatal("CreateAgent did not store the first key and the MQTT password hash")
	}
	// Invalid: the name is 1 to 200 characters; nothing is left behind.
	_, err = st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: ""})
	wantErr(t, "CreateAgent with an empty name", err, store.ErrInvalid)
	if n := d.count("agents", "true"); n != 1 {
		t.Fatalf("%d agents after a refused create, want 1", n)
	}

	// CreateAgentAudited: the event names the agent and its key; a refused create writes no event.
	b, err := st.Agents.CreateAgentAudited(ctx, store.CreateAgentParams{Name: "gw-2", KeyName: "first"}, audit("agent_create"))
	wantErr(t, "CreateAgentAudited", err, nil)
	if d.count("audit_events", "action = 'agent_create' AND target = $1 AND detail->>'keyId' = $2", "agent:"+b.AgentUUID, b.KeyID) != 1 {
		t.Fatal("CreateAgentAudited wrote no matching audit event")
	}
	_, err = st.Agents.CreateAgentAudited(ctx, store.CreateAgentParams{Name: strings.Repeat("n", 201)}, audit("agent_create"))
	wantErr(t, "CreateAgentAudited with a 201-byte name", err, store.ErrInvalid)
	_, err = st.Agents.CreateAgentAudited(ctx, store.CreateAgentParams{Name: "gw-3"}, badAudit("agent_create"))
	wantErr(t, "CreateAgentAudited with an unstorable audit event", err, store.ErrBadCharacter)
	if d.audits("agent_create") != 1 || d.count("agents", "name = 'gw-3'") != 0 {
		t.Fatal("a failed audited create left an agent or an audit event")
	}

	// Not found: unknown and malformed uuids.
	for _, id := range []string{unknownUUID, "not-a-uuid", ""} {
		_, err := st.Agents.GetAgent(ctx, id)
		wantErr(t, "GetAgent("+id+")", err, store.ErrNotFound)
		wantErr(t, "SetAgentStatus("+id+")", st.Agents.SetAgentStatus(ctx, id, store.StatusDisabled), store.ErrNotFound)
		wantErr(t, "UpdateAgentStatus("+id+")", st.Agents.UpdateAgentStatus(ctx, id, store.StatusDisabled, audit("agent_status")), store.ErrNotFound)
		_, err = st.Agents.SetAgentActive(ctx, id, false, audit("agent_active"))
		wantErr(t, "SetAgentActive("+id+")", err, store.ErrNotFound)
		_, err = st.Agents.RotateAgentPassword(ctx, id, audit("agent_rotate"))
		wantErr(t, "RotateAgentPassword("+id+")", err, store.ErrNotFound)
		wantErr(t, "DecommissionAgent("+id+")", st.Agents.DecommissionAgent(ctx, id, audit("agent_decommission")), store.ErrNotFound)
	}

	// Status: SetAgentStatus and UpdateAgentStatus (audited); an unknown status is invalid.
	wantErr(t, "SetAgentStatus", st.Agents.SetAgentStatus(ctx, a.AgentUUID, store.StatusDisabled), nil)
	wantErr(t, "SetAgentStatus bogus", st.Agents.SetAgentStatus(ctx, a.AgentUUID, "bogus"), store.ErrInvalid)
	wantErr(t, "UpdateAgentStatus", st.Agents.UpdateAgentStatus(ctx, a.AgentUUID, store.StatusActive, audit("agent_status")), nil)
	wantErr(t, "UpdateAgentStatus bogus", st.Agents.UpdateAgentStatus(ctx, a.AgentUUID, "bogus", audit("agent_status")), store.ErrInvalid)
	wantErr(t, "UpdateAgentStatus, audit refused", st.Agents.UpdateAgentStatus(ctx, a.AgentUUID, store.StatusDisabled, badAudit("agent_status")), store.ErrBadCharacter)
	if got, _ := st.Agents.GetAgent(ctx, a.AgentUUID); got.Status != store.StatusActive {
		t.Fatalf("status %q after a refused change, want active", got.Status)
	}
	if n := d.count("audit_events", "action = 'agent_status' AND target = $1 AND detail->>'status' = 'active'", "agent:"+a.AgentUUID); n != 1 || d.audits("agent_status") != 1 {
		t.Fatalf("agent_status events: %d matching of %d, want exactly 1", n, d.audits("agent_status"))
	}

	// SetAgentActive: disable and enable, with the previous status in the event.
	off, err := st.Agents.SetAgentActive(ctx, a.AgentUUID, false, audit("agent_active"))
	wantErr(t, "SetAgentActive(false)", err, nil)
	on, err := st.Agents.SetAgentActive(ctx, a.AgentUUID, true, audit("agent_active"))
	wantErr(t, "SetAgentActive(true)", err, nil)
	if off.Status != store.StatusDisabled || on.Status != store.StatusActive ||
		d.count("audit_events", "action = 'agent_active' AND detail->>'was' = 'disabled' AND detail->>'status' = 'active'") != 1 {
		t.Fatalf("SetAgentActive: %q then %q", off.Status, on.Status)
	}

	// RotateAgentPassword: a new hash, audited; a refused audit keeps the old one.
	pw, err := st.Agents.RotateAgentPassword(ctx, a.AgentUUID, audit("agent_rotate"))
	wantErr(t, "RotateAgentPassword", err, nil)
	if pw == a.MQTTPassword || d.count("mqtt_credentials", "agent_uuid = $1 AND password_hash = $2", a.AgentUUID, passhash.SHA256Hex(pw.Reveal())) != 1 {
		t.Fatal("RotateAgentPassword did not store the new password's hash")
	}
	_, err = st.Agents.RotateAgentPassword(ctx, a.AgentUUID, badAudit("agent_rotate"))
	wantErr(t, "RotateAgentPassword, audit refused", err, store.ErrBadCharacter)
	if d.count("mqtt_credentials", "agent_uuid = $1 AND password_hash = $2", a.AgentUUID, passhash.SHA256Hex(pw.Reveal())) != 1 || d.audits("agent_rotate") != 1 {
		t.Fatal("a rotation whose audit failed changed the password or left an event")
	}

	// CountAgents, ListAgents: paging, status filter, search; decommissioned agents hidden by default.
	n, err := st.Agents.CountAgents(ctx)
	wantErr(t, "CountAgents", err, nil)
	if n != 2 {
		t.Fatalf("CountAgents = %d, want 2", n)
	}
	page, more, err := st.Agents.ListAgents(ctx, store.AgentPage{Limit: 1})
	wantErr(t, "ListAgents", err, nil)
	if len(page) != 1 || !more || page[0].UUID != a.AgentUUID {
		t.Fatalf("first page: %d agents, more %v", len(page), more)
	}
	page, more, err = st.Agents.ListAgents(ctx, store.AgentPage{Limit: 1, AfterTime: page[0].CreatedAt, AfterUUID: page[0].UUID})
	wantErr(t, "ListAgents page 2", err, nil)
	if len(page) != 1 || more || page[0].UUID != b.AgentUUID {
		t.Fatalf("second page: %d agents, more %v", len(page), more)
	}
	if page, _, _ := st.Agents.ListAgents(ctx, store.AgentPage{Search: "GW-2"}); len(page) != 1 || page[0].UUID != b.AgentUUID {
		t.Fatalf("search by name found %d agents", len(page))
	}
	if page, _, _ := st.Agents.ListAgents(ctx, store.AgentPage{Search: "%"}); len(page) != 0 {
		t.Fatalf("a LIKE wildcard in a search matched %d agents", len(page))
	}
	_, _, err = st.Agents.ListAgents(ctx, store.AgentPage{AfterTime: time.Now(), AfterUUID: "not-a-uuid"})
	wantErr(t, "ListAgents with a malformed cursor", err, store.ErrInvalid)

	// DecommissionAgent: keys revoked, MQTT credentials gone, audited once; again is a no-op; no new
	// keys, passwords, target states or status changes afterwards.
	wantErr(t, "DecommissionAgent", st.Agents.DecommissionAgent(ctx, b.AgentUUID, audit("agent_decommission")), nil)
	wantErr(t, "DecommissionAgent again", st.Agents.DecommissionAgent(ctx, b.AgentUUID, audit("agent_decommission")), nil)
	if d.audits("agent_decommission") != 1 || d.count("api_keys", "agent_uuid = $1 AND revoked_at IS NULL", b.AgentUUID) != 0 ||
		d.count("mqtt_credentials", "agent_uuid = $1", b.AgentUUID) != 0 {
		t.Fatal("DecommissionAgent left a live key, credentials, or not exactly one event")
	}
	_, err = st.Agents.RotateAgentPassword(ctx, b.AgentUUID, audit("agent_rotate"))
	wantErr(t, "RotateAgentPassword of a decommissioned agent", err, store.ErrDecommissioned)
	_, err = st.Agents.SetAgentActive(ctx, b.AgentUUID, true, audit("agent_active"))
	wantErr(t, "SetAgentActive of a decommissioned agent", err, store.ErrDecommissioned)
	_, err = st.Agents.SetTargetState(ctx, b.AgentUUID, json.RawMessage(`{}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState of a decommissioned agent", err, store.ErrDecommissioned)
	if n, _ := st.Agents.CountAgents(ctx); n != 1 {
		t.Fatalf("CountAgents = %d after a decommission, want 1", n)
	}
	if page, _, _ := st.Agents.ListAgents(ctx, store.AgentPage{}); len(page) != 1 {
		t.Fatalf("ListAgents shows %d agents, want the one not decommissioned", len(page))
	}
	if page, _, _ := st.Agents.ListAgents(ctx, store.AgentPage{IncludeGone: true}); len(page) != 2 {
		t.Fatalf("ListAgents(IncludeGone) shows %d agents, want 2", len(page))
	}
	if page, _, _ := st.Agents.ListAgents(ctx, store.AgentPage{Status: store.StatusDecommissioned}); len(page) != 1 || page[0].UUID != b.AgentUUID {
		t.Fatalf("ListAgents(decommissioned) shows %d agents", len(page))
	}
	// A failed decommission (its audit refused) changes nothing.
	c, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "gw-4"})
	wantErr(t, "CreateAgent", err, nil)
	wantErr(t, "DecommissionAgent, audit refused", st.Agents.DecommissionAgent(ctx, c.AgentUUID, badAudit("agent_decommission")), store.ErrBadCharacter)
	if got, _ := st.Agents.GetAgent(ctx, c.AgentUUID); got.Status != store.StatusActive || d.count("api_keys", "agent_uuid = $1 AND revoked_at IS NULL", c.AgentUUID) != 1 {
		t.Fatal("a decommission whose audit failed changed the agent or its keys")
	}

	// EachAgent streams every agent.
	seen := map[string]bool{}
	wantErr(t, "EachAgent", st.Agents.EachAgent(ctx, func(r store.AgentRow) error { seen[r.UUID] = true; return nil }), nil)
	if len(seen) != 3 || !seen[a.AgentUUID] || !seen[b.AgentUUID] || !seen[c.AgentUUID] {
		t.Fatalf("EachAgent saw %d agents, want 3", len(seen))
	}
}

// testAgentState: SetTargetState (versions, conditional update, malformed documents) and ReportState.
func testAgentState(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	a, err := st.Agents.CreateAgent(ctx, store.CreateAgentParams{Name: "gw"})
	wantErr(t, "CreateAgent", err, nil)

	got, err := st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{"led": "on"}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState", err, nil)
	if got.TargetVersion != 2 || string(got.TargetState) != `{"led": "on"}` {
		t.Fatalf("SetTargetState = version %d, %s", got.TargetVersion, got.TargetState)
	}
	got, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{"led": "off"}`), 2, audit("agent_target"))
	wantErr(t, "SetTargetState if version 2", err, nil)
	if got.TargetVersion != 3 {
		t.Fatalf("version %d, want 3", got.TargetVersion)
	}
	// Conflict: a stale version; invalid: documents PostgreSQL cannot store. None writes an event.
	_, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{}`), 2, audit("agent_target"))
	wantErr(t, "SetTargetState with a stale version", err, store.ErrVersionMismatch)
	_, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{"a": "\ud800"}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState with a lone surrogate", err, store.ErrMalformed)
	_, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{"a": "\u0000"}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState with NUL", err, store.ErrBadCharacter)
	_, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{"a": 1e999999}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState with a huge number", err, store.ErrOutOfRange)
	_, err = st.Agents.SetTargetState(ctx, a.AgentUUID, json.RawMessage(`{}`), 0, badAudit("agent_target"))
	wantErr(t, "SetTargetState, audit refused", err, store.ErrBadCharacter)
	_, err = st.Agents.SetTargetState(ctx, unknownUUID, json.RawMessage(`{}`), 0, audit("agent_target"))
	wantErr(t, "SetTargetState of an unknown agent", err, store.ErrNotFound)
	if got, _ := st.Agents.GetAgent(ctx, a.AgentUUID); got.TargetVersion != 3 || d.audits("agent_target") != 2 {
		t.Fatalf("refused target states changed the agent (version %d) or wrote events (%d, want 2)", got.TargetVersion, d.audits("agent_target"))
	}

	// ReportState.
	at, err := st.Agents.ReportState(ctx, a.AgentUUID, json.RawMessage(`{"led": "off"}`))
	wantErr(t, "ReportState", err, nil)
	if got, _ := st.Agents.GetAgent(ctx, a.AgentUUID); string(got.ReportedState) != `{"led": "off"}` || got.ReportedAt == nil || !got.ReportedAt.Equal(at) {
		t.Fatalf("reported %s at %v", got.ReportedState, got.ReportedAt)
	}
	_, err = st.Agents.ReportState(ctx, a.AgentUUID, json.RawMessage(`{"a": "\u0000"}`))
	wantErr(t, "ReportState with NUL", err, store.ErrBadCharacter)
	for _, id := range []string{unknownUUID, "nope"} {
		_, err = st.Agents.ReportState(ctx, id, json.RawMessage(`{}`))
		wantErr(t, "ReportState("+id+")", err, store.ErrNotFound)
	}
}
