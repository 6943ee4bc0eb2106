package api

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/oidc"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

// keysAPI serves the four kinds of key (backend/service/keys): it decodes a request into the service's,
// and the service's answer into JSON. Validation, audit and the transaction are the service's.
type keysAPI struct {
	svc *keys.Service
	now func() time.Time
}

// writeCreated answers 201 with the new resource's Location.
func writeCreated(w http.ResponseWriter, location string, v any) {
	w.Header().Set("Location", location)
	writeJSON(w, http.StatusCreated, v)
}

// listKeys answers a list route of any kind of key: a keyset page, newest first, never a secret.
func listKeys[K, R, V any](w http.ResponseWriter, r *http.Request, kind keys.Kind[K, R], f keys.Filter, view func(K) V, cursor func(K) string) error {
	p, err := keysetPage(r.URL.Query())
	if err != nil {
		return err
	}
	ks, more, err := kind.List(r.Context(), f, p)
	if err != nil {
		return err
	}
	items := make([]V, 0, len(ks))
	for _, k := range ks {
		items = append(items, view(k))
	}
	out := map[string]any{"items": items}
	if more && len(ks) > 0 {
		out["nextCursor"] = cursor(ks[len(ks)-1])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeKey answers a DELETE of any kind of key: 204, or 404 when there is no such key.
func revokeKey[K, R any](w http.ResponseWriter, r *http.Request, kind keys.Kind[K, R]) error {
	if _, err := kind.Revoke(r.Context(), actorOf(r), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// The JSON forms of keys (backend/view).
type (
	apiKeyJSON         = view.APIKey
	appKeyJSON         = view.AppKey
	publishableKeyJSON = view.PublishableKey
	// CreatedAppKey is the 201 answer of POST /api/v1/auth/app-keys: the only place the key and its
	// MQTT password are ever shown.
	CreatedAppKey = view.CreatedAppKey
	// AppKeyMQTT is the MQTT login of a new application key: the key as username, its own password.
	AppKeyMQTT = view.AppKeyMQTT
	// CreatedPublishableKey is the 201 answer of POST /api/v1/auth/publishable-keys: the only place the
	// key is shown.
	CreatedPublishableKey = view.CreatedPublishableKey
)

var (
	apiKeyView         = view.APIKeyOf
	appKeyView         = view.AppKeyOf
	publishableKeyView = view.PublishableKeyOf
)

// Device API keys.

type createKeyRequest struct {
	Name      string     `json:"name"`
	AgentUUID string     `json:"agentUuid"`
	ExpiresAt *time.Time `json:"expiresAt"`
	Rights    []string   `json:"rights"`
}

type createdKeyJSON struct {
	apiKeyJSON
	APIKey string `json:"apiKey"`
}

// createDeviceKey: POST /api/v1/auth/api-keys (admin). The key is in this answer only.
func (h keysAPI) createDeviceKey(w http.ResponseWriter, r *http.Request) error {
	var req createKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	c, err := h.svc.Device.Create(r.Context(), actorOf(r), keys.DeviceKeyRequest{Name: req.Name, AgentUUID: req.AgentUUID, ExpiresAt: req.ExpiresAt, Rights: req.Rights})
	if err != nil {
		return err
	}
	writeCreated(w, "/api/v1/auth/api-keys/"+c.Key.ID, createdKeyJSON{apiKeyJSON: apiKeyView(c.Key), APIKey: c.Secret.Reveal()})
	return nil
}

// listDeviceKeys: GET /api/v1/auth/api-keys[?agentUuid=&limit=&cursor=] (admin). Newest first.
func (h keysAPI) listDeviceKeys(w http.ResponseWriter, r *http.Request) error {
	return listKeys(w, r, h.svc.Device, keys.Filter{AgentUUID: r.URL.Query().Get("agentUuid")}, apiKeyView,
		func(k store.APIKey) string { return FormatCursor(k.CreatedAt, k.ID) })
}

// revokeDeviceKey: DELETE /api/v1/auth/api-keys/{id} (admin). The database trigger tells every broker,
// which closes the agent's sessions that used the key within a second.
func (h keysAPI) revokeDeviceKey(w http.ResponseWriter, r *http.Request) error {
	return revokeKey(w, r, h.svc.Device)
}

// Application keys.

type createAppKeyRequest struct {
	Name      string           `json:"name"`
	Rights    []string         `json:"rights"`
	Topics    []store.AppTopic `json:"topics"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

// createAppKey: POST /api/v1/auth/app-keys (admin access token only). The key and its MQTT password are
// in this answer only.
func (h keysAPI) createAppKey(w http.ResponseWriter, r *http.Request) error {
	var req createAppKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	c, err := h.svc.App.Create(r.Context(), actorOf(r), keys.AppKeyRequest{Name: req.Name, Rights: req.Rights, Topics: req.Topics, ExpiresAt: req.ExpiresAt})
	if err != nil {
		return err
	}
	writeCreated(w, "/api/v1/auth/app-keys/"+c.Key.ID, view.CreatedAppKeyOf(c.Key, c.Secret, c.MQTTPassword))
	return nil
}

// listAppKeys: GET /api/v1/auth/app-keys[?limit=&cursor=] (admin). Display prefixes only, never secrets.
func (h keysAPI) listAppKeys(w http.ResponseWriter, r *http.Request) error {
	return listKeys(w, r, h.svc.App, keys.Filter{}, appKeyView, func(k store.AppKey) string { return FormatCursor(k.CreatedAt, k.ID) })
}

// revokeAppKey: DELETE /api/v1/auth/app-keys/{id} (admin). Its REST calls fail from now on; the
// database trigger tells every broker, which closes the key's MQTT sessions within a second.
func (h keysAPI) revokeAppKey(w http.ResponseWriter, r *http.Request) error {
	return revokeKey(w, r, h.svc.App)
}

// Publishable keys.

type createPublishableKeyRequest struct {
	Name      string           `json:"name"`
	Origins   []string         `json:"origins"`
	Topics    []store.AppTopic `json:"topics"`
	Providers []string         `json:"providers"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

// ValidOrigin checks an exact browser origin (see keys.ValidOrigin); it returns what is wrong, or "".
func ValidOrigin(o string) string { return keys.ValidOrigin(o) }

// createPublishableKey: POST /api/v1/auth/publishable-keys (admin access token only). The key is in this
// answer only.
func (h keysAPI) createPublishableKey(w http.ResponseWriter, r *http.Request) error {
	var req createPublishableKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	c, err := h.svc.Publishable.Create(r.Context(), actorOf(r), keys.PublishableKeyRequest{Name: req.Name, Origins: req.Origins, Topics: req.Topics,
		Providers: req.Providers, ExpiresAt: req.ExpiresAt})
	if err != nil {
		return err
	}
	writeCreated(w, "/api/v1/auth/publishable-keys/"+c.Key.ID, view.CreatedPublishableKeyOf(c.Key, c.Secret))
	return nil
}

// listPublishableKeys: GET /api/v1/auth/publishable-keys[?limit=&cursor=] (admin). Prefixes only.
func (h keysAPI) listPublishableKeys(w http.ResponseWriter, r *http.Request) error {
	return listKeys(w, r, h.svc.Publishable, keys.Filter{}, publishableKeyView,
		func(k store.PublishableKey) string { return FormatCursor(k.CreatedAt, k.ID) })
}

// revokePublishableKey: DELETE /api/v1/auth/publishable-keys/{id} (admin). Exchanges with it fail from
// now on, and the credentials it led to are denied in the same transaction (their sessions close).
func (h keysAPI) revokePublishableKey(w http.ResponseWriter, r *http.Request) error {
	return revokeKey(w, r, h.svc.Publishable)
}

// Provisioning keys.

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

// seconds turns a count of seconds into a duration, saturating where it would overflow (the service
// refuses such a lifetime anyway).
func seconds(n int64) time.Duration {
	switch {
	case n > math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case n < math.MinInt64/int64(time.Second):
		return math.MinInt64
	}
	return time.Duration(n) * time.Second
}

// createProvisioningKey: POST /api/v1/provision/keys (admin, operator). The body may be omitted.
func (h keysAPI) createProvisioningKey(w http.ResponseWriter, r *http.Request) error {
	var req createProvKeyRequest
	if err := decodeOptionalJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	p := keys.ProvisioningKeyRequest{Name: req.Name}
	if req.ExpiresIn != nil {
		d := seconds(*req.ExpiresIn)
		p.ExpiresIn = &d
	}
	c, err := h.svc.Provisioning.Create(r.Context(), actorOf(r), p)
	if err != nil {
		return err
	}
	k := c.Key
	writeCreated(w, "/api/v1/provision/keys/"+k.ID, createdProvKeyJSON{ID: k.ID, Key: c.Secret.Reveal(), Name: k.Name, Prefix: k.Prefix, ExpiresAt: k.ExpiresAt})
	return nil
}

// listProvisioningKeys: GET /api/v1/provision/keys[?limit=&cursor=] (admin, operator). Never the keys.
// Newest first, keyset pagination.
func (h keysAPI) listProvisioningKeys(w http.ResponseWriter, r *http.Request) error {
	now := h.now()
	return listKeys(w, r, h.svc.Provisioning, keys.Filter{}, func(k store.ProvisioningKey) provKeyJSON {
		return provKeyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, ExpiresAt: k.ExpiresAt, Expired: !now.Before(k.ExpiresAt),
			CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt}
	}, func(k store.ProvisioningKey) string { return FormatCursor(k.CreatedAt, k.ID) })
}

// deleteProvisioningKey: DELETE /api/v1/provision/keys/{id} (admin, operator).
func (h keysAPI) deleteProvisioningKey(w http.ResponseWriter, r *http.Request) error {
	return revokeKey(w, r, h.svc.Provisioning)
}

// providerCheck refuses a publishable key's identity provider that set does not configure.
func providerCheck(set *oidc.Set) func(string) string {
	return func(name string) string {
		if set == nil {
			return "no identity provider is configured: set OIDC_PROVIDERS_FILE first"
		}
		if _, ok := set.Provider(name); !ok {
			return fmt.Sprintf("identity provider %q is not configured (OIDC_PROVIDERS_FILE)", name)
		}
		return ""
	}
}
