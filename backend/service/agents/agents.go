// Package agents is the service for agents and their registration: an agent registered with a
// provisioning key (license first, then the key consumed and the agent created in one transaction), or
// created by an operator; its target and reported state; its MQTT password; enabling, disabling and
// decommissioning it. Every change is audited in the store transaction that makes it.
package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
)

// Store is what the service needs of the database (backend/store implements it).
type Store interface {
	CreateAgentAudited(ctx context.Context, p store.CreateAgentParams, audit store.AuditEvent) (store.NewAgent, error)
	RedeemProvisioningKey(ctx context.Context, r store.Redemption) (store.Redeemed, error)
	GetAgent(ctx context.Context, uuid string) (store.AgentInfo, error)
	ListAgents(ctx context.Context, p store.AgentPage) ([]store.AgentInfo, bool, error)
	SetTargetState(ctx context.Context, uuid string, state json.RawMessage, ifVersion int64, audit store.AuditEvent) (store.AgentInfo, error)
	ReportState(ctx context.Context, agentUUID string, state json.RawMessage) (time.Time, error)
	RotateAgentPassword(ctx context.Context, uuid string, audit store.AuditEvent) (secret.Secret, error)
	SetAgentActive(ctx context.Context, agentUUID string, active bool, audit store.AuditEvent) (store.AgentInfo, error)
	DecommissionAgent(ctx context.Context, uuid string, audit store.AuditEvent) error
	Audit(ctx context.Context, e store.AuditEvent) error
}

// StoreOf is the Store on st: its agents and its audit trail.
func StoreOf(st *store.Store) Store {
	return struct {
		store.Agents
		store.AuditTrail
	}{st.Agents, st.AuditTrail}
}

// Config configures a Service.
type Config struct {
	// KeyKind is the kind of device key a new agent gets: secret.APIKey (the default) or secret.TestAPIKey.
	KeyKind secret.Kind
	// Licenser decides registrations (default service.Unlimited).
	Licenser service.Licenser
	// Logger receives what could not be audited (default: discard).
	Logger *slog.Logger
}

// Service manages agents.
type Service struct {
	st  Store
	cfg Config
}

// New builds a Service on st.
func New(st Store, c Config) *Service {
	if c.KeyKind.Prefix() == "" {
		c.KeyKind = secret.APIKey
	}
	if c.Licenser == nil {
		c.Licenser = service.Unlimited{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, cfg: c}
}

// Create makes an agent with its first device key (expiring at expires, or never when zero) and MQTT
// password, for an operator.
func (s *Service) Create(ctx context.Context, a service.Actor, name string, expires time.Time) (store.NewAgent, error) {
	if err := service.CheckName("name", name); err != nil {
		return store.NewAgent{}, err
	}
	n, err := s.st.CreateAgentAudited(ctx, store.CreateAgentParams{Name: name, KeyKind: s.cfg.KeyKind, Expires: expires}, a.Event("agent_create", nil))
	if errors.Is(err, store.ErrInvalid) {
		return store.NewAgent{}, &service.Error{Kind: service.ErrInvalid, Field: "name", Msg: "the name must be 1 to 200 characters", Err: err}
	}
	return n, err
}

// errInvalidKey is the one refusal of every provisioning key that cannot register an agent: malformed,
// unknown, expired or used (which of these is never told).
var errInvalidKey = &service.Error{Kind: service.ErrUnauthenticated, Code: service.CodeInvalidProvisioning,
	Msg: "the provisioning key is invalid, expired or already used; ask an operator for a new one"}

// Provision registers an agent with a provisioning key, for the device that presents it (a.RemoteAddr).
// The license is asked first, so that a restricted deployment never burns a key; then the key is consumed
// and the agent created in one transaction, within the license's device limit. A key that cannot
// register is service.ErrUnauthenticated (invalid_provisioning_key), audited as a failure; the device
// limit is service.ErrForbidden (device_limit_reached); a license refusal is service.LicenseRefusal's.
func (s *Service) Provision(ctx context.Context, a service.Actor, key, agentName string) (store.Redeemed, error) {
	if key == "" {
		return store.Redeemed{}, service.Invalid("key", "key is required: the provisioning key an operator gave you")
	}
	if err := service.CheckName("agentName", agentName); err != nil {
		return store.Redeemed{}, err
	}
	if secret.Check(secret.ProvisioningKey, key) != nil {
		return store.Redeemed{}, errInvalidKey
	}
	if err := s.cfg.Licenser.CheckRegistration(ctx); err != nil {
		return store.Redeemed{}, service.LicenseRefusal(err)
	}
	maxDevices, limited := s.cfg.Licenser.MaxDevices()
	red, err := s.st.RedeemProvisioningKey(ctx, store.Redemption{
		Digest:     secret.DigestOf(key),
		Agent:      store.CreateAgentParams{Name: agentName, KeyKind: s.cfg.KeyKind},
		MaxDevices: maxDevices, Limited: limited,
		Audit: store.AuditEvent{Actor: "provisioning-key", Action: "agent_provision", RemoteAddr: a.RemoteAddr,
			Detail: map[string]any{"agentName": agentName}},
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		e := store.AuditEvent{Actor: "anonymous", Action: "agent_provision", Outcome: store.OutcomeFailure, RemoteAddr: a.RemoteAddr,
			Detail: map[string]any{"reason": "unknown, expired or used provisioning key"}}
		if aerr := s.st.Audit(ctx, e); aerr != nil {
			s.cfg.Logger.Error("could not write audit event", "action", e.Action, "error", aerr.Error())
		}
		return store.Redeemed{}, errInvalidKey
	case errors.Is(err, store.ErrDeviceLimit):
		return store.Redeemed{}, &service.Error{Kind: service.ErrForbidden, Code: service.CodeDeviceLimit, Err: err,
			Msg: fmt.Sprintf("the license allows %d devices and all are registered; decommission one or upgrade the license", maxDevices)}
	case errors.Is(err, store.ErrInvalid):
		return store.Redeemed{}, service.Invalid("agentName", "agentName was refused by the database (1 to 200 characters)")
	}
	return red, err
}

// Get returns one agent with its states.
func (s *Service) Get(ctx context.Context, uuid string) (store.AgentInfo, error) {
	a, err := s.st.GetAgent(ctx, uuid)
	return a, service.NotFoundIfMissing(err)
}

// List returns a page of agents. p.Search is an agent's uuid or part of its name (at most 200
// characters); p.Status one of active, disabled, decommissioned or "" (all but decommissioned).
func (s *Service) List(ctx context.Context, p store.AgentPage) ([]store.AgentInfo, bool, error) {
	if len(p.Search) > 200 {
		return nil, false, service.Invalid("q", "q is an agent's uuid or part of its name (at most 200 characters)")
	}
	switch p.Status {
	case "", store.StatusActive, store.StatusDisabled, store.StatusDecommissioned:
	default:
		return nil, false, service.Invalid("status", "status must be active, disabled or decommissioned")
	}
	return s.st.ListAgents(ctx, p)
}

// SetTargetState replaces an agent's target state (a JSON object) and bumps its version; ifVersion, when
// not 0, makes the change conditional: a newer version is service.ErrPrecondition.
func (s *Service) SetTargetState(ctx context.Context, a service.Actor, uuid string, state json.RawMessage, ifVersion int64) (store.AgentInfo, error) {
	if !isJSONObject(state) {
		return store.AgentInfo{}, service.Invalid("targetState", "targetState must be a JSON object")
	}
	info, err := s.st.SetTargetState(ctx, uuid, state, ifVersion, a.Event("target_state_set", nil))
	switch {
	case errors.Is(err, store.ErrVersionMismatch):
		return info, &service.Error{Kind: service.ErrPrecondition, Code: service.CodePreconditionFailed, Err: err,
			Msg: "the target state changed since your ETag; GET it again"}
	case errors.Is(err, store.ErrDecommissioned):
		return info, service.Conflict(service.CodeAgentDecommissioned, "the agent is decommissioned", err)
	}
	return info, service.NotFoundIfMissing(err)
}

// ReportState records the state an agent reports (a JSON object).
func (s *Service) ReportState(ctx context.Context, uuid string, state json.RawMessage) error {
	if !isJSONObject(state) {
		return service.Invalid("reportedState", "reportedState must be a JSON object")
	}
	_, err := s.st.ReportState(ctx, uuid, state)
	return service.NotFoundIfMissing(err)
}

// RotatePassword gives an agent a new MQTT password (shown once); brokers close the sessions that used
// the old one.
func (s *Service) RotatePassword(ctx context.Context, a service.Actor, uuid string) (secret.Secret, error) {
	pw, err := s.st.RotateAgentPassword(ctx, uuid, a.Event("mqtt_password_rotate", nil))
	if errors.Is(err, store.ErrDecommissioned) {
		return "", service.Conflict(service.CodeAgentDecommissioned, "the agent is decommissioned", err)
	}
	return pw, service.NotFoundIfMissing(err)
}

// SetStatus enables (active) or disables (disabled) an agent. Disabling closes its sessions on every
// broker and refuses its logins until it is enabled again; its keys and password are kept. A
// decommissioned agent stays so: service.ErrConflict.
func (s *Service) SetStatus(ctx context.Context, a service.Actor, uuid, status string) (store.AgentInfo, error) {
	if status != store.StatusActive && status != store.StatusDisabled {
		return store.AgentInfo{}, service.Invalid("status", "status must be active or disabled (DELETE decommissions)")
	}
	action := "agent_enable"
	if status == store.StatusDisabled {
		action = "agent_disable"
	}
	info, err := s.st.SetAgentActive(ctx, uuid, status == store.StatusActive, a.Event(action, nil))
	if errors.Is(err, store.ErrDecommissioned) {
		return info, service.Conflict(service.CodeAgentDecommissioned, "the agent is decommissioned; that is final", err)
	}
	return info, service.NotFoundIfMissing(err)
}

// Decommission ends an agent for good: keys revoked, MQTT credentials deleted; brokers kick it.
func (s *Service) Decommission(ctx context.Context, a service.Actor, uuid string) error {
	return service.NotFoundIfMissing(s.st.DecommissionAgent(ctx, uuid, a.Event("agent_decommission", nil)))
}

func isJSONObject(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && json.Valid(b)
}
