package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

type createProvKeyRequest struct {
	Name      string `json:"name"`
	ExpiresIn *int64 `json:"expiresIn"` // seconds
}

type provKeyJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"`
	ExpiresAt time.Time `json:"expiresAt"`
	Expired   bool      `json:"expired"`
	CreatedBy string    `json:"createdBy,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

type createdProvKeyJSON struct {
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// createProvisioningKey: POST /api/v1/provision/keys (admin, operator). The body may be omitted.
func (s *Server) createProvisioningKey(w http.ResponseWriter, r *http.Request) error {
	var req createProvKeyRequest
	if err := decodeOptionalJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if len([]rune(req.Name)) > 200 {
		return invalidField("name", "name may be at most 200 characters")
	}
	ttl := s.cfg.ProvisioningKeyTTL
	if req.ExpiresIn != nil {
		maxSec := int64(s.cfg.MaxProvisioningKeyTTL / time.Second)
		if *req.ExpiresIn < 60 || *req.ExpiresIn > maxSec {
			return invalidField("expiresIn", fmt.Sprintf("expiresIn is in seconds, from 60 to %d", maxSec))
		}
		ttl = time.Duration(*req.ExpiresIn) * time.Second
	}
	p, _ := PrincipalFrom(r.Context())
	k, key, err := s.st.CreateProvisioningKey(r.Context(), req.Name, s.now().Add(ttl), p.UserID, auditOf(r, "provisioning_key_create", nil))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/provision/keys/"+k.ID)
	writeJSON(w, http.StatusCreated, createdProvKeyJSON{ID: k.ID, Key: key.Reveal(), Name: k.Name, Prefix: k.Prefix, ExpiresAt: k.ExpiresAt})
	return nil
}

// listProvisioningKeys: GET /api/v1/provision/keys[?limit=&cursor=] (admin, operator). Never the keys.
// Newest first, keyset pagination.
func (s *Server) listProvisioningKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := keysetPage(r.URL.Query())
	if err != nil {
		return err
	}
	ks, more, err := s.st.ListProvisioningKeys(r.Context(), p)
	if err != nil {
		return err
	}
	now := s.now()
	items := make([]provKeyJSON, 0, len(ks))
	for _, k := range ks {
		items = append(items, provKeyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, ExpiresAt: k.ExpiresAt, Expired: !now.Before(k.ExpiresAt),
			CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt})
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(k provKeyJSON) string { return FormatCursor(k.CreatedAt, k.ID) }))
	return nil
}

// deleteProvisioningKey: DELETE /api/v1/provision/keys/{id} (admin, operator).
func (s *Server) deleteProvisioningKey(w http.ResponseWriter, r *http.Request) error {
	if err := s.st.DeleteProvisioningKey(r.Context(), r.PathValue("id"), auditOf(r, "provisioning_key_delete", nil)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type provisionAgentRequest struct {
	Key       string `json:"key"`
	AgentName string `json:"agentName"`
}

type mqttJSON struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Username string `json:"username"`
	Password string `json:"password"`
	ClientID string `json:"clientId"`
}

type provisionedJSON struct {
	AgentUUID string   `json:"agentUuid"`
	KeyID     string   `json:"keyId"`
	APIKey    string   `json:"apiKey"`
	MQTT      mqttJSON `json:"mqtt"`
}

func invalidProvisioningKey() *Problem {
	return unauthorized(CodeInvalidProvisioning, "the provisioning key is invalid, expired or already used; ask an operator for a new one")
}

// provisionAgent: POST /api/v1/provision/agent, authenticated by the provisioning key in the body. The
// license is asked first, so that a restricted deployment never burns a key; then the key is consumed
// and the agent created in one transaction (P1, P2, P4, P5).
func (s *Server) provisionAgent(w http.ResponseWriter, r *http.Request) error {
	var req provisionAgentRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if req.Key == "" {
		return invalidField("key", "key is required: the provisioning key an operator gave you")
	}
	if n := len([]rune(req.AgentName)); n < 1 || n > 200 {
		return invalidField("agentName", "agentName is required (1 to 200 characters)")
	}
	if secret.Check(secret.ProvisioningKey, req.Key) != nil {
		s.metrics.provision.WithLabelValues("invalid_key").Inc()
		return invalidProvisioningKey()
	}
	if err := s.lic.CheckRegistration(r.Context()); err != nil {
		s.metrics.provision.WithLabelValues("license").Inc()
		return licenseError(err)
	}
	maxDevices, limited := s.lic.MaxDevices()
	red, err := s.st.RedeemProvisioningKey(r.Context(), store.Redemption{
		Digest:     secret.DigestOf(req.Key),
		Agent:      store.CreateAgentParams{Name: req.AgentName, KeyKind: s.cfg.KeyKind},
		MaxDevices: maxDevices, Limited: limited,
		Audit: store.AuditEvent{Actor: "provisioning-key", Action: "agent_provision", RemoteAddr: clientAddr(r),
			Detail: map[string]any{"agentName": req.AgentName}},
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.metrics.provision.WithLabelValues("invalid_key").Inc()
		s.audit(r.Context(), store.AuditEvent{Actor: "anonymous", Action: "agent_provision", Outcome: store.OutcomeFailure, RemoteAddr: clientAddr(r),
			Detail: map[string]any{"reason": "unknown, expired or used provisioning key"}})
		return invalidProvisioningKey()
	case errors.Is(err, store.ErrDeviceLimit):
		s.metrics.provision.WithLabelValues("device_limit").Inc()
		return problem(http.StatusForbidden, CodeDeviceLimit, fmt.Sprintf("the license allows %d devices and all are registered; decommission one or upgrade the license", maxDevices))
	case errors.Is(err, store.ErrInvalid):
		return invalidField("agentName", "agentName was refused by the database (1 to 200 characters)")
	case err != nil:
		s.metrics.provision.WithLabelValues("error").Inc()
		return err
	}
	s.metrics.provision.WithLabelValues("success").Inc()
	w.Header().Set("Location", "/api/v1/agents/"+red.AgentUUID)
	writeJSON(w, http.StatusCreated, provisionedJSON{
		AgentUUID: red.AgentUUID, KeyID: red.KeyID, APIKey: red.APIKey.Reveal(),
		MQTT: mqttJSON{Host: s.cfg.MQTTHost, Port: s.cfg.MQTTPort, Username: red.APIKey.Reveal(), Password: red.MQTTPassword.Reveal(), ClientID: "agent-" + red.AgentUUID},
	})
	return nil
}
