package api

import (
	"context"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/backend/store"
)

// builtinRoutes is the route table (each route's role set, and the right an
// application key needs for it), the license's routes included (GET /api/v1/license and
// the premium export, gated through the Licenser). openapi.json documents exactly these; a test keeps the
// two in step.
func (s *Server) builtinRoutes() []Route {
	return []Route{
		{Method: "POST", Path: "/api/v1/auth/login", Roles: publicAccess, Handler: s.login.login},
		{Method: "POST", Path: "/api/v1/auth/refresh", Roles: publicAccess, Handler: s.login.refresh},
		{Method: "POST", Path: "/api/v1/auth/logout", Roles: publicAccess, Handler: s.login.logout},
		{Method: "GET", Path: "/api/v1/auth/me", Roles: anyRole, Handler: s.login.me},

		{Method: "POST", Path: "/api/v1/users", Roles: adminOnly, Handler: s.users.createUser},
		{Method: "GET", Path: "/api/v1/users", Roles: adminOnly, Handler: s.users.listUsers},
		{Method: "PATCH", Path: "/api/v1/users/{id}", Roles: adminOnly, Handler: s.users.patchUser},

		// Minting a device key, or a device's MQTT password, hands out that agent's MQTT identity, which
		// may be wider than an application key's own topics (docs/security.md, A1): an admin's token only.
		{Method: "POST", Path: "/api/v1/auth/api-keys", Roles: adminOnly, Handler: s.keys.createDeviceKey},
		{Method: "GET", Path: "/api/v1/auth/api-keys", Roles: adminOnly, Right: store.RightKeysWrite, Handler: s.keys.listDeviceKeys},
		{Method: "DELETE", Path: "/api/v1/auth/api-keys/{id}", Roles: adminOnly, Right: store.RightKeysWrite, Handler: s.keys.revokeDeviceKey},

		// Application keys: an admin's access token only (no Right), so no key can create or widen keys.
		{Method: "POST", Path: "/api/v1/auth/app-keys", Roles: adminOnly, Handler: s.keys.createAppKey},
		{Method: "GET", Path: "/api/v1/auth/app-keys", Roles: adminOnly, Handler: s.keys.listAppKeys},
		{Method: "DELETE", Path: "/api/v1/auth/app-keys/{id}", Roles: adminOnly, Handler: s.keys.revokeAppKey},

		// Token exchange (docs/token-exchange.md): an application key with token:exchange, a publishable key from one of
		// its origins, or any operator for their own credential. Publishable keys: an admin's token only.
		{Method: "POST", Path: ExchangePath, Roles: anyRole, Right: store.RightTokenExchange, Publishable: true, Handler: s.x.tokenExchange},
		{Method: "POST", Path: "/api/v1/auth/publishable-keys", Roles: adminOnly, Handler: s.keys.createPublishableKey},
		{Method: "GET", Path: "/api/v1/auth/publishable-keys", Roles: adminOnly, Handler: s.keys.listPublishableKeys},
		{Method: "DELETE", Path: "/api/v1/auth/publishable-keys/{id}", Roles: adminOnly, Handler: s.keys.revokePublishableKey},

		// A provisioning key registers an agent: its client id agent-<uuid>, which no application key may
		// take, and the agent's topics, which the broker's configuration decides and the API cannot check
		// against a key's own (docs/app-keys.md). Creating one takes an admin's or operator's token;
		// provision:write lists and deletes them.
		{Method: "POST", Path: "/api/v1/provision/keys", Roles: adminOrOp, Handler: s.keys.createProvisioningKey,
			KeyRefusal: "creating a provisioning key takes an admin's or operator's access token: the agent it registers gets an MQTT identity (client id agent-<uuid> and the agent's topics) that no application key may hand out; provision:write lists and deletes provisioning keys"},
		{Method: "GET", Path: "/api/v1/provision/keys", Roles: adminOrOp, Right: store.RightProvisionWrite, Handler: s.keys.listProvisioningKeys},
		{Method: "DELETE", Path: "/api/v1/provision/keys/{id}", Roles: adminOrOp, Right: store.RightProvisionWrite, Handler: s.keys.deleteProvisioningKey},
		{Method: "POST", Path: "/api/v1/provision/agent", Roles: publicAccess, Handler: s.agents.provisionAgent},

		{Method: "GET", Path: "/api/v1/agents", Roles: anyRole, Right: store.RightAgentsRead, Handler: s.agents.listAgents},
		{Method: "GET", Path: "/api/v1/agents/export", Roles: anyRole, Right: store.RightAgentsRead, Handler: s.RequireFeature(license.FeatureDataExport, s.agents.exportAgents)},
		{Method: "GET", Path: "/api/v1/agents/{uuid}", Roles: anyRole, Right: store.RightAgentsRead, Handler: s.agents.getAgent},
		{Method: "GET", Path: "/api/v1/agents/summary", Roles: anyRole, Right: store.RightAgentsRead, Handler: s.agents.agentsSummary},
		{Method: "GET", Path: "/api/v1/agents/{uuid}/sessions", Roles: anyRole, Right: store.RightAgentsRead, Handler: s.agents.agentSessions},
		{Method: "PUT", Path: "/api/v1/agents/{uuid}/target-state", Roles: adminOrOp, Right: store.RightAgentsWrite, Handler: s.agents.putTargetState, MaxBody: stateMaxBody},
		{Method: "POST", Path: "/api/v1/agents/{uuid}/mqtt-password", Roles: adminOnly, Handler: s.agents.rotateMQTTPassword},
		{Method: "PATCH", Path: "/api/v1/agents/{uuid}", Roles: adminOnly, Right: store.RightAgentsWrite, Handler: s.agents.patchAgent},
		{Method: "DELETE", Path: "/api/v1/agents/{uuid}", Roles: adminOnly, Right: store.RightAgentsWrite, Handler: s.agents.decommissionAgent},

		{Method: "GET", Path: "/api/v1/device/{uuid}/state", Device: true, Handler: s.agents.deviceGetState},
		{Method: "PATCH", Path: "/api/v1/device/{uuid}/state", Device: true, Handler: s.agents.deviceReportState, MaxBody: stateMaxBody},

		{Method: "GET", Path: "/api/v1/license", Roles: adminOnly, Right: store.RightLicenseRead, Handler: s.admin.getLicense},
		{Method: "GET", Path: "/api/v1/audit", Roles: adminOnly, Right: store.RightAuditRead, Handler: s.admin.listAudit},

		// The publish bridge (docs/publish-bridge.md; docs/security.md, B1): application keys with the publish right only.
		{Method: "POST", Path: "/api/v1/publish", Roles: appKeyOnly, Right: store.RightPublish, Handler: s.bridge.publish, MaxBody: publishMaxBody(s.cfg.PublishMaxPayload)},

		{Method: "GET", Path: "/healthz", Roles: publicAccess, Handler: s.healthz},
		{Method: "GET", Path: "/readyz", Roles: publicAccess, Handler: s.readyz},
		{Method: "GET", Path: "/api/v1/openapi.json", Roles: publicAccess, Handler: s.openAPIHandler},
	}
}

// healthz: the process is alive (it answers); it does not touch the database.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz: the database answers within 2 s.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.st.Ping(ctx); err != nil {
		p := databaseUnavailable(err)
		p.Detail = "not ready: the database does not answer"
		p.retryAfter = 1
		return p
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (s *Server) openAPIHandler(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.openapi)
	return nil
}
