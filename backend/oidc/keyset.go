package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Key set limits (docs/security.md, T2).
const (
	// DefaultRefreshInterval is the least time between two fetches of one provider's JWKS: an unknown
	// kid triggers at most one refresh per interval, so forged kids cannot make us hammer the provider.
	DefaultRefreshInterval = 30 * time.Second
	// MaxJWKSBytes caps a JWKS document.
	MaxJWKSBytes = 1 << 20
	// FetchTimeout bounds one JWKS fetch.
	FetchTimeout = 5 * time.Second
	maxKeys      = 100
)

// ErrUnknownKey means no key of the provider's JWKS has the token's kid (after the one refresh allowed).
var ErrUnknownKey = errors.New("no signing key of the identity provider has this kid")

// keySet is one provider's signing keys, cached by kid. go-oidc's RemoteKeySet refetches on every
// unknown kid (it only merges concurrent fetches), which T2 forbids; this one refetches at most once
// per interval, and never from an address other than the configured one.
type keySet struct {
	url, file string
	client    *http.Client
	interval  time.Duration
	now       func() time.Time

	mu        sync.Mutex // held across a fetch: concurrent misses share it
	keys      []jose.JSONWebKey
	fetched   bool
	lastFetch time.Time
}

// key returns the public key for kid and alg, fetching the JWKS when it is unknown and the interval
// since the last fetch has passed.
func (k *keySet) key(ctx context.Context, kid, alg string) (any, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.lookup(kid, alg); ok && k.fetched {
		return key, nil
	}
	if k.fetched && k.now().Sub(k.lastFetch) < k.interval {
		return nil, ErrUnknownKey
	}
	k.lastFetch, k.fetched = k.now(), true
	keys, err := k.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch the identity provider's keys: %w", err)
	}
	k.keys = keys
	if key, ok := k.lookup(kid, alg); ok {
		return key, nil
	}
	return nil, ErrUnknownKey
}

// lookup finds a public key by kid (or the only key of the alg's type when the token names no kid).
func (k *keySet) lookup(kid, alg string) (any, bool) {
	var found []jose.JSONWebKey
	for _, j := range k.keys {
		if (kid != "" && j.KeyID != kid) || (j.Algorithm != "" && j.Algorithm != alg) || !keyFits(j.Key, alg) {
			continue
		}
		found = append(found, j)
	}
	if len(found) != 1 {
		return nil, false
	}
	return found[0].Key, true
}

func (k *keySet) load(ctx context.Context) ([]jose.JSONWebKey, error) {
	var body []byte
	var err error
	if k.file != "" {
		body, err = os.ReadFile(k.file)
		if err == nil && len(body) > MaxJWKSBytes {
			err = fmt.Errorf("%s is larger than %d bytes", k.file, MaxJWKSBytes)
		}
	} else {
		body, err = k.fetch(ctx)
	}
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("the JWKS is not a JSON Web Key Set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, j := range set.Keys {
		// Only public signing keys: a private or symmetric key in a JWKS is a provider's mistake, and a
		// symmetric one would let a token be signed with public material.
		if !j.IsPublic() || !j.Valid() || (j.Use != "" && j.Use != "sig") {
			continue
		}
		keys = append(keys, j)
		if len(keys) == maxKeys {
			break
		}
	}
	return keys, nil
}

func (k *keySet) fetch(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %d", k.url, res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxJWKSBytes {
		return nil, fmt.Errorf("the JWKS at %s is larger than %d bytes", k.url, MaxJWKSBytes)
	}
	return body, nil
}

// noRedirects keeps JWKS fetches at the configured address (no SSRF through a redirect).
func noRedirects(*http.Request, []*http.Request) error {
	return errors.New("the JWKS URL redirected; configure the final URL")
}
