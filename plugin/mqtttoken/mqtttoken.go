// Package mqtttoken verifies short-lived MQTT credentials for the plugin's authorizer: it reads the
// Ed25519 public keys from the file plugin_opt_mqtt_token_public_key names (at start and on every
// reload) and implements auth.TokenVerifier with backend/core/mqttcred. It stands apart from plugin/auth
// because mqttcred parses keys with crypto/x509, which brings in net and runtime/cgo: the authorizer
// stays pure and sees only the small interface it declares.
package mqtttoken

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/plugin/auth"
)

// maxKeyFile bounds the key file read (a few PEM public keys are well under a kilobyte each).
const maxKeyFile = 64 << 10

// Verifier checks credentials with the keys of one file. It is safe for concurrent use; Reload swaps
// the keys atomically.
type Verifier struct {
	path string
	now  func() time.Time
	v    atomic.Pointer[mqttcred.Verifying]
	n    atomic.Int32
}

// Open reads the keys at path; now may be nil (time.Now).
func Open(path string, now func() time.Time) (*Verifier, error) {
	v := &Verifier{path: path, now: now}
	if err := v.Reload(); err != nil {
		return nil, err
	}
	return v, nil
}

// Reload reads the key file again. On an error the keys in use stay.
func (v *Verifier) Reload() error {
	keys, err := readKeys(v.path)
	if err != nil {
		return err
	}
	v.v.Store(mqttcred.NewVerifying(keys, v.now))
	v.n.Store(int32(len(keys)))
	return nil
}

// Keys is the number of public keys in use.
func (v *Verifier) Keys() int { return int(v.n.Load()) }

func readKeys(path string) ([]ed25519.PublicKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("plugin_opt_mqtt_token_public_key: %w (give the path of the PEM file `iotauth mqtt-token keygen` wrote)", err)
	}
	if fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("plugin_opt_mqtt_token_public_key %s: %d bytes is too large for a file of public keys", path, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plugin_opt_mqtt_token_public_key: %w", err)
	}
	keys, err := mqttcred.ParsePublicKeys(b)
	if err != nil {
		return nil, fmt.Errorf("plugin_opt_mqtt_token_public_key %s: %w", path, err)
	}
	return keys, nil
}

// VerifyToken implements auth.TokenVerifier.
func (v *Verifier) VerifyToken(username string, password []byte, clientID string) (auth.Token, error) {
	c, err := v.v.Load().Verify(username, password)
	if err != nil {
		return auth.Token{}, err
	}
	t := auth.Token{
		ID: c.ID, Subject: c.Subject, From: c.From, ClientIDAllowed: c.ClientIDAllowed(clientID),
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time,
		Topics: make([]auth.TokenTopic, len(c.Topics)),
	}
	for i, tp := range c.Topics {
		t.Topics[i] = auth.TokenTopic{Access: tp.Access, Pattern: tp.Pattern}
	}
	return t, nil
}
