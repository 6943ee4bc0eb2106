package bridge

import (
	"context"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/store"
)

// KeyNamePrefix starts the name of every application key the bridge issues for itself, so that an
// admin listing application keys sees what they are.
const KeyNamePrefix = "iotauth-publish-bridge "

// StoreIssuer issues the bridge's credentials as application keys in PostgreSQL: named
// "iotauth-publish-bridge <host>", no REST rights (presented to the REST API it reaches nothing), a
// write grant on "#" (the REST handler checks each caller's own grants first), and an expiry. Each issue
// and revoke is audited with the actor "system:publish-bridge".
type StoreIssuer struct {
	Store *store.Store
	// Kind is the application key kind of the deployment (secret.AppKey or secret.TestAppKey).
	Kind secret.Kind
	// Host names this replica in the key's name (default Hostname()).
	Host string
}

// auditActor is who the audit trail says acted for the bridge.
const auditActor = "system:publish-bridge"

// Issue creates a new application key for the bridge, valid for ttl.
func (i StoreIssuer) Issue(ctx context.Context, ttl time.Duration) (Credential, error) {
	host := i.Host
	if host == "" {
		host = Hostname()
	}
	k, key, pw, err := i.Store.Keys.CreateAppKey(ctx, store.NewAppKeyParams{
		Name:    KeyNamePrefix + host,
		Kind:    i.Kind,
		Rights:  []string{},
		Topics:  []store.AppTopic{{Access: string(topicfilter.Write), Pattern: "#"}},
		Expires: time.Now().Add(ttl),
	}, store.AuditEvent{Actor: auditActor, Action: "app_key_create", Detail: map[string]any{"name": KeyNamePrefix + host, "purpose": "publish bridge service credential"}})
	if err != nil {
		return Credential{}, err
	}
	exp := time.Now().Add(ttl)
	if k.ExpiresAt != nil {
		exp = *k.ExpiresAt
	}
	return Credential{ID: k.ID, Username: key, Password: pw, ExpiresAt: exp}, nil
}

// Revoke revokes one of the bridge's keys; the broker closes any session still using it.
func (i StoreIssuer) Revoke(ctx context.Context, id string) error {
	_, err := i.Store.Keys.RevokeAppKey(ctx, id, store.AuditEvent{Actor: auditActor, Action: "app_key_revoke", Detail: map[string]any{"purpose": "publish bridge service credential"}})
	return err
}
