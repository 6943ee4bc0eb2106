package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

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
