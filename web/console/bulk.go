package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/iotauth/iotauth/backend/core/uuid"
)

// bulkMax is how many agents one bulk action may name (more than a page of the list, which is what the
// checkboxes select).
const bulkMax = 100

// bulkAgents: POST /console/agents/bulk with action (disable or revoke-keys) and the selected agents'
// uuids. It first answers a confirmation page naming the count and the agents; confirmed, it makes one
// API request per agent (disable: PATCH /api/v1/agents/{uuid}; revoke-keys: every unrevoked device key
// of the agent, DELETE /api/v1/auth/api-keys/{id}), so every check and audit event is the API's, and
// reports the agents it could not act on.
func (c *agentsScreen) bulkAgents(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	action := r.PostFormValue("action")
	var ids []string
	seen := map[string]bool{}
	for _, id := range r.PostForm["uuid"] {
		id = strings.ToLower(strings.TrimSpace(id))
		if !uuid.Valid(id) {
			return &problem{Status: http.StatusBadRequest, Detail: "a selected agent's id is not a uuid; reload the list and select again"}
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return &problem{Status: http.StatusBadRequest, Detail: "no agent is selected; tick the agents first"}
	}
	if len(ids) > bulkMax {
		return &problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("at most %d agents at once; select fewer", bulkMax)}
	}
	var title, consequence, button, done string
	switch action {
	case "disable":
		if !v.Can["agentStatus"] {
			return refused(v)
		}
		title, button, done = "Disable "+agentsN(len(ids)), "Disable the "+agentsN(len(ids)), "bulk-disabled"
		consequence = "Their sessions are closed on every broker and their MQTT logins and device REST calls are refused until they are enabled again; their keys and passwords are kept."
	case "revoke-keys":
		if !v.Can["keyRevoke"] || !v.Can["keyList"] {
			return refused(v)
		}
		title, button, done = "Revoke the device keys of "+agentsN(len(ids)), "Revoke the keys of the "+agentsN(len(ids)), "bulk-revoked"
		consequence = "Every device API key of these agents is revoked and the sessions that used them are closed; the agents cannot connect until they are given a new key."
	default:
		return &problem{Status: http.StatusBadRequest, Detail: "unknown bulk action; use the list's buttons"}
	}
	back := Prefix + "agents"
	if !c.ui.confirmed(w, r, s, v, confirmation{Title: title, Target: c.agentNames(r, s, ids), TargetID: agentsN(len(ids)),
		Consequence: consequence, Button: button, Fields: map[string]string{"action": action},
		Lists: map[string][]string{"uuid": ids}, Back: back}) {
		return nil
	}
	var failed []string
	for _, id := range ids {
		var err error
		if action == "disable" {
			err = c.api.do(r, s, http.MethodPatch, "/api/v1/agents/"+url.PathEscape(id), map[string]string{"status": "disabled"})
		} else {
			err = c.revokeAgentKeys(r, s, id)
		}
		if err != nil {
			if errors.Is(err, errSignedOut) {
				return err
			}
			failed = append(failed, id+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		return &problem{Status: http.StatusConflict, Detail: fmt.Sprintf("%d of %d agents were not changed (%s); the others were", len(failed), len(ids), strings.Join(failed, "; "))}
	}
	return c.ui.redirect(w, r, s, back, done)
}

// revokeAgentKeys revokes every unrevoked device key of an agent.
func (c *agentsScreen) revokeAgentKeys(r *http.Request, s *session, id string) error {
	args := map[string]string{"agentUuid": id, "limit": "500"}
	for {
		var keys struct {
			Items      []deviceKey `json:"items"`
			NextCursor string      `json:"nextCursor"`
		}
		if err := c.api.get(r, s, apiPath("/api/v1/auth/api-keys", args), &keys); err != nil {
			return err
		}
		for _, k := range keys.Items {
			if k.RevokedAt != nil {
				continue
			}
			if err := c.api.do(r, s, http.MethodDelete, "/api/v1/auth/api-keys/"+url.PathEscape(k.ID), nil); err != nil {
				return err
			}
		}
		if keys.NextCursor == "" {
			return nil
		}
		args["cursor"] = keys.NextCursor
	}
}

// agentNames names the agents of a bulk action for its confirmation page: the first ten by name, then
// how many more.
func (c *agentsScreen) agentNames(r *http.Request, s *session, ids []string) string {
	var names []string
	for i, id := range ids {
		if i == 10 {
			names = append(names, fmt.Sprintf("and %d more", len(ids)-10))
			break
		}
		names = append(names, orID(c.names.agentName(r, s, id)))
	}
	return agentsN(len(ids)) + ": " + strings.Join(names, ", ")
}

// agentsN is "1 agent" or "n agents".
func agentsN(n int) string {
	if n == 1 {
		return "1 agent"
	}
	return fmt.Sprintf("%d agents", n)
}
