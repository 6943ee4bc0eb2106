// Package token owns the operator JWTs of the REST API: it loads and vets the signing key (HS256 with a
// shared secret, RS256 or EdDSA with a key pair), issues access and refresh tokens, and verifies them with
// exactly one algorithm, a required expiry, issuer, audience and issue time, and a `typ` claim that keeps
// access and refresh tokens (and anyone else's JWTs, such as license tokens) out of each other's place.
//
// golang-jwt's defaults are not safe on their own (docs/security.md, J1–J7): the parser here always pins the
// configured algorithm, never lets a token header choose or fetch a key, and requires exp and iat.
package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token types carried in the `typ` claim.
const (
	TypeAccess  = "access"
	TypeRefresh = "refresh"
)

// Limits on the signing keys (docs/security.md, J5).
const (
	MinSecretBytes = 32
	MinRSABits     = 2048
	// MaxLeeway is the most clock skew the verifier tolerates.
	MaxLeeway = 60 * time.Second
)

// Advice printed with key errors, so that an operator knows how to make a good key.
const (
	secretAdvice  = "generate one with: openssl rand -base64 48"
	keyPairAdvice = "generate a pair with: openssl genpkey -algorithm ed25519 -out jwt.key && openssl pkey -in jwt.key -pubout -out jwt.pub " +
		"(or RSA: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out jwt.key)"
)

// ErrWeakKey wraps every refusal of a signing key or secret.
var ErrWeakKey = errors.New("signing key refused")

// ErrInvalid is returned for any token that must not be accepted. The wrapped detail is for logs only;
// clients get one generic answer.
var ErrInvalid = errors.New("invalid token")

// Config describes how tokens are signed and checked.
type Config struct {
	// Secret selects HS256. It must be at least MinSecretBytes long and not trivially repetitive.
	Secret []byte
	// PrivateKeyPEM selects RS256 (an RSA key of at least MinRSABits) or EdDSA (an Ed25519 key), in PKCS#8
	// or PKCS#1 PEM. PublicKeyPEM, when given, must be the matching public key.
	PrivateKeyPEM []byte
	PublicKeyPEM  []byte
	// Issuer and Audience are written into every token and required on every token read.
	Issuer   string
	Audience string
	// AccessTTL is the lifetime of access tokens (default 1 h); RefreshTTL that of one refresh token
	// (default 7 days).
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	// Leeway tolerates clock skew between issuers and verifiers; at most MaxLeeway (default 30 s).
	Leeway time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Manager issues and verifies tokens with one configured algorithm and key.
type Manager struct {
	alg      jwt.SigningMethod
	signKey  any
	verify   any
	issuer   string
	audience string
	access   time.Duration
	refresh  time.Duration
	leeway   time.Duration
	now      func() time.Time
	parser   *jwt.Parser
}

// New vets the key material and returns a Manager. Weak or mismatched keys are refused with an error
// that says how to make a good one.
func New(c Config) (*Manager, error) {
	m := &Manager{issuer: c.Issuer, audience: c.Audience, access: c.AccessTTL, refresh: c.RefreshTTL, leeway: c.Leeway, now: c.Now}
	if m.issuer == "" {
		m.issuer = "iotauth"
	}
	if m.audience == "" {
		m.audience = "iotauth-api"
	}
	if m.access == 0 {
		m.access = time.Hour
	}
	if m.refresh == 0 {
		m.refresh = 7 * 24 * time.Hour
	}
	if m.access < 0 || m.refresh < 0 {
		return nil, errors.New("token lifetimes must be positive")
	}
	if c.Leeway == 0 {
		m.leeway = 30 * time.Second
	}
	if m.leeway < 0 || m.leeway > MaxLeeway {
		return nil, fmt.Errorf("JWT leeway %s is outside 0..%s", c.Leeway, MaxLeeway)
	}
	if m.now == nil {
		m.now = time.Now
	}
	hasSecret := len(c.Secret) > 0
	hasPair := len(c.PrivateKeyPEM) > 0 || len(c.PublicKeyPEM) > 0
	switch {
	case hasSecret && hasPair:
		return nil, fmt.Errorf("%w: both JWT_SECRET and JWT_PRIVATE_KEY/JWT_PUBLIC_KEY are set: choose one signing method", ErrWeakKey)
	case hasSecret:
		if err := checkSecret(c.Secret); err != nil {
			return nil, err
		}
		key := append([]byte(nil), c.Secret...)
		m.alg, m.signKey, m.verify = jwt.SigningMethodHS256, key, key
	case hasPair:
		if err := m.loadPair(c.PrivateKeyPEM, c.PublicKeyPEM); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: no signing key: set JWT_SECRET (%s) or JWT_PRIVATE_KEY and JWT_PUBLIC_KEY (%s)", ErrWeakKey, secretAdvice, keyPairAdvice)
	}
	m.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{m.alg.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(m.issuer),
		jwt.WithAudience(m.audience),
		jwt.WithLeeway(m.leeway),
		jwt.WithTimeFunc(m.now),
		jwt.WithStrictDecoding(),
	)
	return m, nil
}

func checkSecret(s []byte) error {
	if len(s) < MinSecretBytes {
		return fmt.Errorf("%w: JWT_SECRET is %d bytes; HS256 needs at least %d random bytes: %s", ErrWeakKey, len(s), MinSecretBytes, secretAdvice)
	}
	distinct := map[byte]struct{}{}
	for _, b := range s {
		distinct[b] = struct{}{}
	}
	if len(distinct) < 12 {
		return fmt.Errorf("%w: JWT_SECRET is too repetitive to be random: %s", ErrWeakKey, secretAdvice)
	}
	return nil
}

func (m *Manager) loadPair(privPEM, pubPEM []byte) error {
	if len(privPEM) == 0 {
		return fmt.Errorf("%w: JWT_PUBLIC_KEY is set but JWT_PRIVATE_KEY is not; the API signs tokens and needs the private key: %s", ErrWeakKey, keyPairAdvice)
	}
	priv, err := parsePrivate(privPEM)
	if err != nil {
		return fmt.Errorf("%w: JWT_PRIVATE_KEY: %v: %s", ErrWeakKey, err, keyPairAdvice)
	}
	var pub crypto.PublicKey
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("%w: JWT_PRIVATE_KEY is a %d-bit RSA key; at least %d bits are required: %s", ErrWeakKey, bits, MinRSABits, keyPairAdvice)
		}
		m.alg, pub = jwt.SigningMethodRS256, &k.PublicKey
	case ed25519.PrivateKey:
		m.alg, pub = jwt.SigningMethodEdDSA, k.Public()
	default:
		return fmt.Errorf("%w: JWT_PRIVATE_KEY is a %T; use an RSA (RS256) or Ed25519 (EdDSA) key: %s", ErrWeakKey, priv, keyPairAdvice)
	}
	if len(pubPEM) > 0 {
		given, err := parsePublic(pubPEM)
		if err != nil {
			return fmt.Errorf("%w: JWT_PUBLIC_KEY: %v", ErrWeakKey, err)
		}
		eq, ok := given.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !eq.Equal(pub) {
			return fmt.Errorf("%w: JWT_PUBLIC_KEY does not match JWT_PRIVATE_KEY: derive it with openssl pkey -in jwt.key -pubout", ErrWeakKey)
		}
	}
	m.signKey, m.verify = priv, pub
	return nil
}

// NormalizePEM turns a PEM given in one line with literal "\n" sequences (as environment variables often
// carry it) back into a PEM with real newlines.
func NormalizePEM(s string) []byte {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "\n") && strings.Contains(s, `\n`) {
		s = strings.ReplaceAll(s, `\n`, "\n")
	}
	return []byte(s)
}

func parsePrivate(b []byte) (crypto.PrivateKey, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM (expected -----BEGIN PRIVATE KEY-----)")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("holds more than one PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not an unencrypted private key", block.Type)
}

func parsePublic(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM (expected -----BEGIN PUBLIC KEY-----)")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
}

// Algorithm is the one JWS algorithm in use: HS256, RS256 or EdDSA.
func (m *Manager) Algorithm() string { return m.alg.Alg() }

// AccessTTL is the lifetime of access tokens.
func (m *Manager) AccessTTL() time.Duration { return m.access }

// RefreshTTL is the lifetime of one refresh token (a family may end sooner).
func (m *Manager) RefreshTTL() time.Duration { return m.refresh }

// Claims are the claims of both token types.
type Claims struct {
	jwt.RegisteredClaims
	// Type is "access" or "refresh".
	Type string `json:"typ"`
	// Role is the user's role when the token was issued (access tokens only; informational, the API
	// reads the role from the database).
	Role string `json:"role,omitempty"`
	// Family is the refresh token family (refresh tokens only).
	Family string `json:"fam,omitempty"`
}

// Access is a verified access token.
type Access struct {
	UserID   string
	Role     string
	ID       string
	IssuedAt time.Time
	Expires  time.Time
}

// Refresh is a verified refresh token.
type Refresh struct {
	UserID  string
	ID      string
	Family  string
	Expires time.Time
}

// IssueAccess signs an access token for a user and returns it with its expiry.
func (m *Manager) IssueAccess(userID, role string) (string, time.Time, error) {
	now := m.now().Truncate(time.Second)
	exp := now.Add(m.access)
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: m.issuer, Subject: userID, Audience: jwt.ClaimStrings{m.audience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp), ID: NewID(),
		},
		Type: TypeAccess, Role: role,
	}
	s, err := jwt.NewWithClaims(m.alg, c).SignedString(m.signKey)
	return s, exp, err
}

// IssueRefresh signs a refresh token with the given id, family and expiry (the caller caps the expiry at
// the family's absolute lifetime).
func (m *Manager) IssueRefresh(userID, id, family string, exp time.Time) (string, error) {
	now := m.now().Truncate(time.Second)
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: m.issuer, Subject: userID, Audience: jwt.ClaimStrings{m.audience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp), ID: id,
		},
		Type: TypeRefresh, Family: family,
	}
	return jwt.NewWithClaims(m.alg, c).SignedString(m.signKey)
}

// keyFunc hands the parser the configured verification key. It never looks at kid, jku, x5u or jwk.
func (m *Manager) keyFunc(t *jwt.Token) (any, error) {
	if t.Method == nil || t.Method.Alg() != m.alg.Alg() {
		return nil, errors.New("unexpected signing algorithm")
	}
	return m.verify, nil
}

func (m *Manager) parse(s, typ string) (*Claims, error) {
	if len(s) > 4096 {
		return nil, fmt.Errorf("%w: too long", ErrInvalid)
	}
	var c Claims
	if _, err := m.parser.ParseWithClaims(s, &c, m.keyFunc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.Type != typ {
		return nil, fmt.Errorf("%w: typ %q where %q is required", ErrInvalid, c.Type, typ)
	}
	if c.IssuedAt == nil {
		return nil, fmt.Errorf("%w: no iat", ErrInvalid)
	}
	if c.Subject == "" || c.ID == "" {
		return nil, fmt.Errorf("%w: no sub or jti", ErrInvalid)
	}
	return &c, nil
}

// ParseAccess verifies an access token.
func (m *Manager) ParseAccess(s string) (Access, error) {
	c, err := m.parse(s, TypeAccess)
	if err != nil {
		return Access{}, err
	}
	return Access{UserID: c.Subject, Role: c.Role, ID: c.ID, IssuedAt: c.IssuedAt.Time, Expires: c.ExpiresAt.Time}, nil
}

// ParseRefresh verifies a refresh token.
func (m *Manager) ParseRefresh(s string) (Refresh, error) {
	c, err := m.parse(s, TypeRefresh)
	if err != nil {
		return Refresh{}, err
	}
	if c.Family == "" {
		return Refresh{}, fmt.Errorf("%w: refresh token without family", ErrInvalid)
	}
	return Refresh{UserID: c.Subject, ID: c.ID, Family: c.Family, Expires: c.ExpiresAt.Time}, nil
}

// NewID returns a random version 4 UUID, for token ids and families.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
