package api

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/store"
)

type apiKeyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	AgentUUID  string     `json:"agentUuid"`
	Prefix     string     `json:"prefix"`
	Rights     []string   `json:"rights"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	CreatedAt  time.Time  `json:"createdAt"`
}

func apiKeyView(k store.APIKey) apiKeyJSON {
	return apiKeyJSON{ID: k.ID, Name: k.Name, AgentUUID: k.AgentUUID, Prefix: k.Prefix, Rights: k.Rights,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

type createKeyRequest struct {
	Name      string     `json:"name"`
	AgentUUID string     `json:"agentUuid"`
	ExpiresAt *time.Time `json:"expiresAt"`
	Rights    []string   `json:"rights"`
}

type createdKeyJSON struct {
	apiKeyJSON
	APIKey string `json:"apiKey"`
}

// createAPIKey: POST /api/v1/auth/api-keys (admin). The key is in this answer only.
func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var req createKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if n := len([]rune(req.Name)); n < 1 || n > 200 {
		return invalidField("name", "name is required (1 to 200 characters)")
	}
	if !uuid.Valid(req.AgentUUID) {
		return invalidField("agentUuid", "agentUuid must be an agent's uuid")
	}
	p := store.NewKeyParams{AgentUUID: req.AgentUUID, Name: req.Name, Kind: s.cfg.KeyKind}
	if req.ExpiresAt != nil {
		if !req.ExpiresAt.After(s.now()) {
			return invalidField("expiresAt", "expiresAt must be in the future")
		}
		p.Expires = *req.ExpiresAt
	}
	if req.Rights != nil {
		if len(req.Rights) == 0 {
			return invalidField("rights", "rights must name at least one of mqtt, device_state")
		}
		for i, right := range req.Rights {
			if right != store.RightMQTT && right != store.RightDeviceState || slices.Contains(req.Rights[:i], right) {
				return invalidField("rights", "rights may hold mqtt and device_state, each once")
			}
		}
		p.Rights = req.Rights
	}
	k, key, err := s.st.CreateAPIKey(r.Context(), p, auditOf(r, "api_key_create", map[string]any{"name": req.Name}))
	switch {
	case errors.Is(err, store.ErrNotFound):
		p := problem(http.StatusNotFound, CodeNotFound, "no agent with this uuid")
		p.Field = "agentUuid"
		return p
	case errors.Is(err, store.ErrDecommissioned):
		return problem(http.StatusConflict, CodeAgentDecommissioned, "the agent is decommissioned and takes no new keys")
	case err != nil:
		return err
	}
	w.Header().Set("Location", "/api/v1/auth/api-keys/"+k.ID)
	writeJSON(w, http.StatusCreated, createdKeyJSON{apiKeyJSON: apiKeyView(k), APIKey: key.Reveal()})
	return nil
}

// listAPIKeys: GET /api/v1/auth/api-keys[?agentUuid=&limit=&cursor=] (admin). Never secrets: display
// prefixes only. Newest first, keyset pagination.
func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	agent := q.Get("agentUuid")
	if agent != "" && !uuid.Valid(agent) {
		return invalidField("agentUuid", "agentUuid must be a uuid")
	}
	p, err := keysetPage(q)
	if err != nil {
		return err
	}
	ks, more, err := s.st.ListAPIKeys(r.Context(), agent, p)
	if err != nil {
		return err
	}
	items := make([]apiKeyJSON, 0, len(ks))
	for _, k := range ks {
		items = append(items, apiKeyView(k))
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(k apiKeyJSON) string { return FormatCursor(k.CreatedAt, k.ID) }))
	return nil
}

// revokeAPIKey: DELETE /api/v1/auth/api-keys/{id} (admin). The database trigger tells every broker,
// which closes the agent's sessions that used the key within a second.
func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.st.RevokeAPIKey(r.Context(), r.PathValue("id"), auditOf(r, "api_key_revoke", nil)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
