// Package keys is the service for the four kinds of key an operator hands out: device API keys (an
// agent's REST and MQTT login), application keys (a backend's REST rights and MQTT topics), publishable
// keys (a browser's token exchange) and provisioning keys (one agent registration each).
//
// The kinds share one implementation of what they have in common: a key is generated, stored as a
// digest and audited in one store transaction, listed newest first by keyset pages, and revoked (or, a
// provisioning key, deleted) with an audit event in the same transaction. They differ in what a new key
// may hold, so each kind has its own request type and validation.
package keys

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
)

// Store is what the service needs of the database (backend/store implements it). Every method that
// changes something writes its audit event in the same transaction.
type Store interface {
	CreateAPIKey(ctx context.Context, p store.NewKeyParams, audit store.AuditEvent) (store.APIKey, secret.Secret, error)
	ListAPIKeys(ctx context.Context, agentUUID string, p store.Page) ([]store.APIKey, bool, error)
	RevokeAPIKey(ctx context.Context, id string, audit store.AuditEvent) (store.APIKey, error)

	CreateAppKey(ctx context.Context, p store.NewAppKeyParams, audit store.AuditEvent) (store.AppKey, secret.Secret, secret.Secret, error)
	ListAppKeys(ctx context.Context, p store.AppKeyPage) ([]store.AppKey, bool, error)
	RevokeAppKey(ctx context.Context, id string, audit store.AuditEvent) (store.AppKey, error)

	CreatePublishableKey(ctx context.Context, p store.NewPublishableKeyParams, audit store.AuditEvent) (store.PublishableKey, secret.Secret, error)
	ListPublishableKeys(ctx context.Context, p store.AppKeyPage) ([]store.PublishableKey, bool, error)
	RevokePublishableKey(ctx context.Context, id string, audit store.AuditEvent) (store.PublishableKey, error)

	CreateProvisioningKey(ctx context.Context, name string, expires time.Time, createdBy string, audit store.AuditEvent) (store.ProvisioningKey, secret.Secret, error)
	ListProvisioningKeys(ctx context.Context, p store.Page) ([]store.ProvisioningKey, bool, error)
	DeleteProvisioningKey(ctx context.Context, id string, audit store.AuditEvent) error
}

// Config configures a Service.
type Config struct {
	// KeyKind is the kind of device key the deployment issues: secret.APIKey (live, the default) or
	// secret.TestAPIKey. Application and publishable keys follow it (iotak_live_/iotak_test_, …).
	KeyKind secret.Kind
	// CheckProvider, when set, refuses a publishable key's identity provider that is not configured: it
	// returns what is wrong, or "". Nil: providers are checked for their form only (the CLI, which does
	// not read the providers file).
	CheckProvider func(name string) string
	// ProvisioningKeyTTL is a provisioning key's default lifetime (24 h); MaxProvisioningKeyTTL the
	// longest a caller may ask for (30 days).
	ProvisioningKeyTTL    time.Duration
	MaxProvisioningKeyTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service creates, lists and revokes keys of every kind.
type Service struct {
	// Device, App, Publishable and Provisioning are the four kinds.
	Device       Kind[store.APIKey, DeviceKeyRequest]
	App          Kind[store.AppKey, AppKeyRequest]
	Publishable  Kind[store.PublishableKey, PublishableKeyRequest]
	Provisioning Kind[store.ProvisioningKey, ProvisioningKeyRequest]
	cfg          Config
}

// New builds a Service on st.
func New(st Store, c Config) (*Service, error) {
	if c.KeyKind.Prefix() == "" {
		c.KeyKind = secret.APIKey
	}
	if c.KeyKind != secret.APIKey && c.KeyKind != secret.TestAPIKey {
		return nil, errors.New("keys: KeyKind must be secret.APIKey or secret.TestAPIKey")
	}
	if c.ProvisioningKeyTTL <= 0 {
		c.ProvisioningKeyTTL = 24 * time.Hour
	}
	if c.MaxProvisioningKeyTTL <= 0 {
		c.MaxProvisioningKeyTTL = 30 * 24 * time.Hour
	}
	if c.ProvisioningKeyTTL > c.MaxProvisioningKeyTTL {
		return nil, fmt.Errorf("keys: the default provisioning key lifetime %s exceeds the maximum %s", c.ProvisioningKeyTTL, c.MaxProvisioningKeyTTL)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Service{cfg: c}
	s.Device = Kind[store.APIKey, DeviceKeyRequest]{
		action: "api_key", removal: "revoke", now: c.Now,
		check:  checkDeviceKey,
		detail: func(r DeviceKeyRequest) map[string]any { return map[string]any{"name": r.Name} },
		create: func(ctx context.Context, r DeviceKeyRequest, _ service.Actor, e store.AuditEvent) (Created[store.APIKey], error) {
			p := store.NewKeyParams{AgentUUID: r.AgentUUID, Name: r.Name, Kind: c.KeyKind, Rights: r.Rights}
			if r.ExpiresAt != nil {
				p.Expires = *r.ExpiresAt
			}
			k, key, err := st.CreateAPIKey(ctx, p, e)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return Created[store.APIKey]{}, service.NotFound("agentUuid", "no agent with this uuid", err)
			case errors.Is(err, store.ErrDecommissioned):
				return Created[store.APIKey]{}, service.Conflict(service.CodeAgentDecommissioned, "the agent is decommissioned and takes no new keys", err)
			}
			return Created[store.APIKey]{Key: k, Secret: key}, err
		},
		list: func(ctx context.Context, f Filter, p store.Page) ([]store.APIKey, bool, error) {
			if f.AgentUUID != "" && !uuid.Valid(f.AgentUUID) {
				return nil, false, service.Invalid("agentUuid", "agentUuid must be a uuid")
			}
			return st.ListAPIKeys(ctx, f.AgentUUID, p)
		},
		remove: func(ctx context.Context, id string, e store.AuditEvent) (store.APIKey, error) {
			return st.RevokeAPIKey(ctx, id, e)
		},
	}
	s.App = Kind[store.AppKey, AppKeyRequest]{
		action: "app_key", removal: "revoke", now: c.Now,
		check:  func(r AppKeyRequest, now time.Time) *service.Error { return CheckAppKey(r, now) },
		detail: func(r AppKeyRequest) map[string]any { return map[string]any{"name": r.Name} },
		create: func(ctx context.Context, r AppKeyRequest, a service.Actor, e store.AuditEvent) (Created[store.AppKey], error) {
			p := store.NewAppKeyParams{Name: r.Name, Kind: secret.AppKindFor(c.KeyKind), Rights: r.Rights, Topics: r.Topics, CreatedBy: a.UserID}
			if r.ExpiresAt != nil {
				p.Expires = *r.ExpiresAt
			}
			k, key, pw, err := st.CreateAppKey(ctx, p, e)
			if errors.Is(err, store.ErrInvalid) {
				return Created[store.AppKey]{}, service.Invalid("topics", "the database refused the key's rights or topics; check them against the documentation")
			}
			return Created[store.AppKey]{Key: k, Secret: key, MQTTPassword: pw}, err
		},
		list: func(ctx context.Context, _ Filter, p store.Page) ([]store.AppKey, bool, error) {
			return st.ListAppKeys(ctx, store.AppKeyPage{Limit: p.Limit, AfterTime: p.AfterTime, AfterID: p.AfterID})
		},
		remove: func(ctx context.Context, id string, e store.AuditEvent) (store.AppKey, error) {
			return st.RevokeAppKey(ctx, id, e)
		},
	}
	s.Publishable = Kind[store.PublishableKey, PublishableKeyRequest]{
		action: "publishable_key", removal: "revoke", now: c.Now,
		check:  s.checkPublishableKey,
		detail: func(r PublishableKeyRequest) map[string]any { return map[string]any{"name": r.Name} },
		create: func(ctx context.Context, r PublishableKeyRequest, a service.Actor, e store.AuditEvent) (Created[store.PublishableKey], error) {
			p := store.NewPublishableKeyParams{Name: r.Name, Kind: secret.PublishableKindFor(c.KeyKind), Origins: r.Origins, Topics: r.Topics,
				Providers: r.Providers, CreatedBy: a.UserID}
			if r.ExpiresAt != nil {
				p.Expires = *r.ExpiresAt
			}
			k, key, err := st.CreatePublishableKey(ctx, p, e)
			if errors.Is(err, store.ErrInvalid) {
				return Created[store.PublishableKey]{}, service.Invalid("topics", "the database refused the key's origins, topics or providers; check them against the documentation")
			}
			return Created[store.PublishableKey]{Key: k, Secret: key}, err
		},
		list: func(ctx context.Context, _ Filter, p store.Page) ([]store.PublishableKey, bool, error) {
			return st.ListPublishableKeys(ctx, store.AppKeyPage{Limit: p.Limit, AfterTime: p.AfterTime, AfterID: p.AfterID})
		},
		remove: func(ctx context.Context, id string, e store.AuditEvent) (store.PublishableKey, error) {
			return st.RevokePublishableKey(ctx, id, e)
		},
	}
	s.Provisioning = Kind[store.ProvisioningKey, ProvisioningKeyRequest]{
		action: "provisioning_key", removal: "delete", now: c.Now,
		check: s.checkProvisioningKey,
		create: func(ctx context.Context, r ProvisioningKeyRequest, a service.Actor, e store.AuditEvent) (Created[store.ProvisioningKey], error) {
			ttl := c.ProvisioningKeyTTL
			if r.ExpiresIn != nil {
				ttl = *r.ExpiresIn
			}
			k, key, err := st.CreateProvisioningKey(ctx, r.Name, c.Now().Add(ttl), a.UserID, e)
			return Created[store.ProvisioningKey]{Key: k, Secret: key}, err
		},
		list: func(ctx context.Context, _ Filter, p store.Page) ([]store.ProvisioningKey, bool, error) {
			return st.ListProvisioningKeys(ctx, p)
		},
		remove: func(ctx context.Context, id string, e store.AuditEvent) (store.ProvisioningKey, error) {
			return store.ProvisioningKey{}, st.DeleteProvisioningKey(ctx, id, e)
		},
	}
	return s, nil
}

// Created is a new key with its secrets, which exist nowhere else: show them once.
type Created[K any] struct {
	Key    K
	Secret secret.Secret
	// MQTTPassword is an application key's own MQTT password (zero for the other kinds).
	MQTTPassword secret.Secret
}

// Filter narrows a list: AgentUUID to one agent's device keys (device keys only).
type Filter struct {
	AgentUUID string
}

// Kind is one kind of key: K the stored key, R the request that makes one. Its Create, List and Revoke
// are the same for every kind; what differs is in its functions.
type Kind[K, R any] struct {
	action  string // audit action prefix: <action>_create, <action>_<removal>
	removal string // revoke, or delete for provisioning keys
	now     func() time.Time
	check   func(R, time.Time) *service.Error
	detail  func(R) map[string]any
	create  func(context.Context, R, service.Actor, store.AuditEvent) (Created[K], error)
	list    func(context.Context, Filter, store.Page) ([]K, bool, error)
	remove  func(context.Context, string, store.AuditEvent) (K, error)
}

// Create checks r, then generates the key, stores its digest and writes the audit event in one
// transaction.
func (k Kind[K, R]) Create(ctx context.Context, a service.Actor, r R) (Created[K], error) {
	if err := k.check(r, k.now()); err != nil {
		return Created[K]{}, err
	}
	var detail map[string]any
	if k.detail != nil {
		detail = k.detail(r)
	}
	return k.create(ctx, r, a, a.Event(k.action+"_create", detail))
}

// Check validates r as Create would, without touching the store: it works on a Service built without
// one (the CLI checks its flags before it connects).
func (k Kind[K, R]) Check(r R) error {
	if err := k.check(r, k.now()); err != nil {
		return err
	}
	return nil
}

// List returns a page of keys, newest first, never their secrets.
func (k Kind[K, R]) List(ctx context.Context, f Filter, p store.Page) ([]K, bool, error) {
	return k.list(ctx, f, p)
}

// Revoke ends the key id (a provisioning key is deleted), with its audit event in the same transaction;
// the brokers close the sessions that used it. A key that does not exist is service.ErrNotFound.
func (k Kind[K, R]) Revoke(ctx context.Context, a service.Actor, id string) (K, error) {
	key, err := k.remove(ctx, id, a.Event(k.action+"_"+k.removal, nil))
	return key, service.NotFoundIfMissing(err)
}

// DeviceKeyRequest asks for a new device API key of an agent.
type DeviceKeyRequest struct {
	Name      string
	AgentUUID string
	ExpiresAt *time.Time
	// Rights limits the key to some of mqtt and device_state; nil: both.
	Rights []string
}

func checkDeviceKey(r DeviceKeyRequest, now time.Time) *service.Error {
	if err := service.CheckName("name", r.Name); err != nil {
		return err
	}
	if !uuid.Valid(r.AgentUUID) {
		return service.Invalid("agentUuid", "agentUuid must be an agent's uuid")
	}
	if err := checkExpiry(r.ExpiresAt, now); err != nil {
		return err
	}
	if r.Rights != nil {
		if len(r.Rights) == 0 {
			return service.Invalid("rights", "rights must name at least one of mqtt, device_state")
		}
		for i, right := range r.Rights {
			if right != store.RightMQTT && right != store.RightDeviceState || slices.Contains(r.Rights[:i], right) {
				return service.Invalid("rights", "rights may hold mqtt and device_state, each once")
			}
		}
	}
	return nil
}

// MaxTopics bounds the topic grants of an application or publishable key (the database checks it too).
const MaxTopics = 100

// Bounds of a publishable key (the database checks them too).
const (
	maxOrigins   = 20
	maxProviders = 32
)

// AppKeyRequest asks for a new application key.
type AppKeyRequest struct {
	Name      string
	Rights    []string
	Topics    []store.AppTopic
	ExpiresAt *time.Time
}

// CheckAppKey checks a new application key's name, rights, topics and expiry.
func CheckAppKey(r AppKeyRequest, now time.Time) *service.Error {
	if err := service.CheckName("name", r.Name); err != nil {
		return err
	}
	all := store.AppRights()
	for i, right := range r.Rights {
		if !slices.Contains(all, right) {
			return service.Invalid("rights", fmt.Sprintf("unknown right %q; rights are: %s", right, strings.Join(all, ", ")))
		}
		if slices.Contains(r.Rights[:i], right) {
			return service.Invalid("rights", fmt.Sprintf("right %q is listed twice", right))
		}
	}
	if len(r.Topics) > MaxTopics {
		return service.Invalid("topics", fmt.Sprintf("at most %d topics", MaxTopics))
	}
	for i, tp := range r.Topics {
		if err := checkTopic(i, tp); err != nil {
			return err
		}
		if err := presenceGrant(i, tp); err != nil {
			return err
		}
	}
	if len(r.Rights) == 0 && len(r.Topics) == 0 {
		return service.Invalid("rights", "an application key needs at least one right or one topic")
	}
	return checkExpiry(r.ExpiresAt, now)
}

// presenceGrant refuses an application key's grant that would let it publish under the topics only the
// plugin publishes to (iotauth/presence/…): read is allowed there, write and readwrite are not.
func presenceGrant(i int, t store.AppTopic) *service.Error {
	if t.Access == "read" {
		return nil
	}
	levels := strings.SplitN(t.Pattern, "/", 3)
	if len(levels) >= 2 && levels[0] == "iotauth" && levels[1] == "presence" || t.Pattern == "iotauth/presence" {
		return service.Invalid("topics", fmt.Sprintf("topics[%d]: %q is under iotauth/presence/, where only the broker publishes presence events; "+
			"grant read there, never write or readwrite", i, t.Pattern))
	}
	return nil
}

// PublishableKeyRequest asks for a new publishable key.
type PublishableKeyRequest struct {
	Name      string
	Origins   []string
	Topics    []store.AppTopic
	Providers []string
	ExpiresAt *time.Time
}

var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

func (s *Service) checkPublishableKey(r PublishableKeyRequest, now time.Time) *service.Error {
	if err := CheckPublishableKey(r, now); err != nil {
		return err
	}
	if s.cfg.CheckProvider != nil {
		for _, p := range r.Providers {
			if msg := s.cfg.CheckProvider(p); msg != "" {
				return service.Invalid("providers", msg)
			}
		}
	}
	return nil
}

// CheckPublishableKey checks a new publishable key's fields (its providers for their form only).
func CheckPublishableKey(r PublishableKeyRequest, now time.Time) *service.Error {
	if err := service.CheckName("name", r.Name); err != nil {
		return err
	}
	if len(r.Origins) < 1 || len(r.Origins) > maxOrigins {
		return service.Invalid("origins", fmt.Sprintf("give 1 to %d origins, each an exact https://host[:port]", maxOrigins))
	}
	for i, o := range r.Origins {
		if m := ValidOrigin(o); m != "" {
			return service.Invalid("origins", fmt.Sprintf("origins[%d] %s", i, m))
		}
		if slices.Contains(r.Origins[:i], o) {
			return service.Invalid("origins", fmt.Sprintf("origin %q is listed twice", o))
		}
	}
	if len(r.Topics) < 1 || len(r.Topics) > MaxTopics {
		return service.Invalid("topics", fmt.Sprintf("give 1 to %d topics: the most a credential exchanged with this key may hold", MaxTopics))
	}
	for i, tp := range r.Topics {
		if err := checkTopic(i, tp); err != nil {
			return err
		}
	}
	if len(r.Providers) < 1 || len(r.Providers) > maxProviders {
		return service.Invalid("providers", fmt.Sprintf("give 1 to %d identity provider names (from OIDC_PROVIDERS_FILE)", maxProviders))
	}
	for i, p := range r.Providers {
		if !providerNameRE.MatchString(p) || p == "iotauth" {
			return service.Invalid("providers", fmt.Sprintf("providers[%d] must be a configured identity provider's name (not iotauth)", i))
		}
		if slices.Contains(r.Providers[:i], p) {
			return service.Invalid("providers", fmt.Sprintf("provider %q is listed twice", p))
		}
	}
	return checkExpiry(r.ExpiresAt, now)
}

// ProvisioningKeyRequest asks for a new provisioning key. Name may be empty.
type ProvisioningKeyRequest struct {
	Name string
	// ExpiresIn is the key's lifetime; nil: the configured default.
	ExpiresIn *time.Duration
}

func (s *Service) checkProvisioningKey(r ProvisioningKeyRequest, _ time.Time) *service.Error {
	if len([]rune(r.Name)) > 200 {
		return service.Invalid("name", "name may be at most 200 characters")
	}
	if r.ExpiresIn != nil {
		maxSec := int64(s.cfg.MaxProvisioningKeyTTL / time.Second)
		if *r.ExpiresIn < time.Minute || *r.ExpiresIn > s.cfg.MaxProvisioningKeyTTL || *r.ExpiresIn%time.Second != 0 {
			return service.Invalid("expiresIn", fmt.Sprintf("expiresIn is in seconds, from 60 to %d", maxSec))
		}
	}
	return nil
}

// checkTopic checks one topic grant of an application or publishable key.
func checkTopic(i int, tp store.AppTopic) *service.Error {
	switch tp.Access {
	case "read", "write", "readwrite":
	default:
		return service.Invalid("topics", fmt.Sprintf("topics[%d].access must be read, write or readwrite", i))
	}
	if err := topicfilter.CheckGrant(tp.Pattern); err != nil {
		return service.Invalid("topics", fmt.Sprintf("topics[%d].pattern: %v", i, err))
	}
	return nil
}

func checkExpiry(expires *time.Time, now time.Time) *service.Error {
	if expires != nil && !expires.After(now) {
		return service.Invalid("expiresAt", "expiresAt must be in the future")
	}
	return nil
}

// ValidOrigin checks an exact browser origin: https://host[:port] in lower case, no path, query,
// fragment or user; http only for localhost, 127.0.0.1 and [::1]; no default port (browsers omit it
// from Origin, so it would never match). It returns what is wrong, or "".
func ValidOrigin(o string) string {
	const want = "must be an exact origin like https://app.example.com or https://app.example.com:8443"
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return want + " (no path, query or fragment)"
	}
	if o != strings.ToLower(o) {
		return "must be in lower case, as browsers send it"
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return "must use https (http only for localhost)"
		}
	default:
		return want
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(p, "0") {
			return "has a port that is not 1 to 65535"
		}
		if (u.Scheme == "https" && n == 443) || (u.Scheme == "http" && n == 80) {
			return "must leave out the default port (browsers send the origin without it)"
		}
	}
	return ""
}
