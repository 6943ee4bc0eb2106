// Package mqttcred issues and verifies iotauth's short-lived MQTT credentials (docs/short-lived-credentials.md;
// docs/security.md, T3): what a token exchange hands out so that an end user's browser, a dashboard or a mobile app can use
// MQTT for minutes to hours without holding a long-lived secret.
//
// A credential is an MQTT username and password. The username is UsernamePrefix followed by the token's
// id; the password is a compact JWS signed with iotauth's Ed25519 key (EdDSA, the only algorithm
// accepted). Its claims fix everything the session may do: the client id prefix, the topics, the expiry,
// and the subjects it derives from (the application key, publishable key, user or identity provider),
// which a deny list names when one of them is revoked. The broker's plugin verifies it with the public
// key alone: no database query on connect.
package mqttcred

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// UsernamePrefix starts the MQTT username of every short-lived credential; the rest is the token id.
const UsernamePrefix = "iotmq_"

// Issuer and Audience are the fixed iss and aud claims of a credential: no other token of iotauth's
// (access, refresh, license) carries this audience, so none can stand in for another (docs/security.md, J6).
const (
	Issuer   = "iotauth"
	Audience = "iotauth-mqtt"
	// TokenType is the JWS header's typ.
	TokenType = "iotauth-mqtt+jwt"
)

// Lifetimes (docs/token-exchange.md): 15 minutes unless asked, never more than a day.
const (
	DefaultTTL = 15 * time.Minute
	MaxTTL     = 24 * time.Hour
	MinTTL     = time.Minute
)

// Bounds that keep a credential small enough for an MQTT password and cheap to check.
const (
	MaxTopics        = 32
	MaxClientIDLen   = 64
	MaxSubjects      = 4
	MaxSubjectLen    = 200
	MaxPasswordLen   = 4096
	idLen            = 22 // base62 characters of the token id: about 131 bits
	maxClockSkew     = 60 * time.Second
	subjectSeparator = ":"
)

// Topic is one grant: access is read, write or readwrite; pattern an MQTT topic filter (+ and # allowed,
// never a $ topic). It has the JSON shape of an application key's topics.
type Topic struct {
	Access  string `json:"access"`
	Pattern string `json:"pattern"`
}

// Grant is what a credential is issued for.
type Grant struct {
	// Subject names who uses it ("user:<uuid>", "oidc:<provider>:<sub>", ...).
	Subject string
	// ClientIDPrefix starts every client id the credential may use. It must not start with "agent-".
	ClientIDPrefix string
	Topics         []Topic
	// From lists the subjects it derives from ("app:<id>", "pk:<id>", "user:<uuid>", "provider:<name>"):
	// denying any of them ends the credential (docs/security.md, A4).
	From []string
	TTL  time.Duration // 0: DefaultTTL
	// IssuedAt, when set, is the iat: the moment the caller was found valid (the request's arrival), so
	// that a denial committed while the request was in flight still covers the credential. It may not
	// lie in the future nor more than MaxIssueDelay in the past; zero means now.
	IssuedAt time.Time
}

// MaxIssueDelay bounds how far before the signing a Grant's IssuedAt may lie.
const MaxIssueDelay = time.Minute

// Credential is an issued credential: the MQTT username and password (the password is the secret).
type Credential struct {
	Username       string
	Password       string
	ClientIDPrefix string
	ExpiresAt      time.Time
	Topics         []Topic
}

// Claims are a verified credential's contents.
type Claims struct {
	jwt.RegisteredClaims
	ClientIDPrefix string   `json:"cid"`
	Topics         []Topic  `json:"topics"`
	From           []string `json:"from"`
}

// Errors of issuing and verifying. Every refusal of a presented credential wraps ErrInvalid.
var (
	ErrInvalid  = errors.New("not a valid iotauth MQTT credential")
	ErrExpired  = errors.New("iotauth MQTT credential expired")
	ErrBadGrant = errors.New("credential request is not acceptable")
)

// Issuing signs credentials. It is safe for concurrent use.
type Issuing struct {
	key ed25519.PrivateKey
	now func() time.Time
}

// NewIssuing returns an issuer signing with key; now may be nil (time.Now).
func NewIssuing(key ed25519.PrivateKey, now func() time.Time) *Issuing {
	if now == nil {
		now = time.Now
	}
	return &Issuing{key: key, now: now}
}

// PublicKey is the key the broker's plugin verifies with.
func (i *Issuing) PublicKey() ed25519.PublicKey { return i.key.Public().(ed25519.PublicKey) }

// Issue signs a credential for g after checking it (ErrBadGrant names what is wrong).
func (i *Issuing) Issue(g Grant) (Credential, error) {
	ttl := g.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return Credential{}, fmt.Errorf("%w: ttl must be between %s and %s", ErrBadGrant, MinTTL, MaxTTL)
	}
	if err := checkGrant(g.Subject, g.ClientIDPrefix, g.Topics, g.From); err != nil {
		return Credential{}, err
	}
	id, err := newID()
	if err != nil {
		return Credential{}, err
	}
	now := i.now()
	if !g.IssuedAt.IsZero() {
		if g.IssuedAt.After(now) || now.Sub(g.IssuedAt) > MaxIssueDelay {
			return Credential{}, fmt.Errorf("%w: issued-at must lie within %s before now", ErrBadGrant, MaxIssueDelay)
		}
		now = g.IssuedAt
	}
	now = now.Truncate(time.Second)
	exp := now.Add(ttl)
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: g.Subject, Audience: jwt.ClaimStrings{Audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp), ID: id,
		},
		ClientIDPrefix: g.ClientIDPrefix, Topics: g.Topics, From: g.From,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	tok.Header["typ"] = TokenType
	signed, err := tok.SignedString(i.key)
	if err != nil {
		return Credential{}, fmt.Errorf("sign MQTT credential: %w", err)
	}
	if len(signed) > MaxPasswordLen {
		return Credential{}, fmt.Errorf("%w: too many or too long topics for one credential", ErrBadGrant)
	}
	return Credential{Username: UsernamePrefix + id, Password: signed, ClientIDPrefix: g.ClientIDPrefix,
		ExpiresAt: exp, Topics: g.Topics}, nil
}

// Verifying checks credentials with public keys only. It is safe for concurrent use.
type Verifying struct {
	keys   []ed25519.PublicKey
	parser *jwt.Parser
}

// NewVerifying returns a verifier that accepts credentials signed by any of keys (more than one while a
// signing key is rotated); now may be nil (time.Now).
func NewVerifying(keys []ed25519.PublicKey, now func() time.Time) *Verifying {
	if now == nil {
		now = time.Now
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(Issuer), jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithLeeway(maxClockSkew), jwt.WithTimeFunc(now),
	)
	return &Verifying{keys: keys, parser: p}
}

// IsUsername reports whether an MQTT username names a short-lived credential (only its prefix is looked
// at: a cheap dispatch before any verification).
func IsUsername(username string) bool { return strings.HasPrefix(username, UsernamePrefix) }

// Verify checks a presented username and password: the signature with one of the configured keys, the
// fixed issuer, audience and type, the lifetime, and that the username names this very token. It returns
// the claims only when all hold; every refusal wraps ErrInvalid (ErrExpired too for an expired one).
func (v *Verifying) Verify(username string, password []byte) (Claims, error) {
	c, _, err := v.VerifyIndex(username, password)
	return c, err
}

// VerifyIndex is Verify that also says which of the configured keys (its index) verified the signature.
func (v *Verifying) VerifyIndex(username string, password []byte) (Claims, int, error) {
	if !IsUsername(username) || len(username) != len(UsernamePrefix)+idLen {
		return Claims{}, -1, fmt.Errorf("%w: the username must be the one issued with it", ErrInvalid)
	}
	if len(password) == 0 || len(password) > MaxPasswordLen {
		return Claims{}, -1, fmt.Errorf("%w: password length", ErrInvalid)
	}
	var lastErr error
	for i, k := range v.keys {
		var c Claims
		tok, err := v.parser.ParseWithClaims(string(password), &c, func(t *jwt.Token) (any, error) {
			if typ, _ := t.Header["typ"].(string); typ != TokenType {
				return nil, errors.New("wrong token type")
			}
			return k, nil
		})
		if err == nil && tok.Valid {
			c, err := v.check(username, c)
			if err != nil {
				return Claims{}, -1, err
			}
			return c, i, nil
		}
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Claims{}, -1, fmt.Errorf("%w: %w", ErrInvalid, ErrExpired)
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no verification key configured")
	}
	return Claims{}, -1, fmt.Errorf("%w: %v", ErrInvalid, lastErr)
}

func (v *Verifying) check(username string, c Claims) (Claims, error) {
	if c.ID != username[len(UsernamePrefix):] {
		return Claims{}, fmt.Errorf("%w: the username does not name this token", ErrInvalid)
	}
	if c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) > MaxTTL {
		return Claims{}, fmt.Errorf("%w: lifetime longer than %s", ErrInvalid, MaxTTL)
	}
	if err := checkGrant(c.Subject, c.ClientIDPrefix, c.Topics, c.From); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, nil
}

// ClientIDAllowed reports whether clientID may be used with c: it starts with the credential's prefix
// and is longer than it, and is not an agent's.
func (c Claims) ClientIDAllowed(clientID string) bool {
	return len(clientID) > len(c.ClientIDPrefix) && strings.HasPrefix(clientID, c.ClientIDPrefix) &&
		!strings.HasPrefix(clientID, agentClientIDPrefix)
}

// agentClientIDPrefix starts every agent's client id: never granted to another principal (docs/security.md, A3).
const agentClientIDPrefix = "agent-"

func checkGrant(subject, clientIDPrefix string, topics []Topic, from []string) error {
	switch {
	case subject == "" || len(subject) > MaxSubjectLen:
		return fmt.Errorf("%w: a subject of 1 to %d bytes is required", ErrBadGrant, MaxSubjectLen)
	case clientIDPrefix == "" || len(clientIDPrefix) > MaxClientIDLen || strings.ContainsAny(clientIDPrefix, "+#/"):
		return fmt.Errorf("%w: the client id prefix must be 1 to %d bytes without + # /", ErrBadGrant, MaxClientIDLen)
	case strings.HasPrefix(clientIDPrefix, agentClientIDPrefix) || strings.HasPrefix(agentClientIDPrefix, clientIDPrefix):
		return fmt.Errorf("%w: the client id prefix may not reach an agent's client ids (agent-…)", ErrBadGrant)
	case len(topics) == 0 || len(topics) > MaxTopics:
		return fmt.Errorf("%w: between 1 and %d topics are required", ErrBadGrant, MaxTopics)
	case len(from) == 0 || len(from) > MaxSubjects:
		return fmt.Errorf("%w: between 1 and %d source subjects are required", ErrBadGrant, MaxSubjects)
	}
	for _, s := range from {
		if s == "" || len(s) > MaxSubjectLen || !strings.Contains(s, subjectSeparator) {
			return fmt.Errorf("%w: source subject %q must look like kind:id", ErrBadGrant, s)
		}
	}
	for _, t := range topics {
		if err := CheckTopic(t); err != nil {
			return fmt.Errorf("%w: %w", ErrBadGrant, err)
		}
	}
	return nil
}

// CheckTopic checks one grant: a known access and a well-formed topic filter that is not a $ topic.
func CheckTopic(t Topic) error {
	switch t.Access {
	case "read", "write", "readwrite":
	default:
		return fmt.Errorf("topic access %q: use read, write or readwrite", t.Access)
	}
	if err := topicfilter.Check(t.Pattern); err != nil {
		return fmt.Errorf("topic %q: %w", t.Pattern, err)
	}
	return nil
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func newID() (string, error) {
	b := make([]byte, idLen)
	max := big.NewInt(int64(len(base62)))
	for i := range b {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", fmt.Errorf("token id: %w", err)
		}
		b[i] = base62[n.Int64()]
	}
	return string(b), nil
}

// GenerateKey makes a new Ed25519 signing key and returns it and its public key, PEM-encoded (PKCS #8
// and PKIX), for `iotauth mqtt-token keygen`.
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), nil
}

// ParsePrivateKey reads an Ed25519 private key in PEM (PKCS #8).
func ParsePrivateKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return nil, errors.New("no PEM block found: give an Ed25519 private key as written by `iotauth mqtt-token keygen`")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the MQTT credential signing key is a %T; only Ed25519 is accepted", k)
	}
	return ek, nil
}

// ParsePublicKeys reads one or more Ed25519 public keys in PEM (PKIX), concatenated in one text.
func ParsePublicKeys(pemBytes []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key %d: %w", len(keys)+1, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key %d is a %T; only Ed25519 verifies MQTT credentials", len(keys)+1, k)
		}
		keys = append(keys, ek)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found: give the Ed25519 public key written by `iotauth mqtt-token keygen`")
	}
	return keys, nil
}
