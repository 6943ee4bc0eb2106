package store

// The domain types. Each holds the shared pool (core) and declares the queries of one part of the
// schema; Store has one field of each. They are values: copying one copies a pointer, and each
// satisfies the small interfaces its consumers declare.

// Agents is agents and their provisioning: create (one, audited, in bulk), list and count, export,
// desired and reported state, password rotation, activation, decommissioning, and redeeming a
// provisioning key into a new agent.
type Agents struct{ *core }

// Keys is the keys that operators issue: device (API) keys, application keys, publishable keys and
// provisioning keys: create, list, count, revoke, look up by digest, and mark as used.
type Keys struct{ *core }

// Accounts is the operators: users, the API's refresh-token families, console sessions and the login
// throttle's counter.
type Accounts struct{ *core }

// AuditTrail is the audit events: write one or many, list, count, and the readable names of the
// references they hold.
type AuditTrail struct{ *core }

// Presence is who is connected where: the plugin's presence writes, heartbeats and reconciliation,
// pruning, and the queries the API and console read (an agent's presence and sessions, the summary,
// activity over time).
type Presence struct{ *core }

// Credentials is what the plugin reads and writes on its side: credential lookups by digest (one or
// in a batch), the loaders that warm its caches (active credentials, key digests, legacy digests,
// denials), last-used marks, denied subjects, and the legacy accounts' import and migration.
type Credentials struct{ *core }

// newStore builds a Store whose domain types share c.
func newStore(c *core) *Store {
	return &Store{core: c, Agents: Agents{c}, Keys: Keys{c}, Accounts: Accounts{c},
		AuditTrail: AuditTrail{c}, Presence: Presence{c}, Credentials: Credentials{c}}
}
