package auth

import (
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
)

// Session is an authorised connection: who it is, what it may do, and what it was authorised with, so
// that it can be re-checked when credentials change.
type Session struct {
	// Name is the username the broker gives the session in place of the key: the configured prefix and
	// Agent. Agent shares its memory (one allocation per connect for both).
	Name      string
	Agent     string
	ClientID  string
	Digest    secret.Digest
	ExpiresAt time.Time
	// PasswordSum is the SHA-256 of the password the session was admitted with.
	PasswordSum [32]byte
	// OwnsClientID is set for an agent whose client id is the one the configured template gives it (not
	// "any"): no other principal may use that id, so no session of another principal, ended or kept by
	// the broker, ever keeps it from the agent.
	OwnsClientID bool
	// rules are the configured templates followed by the agent's extra rules; ACL expands them.
	rules []acl.Template
	// Token is set for a short-lived credential's session: Agent is then TokenAgentPrefix and its
	// subject, its rules the token's topics, and it is re-checked against the deny list, never the store.
	Token *TokenInfo
	// src is the cache entry the session was admitted with: its fingerprint (of the stored password hash
	// and rules) is what Recheck compares against.
	src Entry
}

// ACL expands the session's rules for its agent and client id (an application key's session may also
// use shared subscriptions). It allocates: callers that check many
// topics keep the result.
func (s *Session) ACL() acl.Set {
	if s.src.App() {
		return acl.ExpandShared(s.rules, s.Agent, s.ClientID)
	}
	return acl.Expand(s.rules, s.Agent, s.ClientID)
}

// App reports whether the session is an application key's or a short-lived credential's (Token): Agent
// is then the key's id (or the token's subject), and its rules are the key's (token's) topics only. Such
// a session never gets the broker's prefix mark (its deliveries may have a read mark, see plugin/session).
func (s *Session) App() bool { return s.src.App() }

// Legacy reports whether the session is an imported device's, admitted by its legacy username.
func (s *Session) Legacy() bool { return s.src.Legacy() }

// Custom reports whether the agent has extra acl_rules beyond the configured templates.
func (s *Session) Custom() bool { return len(s.src.rules()) > 0 }

// KeyID is the id of the API key the session was admitted with, formatted on demand (only logs use it).
func (s *Session) KeyID() string { return s.src.KeyID() }
