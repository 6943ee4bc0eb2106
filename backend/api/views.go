package api

import "github.com/iotauth/iotauth/backend/store"

// The JSON forms of the REST API's resources, for the CLI's --json output, so that a script reads the
// same fields from `iotauth agent list --json` as from GET /api/v1/agents. None holds a secret.

// AgentView is an agent as GET /api/v1/agents/{uuid} shows it (withState: with target and reported
// state, as the detail route; without, as the list).
func AgentView(a store.AgentInfo, withState bool) any { return agentView(a, withState) }

// UserView is an operator as GET /api/v1/users shows it.
func UserView(u store.User) any { return userView(u) }

// APIKeyView is a device API key as GET /api/v1/auth/api-keys shows it (display prefix only).
func APIKeyView(k store.APIKey) any { return apiKeyView(k) }

// AppKeyView is an application key as GET /api/v1/auth/app-keys shows it (display prefix only).
func AppKeyView(k store.AppKey) any { return appKeyView(k) }

// PublishableKeyView is a publishable key as GET /api/v1/auth/publishable-keys shows it (display prefix
// only).
func PublishableKeyView(k store.PublishableKey) any { return publishableKeyView(k) }

// AuditView is an audit event as GET /api/v1/audit shows it.
func AuditView(e store.AuditRecord) any {
	if e.Detail == nil {
		e.Detail = map[string]any{}
	}
	return auditJSON(e)
}
