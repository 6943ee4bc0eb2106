// Package view holds the JSON forms of the management resources: what the REST API answers and what
// the CLI prints with --json, so that a script reads the same fields from `iotauth agent list --json`
// as from GET /api/v1/agents. None holds a secret, except the Created… forms, which are shown once,
// when a key is made.
package view

import (
	"encoding/json"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// Agent is an agent as GET /api/v1/agents/{uuid} shows it.
type Agent struct {
	UUID          string          `json:"uuid"`
	Name          string          `json:"name"`
	Status        string          `json:"status"`
	TargetVersion int64           `json:"targetVersion"`
	TargetState   json.RawMessage `json:"targetState,omitempty"`
	ReportedState json.RawMessage `json:"reportedState,omitempty"`
	ReportedAt    *time.Time      `json:"reportedAt"`
	LastSeenAt    *time.Time      `json:"lastSeenAt"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	// Online is set in lists, Presence on one agent (docs/presence.md).
	Online   *bool     `json:"online,omitempty"`
	Presence *Presence `json:"presence,omitempty"`
}

// AgentOf is a's form: with its target and reported state (withState, as the detail route) or without
// (as the list).
func AgentOf(a store.AgentInfo, withState bool) Agent {
	v := Agent{UUID: a.UUID, Name: a.Name, Status: a.Status, TargetVersion: a.TargetVersion, ReportedAt: a.ReportedAt,
		LastSeenAt: a.LastSeenAt, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
	if withState {
		v.TargetState, v.ReportedState = a.TargetState, a.ReportedState
	}
	return v
}

// Presence is an agent's presence in GET /api/v1/agents/{uuid}.
type Presence struct {
	Online               bool          `json:"online"`
	Sessions             []LiveSession `json:"sessions"`
	LastConnectedAt      *time.Time    `json:"lastConnectedAt"`
	LastDisconnectedAt   *time.Time    `json:"lastDisconnectedAt"`
	LastDisconnectReason *string       `json:"lastDisconnectReason"`
}

// LiveSession is one of an agent's sessions.
type LiveSession struct {
	Broker        string    `json:"broker"`
	ClientID      string    `json:"clientId"`
	Protocol      string    `json:"protocol"`
	RemoteAddress string    `json:"remoteAddress"`
	ConnectedAt   time.Time `json:"connectedAt"`
}

// User is an operator as GET /api/v1/users shows them.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// UserOf is u's form.
func UserOf(u store.User) User {
	return User{ID: u.ID, Email: u.Email, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// APIKey is a device API key as GET /api/v1/auth/api-keys shows it (display prefix only).
type APIKey struct {
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

// APIKeyOf is k's form.
func APIKeyOf(k store.APIKey) APIKey {
	return APIKey{ID: k.ID, Name: k.Name, AgentUUID: k.AgentUUID, Prefix: k.Prefix, Rights: k.Rights,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

// AppKey is an application key as GET /api/v1/auth/app-keys shows it (display prefix only).
type AppKey struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Prefix     string           `json:"prefix"`
	Rights     []string         `json:"rights"`
	Topics     []store.AppTopic `json:"topics"`
	ExpiresAt  *time.Time       `json:"expiresAt"`
	RevokedAt  *time.Time       `json:"revokedAt"`
	LastUsedAt *time.Time       `json:"lastUsedAt"`
	CreatedAt  time.Time        `json:"createdAt"`
}

// AppKeyOf is k's form.
func AppKeyOf(k store.AppKey) AppKey {
	return AppKey{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Rights: k.Rights, Topics: k.Topics,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

// AppKeyMQTT is the MQTT login of a new application key: the key as username, its own password.
type AppKeyMQTT struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// CreatedAppKey is a new application key: the only place the key and its MQTT password are shown.
type CreatedAppKey struct {
	ID        string           `json:"id"`
	Key       string           `json:"key"`
	Prefix    string           `json:"prefix"`
	Name      string           `json:"name"`
	Rights    []string         `json:"rights"`
	Topics    []store.AppTopic `json:"topics"`
	ExpiresAt *time.Time       `json:"expiresAt"`
	MQTT      AppKeyMQTT       `json:"mqtt"`
}

// PublishableKey is a publishable key as GET /api/v1/auth/publishable-keys shows it (display prefix
// only).
type PublishableKey struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Prefix     string           `json:"prefix"`
	Origins    []string         `json:"origins"`
	Topics     []store.AppTopic `json:"topics"`
	Providers  []string         `json:"providers"`
	ExpiresAt  *time.Time       `json:"expiresAt"`
	RevokedAt  *time.Time       `json:"revokedAt"`
	LastUsedAt *time.Time       `json:"lastUsedAt"`
	CreatedAt  time.Time        `json:"createdAt"`
}

// PublishableKeyOf is k's form.
func PublishableKeyOf(k store.PublishableKey) PublishableKey {
	return PublishableKey{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Origins: k.Origins, Topics: k.Topics, Providers: k.Providers,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

// CreatedPublishableKey is a new publishable key: the only place the key is shown.
type CreatedPublishableKey struct {
	ID        string           `json:"id"`
	Key       string           `json:"key"`
	Prefix    string           `json:"prefix"`
	Name      string           `json:"name"`
	Origins   []string         `json:"origins"`
	Topics    []store.AppTopic `json:"topics"`
	Providers []string         `json:"providers"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

// Audit is an audit event as GET /api/v1/audit shows it.
type Audit struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Target     string         `json:"target"`
	Outcome    string         `json:"outcome"`
	RemoteAddr string         `json:"remoteAddr"`
	Detail     map[string]any `json:"detail"`
}

// AuditOf is e's form (an event without details shows {}).
func AuditOf(e store.AuditRecord) Audit {
	if e.Detail == nil {
		e.Detail = map[string]any{}
	}
	return Audit(e)
}

// CreatedAppKeyOf is a new application key k with its key and MQTT password.
func CreatedAppKeyOf(k store.AppKey, key, password secret.Secret) CreatedAppKey {
	return CreatedAppKey{ID: k.ID, Key: key.Reveal(), Prefix: k.Prefix, Name: k.Name, Rights: k.Rights, Topics: k.Topics,
		ExpiresAt: k.ExpiresAt, MQTT: AppKeyMQTT{Username: key.Reveal(), Password: password.Reveal()}}
}

// CreatedPublishableKeyOf is a new publishable key k with its key.
func CreatedPublishableKeyOf(k store.PublishableKey, key secret.Secret) CreatedPublishableKey {
	return CreatedPublishableKey{ID: k.ID, Key: key.Reveal(), Prefix: k.Prefix, Name: k.Name,
		Origins: k.Origins, Topics: k.Topics, Providers: k.Providers, ExpiresAt: k.ExpiresAt}
}
