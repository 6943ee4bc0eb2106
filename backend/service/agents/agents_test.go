package agents_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/agents"
	"github.com/iotauth/iotauth/backend/store"
)

// fakeStore records the calls; fail is what the changing calls return.
type fakeStore struct {
	fail       error
	audits     []store.AuditEvent
	redemption *store.Redemption
	active     *bool
}

func (f *fakeStore) CreateAgentAudited(_ context.Context, p store.CreateAgentParams, e store.AuditEvent) (store.NewAgent, error) {
	f.audits = append(f.audits, e)
	return store.NewAgent{AgentUUID: "a1"}, f.fail
}
func (f *fakeStore) RedeemProvisioningKey(_ context.Context, r store.Redemption) (store.Redeemed, error) {
	f.redemption = &r
	return store.Redeemed{}, f.fail
}
func (f *fakeStore) GetAgent(context.Context, string) (store.AgentInfo, error) {
	return store.AgentInfo{}, f.fail
}
func (f *fakeStore) ListAgents(context.Context, store.AgentPage) ([]store.AgentInfo, bool, error) {
	return nil, false, f.fail
}
func (f *fakeStore) SetTargetState(_ context.Context, _ string, _ json.RawMessage, _ int64, e store.AuditEvent) (store.AgentInfo, error) {
	f.audits = append(f.audits, e)
	return store.AgentInfo{}, f.fail
}
func (f *fakeStore) ReportState(context.Context, string, json.RawMessage) (time.Time, error) {
	return time.Time{}, f.fail
}
func (f *fakeStore) RotateAgentPassword(_ context.Context, _ string, e store.AuditEvent) (secret.Secret, error) {
	f.audits = append(f.audits, e)
	return "pw", f.fail
}
func (f *fakeStore) SetAgentActive(_ context.Context, _ string, active bool, e store.AuditEvent) (store.AgentInfo, error) {
	f.audits, f.active = append(f.audits, e), &active
	return store.AgentInfo{}, f.fail
}
func (f *fakeStore) DecommissionAgent(_ context.Context, _ string, e store.AuditEvent) error {
	f.audits = append(f.audits, e)
	return f.fail
}
func (f *fakeStore) Audit(_ context.Context, e store.AuditEvent) error {
	f.audits = append(f.audits, e)
	return nil
}

// licenser refuses registrations with refuse and reports a limit of max devices.
type licenser struct {
	refuse error
	asked  bool
	max    int
}

func (l *licenser) CheckRegistration(context.Context) error { l.asked = true; return l.refuse }
func (l *licenser) CheckFeature(string) error               { return nil }
func (l *licenser) MaxDevices() (int, bool)                 { return l.max, l.max > 0 }

type coded struct{}

func (coded) Error() string       { return "no license is installed" }
func (coded) ProblemCode() string { return "license_missing" }

func TestProvision(t *testing.T) {
	key, err := secret.Generate(secret.ProvisioningKey)
	if err != nil {
		t.Fatal(err)
	}
	device := service.Actor{RemoteAddr: "127.0.0.9"}
	cases := []struct {
		name        string
		key, agent  string
		license     error
		storeErr    error
		kind        error
		code        string
		redeemed    bool // the store was asked to consume the key
		failAudited bool
	}{
		{"ok", key.Reveal(), "dev", nil, nil, nil, "", true, false},
		{"no key", "", "dev", nil, nil, service.ErrInvalid, "", false, false},
		{"no name", key.Reveal(), "", nil, nil, service.ErrInvalid, "", false, false},
		{"malformed key", "iotpk_nope", "dev", nil, nil, service.ErrUnauthenticated, service.CodeInvalidProvisioning, false, false},
		{"license with code", key.Reveal(), "dev", coded{}, nil, nil, "", false, false},
		{"license without code", key.Reveal(), "dev", errors.New("expired"), nil, service.ErrLicense, "", false, false},
		{"unknown key", key.Reveal(), "dev", nil, store.ErrNotFound, service.ErrUnauthenticated, service.CodeInvalidProvisioning, true, true},
		{"device limit", key.Reveal(), "dev", nil, store.ErrDeviceLimit, service.ErrForbidden, service.CodeDeviceLimit, true, false},
		{"name refused", key.Reveal(), "dev", nil, store.ErrInvalid, service.ErrInvalid, "", true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeStore{fail: c.storeErr}
			lic := &licenser{refuse: c.license, max: 7}
			s := agents.New(f, agents.Config{Licenser: lic, KeyKind: secret.TestAPIKey})
			_, err := s.Provision(context.Background(), device, c.key, c.agent)
			switch {
			case c.name == "license with code":
				var pc service.ProblemCoder
				if !errors.As(err, &pc) || pc.ProblemCode() != "license_missing" {
					t.Fatalf("got %v, want the licenser's own refusal", err)
				}
			case c.kind == nil:
				if err != nil {
					t.Fatal(err)
				}
			default:
				var se *service.Error
				if !errors.Is(err, c.kind) || (c.code != "" && (!errors.As(err, &se) || se.Code != c.code)) {
					t.Fatalf("got %v, want %v with code %q", err, c.kind, c.code)
				}
			}
			if (f.redemption != nil) != c.redeemed {
				t.Fatalf("key consumed: %v, want %v", f.redemption != nil, c.redeemed)
			}
			if f.redemption != nil {
				r := f.redemption
				if !lic.asked || r.MaxDevices != 7 || !r.Limited || r.Agent.KeyKind != secret.TestAPIKey || r.Audit.RemoteAddr != "127.0.0.9" || r.Audit.Action != "agent_provision" {
					t.Errorf("redemption %+v (license asked: %v)", r, lic.asked)
				}
			}
			failed := len(f.audits) == 1 && f.audits[0].Outcome == store.OutcomeFailure && f.audits[0].RemoteAddr == "127.0.0.9"
			if failed != c.failAudited || (!c.failAudited && len(f.audits) != 0) {
				t.Errorf("audits %+v, want a failure audited: %v", f.audits, c.failAudited)
			}
		})
	}
}

func TestAgentChanges(t *testing.T) {
	op := service.Actor{Name: "user:u1"}
	ctx := context.Background()
	cases := []struct {
		name     string
		call     func(*agents.Service) error
		storeErr error
		kind     error
		code     string
		action   string
	}{
		{"enable", func(s *agents.Service) error { _, err := s.SetStatus(ctx, op, "a1", "active"); return err }, nil, nil, "", "agent_enable"},
		{"disable", func(s *agents.Service) error { _, err := s.SetStatus(ctx, op, "a1", "disabled"); return err }, nil, nil, "", "agent_disable"},
		{"decommission by status", func(s *agents.Service) error { _, err := s.SetStatus(ctx, op, "a1", "decommissioned"); return err },
			nil, service.ErrInvalid, "", ""},
		{"disable decommissioned", func(s *agents.Service) error { _, err := s.SetStatus(ctx, op, "a1", "disabled"); return err },
			store.ErrDecommissioned, service.ErrConflict, service.CodeAgentDecommissioned, "agent_disable"},
		{"target state", func(s *agents.Service) error {
			_, err := s.SetTargetState(ctx, op, "a1", json.RawMessage(`{"a":1}`), 0)
			return err
		}, nil, nil, "", "target_state_set"},
		{"target state not an object", func(s *agents.Service) error {
			_, err := s.SetTargetState(ctx, op, "a1", json.RawMessage(`[1]`), 0)
			return err
		}, nil, service.ErrInvalid, "", ""},
		{"stale version", func(s *agents.Service) error {
			_, err := s.SetTargetState(ctx, op, "a1", json.RawMessage(`{}`), 3)
			return err
		}, store.ErrVersionMismatch, service.ErrPrecondition, service.CodePreconditionFailed, "target_state_set"},
		{"reported state not an object", func(s *agents.Service) error { return s.ReportState(ctx, "a1", json.RawMessage(`"x"`)) },
			nil, service.ErrInvalid, "", ""},
		{"rotate", func(s *agents.Service) error { _, err := s.RotatePassword(ctx, op, "a1"); return err }, nil, nil, "", "mqtt_password_rotate"},
		{"rotate decommissioned", func(s *agents.Service) error { _, err := s.RotatePassword(ctx, op, "a1"); return err },
			store.ErrDecommissioned, service.ErrConflict, service.CodeAgentDecommissioned, "mqtt_password_rotate"},
		{"decommission missing", func(s *agents.Service) error { return s.Decommission(ctx, op, "a1") },
			store.ErrNotFound, service.ErrNotFound, "", "agent_decommission"},
		{"create", func(s *agents.Service) error { _, err := s.Create(ctx, op, "dev", time.Time{}); return err }, nil, nil, "", "agent_create"},
		{"create nameless", func(s *agents.Service) error { _, err := s.Create(ctx, op, "", time.Time{}); return err }, nil, service.ErrInvalid, "", ""},
		{"list bad status", func(s *agents.Service) error {
			_, _, err := s.List(ctx, store.AgentPage{Status: "gone"})
			return err
		}, nil, service.ErrInvalid, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeStore{fail: c.storeErr}
			err := c.call(agents.New(f, agents.Config{}))
			var se *service.Error
			if c.kind == nil && err != nil || c.kind != nil && (!errors.Is(err, c.kind) || c.code != "" && (!errors.As(err, &se) || se.Code != c.code)) {
				t.Fatalf("got %v, want %v code %q", err, c.kind, c.code)
			}
			if c.action == "" && len(f.audits) != 0 || c.action != "" && (len(f.audits) != 1 || f.audits[0].Action != c.action || f.audits[0].Actor != "user:u1") {
				t.Errorf("audits %+v, want action %q", f.audits, c.action)
			}
		})
	}
}
