// Package credential is the plain data of a device's credential: what the store reads for one API key
// and what the broker's authorizer decides a connect on (the key's and its agent's state, the agent's
// MQTT password hash and extra ACL rules), and the sentinel errors of a lookup. It holds no SQL and
// imports no database driver, so that the decision packages can use it without reaching PostgreSQL.
package credential

import (
	"errors"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Lookup outcomes that callers branch on with errors.Is. The store returns these very values (its
// ErrNotFound and ErrCorrupt are the same errors), so that a caller that does not import the store can
// still tell them apart.
var (
	// ErrNotFound means no row matched.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt means a row exists but cannot be trusted (NULLs where values belong, malformed ids or
	// hashes). The caller denies and logs; it is never a reason to panic.
	ErrCorrupt = errors.New("corrupt row")
)

// Credential is everything the broker needs to decide a connect by one device API key (or one
// application key, see App): the key's state,
// its agent's state, the agent's MQTT password hash and extra ACL rules.
type Credential struct {
	Digest       secret.Digest
	KeyID        string
	AgentUUID    string
	AgentStatus  string
	KeyRevoked   bool
	KeyExpiresAt time.Time // zero: never expires
	Rights       []string
	PasswordHash string // "" when the agent has no MQTT credentials
	Rules        []Rule
	// Corrupt marks a row that could not be trusted (batch lookups only); deny it.
	Corrupt bool
	// App marks an application key (docs/app-keys.md). AgentUUID then holds the key's own id, which groups its
	// sessions the way an agent's uuid groups a device's; AgentStatus is always "active"; Rules are the
	// key's topics, and the only ones its sessions get.
	App bool
	// Legacy marks an imported device's legacy username (docs/import.md): the "key" is the device's existing
	// MQTT username, looked up by its SHA-256 digest. LegacyClientID is the exact client id it must use;
	// "" lets it use any client id but an agent's.
	Legacy         bool
	LegacyClientID string
}

// Rule is an extra ACL rule for one agent, from acl_rules.
type Rule struct {
	Access  string
	Pattern string
}
