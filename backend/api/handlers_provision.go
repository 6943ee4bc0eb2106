package api

import (
	"errors"
	"net/http"

	"github.com/iotauth/iotauth/backend/service"
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

// provisionAgent: POST /api/v1/provision/agent, authenticated by the provisioning key in the body. The
// license is asked first, so that a restricted deployment never burns a key; then the key is consumed
// and the agent created in one transaction (P1, P2, P4, P5), all in the agents service.
func (s *agentsAPI) provisionAgent(w http.ResponseWriter, r *http.Request) error {
	var req provisionAgentRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	red, err := s.svc.Provision(r.Context(), actorOf(r), req.Key, req.AgentName)
	if outcome := provisionOutcome(err); outcome != "" {
		s.metrics.provision.WithLabelValues(outcome).Inc()
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/agents/"+red.AgentUUID)
	writeJSON(w, http.StatusCreated, provisionedJSON{
		AgentUUID: red.AgentUUID, KeyID: red.KeyID, APIKey: red.APIKey.Reveal(),
		MQTT: mqttJSON{Host: s.mqttHost, Port: s.mqttPort, Username: red.APIKey.Reveal(), Password: red.MQTTPassword.Reveal(), ClientID: "agent-" + red.AgentUUID},
	})
	return nil
}

// provisionOutcome is the iotauth_provision_total label of a registration's result ("" for a request
// refused before any key was looked at).
func provisionOutcome(err error) string {
	var se *service.Error
	var pc problemCoder
	switch {
	case err == nil:
		return "success"
	case errors.As(err, &se) && se.Code == service.CodeInvalidProvisioning:
		return "invalid_key"
	case errors.As(err, &se) && se.Code == service.CodeDeviceLimit:
		return "device_limit"
	case errors.Is(err, service.ErrLicense), errors.As(err, &pc) && pc.ProblemCode() != "":
		return "license"
	case errors.Is(err, service.ErrInvalid):
		return ""
	}
	return "error"
}
