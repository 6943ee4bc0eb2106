package keys_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/store"
)

const agent = "0b9f2c1e-3d4a-4b5c-8d6e-7f8091a2b3c4"

// fakeStore records what the service asks of the database; fail, when set, is returned by every call.
type fakeStore struct {
	audits   []store.AuditEvent
	fail     error
	appKind  secret.Kind
	pkKind   secret.Kind
	devKind  secret.Kind
	provExp  time.Time
	creators []string
	listed   string
}

func (f *fakeStore) record(e store.AuditEvent) error {
	if f.fail != nil {
		return f.fail
	}
	f.audits = append(f.audits, e)
	return nil
}

func (f *fakeStore) CreateAPIKey(_ context.Context, p store.NewKeyParams, e store.AuditEvent) (store.APIKey, secret.Secret, error) {
	f.devKind = p.Kind
	return store.APIKey{ID: "k1", AgentUUID: p.AgentUUID}, "", f.record(e)
}
func (f *fakeStore) ListAPIKeys(_ context.Context, a string, _ store.Page) ([]store.APIKey, bool, error) {
	f.listed = a
	return []store.APIKey{{ID: "k1"}}, false, f.fail
}
func (f *fakeStore) RevokeAPIKey(_ context.Context, _ string, e store.AuditEvent) (store.APIKey, error) {
	return store.APIKey{AgentUUID: agent}, f.record(e)
}
func (f *fakeStore) CreateAppKey(_ context.Context, p store.NewAppKeyParams, e store.AuditEvent) (store.AppKey, secret.Secret, secret.Secret, error) {
	f.appKind, f.creators = p.Kind, append(f.creators, p.CreatedBy)
	return store.AppKey{ID: "a1"}, "", "", f.record(e)
}
func (f *fakeStore) ListAppKeys(context.Context, store.AppKeyPage) ([]store.AppKey, bool, error) {
	return nil, false, f.fail
}
func (f *fakeStore) RevokeAppKey(_ context.Context, _ string, e store.AuditEvent) (store.AppKey, error) {
	return store.AppKey{}, f.record(e)
}
func (f *fakeStore) CreatePublishableKey(_ context.Context, p store.NewPublishableKeyParams, e store.AuditEvent) (store.PublishableKey, secret.Secret, error) {
	f.pkKind, f.creators = p.Kind, append(f.creators, p.CreatedBy)
	return store.PublishableKey{ID: "p1"}, "", f.record(e)
}
func (f *fakeStore) ListPublishableKeys(context.Context, store.AppKeyPage) ([]store.PublishableKey, bool, error) {
	return nil, false, f.fail
}
func (f *fakeStore) RevokePublishableKey(_ context.Context, _ string, e store.AuditEvent) (store.PublishableKey, error) {
	return store.PublishableKey{}, f.record(e)
}
func (f *fakeStore) CreateProvisioningKey(_ context.Context, _ string, exp time.Time, by string, e store.AuditEvent) (store.ProvisioningKey, secret.Secret, error) {
	f.provExp, f.creators = exp, append(f.creators, by)
	return store.ProvisioningKey{ID: "v1", ExpiresAt: exp}, "", f.record(e)
}
func (f *fakeStore) ListProvisioningKeys(context.Context, store.Page) ([]store.ProvisioningKey, bool, error) {
	return nil, false, f.fail
}
func (f *fakeStore) DeleteProvisioningKey(_ context.Context, _ string, e store.AuditEvent) error {
	return f.record(e)
}

var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newService(t *testing.T, f *fakeStore, c keys.Config) *keys.Service {
	t.Helper()
	c.Now = func() time.Time { return now }
	s, err := keys.New(f, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var operator = service.Actor{Name: "user:u1", RemoteAddr: "127.0.0.1", UserID: "u1"}

func ptr[T any](v T) *T { return &v }

// Each kind's create and revoke are audited under its own actions, with the actor, in the store call
// that makes the change.
func TestEveryKindAuditsCreateAndRevoke(t *testing.T) {
	future := now.Add(time.Hour)
	cases := []struct {
		kind           string
		create, revoke func(*keys.Service) error
		created, ended string
		detail         map[string]any
	}{
		{"device", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent, ExpiresAt: &future})
			return err
		}, func(s *keys.Service) error {
			_, err := s.Device.Revoke(context.Background(), operator, "k1")
			return err
		},
			"api_key_create", "api_key_revoke", map[string]any{"name": "d"}},
		{"app", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: "a", Rights: []string{store.RightAgentsRead}})
			return err
		}, func(s *keys.Service) error { _, err := s.App.Revoke(context.Background(), operator, "a1"); return err },
			"app_key_create", "app_key_revoke", map[string]any{"name": "a"}},
		{"publishable", func(s *keys.Service) error {
			_, err := s.Publishable.Create(context.Background(), operator, keys.PublishableKeyRequest{Name: "p", Origins: []string{"https://app.example.com"},
				Topics: []store.AppTopic{{Access: "read", Pattern: "a/#"}}, Providers: []string{"google"}})
			return err
		}, func(s *keys.Service) error {
			_, err := s.Publishable.Revoke(context.Background(), operator, "p1")
			return err
		},
			"publishable_key_create", "publishable_key_revoke", map[string]any{"name": "p"}},
		{"provisioning", func(s *keys.Service) error {
			_, err := s.Provisioning.Create(context.Background(), operator, keys.ProvisioningKeyRequest{})
			return err
		}, func(s *keys.Service) error {
			_, err := s.Provisioning.Revoke(context.Background(), operator, "v1")
			return err
		},
			"provisioning_key_create", "provisioning_key_delete", nil},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			f := &fakeStore{}
			s := newService(t, f, keys.Config{})
			if err := c.create(s); err != nil {
				t.Fatalf("create: %v", err)
			}
			if err := c.revoke(s); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if len(f.audits) != 2 || f.audits[0].Action != c.created || f.audits[1].Action != c.ended {
				t.Fatalf("audits %+v, want %s then %s", f.audits, c.created, c.ended)
			}
			for _, e := range f.audits {
				if e.Actor != "user:u1" || e.RemoteAddr != "127.0.0.1" {
					t.Errorf("audit %+v lost the actor", e)
				}
			}
			if len(f.audits[0].Detail) != len(c.detail) || (c.detail != nil && f.audits[0].Detail["name"] != c.detail["name"]) {
				t.Errorf("create detail %v, want %v", f.audits[0].Detail, c.detail)
			}
			for _, by := range f.creators {
				if by != "u1" {
					t.Errorf("created by %q, want the operator u1", by)
				}
			}
		})
	}
}

// A key that does not exist is service.ErrNotFound for every kind, whatever the store called it.
func TestRevokeMissingKeyIsNotFound(t *testing.T) {
	f := &fakeStore{fail: store.ErrNotFound}
	s := newService(t, f, keys.Config{})
	ctx := context.Background()
	for name, revoke := range map[string]func() error{
		"device":       func() error { _, err := s.Device.Revoke(ctx, operator, "x"); return err },
		"app":          func() error { _, err := s.App.Revoke(ctx, operator, "x"); return err },
		"publishable":  func() error { _, err := s.Publishable.Revoke(ctx, operator, "x"); return err },
		"provisioning": func() error { _, err := s.Provisioning.Revoke(ctx, operator, "x"); return err },
	} {
		if err := revoke(); !errors.Is(err, service.ErrNotFound) {
			t.Errorf("%s: revoke of a missing key: %v, want service.ErrNotFound", name, err)
		}
	}
}

// The store's refusals become the service's typed errors with the field or code at fault.
func TestDeviceKeyStoreRefusals(t *testing.T) {
	cases := []struct {
		storeErr error
		kind     error
		field    string
		code     string
	}{
		{store.ErrNotFound, service.ErrNotFound, "agentUuid", ""},
		{store.ErrDecommissioned, service.ErrConflict, "", service.CodeAgentDecommissioned},
	}
	for _, c := range cases {
		s := newService(t, &fakeStore{fail: c.storeErr}, keys.Config{})
		_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent})
		var se *service.Error
		if !errors.As(err, &se) || !errors.Is(err, c.kind) || se.Field != c.field || se.Code != c.code || se.Msg == "" {
			t.Errorf("store %v: got %#v, want kind %v field %q code %q", c.storeErr, err, c.kind, c.field, c.code)
		}
		if !errors.Is(err, c.storeErr) {
			t.Errorf("store %v: the cause is lost: %v", c.storeErr, err)
		}
	}
	// Other store errors (an outage) pass through untouched for the caller's own mapping.
	s := newService(t, &fakeStore{fail: store.ErrUnavailable}, keys.Config{})
	if _, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("outage: %v", err)
	}
}

// Invalid requests are refused before the store is asked, naming the field at fault.
func TestValidation(t *testing.T) {
	past := now.Add(-time.Second)
	long := strings.Repeat("n", 201)
	topic := []store.AppTopic{{Access: "read", Pattern: "a/#"}}
	origins := []string{"https://app.example.com"}
	prov := []string{"google"}
	cases := []struct {
		name  string
		call  func(*keys.Service) error
		field string
		want  string
	}{
		{"device name", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "", AgentUUID: agent})
			return err
		}, "name", "1 to 200"},
		{"device agent", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: "nope"})
			return err
		}, "agentUuid", "uuid"},
		{"device expiry", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent, ExpiresAt: &past})
			return err
		}, "expiresAt", "future"},
		{"device no rights", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent, Rights: []string{}})
			return err
		}, "rights", "at least one"},
		{"device right twice", func(s *keys.Service) error {
			_, err := s.Device.Create(context.Background(), operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent, Rights: []string{"mqtt", "mqtt"}})
			return err
		}, "rights", "each once"},
		{"device list filter", func(s *keys.Service) error {
			_, _, err := s.Device.List(context.Background(), keys.Filter{AgentUUID: "nope"}, store.Page{Limit: 1})
			return err
		}, "agentUuid", "uuid"},
		{"app name", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: long, Rights: []string{store.RightAgentsRead}})
			return err
		}, "name", "1 to 200"},
		{"app unknown right", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: "a", Rights: []string{"root"}})
			return err
		}, "rights", "unknown right"},
		{"app nothing", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: "a"})
			return err
		}, "rights", "at least one right or one topic"},
		{"app bad access", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: "a", Topics: []store.AppTopic{{Access: "all", Pattern: "a"}}})
			return err
		}, "topics", "topics[0].access"},
		{"app presence write", func(s *keys.Service) error {
			_, err := s.App.Create(context.Background(), operator, keys.AppKeyRequest{Name: "a", Topics: []store.AppTopic{{Access: "write", Pattern: "iotauth/presence/#"}}})
			return err
		}, "topics", "only the broker publishes"},
		{"publishable origin", func(s *keys.Service) error {
			_, err := s.Publishable.Create(context.Background(), operator, keys.PublishableKeyRequest{Name: "p", Origins: []string{"http://app.example.com"}, Topics: topic, Providers: prov})
			return err
		}, "origins", "https"},
		{"publishable no topics", func(s *keys.Service) error {
			_, err := s.Publishable.Create(context.Background(), operator, keys.PublishableKeyRequest{Name: "p", Origins: origins, Providers: prov})
			return err
		}, "topics", "1 to 100"},
		{"publishable provider iotauth", func(s *keys.Service) error {
			_, err := s.Publishable.Create(context.Background(), operator, keys.PublishableKeyRequest{Name: "p", Origins: origins, Topics: topic, Providers: []string{"iotauth"}})
			return err
		}, "providers", "not iotauth"},
		{"publishable provider not configured", func(s *keys.Service) error {
			_, err := s.Publishable.Create(context.Background(), operator, keys.PublishableKeyRequest{Name: "p", Origins: origins, Topics: topic, Providers: []string{"github"}})
			return err
		}, "providers", "github is not here"},
		{"provisioning name", func(s *keys.Service) error {
			_, err := s.Provisioning.Create(context.Background(), operator, keys.ProvisioningKeyRequest{Name: long})
			return err
		}, "name", "at most 200"},
		{"provisioning too short", func(s *keys.Service) error {
			_, err := s.Provisioning.Create(context.Background(), operator, keys.ProvisioningKeyRequest{ExpiresIn: ptr(59 * time.Second)})
			return err
		}, "expiresIn", "from 60 to 2592000"},
		{"provisioning too long", func(s *keys.Service) error {
			_, err := s.Provisioning.Create(context.Background(), operator, keys.ProvisioningKeyRequest{ExpiresIn: ptr(31 * 24 * time.Hour)})
			return err
		}, "expiresIn", "from 60 to 2592000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeStore{}
			s := newService(t, f, keys.Config{CheckProvider: func(p string) string {
				if p == "google" {
					return ""
				}
				return p + " is not here"
			}})
			err := c.call(s)
			var se *service.Error
			if !errors.As(err, &se) || !errors.Is(err, service.ErrInvalid) || se.Field != c.field || !strings.Contains(se.Msg, c.want) {
				t.Fatalf("got %v (%#v), want field %q saying %q", err, se, c.field, c.want)
			}
			if len(f.audits) != 0 {
				t.Errorf("the store was asked: %+v", f.audits)
			}
		})
	}
}

// Application and publishable keys follow the deployment's device key environment; a provisioning key
// lives its default lifetime unless asked otherwise.
func TestKindsAndLifetimes(t *testing.T) {
	for _, c := range []struct {
		dev, app, pk secret.Kind
	}{{secret.APIKey, secret.AppKey, secret.PublishableKey}, {secret.TestAPIKey, secret.TestAppKey, secret.TestPublishableKey}} {
		f := &fakeStore{}
		s := newService(t, f, keys.Config{KeyKind: c.dev, ProvisioningKeyTTL: time.Hour})
		ctx := context.Background()
		if _, err := s.Device.Create(ctx, operator, keys.DeviceKeyRequest{Name: "d", AgentUUID: agent}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.App.Create(ctx, operator, keys.AppKeyRequest{Name: "a", Rights: []string{store.RightAgentsRead}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Publishable.Create(ctx, operator, keys.PublishableKeyRequest{Name: "p", Origins: []string{"https://a.example"},
			Topics: []store.AppTopic{{Access: "read", Pattern: "a"}}, Providers: []string{"google"}}); err != nil {
			t.Fatal(err)
		}
		if f.devKind != c.dev || f.appKind != c.app || f.pkKind != c.pk {
			t.Errorf("kinds %v %v %v, want %v %v %v", f.devKind, f.appKind, f.pkKind, c.dev, c.app, c.pk)
		}
		if _, err := s.Provisioning.Create(ctx, operator, keys.ProvisioningKeyRequest{}); err != nil || !f.provExp.Equal(now.Add(time.Hour)) {
			t.Errorf("default lifetime: expires %v (%v), want %v", f.provExp, err, now.Add(time.Hour))
		}
		if _, err := s.Provisioning.Create(ctx, operator, keys.ProvisioningKeyRequest{ExpiresIn: ptr(90 * time.Second)}); err != nil || !f.provExp.Equal(now.Add(90*time.Second)) {
			t.Errorf("asked lifetime: expires %v (%v)", f.provExp, err)
		}
	}
	if _, err := keys.New(&fakeStore{}, keys.Config{KeyKind: secret.AppKey}); err == nil {
		t.Error("an application key kind was accepted as the device key kind")
	}
	if _, err := keys.New(&fakeStore{}, keys.Config{ProvisioningKeyTTL: 2 * time.Hour, MaxProvisioningKeyTTL: time.Hour}); err == nil {
		t.Error("a default provisioning lifetime over the maximum was accepted")
	}
}

// A Service without a store checks requests as Create would (the CLI checks its flags before it
// connects to the database).
func TestCheckWithoutAStore(t *testing.T) {
	s, err := keys.New(nil, keys.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.App.Check(keys.AppKeyRequest{Name: "a", Rights: []string{store.RightAgentsRead}}); err != nil {
		t.Errorf("a valid application key: %v", err)
	}
	if err := s.Publishable.Check(keys.PublishableKeyRequest{Name: "p"}); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("a publishable key without origins: %v", err)
	}
	if err := s.Device.Check(keys.DeviceKeyRequest{Name: "d", AgentUUID: agent}); err != nil {
		t.Errorf("a valid device key: %v", err)
	}
}
