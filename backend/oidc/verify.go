package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Errors of Verify. Every refusal of a presented token wraps ErrInvalidToken.
var (
	ErrUnknownProvider = errors.New("no identity provider of that name is configured")
	ErrInvalidToken    = errors.New("the identity provider's token is not valid")
	// ErrExpired (wrapped with ErrInvalidToken) is a token at or past its exp.
	ErrExpired = errors.New("the token has expired")
)

// maxTokenLen bounds a presented token.
const maxTokenLen = 16 << 10

// Identity is a verified token: its provider, subject, expiry, an identifier and every claim.
type Identity struct {
	Provider string
	Subject  string
	Claims   map[string]any
	// Expiry is the token's exp: a credential exchanged for it expires no later, unless the provider
	// says otherwise (Provider.CredentialMayOutliveToken).
	Expiry time.Time
	// TokenID names this one token in the audit trail, so that repeated exchanges of it can be found:
	// "jti:<jti>" (at most 128 bytes of it), or "sha256:<hex>" of the whole token when it has no jti.
	// Neither lets anyone rebuild the token.
	TokenID string
}

// maxJTILen bounds the jti kept in TokenID.
const maxJTILen = 128

// tokenID is Identity.TokenID for a token with the given jti and raw form.
func tokenID(jti, raw string) string {
	if jti != "" {
		if len(jti) > maxJTILen {
			jti = strings.ToValidUTF8(jti[:maxJTILen], "")
		}
		return "jti:" + jti
	}
	sum := sha256.Sum256([]byte(raw))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Options tune a Set; the zero value is production's.
type Options struct {
	// HTTPClient fetches JWKS URLs (default: a client with FetchTimeout and no redirects).
	HTTPClient *http.Client
	// RefreshInterval is the least time between two fetches of one JWKS (DefaultRefreshInterval).
	RefreshInterval time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Set holds the configured providers and their key sets. It is safe for concurrent use, and Replace
// swaps the configuration (SIGHUP) while requests go on.
type Set struct {
	opts Options
	mu   sync.RWMutex
	by   map[string]*verifier
}

type verifier struct {
	p    Provider
	keys *keySet
}

// NewSet builds a Set from a validated configuration.
func NewSet(c Config, o Options) (*Set, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: FetchTimeout, CheckRedirect: noRedirects}
	}
	s := &Set{opts: o}
	s.Replace(c)
	return s, nil
}

// Replace installs a new configuration and returns the names of the providers it no longer has (their
// credentials must be denied, docs/security.md, A4). A provider whose JWKS source is unchanged keeps its
// cached keys.
func (s *Set) Replace(c Config) (removed []string) {
	by := make(map[string]*verifier, len(c.Providers))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range c.Providers {
		if old, ok := s.by[p.Name]; ok && old.p.JWKSURL == p.JWKSURL && old.p.JWKSFile == p.JWKSFile {
			by[p.Name] = &verifier{p: p, keys: old.keys}
			continue
		}
		by[p.Name] = &verifier{p: p, keys: &keySet{url: p.JWKSURL, file: p.JWKSFile, client: s.opts.HTTPClient,
			interval: s.opts.RefreshInterval, now: s.opts.Now}}
	}
	for name := range s.by {
		if _, ok := by[name]; !ok {
			removed = append(removed, name)
		}
	}
	s.by = by
	return removed
}

// Names lists the configured providers.
func (s *Set) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.by))
	for n := range s.by {
		out = append(out, n)
	}
	return out
}

// Provider returns a configured provider.
func (s *Set) Provider(name string) (Provider, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.by[name]
	if !ok {
		return Provider{}, false
	}
	return v.p, true
}

// Verify checks raw as a token of the named provider (docs/security.md, T1): compact JWS, an algorithm from
// the provider's allow-list, a signature by a key of its JWKS with the token's kid, iss and aud exact,
// exp present and still ahead (without skew), nbf and iat (never in the future) within the provider's
// skew, and a sub.
func (s *Set) Verify(ctx context.Context, name, raw string) (Identity, error) {
	s.mu.RLock()
	v, ok := s.by[name]
	s.mu.RUnlock()
	if !ok {
		return Identity{}, ErrUnknownProvider
	}
	if raw == "" || len(raw) > maxTokenLen {
		return Identity{}, fmt.Errorf("%w: empty or longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	algs := make([]jose.SignatureAlgorithm, 0, len(v.p.algs()))
	for _, a := range v.p.algs() {
		algs = append(algs, jose.SignatureAlgorithm(a))
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return Identity{}, fmt.Errorf("%w: exactly one signature is accepted", ErrInvalidToken)
	}
	h := tok.Headers[0]
	key, err := v.keys.key(ctx, h.KeyID, h.Algorithm)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(key, &std, &all); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if std.Expiry == nil {
		return Identity{}, fmt.Errorf("%w: the token has no exp", ErrInvalidToken)
	}
	if std.Subject == "" {
		return Identity{}, fmt.Errorf("%w: the token has no sub", ErrInvalidToken)
	}
	now := s.opts.Now()
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: v.p.Issuer, AnyAudience: jwt.Audience{v.p.Audience}, Time: now}, v.p.skew()); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	// The skew forgives a provider's clock for nbf and iat, never for exp: a token verified here buys a
	// credential, and an expired token must buy nothing, however little ago it expired.
	exp := std.Expiry.Time()
	if !now.Before(exp) {
		return Identity{}, fmt.Errorf("%w: %w (exp %s is checked without clock skew)", ErrInvalidToken, ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	return Identity{Provider: name, Subject: std.Subject, Claims: all, Expiry: exp, TokenID: tokenID(std.ID, raw)}, nil
}

// keyFits reports whether a JWK's key is of the type alg needs (go-jose checks it too; this keeps a
// key of another type from being picked for a kid-less token).
func keyFits(k any, alg string) bool {
	switch alg {
	case "RS256":
		_, ok := k.(*rsa.PublicKey)
		return ok
	case "ES256":
		e, ok := k.(*ecdsa.PublicKey)
		return ok && e.Curve == elliptic.P256()
	case "EdDSA":
		_, ok := k.(ed25519.PublicKey)
		return ok
	}
	return false
}
