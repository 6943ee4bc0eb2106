package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotauth/iotauth/plugin/acl"
)

// TokenUsernamePrefix starts the MQTT username of a short-lived credential (mqttcred.UsernamePrefix; a
// test of plugin/mqtttoken keeps the two equal). Such a username is never a key: it goes to the token
// verifier (which may remember what it verified, never past exp), with no store and no lookup budget;
// the deny list and the client id rule are checked here on every connect.
const TokenUsernamePrefix = "iotmq_"

// MaxTokenPasswordLen bounds a short-lived credential's password, a compact JWS (mqttcred.MaxPasswordLen).
const MaxTokenPasswordLen = 4096

// TokenAgentPrefix starts the Agent of a short-lived credential's session, followed by the token's
// subject: sessions of one subject are one principal (a client id may pass between its tokens), and no
// agent uuid or application key id can look like it.
const TokenAgentPrefix = "token:"

// Refusals of short-lived credentials.
var (
	ErrTokensOff         = errors.New("short-lived credential presented but plugin_opt_mqtt_token_public_key is not set")
	ErrTokenInvalid      = errors.New("not a valid short-lived MQTT credential (signature, issuer, audience, type, lifetime, topics or username)")
	ErrTokenExpired      = errors.New("short-lived MQTT credential expired; get a new one from the token exchange")
	ErrTokenDenied       = errors.New("short-lived MQTT credential derives from a revoked key, user or provider")
	ErrTokenClientID     = errors.New("client id is not one the short-lived credential allows (its client id prefix, never an agent's)")
	ErrDenyListNotLoaded = errors.New("short-lived MQTT credentials are refused until the deny list has been loaded from PostgreSQL once")
	ErrTokenKeyRemoved   = errors.New("short-lived MQTT credential was verified with a public key that a reload removed from plugin_opt_mqtt_token_public_key; get a new one from the token exchange")
)

// TokenTopic is one topic grant of a credential, as signed.
type TokenTopic struct {
	Access, Pattern string
}

// Token is a verified short-lived credential, as the verifier hands it over.
type Token struct {
	ID, Subject string
	Topics      []TokenTopic
	// From lists the subjects it derives from, which the deny list is asked about.
	From                []string
	IssuedAt, ExpiresAt time.Time
	// ClientIDAllowed is the verifier's answer for the client id presented (the credential's prefix).
	ClientIDAllowed bool
	// Key names the public key that verified it, for KeyChecker ("" when the verifier does not say).
	Key string
}

// KeyChecker is implemented by a TokenVerifier that can tell whether the key a credential was verified
// with is still in use: RecheckToken then ends the sessions of a key that a reload removed.
type KeyChecker interface {
	KeyLoaded(key string) bool
}

// TokenVerifier checks a short-lived credential's signature and claims with public keys only, and the
// client id against its prefix. Every refusal is an error; the password is never part of it.
type TokenVerifier interface {
	VerifyToken(username string, password []byte, clientID string) (Token, error)
}

// DenyList is the in-memory subject deny list (plugin/denylist).
type DenyList interface {
	// Denied reports a subject of from that was denied at or after issuedAt.
	Denied(from []string, issuedAt time.Time) (subject string, denied bool)
	// Loaded reports whether the list was loaded from the store at least once.
	Loaded() bool
}

// TokenInfo is what a short-lived credential's session keeps for re-checks against the deny list.
type TokenInfo struct {
	ID, Subject string
	From        []string
	IssuedAt    time.Time
	// Key names the public key that verified the credential (Token.Key).
	Key string
}

// TokenRefused is the error of a refused connect by a well-signed credential: it names the token and its
// subject (for the audit trail) and unwraps to the reason.
type TokenRefused struct {
	ID, Subject string
	Err         error
}

// Error is the reason's text.
func (e *TokenRefused) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *TokenRefused) Unwrap() error { return e.Err }

// authorizeToken admits a short-lived credential: a valid signature and claims, no denied subject, a
// client id the token allows that is not an agent's; its topics, exactly, are the session's rules.
func (a *Authorizer) authorizeToken(c Credentials) (_ Session, err error) {
	if a.cfg.Tokens == nil {
		a.tokensOff.Do(func() { a.cfg.Log.Warn(ErrTokensOff.Error() + ": refusing every iotmq_ username") })
		return Session{}, ErrTokensOff
	}
	if len(c.Password) == 0 {
		return Session{}, ErrNoCredentials
	}
	if len(c.Password) > MaxTokenPasswordLen {
		return Session{}, ErrTokenInvalid
	}
	tok, err := a.cfg.Tokens.VerifyToken(c.Username, c.Password, c.ClientID)
	if err != nil {
		return Session{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !a.cfg.Now().Before(tok.ExpiresAt) {
		return Session{}, ErrTokenExpired // within the verifier's clock-skew leeway, but over
	}
	defer func() {
		if err != nil {
			err = &TokenRefused{ID: tok.ID, Subject: tok.Subject, Err: err}
		}
	}()
	if err := a.tokenDenied(tok.From, tok.IssuedAt); err != nil {
		return Session{}, err
	}
	if c.ClientID == "" || !tok.ClientIDAllowed || strings.HasPrefix(c.ClientID, AgentClientIDPrefix) || a.agentClientID(c.ClientID) {
		return Session{}, ErrTokenClientID
	}
	rules := make([]acl.Template, 0, len(tok.Topics))
	for _, t := range tok.Topics {
		r, err := acl.ParseLiteral(t.Access, t.Pattern)
		if err != nil {
			return Session{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
		}
		rules = append(rules, r)
	}
	src := Entry{flags: flagApp | flagActive | flagMQTTRight}
	src.ext().rules = rules
	return Session{
		Name: a.cfg.TokenNamePrefix + tok.ID, Agent: TokenAgentPrefix + tok.Subject, ClientID: c.ClientID,
		ExpiresAt: tok.ExpiresAt, PasswordSum: sha256.Sum256(c.Password), rules: rules, src: src,
		Token: &TokenInfo{ID: tok.ID, Subject: tok.Subject, From: tok.From, IssuedAt: tok.IssuedAt, Key: tok.Key},
	}, nil
}

func (a *Authorizer) tokenDenied(from []string, issuedAt time.Time) error {
	if a.cfg.Denials == nil || !a.cfg.Denials.Loaded() {
		return ErrDenyListNotLoaded
	}
	if s, denied := a.cfg.Denials.Denied(from, issuedAt); denied {
		return fmt.Errorf("%w (%s)", ErrTokenDenied, s)
	}
	return nil
}

// RecheckToken decides whether a short-lived credential's live session may stay: not expired, and none
// of its subjects denied since it was issued. It asks no store. A deny list not yet loaded keeps the
// session (it was admitted against a loaded one, or the list is being reloaded).
func (a *Authorizer) RecheckToken(s Session) error {
	if s.Token == nil {
		return nil
	}
	if a.Expired(s) {
		return ErrTokenExpired
	}
	if kc, ok := a.cfg.Tokens.(KeyChecker); ok && s.Token.Key != "" && !kc.KeyLoaded(s.Token.Key) {
		return ErrTokenKeyRemoved
	}
	if a.cfg.Denials == nil || !a.cfg.Denials.Loaded() {
		return nil
	}
	if sub, denied := a.cfg.Denials.Denied(s.Token.From, s.Token.IssuedAt); denied {
		return fmt.Errorf("%w (%s)", ErrTokenDenied, sub)
	}
	return nil
}
