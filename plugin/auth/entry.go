package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/plugin/acl"
)

// Entry is the cached, compact form of a credential.Credential, stored by value in the cache. The common
// credential — canonical uuids, a sha256$ password hash, no extra ACL rules — is 88 bytes and nothing
// else: the uuids are kept as 16 bytes each and the password hash as its 32-byte digest, the strings are
// rebuilt only when a Session is made, and the fingerprint is recomputed only by Recheck. Anything else
// (a slow hash scheme, extra rules, identifiers that are not canonical uuids) lives in a separately
// allocated extension, x.
type Entry struct {
	expiresAt int64 // unix ns, 0 = never
	agent     uuid.UUID
	keyID     uuid.UUID
	sum       [32]byte  // the SHA-256 password digest when scheme is passhash.SHA256
	x         *entryExt // nil for the common credential
	scheme    passhash.Scheme
	flags     entryFlags
}

type entryFlags uint8

const (
	flagActive entryFlags = 1 << iota
	flagRevoked
	flagMQTTRight
	flagCorrupt
	flagAgentInExt // the agent is not a canonical uuid: x.agent holds it
	flagKeyIDInExt // the key id is not a canonical uuid: x.keyID holds it
	flagApp        // an application key: agent is the key's own id, rules its topics
	flagLegacy     // an imported device's legacy username (docs/import.md): x.legacyClientID is its client id rule
)

// entryExt holds the parts of an Entry that the common credential does not have.
type entryExt struct {
	hash         passhash.Hash // slow schemes keep their encoded form here
	rules        []acl.Template
	fingerprint  [32]byte // set when it cannot be derived from scheme and sum
	fpSet        bool
	agent, keyID string
	// legacyClientID is the exact client id of a legacy username ("": any but an agent's).
	legacyClientID string
	// verified is the SHA-256 of the password once a slow hash accepted it: later connects, right or
	// wrong, are then answered with one SHA-256 instead of a KDF on the broker thread.
	verified atomic.Pointer[[32]byte]
}

// NewEntry compacts a store credential into a cache entry. Problems with the row (a malformed hash, a
// bad rule) make a Corrupt entry: that agent is denied, nothing else is affected.
func NewEntry(c credential.Credential) Entry {
	var e Entry
	e.setAgent(c.AgentUUID)
	if id, ok := uuid.Parse(c.KeyID); ok {
		e.keyID = id
	} else {
		e.ext().keyID = c.KeyID
		e.flags |= flagKeyIDInExt
	}
	if c.AgentStatus == "active" {
		e.flags |= flagActive
	}
	if c.KeyRevoked {
		e.flags |= flagRevoked
	}
	if c.Corrupt {
		e.flags |= flagCorrupt
	}
	if c.App {
		// An application key's MQTT access is its topics; its rights are REST rights.
		e.flags |= flagApp | flagMQTTRight
	}
	if c.Legacy {
		e.flags |= flagLegacy
		e.ext().legacyClientID = c.LegacyClientID
	}
	if !c.KeyExpiresAt.IsZero() {
		e.expiresAt = c.KeyExpiresAt.UnixNano()
	}
	for _, r := range c.Rights {
		if r == "mqtt" {
			e.flags |= flagMQTTRight
		}
	}
	// The fingerprint can be recomputed from scheme and sum when the stored hash is empty or exactly the
	// canonical sha256$ form, and there are no rules; otherwise it is kept.
	derivable := len(c.Rules) == 0 && !c.App && !c.Legacy
	if c.PasswordHash != "" {
		h, err := passhash.Parse(c.PasswordHash)
		if err != nil {
			e.flags |= flagCorrupt
		}
		e.scheme = h.Scheme()
		if sum, ok := h.SHA256Sum(); ok {
			e.sum = sum
			// Parse accepts either case of hex; only the canonical spelling can be rebuilt from sum.
			var buf [sha256HashLen]byte
			derivable = derivable && string(appendSHA256Hash(buf[:0], &sum)) == c.PasswordHash
		} else {
			derivable = false
			if h.Scheme() != 0 {
				e.ext().hash = h
			}
		}
	}
	if derivable {
		return e
	}
	fp := sha256.New()
	if c.App {
		fp.Write([]byte("app\x00"))
	}
	if c.Legacy {
		fmt.Fprintf(fp, "legacy %q\x00", c.LegacyClientID)
	}
	fp.Write([]byte(c.PasswordHash))
	x := e.ext()
	for _, r := range c.Rules {
		t, err := acl.ParseTemplate(r.Access, r.Pattern)
		if err != nil {
			e.flags |= flagCorrupt
			continue
		}
		x.rules = append(x.rules, t)
		fmt.Fprintf(fp, "\x00%s %s", r.Access, r.Pattern)
	}
	copy(x.fingerprint[:], fp.Sum(nil))
	x.fpSet = true
	return e
}

func (e *Entry) setAgent(agent string) {
	if id, ok := uuid.Parse(agent); ok {
		e.agent = id
		return
	}
	e.ext().agent = agent
	e.flags |= flagAgentInExt
}

// Agent is the agent's uuid.
func (e *Entry) Agent() string {
	if e.flags&flagAgentInExt != 0 {
		return e.x.agent
	}
	return uuid.Format(e.agent)
}

// name returns prefix followed by the agent's id, in one allocation.
func (e *Entry) name(prefix string) string {
	if e.flags&flagAgentInExt != 0 {
		return prefix + e.x.agent
	}
	var buf [64]byte // on the stack: the string below is the one allocation
	return string(uuid.Append(append(buf[:0], prefix...), e.agent))
}

// KeyID is the API key's id.
func (e *Entry) KeyID() string {
	if e.flags&flagKeyIDInExt != 0 {
		return e.x.keyID
	}
	return uuid.Format(e.keyID)
}

// App reports whether the entry is an application key's.
func (e *Entry) App() bool { return e.flags&flagApp != 0 }

// Legacy reports whether the entry is an imported device's legacy username.
func (e *Entry) Legacy() bool { return e.flags&flagLegacy != 0 }

// Corrupt reports whether the credential row could not be trusted; its agent is denied.
func (e *Entry) Corrupt() bool { return e.flags&flagCorrupt != 0 }

func (e *Entry) hash() passhash.Hash {
	switch {
	case e.scheme == passhash.SHA256:
		return passhash.FromSHA256Sum(e.sum)
	case e.x != nil:
		return e.x.hash
	}
	return passhash.Hash{}
}

func (e *Entry) rules() []acl.Template {
	if e.x == nil {
		return nil
	}
	return e.x.rules
}

// fingerprint is the SHA-256 of the stored password hash and the extra rules. For the common credential
// the stored hash is exactly "sha256$" and the lowercase hex of sum (or empty), so it is recomputed
// rather than kept.
func (e *Entry) fingerprint() [32]byte {
	if e.x != nil && e.x.fpSet {
		return e.x.fingerprint
	}
	if e.scheme != passhash.SHA256 {
		return sha256.Sum256(nil) // no stored hash (any other case has the fingerprint in x)
	}
	var buf [sha256HashLen]byte
	return sha256.Sum256(appendSHA256Hash(buf[:0], &e.sum))
}

const (
	sha256Prefix  = "sha256$"
	sha256HashLen = len(sha256Prefix) + 2*sha256.Size
)

// appendSHA256Hash appends the canonical stored form of the sha256$ hash whose digest is sum: the prefix
// and the digest in lowercase hex, as passhash.SHA256Hex writes it.
func appendSHA256Hash(dst []byte, sum *[32]byte) []byte {
	return hex.AppendEncode(append(dst, sha256Prefix...), sum[:])
}

// verify checks password, whose SHA-256 is sum, against the entry's hash. The common sha256$ hash is
// compared with sum directly. For slow schemes the first success is remembered as sum (the entry is
// immutable and replaced when the stored hash changes), so a KDF runs on the broker thread at most until
// the agent's first successful connect; fresh reports that this call was that first success (the caller
// has the fast hash recorded in the store). A KDF runs only while budget allows one (ErrSlowHashBudget
// otherwise), and its duration is charged to the budget.
func verify(e *Entry, h passhash.Hash, password []byte, sum *[32]byte, budget SlowBudget) (ok, fresh bool, err error) {
	if stored, ok := h.SHA256Sum(); ok {
		return subtle.ConstantTimeCompare(sum[:], stored[:]) == 1, false, nil
	}
	if !h.Slow() || e.x == nil {
		return h.Verify(password), false, nil
	}
	if v := e.x.verified.Load(); v != nil {
		return subtle.ConstantTimeCompare(sum[:], v[:]) == 1, false, nil
	}
	if budget != nil {
		if !budget.Allow() {
			return false, false, ErrSlowHashBudget
		}
		start := time.Now()
		defer func() { budget.Spend(time.Since(start)) }()
	}
	if !h.Verify(password) {
		return false, false, nil
	}
	remembered := *sum
	// Only the first of concurrent successes reports fresh.
	return true, e.x.verified.CompareAndSwap(nil, &remembered), nil
}

// ext returns e's extension, allocating it on first use.
func (e *Entry) ext() *entryExt {
	if e.x == nil {
		e.x = &entryExt{}
	}
	return e.x
}
