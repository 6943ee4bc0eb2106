// Package mqtttoken verifies short-lived MQTT credentials for the plugin's authorizer: it reads the
// Ed25519 public keys from the file plugin_opt_mqtt_token_public_key names (at start and on every
// reload) and implements auth.TokenVerifier with backend/core/mqttcred. It stands apart from plugin/auth
// because mqttcred parses keys with crypto/x509, which brings in net and runtime/cgo: the authorizer
// stays pure and sees only the small interface it declares.
//
// A credential verified once is remembered (a bounded LRU keyed by the SHA-256 of the whole username
// and password, holding the verified claims), so that a client reconnecting with the same credential
// costs one SHA-256 instead of a signature verification. A remembered credential is never served at or
// after its exp, and the memo is emptied whenever the keys are read again (SIGHUP). The deny list and the
// client id rule are not part of it: the authorizer checks them on every connect.
package mqtttoken

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/auth"
)

// MemoSize bounds the remembered verifications. Each costs about 550 bytes of heap with one topic and two
// source subjects (TestMemoBytesPerEntry measures it: the 32-byte key, the claims' strings and slices, the
// LRU's node and index; longer topic lists cost more), so the default bound is about 5.5 MB.
const MemoSize = 10000

// verified is a remembered verification: the claims as the authorizer gets them, but for the client id
// answer, which depends on the connect.
type verified struct {
	tok    auth.Token
	prefix string
}

type memo = cache.Cache[[sha256.Size]byte, verified, struct{}]

// keys is one reading of the key file with the memo of what those keys verified: a reload replaces both
// at once, so a verification by the old keys never lands in the new memo.
type keys struct {
	v    *mqttcred.Verifying
	memo *memo
	// ids names each key (its 32 bytes as a string, made once per reading): a verified credential
	// carries the id of the key that verified it, so that a session can be ended when its key goes.
	ids []string
}

// maxKeyFile bounds the key file read (a few PEM public keys are well under a kilobyte each).
const maxKeyFile = 64 << 10

// Verifier checks credentials with the keys of one file. It is safe for concurrent use; Reload swaps
// the keys atomically.
type Verifier struct {
	path     string
	now      func() time.Time
	memoSize int
	k        atomic.Pointer[keys]
	n        atomic.Int32

	memoHits, memoMisses atomic.Uint64
}

// Open reads the keys at path; now may be nil (time.Now). It remembers up to MemoSize verifications.
func Open(path string, now func() time.Time) (*Verifier, error) {
	return OpenMemo(path, now, MemoSize)
}

// OpenMemo is Open remembering up to memoSize verifications (0: none).
func OpenMemo(path string, now func() time.Time, memoSize int) (*Verifier, error) {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{path: path, now: now, memoSize: memoSize}
	if err := v.Reload(); err != nil {
		return nil, err
	}
	return v, nil
}

// Reload reads the key file again and forgets every remembered verification. On an error the keys in
// use, and what they verified, stay.
func (v *Verifier) Reload() error {
	ks, err := readKeys(v.path)
	if err != nil {
		return err
	}
	m, err := cache.New[[sha256.Size]byte](cache.Options[verified, struct{}]{
		// Entries end at their credential's exp (checked on every hit); the TTL only has to outlast it.
		Size: v.memoSize, TTL: mqttcred.MaxTTL + time.Hour, Now: v.now,
	})
	if err != nil {
		return err
	}
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = string(k)
	}
	v.k.Store(&keys{v: mqttcred.NewVerifying(ks, v.now), memo: m, ids: ids})
	v.n.Store(int32(len(ks)))
	return nil
}

// MemoStats are the memo's counters: connects answered from it, connects that verified a signature, and
// the verifications it holds.
func (v *Verifier) MemoStats() (hits, misses uint64, held int) {
	return v.memoHits.Load(), v.memoMisses.Load(), v.k.Load().memo.Len()
}

// Keys is the number of public keys in use.
func (v *Verifier) Keys() int { return int(v.n.Load()) }

// KeyLoaded reports whether the key a credential was verified with (auth.Token.Key) is still among the
// keys in use: after a reload without it, sessions it admitted are ended (auth.Authorizer.RecheckToken).
func (v *Verifier) KeyLoaded(id string) bool {
	for _, k := range v.k.Load().ids {
		if k == id {
			return true
		}
	}
	return false
}

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

// memoKey is the SHA-256 of the whole credential: username, a zero byte (which neither contains), password.
func memoKey(username string, password []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(username))
	h.Write([]byte{0})
	h.Write(password)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// VerifyToken implements auth.TokenVerifier. The returned Token's slices are shared with the memo: read
// them, never change them.
func (v *Verifier) VerifyToken(username string, password []byte, clientID string) (auth.Token, error) {
	ks := v.k.Load()
	var k [sha256.Size]byte
	if v.memoSize > 0 {
		k = memoKey(username, password)
		if m, r := ks.memo.Get(k); r == cache.Hit {
			if v.now().Before(m.tok.ExpiresAt) {
				v.memoHits.Add(1)
				t := m.tok
				t.ClientIDAllowed = mqttcred.Claims{ClientIDPrefix: m.prefix}.ClientIDAllowed(clientID)
				return t, nil
			}
			ks.memo.Remove(k) // expired: verified again below, which refuses it
		}
	}
	v.memoMisses.Add(1)
	start := v.now()
	c, i, err := ks.v.VerifyIndex(username, password)
	if err != nil {
		return auth.Token{}, err
	}
	t := auth.Token{
		ID: c.ID, Subject: c.Subject, From: c.From, Key: ks.ids[i],
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time,
		Topics: make([]auth.TokenTopic, len(c.Topics)),
	}
	for i, tp := range c.Topics {
		t.Topics[i] = auth.TokenTopic{Access: tp.Access, Pattern: tp.Pattern}
	}
	if v.memoSize > 0 {
		ks.memo.Add(k, verified{tok: t, prefix: c.ClientIDPrefix}, start)
	}
	t.ClientIDAllowed = c.ClientIDAllowed(clientID)
	return t, nil
}
