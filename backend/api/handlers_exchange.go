package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/oidc"
	"github.com/iotauth/iotauth/backend/service/exchange"
	"github.com/iotauth/iotauth/backend/store"
	"golang.org/x/time/rate"
)

// ExchangePath is the token exchange's route (docs/token-exchange.md).
const ExchangePath = "/api/v1/tokens/exchange"

// ExchangeConfig configures the token exchange.
type ExchangeConfig struct {
	// Signer signs the short-lived MQTT credentials. Nil: the exchange answers 503
	// token_exchange_unavailable (set MQTT_TOKEN_PRIVATE_KEY_FILE).
	Signer *mqttcred.Issuing
	// Providers verifies identity providers' tokens. Nil: only operators' own exchange ("iotauth") works.
	Providers *oidc.Set
	// Rate and Burst bound exchanges per caller (an application key, a publishable key or a user):
	// default 1 a second with a burst of 20.
	Rate  rate.Limit
	Burst int
}

// exchangeAPI serves the token exchange and its CORS preflight; the exchange itself is the service's.
type exchangeAPI struct {
	cfg Config
	st  *store.Store
	svc *exchange.Service
}

// newExchangeService builds the exchange's service, with the identity providers of c when set.
func newExchangeService(st exchange.Store, c ExchangeConfig, now func() time.Time, log *slog.Logger) (*exchange.Service, error) {
	var provs exchange.Providers
	if c.Providers != nil {
		provs = oidcProviders{c.Providers}
	}
	svc, err := exchange.New(st, exchange.Config{Signer: c.Signer, Providers: provs, Rate: c.Rate, Burst: c.Burst, Now: now, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return svc, nil
}

// oidcProviders adapts backend/oidc's Set to the exchange service (which does not import it: the
// verifier fetches key sets over HTTP, and services do not speak HTTP).
type oidcProviders struct{ set *oidc.Set }

// Provider finds the named identity provider.
func (o oidcProviders) Provider(name string) (exchange.Provider, bool) {
	p, ok := o.set.Provider(name)
	if !ok {
		return nil, false
	}
	return oidcProvider{set: o.set, p: p}, true
}

type oidcProvider struct {
	set *oidc.Set
	p   oidc.Provider
}

func (o oidcProvider) Name() string          { return o.p.Name }
func (o oidcProvider) MayOutliveToken() bool { return o.p.CredentialMayOutliveToken }

func (o oidcProvider) Verify(ctx context.Context, raw string) (exchange.Identity, error) {
	id, err := o.set.Verify(ctx, o.p.Name, raw)
	if err != nil {
		if errors.Is(err, oidc.ErrExpired) {
			err = expiredToken{err}
		}
		return exchange.Identity{}, err
	}
	return exchange.Identity{Subject: id.Subject, Expiry: id.Expiry, TokenID: id.TokenID, Claims: id.Claims}, nil
}

func (o oidcProvider) Grants(id exchange.Identity) ([]topicfilter.Grant, error) {
	return o.p.Grants(oidc.Identity{Provider: o.p.Name, Subject: id.Subject, Claims: id.Claims, Expiry: id.Expiry, TokenID: id.TokenID})
}

// expiredToken is the verifier's refusal of an expired token, with its own text, that also matches
// exchange.ErrTokenExpired.
type expiredToken struct{ error }

func (e expiredToken) Unwrap() error        { return e.error }
func (e expiredToken) Is(target error) bool { return target == exchange.ErrTokenExpired }

type exchangeRequest struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
	// TTL is the credential's lifetime in whole seconds (default 900, 60 to 86400). It is read raw so that
	// a value of the wrong kind ("1h", 1.5) is a validation error naming the field, like one out of range.
	TTL json.RawMessage `json:"ttl"`
	// Topics, when given, narrows the credential to these grants: a caller that needs less than all it
	// may have (the console's Watch live reads one agent) asks for less. Never widens anything.
	Topics []store.AppTopic `json:"topics"`
}

// exchangeTTL reads the request's ttl: nil when absent or null; anything but a whole JSON number is
// refused as the service refuses one out of range.
func exchangeTTL(raw json.RawMessage) (*int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, exchange.InvalidTTL()
	}
	n, ok := v.(json.Number)
	if !ok {
		return nil, exchange.InvalidTTL()
	}
	sec, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return nil, exchange.InvalidTTL()
	}
	return &sec, nil
}

// ExchangedMQTT is the MQTT login a token exchange hands out.
type ExchangedMQTT struct {
	Username       string           `json:"username"`
	Password       string           `json:"password"`
	ClientIDPrefix string           `json:"clientIdPrefix"`
	ExpiresAt      time.Time        `json:"expiresAt"`
	Topics         []store.AppTopic `json:"topics"`
}

// tokenExchange: POST /api/v1/tokens/exchange (docs/token-exchange.md; docs/security.md, A1, T1, T4). An application key
// with token:exchange or a publishable key exchanges an identity provider's token for a short-lived
// MQTT credential whose topics are the provider's mapping narrowed to the key's own topics; an
// operator's access token with "provider": "iotauth" gets one for the operator (viewers read only).
// The handler finds the caller and reads the body; backend/service/exchange does the rest.
func (s *exchangeAPI) tokenExchange(w http.ResponseWriter, r *http.Request) error {
	var c exchange.Caller
	if k, ok := PublishableFrom(r.Context()); ok {
		c = exchange.PublishableKey(k, throttleNet(clientAddr(r)))
	} else if a, ok := AppCallerFrom(r.Context()); ok {
		c = exchange.AppKey(a.KeyID, a.Topics, a.ExpiresAt)
	} else if p, ok := PrincipalFrom(r.Context()); ok {
		c = exchange.Operator(p.UserID, p.Role == store.RoleViewer)
	} else {
		return unauthorized(CodeAuthRequired, "send Authorization: Bearer with an application key, a publishable key or an access token")
	}
	if err := s.svc.Ready(); err != nil {
		return err
	}
	var req exchangeRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	ttl, err := exchangeTTL(req.TTL)
	if err != nil {
		return err
	}
	cred, err := s.svc.Exchange(r.Context(), actorOf(r), c, exchange.Request{
		Provider: req.Provider, Token: req.Token, TTLSeconds: ttl, Topics: req.Topics, IssuedAt: requestStart(r.Context())})
	if err != nil {
		return err
	}
	out := ExchangedMQTT{Username: cred.Username, Password: cred.Password, ClientIDPrefix: cred.ClientIDPrefix, ExpiresAt: cred.ExpiresAt.UTC()}
	for _, t := range cred.Topics {
		out.Topics = append(out.Topics, store.AppTopic{Access: t.Access, Pattern: t.Pattern})
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"mqtt": out})
	return nil
}

// exchangePreflight answers the CORS preflight of the token exchange (docs/security.md, H4, T4): a preflight
// carries no key, so it is admitted for an origin that some active publishable key lists and refused
// (403, no CORS header) for any other. It reports whether it answered. Origins of CORS_ALLOWED_ORIGINS
// were answered before, by handleCORS.
func (s *exchangeAPI) exchangePreflight(w *statusWriter, r *http.Request) bool {
	if r.Method != http.MethodOptions || r.URL.Path != ExchangePath || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	origin := r.Header.Get("Origin")
	ok := false
	if origin != "" && len(origin) <= 300 && r.Header.Get("Access-Control-Request-Method") == http.MethodPost {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		var err error
		if ok, err = s.st.Keys.OriginListed(ctx, origin); err != nil {
			p := toProblem(err)
			w.problem = p
			writeProblem(w, p)
			return true
		}
	}
	if !ok {
		p := problem(http.StatusForbidden, CodeOriginNotAllowed, "no publishable key lists this origin for the token exchange")
		w.problem = p
		writeProblem(w, p)
		return true
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
