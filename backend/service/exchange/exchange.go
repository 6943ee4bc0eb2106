// Package exchange is the service of the token exchange (docs/token-exchange.md): a caller (an
// application key with token:exchange, a publishable key, or an operator) exchanges an identity
// provider's token, or for an operator its own session, for a short-lived MQTT credential. The service
// owns the request's validation, the rate limit per caller, the identity provider's verification (behind
// the Providers interface), the rules that no credential outlives the calling key or the provider's token
// and that its topics only ever narrow, the signing, and the audit of each success and of every refusal
// of a known caller. Who the caller is, and how the request arrived, is the front end's business.
package exchange

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
	"golang.org/x/time/rate"
)

// OperatorProvider is the provider name of operators' own exchange: an operator's session, no token.
// Identity providers may not take this name.
const OperatorProvider = "iotauth"

// Stable codes of the exchange's refusals; the REST API sends them as the problem's code.
const (
	CodeUnavailable        = "token_exchange_unavailable" // no signing key is configured
	CodeUnknownProvider    = "unknown_provider"           // no identity provider of that name
	CodeProviderNotAllowed = "provider_not_allowed"       // the publishable key may not use that provider
	CodeInvalidIdPToken    = "invalid_idp_token"          // the provider's token failed verification or expires too soon
	CodeNoTopics           = "no_topics"                  // nothing within the caller's topics to grant
	CodeUnmappableClaims   = "unmappable_claims"          // a claim cannot go into a topic
	CodeTooManyTopics      = "too_many_topics"            // more topics than one credential holds
	CodeThrottled          = "exchange_throttled"         // too many exchanges by this caller
	CodeForbidden          = "forbidden"                  // the calling key expires within a minute
)

// Store is what the service needs of the database (backend/store implements it).
type Store interface {
	Audit(ctx context.Context, e store.AuditEvent) error
}

// Identity is a verified identity provider's token: its subject, its exp, the name the audit trail gives
// the token (never the token itself) and its claims.
type Identity struct {
	Subject string
	Expiry  time.Time
	TokenID string
	Claims  map[string]any
}

// Provider is one configured identity provider.
type Provider interface {
	// Name is the provider's name, as requests and credentials' subjects give it.
	Name() string
	// MayOutliveToken reports whether a credential may live past the token's exp.
	MayOutliveToken() bool
	// Verify checks a token of this provider; an expired one matches ErrTokenExpired with errors.Is.
	Verify(ctx context.Context, raw string) (Identity, error)
	// Grants maps a verified token's claims to the topics it asks for.
	Grants(id Identity) ([]topicfilter.Grant, error)
}

// Providers finds identity providers by name (backend/api adapts backend/oidc's Set to it).
type Providers interface {
	Provider(name string) (Provider, bool)
}

// ErrTokenExpired marks a provider's refusal of a token past its exp.
var ErrTokenExpired = errors.New("the identity provider's token has expired")

// Config configures a Service.
type Config struct {
	// Signer signs the credentials. Nil: every exchange is refused as unavailable.
	Signer *mqttcred.Issuing
	// Providers verifies identity providers' tokens. Nil: only operators' own exchange works.
	Providers Providers
	// Rate and Burst bound exchanges per caller (default 1 a second with a burst of 20).
	Rate  rate.Limit
	Burst int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives what could not be audited and why tokens were refused (default: discard).
	Logger *slog.Logger
}

// maxLimiters bounds each per-caller limiter map; past it an arbitrary caller's limiter is forgotten (it
// starts afresh with a full burst, which only matters under a flood of distinct authenticated callers).
const maxLimiters = 10000

// Service runs token exchanges.
type Service struct {
	st  Store
	cfg Config
	mu  sync.Mutex
	lim map[string]*rate.Limiter
	// audits bounds the audit events of refused publishable keys: the key is public, so anyone could
	// otherwise fill the audit trail with refusals (one a second per key, bursts of 10, beyond that
	// only logged).
	audits map[string]*rate.Limiter
}

// New builds a Service on st.
func New(st Store, c Config) (*Service, error) {
	if c.Rate == 0 {
		c.Rate = 1
	}
	if c.Burst == 0 {
		c.Burst = 20
	}
	if c.Rate < 0 || c.Burst < 0 {
		return nil, errors.New("the exchange rate and burst must be positive")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, cfg: c, lim: map[string]*rate.Limiter{}, audits: map[string]*rate.Limiter{}}, nil
}

// Ready is nil when the service can issue credentials, else its refusal (ErrUnavailable,
// CodeUnavailable: no signing key is configured). A front end may ask it before reading a request.
func (s *Service) Ready() error {
	if s.cfg.Signer == nil {
		return &service.Error{Kind: service.ErrUnavailable, Code: CodeUnavailable,
			Msg: "the token exchange is not configured: create a signing key with `iotauth mqtt-token keygen -out DIR` and start serve with MQTT_TOKEN_PRIVATE_KEY_FILE=DIR/mqtt-token.key (give the broker's plugin DIR/mqtt-token.pub)"}
	}
	return nil
}

// limiter returns caller's limiter in m, making it (and forgetting another when m is full).
func limiter(m map[string]*rate.Limiter, caller string, r rate.Limit, burst int) *rate.Limiter {
	l := m[caller]
	if l == nil {
		if len(m) >= maxLimiters {
			for k := range m {
				delete(m, k)
				break
			}
		}
		l = rate.NewLimiter(r, burst)
		m[caller] = l
	}
	return l
}

// AuditAllowed reports whether another refusal of a publishable key (caller "pk:<id>") may be audited
// now: one a second, in bursts of 10; past that a front end only logs it.
func (s *Service) AuditAllowed(caller string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return limiter(s.audits, caller, 1, 10).AllowN(s.cfg.Now(), 1)
}

// wait reserves one exchange for caller and returns how long it would have to wait (0: go ahead).
func (s *Service) wait(caller string, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := limiter(s.lim, caller, s.cfg.Rate, s.cfg.Burst).ReserveN(now, 1)
	if !r.OK() {
		return time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// Operators' own exchange: what the dashboard's user gets. Viewers only read.
var (
	operatorTopics = []topicfilter.Grant{{Access: topicfilter.ReadWrite, Filter: "agents/#"}}
	viewerTopics   = []topicfilter.Grant{{Access: topicfilter.Read, Filter: "agents/#"}}
)

// Caller is who asks for a credential: build it with PublishableKey, AppKey or Operator.
type Caller struct {
	name    string
	from    []string
	allowed []topicfilter.Grant
	// providers, for a publishable key, are the identity providers it may use.
	providers   []string
	publishable bool
	operator    bool
	viewer      bool
	userID      string
	// expires is the calling key's expiry: no credential outlives it.
	expires *time.Time
	// limitKey names the caller's rate budget.
	limitKey string
}

// Name is the caller's name in the audit trail and in its rate budget: "pk:<id>", "app:<id>" or
// "user:<id>".
func (c Caller) Name() string { return c.name }

// PublishableKey is a publishable key calling from network (the client's address, or its /64 for IPv6):
// the key is public, so its budget is per network, and one abuser cannot spend every visitor's exchanges.
func PublishableKey(k store.PublishableKey, network string) Caller {
	n := "pk:" + k.ID
	return Caller{name: n, from: []string{n}, allowed: grantsOf(k.Topics), providers: k.Providers, publishable: true,
		expires: k.ExpiresAt, limitKey: n + "@" + network}
}

// AppKey is an application key with token:exchange, its topics and expiry.
func AppKey(keyID string, topics []store.AppTopic, expires *time.Time) Caller {
	n := "app:" + keyID
	return Caller{name: n, from: []string{n}, allowed: grantsOf(topics), expires: expires, limitKey: n}
}

// Operator is a signed-in operator; a viewer's credential only reads.
func Operator(userID string, viewer bool) Caller {
	n := "user:" + userID
	return Caller{name: n, from: []string{n}, operator: true, viewer: viewer, userID: userID, limitKey: n}
}

func grantsOf(topics []store.AppTopic) []topicfilter.Grant {
	out := make([]topicfilter.Grant, 0, len(topics))
	for _, t := range topics {
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: t.Pattern})
	}
	return out
}

// Request is an exchange's request.
type Request struct {
	// Provider names the identity provider, or OperatorProvider for an operator.
	Provider string
	// Token is the identity provider's token (none for an operator).
	Token string
	// TTLSeconds is the credential's lifetime (nil: mqttcred.DefaultTTL; else MinTTL to MaxTTL).
	TTLSeconds *int64
	// Topics, when not nil, narrows the credential to these grants; never widens anything.
	Topics []store.AppTopic
	// IssuedAt is the request's arrival, before the caller was checked: a revocation committed while the
	// provider's token was being verified still covers the credential (docs/short-lived-credentials.md).
	// Zero: now.
	IssuedAt time.Time
}

// InvalidTTL is the refusal of a ttl that is not a whole number of seconds within the bounds.
func InvalidTTL() *service.Error {
	return service.Invalid("ttl", fmt.Sprintf("ttl is a whole number of seconds from %d to %d (default %d), written as a JSON number such as 900",
		int64(mqttcred.MinTTL/time.Second), int64(mqttcred.MaxTTL/time.Second), int64(mqttcred.DefaultTTL/time.Second)))
}

// ttl reads the request's ttl.
func ttl(sec *int64) (time.Duration, error) {
	if sec == nil {
		return mqttcred.DefaultTTL, nil
	}
	if *sec < int64(mqttcred.MinTTL/time.Second) || *sec > int64(mqttcred.MaxTTL/time.Second) {
		return 0, InvalidTTL()
	}
	return time.Duration(*sec) * time.Second, nil
}

// narrowing reads the request's optional topics: nil when absent, else the grants (at most
// mqttcred.MaxTopics, each access read/write/readwrite and a filter that may be granted).
func narrowing(topics []store.AppTopic) ([]topicfilter.Grant, error) {
	if topics == nil {
		return nil, nil
	}
	if len(topics) == 0 || len(topics) > mqttcred.MaxTopics {
		return nil, service.Invalid("topics", fmt.Sprintf("topics narrows the credential: give 1 to %d grants {\"access\": \"read\"|\"write\"|\"readwrite\", \"pattern\": \"<filter>\"}, or leave it out", mqttcred.MaxTopics))
	}
	out := make([]topicfilter.Grant, 0, len(topics))
	for i, t := range topics {
		switch topicfilter.Access(t.Access) {
		case topicfilter.Read, topicfilter.Write, topicfilter.ReadWrite:
		default:
			return nil, service.Invalid("topics", fmt.Sprintf("topics[%d].access must be read, write or readwrite", i))
		}
		if err := topicfilter.CheckGrant(t.Pattern); err != nil {
			return nil, service.Invalid("topics", fmt.Sprintf("topics[%d].pattern is not a filter that may be granted: %v", i, err))
		}
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: t.Pattern})
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Exchange issues a credential for c, audited under a (the request's actor and client address). Its
// refusals are service errors: ErrUnavailable (CodeUnavailable) without a signer, ErrInvalid for a wrong
// value, ErrThrottled with RetryAfter past the caller's rate, and the codes above. Every refusal after
// the request's values were read is audited as token_exchange_refused, with the caller as target.
func (s *Service) Exchange(ctx context.Context, a service.Actor, c Caller, req Request) (mqttcred.Credential, error) {
	if err := s.Ready(); err != nil {
		return mqttcred.Credential{}, err
	}
	signer := s.cfg.Signer
	ttl, err := ttl(req.TTLSeconds)
	if err != nil {
		return mqttcred.Credential{}, err
	}
	narrowTo, err := narrowing(req.Topics)
	if err != nil {
		return mqttcred.Credential{}, err
	}
	// idpToken names the identity provider's token in the audit trail once it verified (never the token
	// itself: its jti or a hash, Identity.TokenID), so that repeated exchanges of it can be found.
	var idpToken string
	refuse := func(reason string, e *service.Error) (mqttcred.Credential, error) {
		d := map[string]any{"reason": reason, "provider": truncate(req.Provider, 64)}
		if idpToken != "" {
			d["idpToken"] = idpToken
		}
		ev := a.Event("token_exchange_refused", d)
		ev.Outcome, ev.Target = store.OutcomeFailure, c.name
		if err := s.st.Audit(ctx, ev); err != nil {
			s.cfg.Logger.Warn("could not audit a refused token exchange", "error", err.Error())
		}
		return mqttcred.Credential{}, e
	}
	now := s.cfg.Now()
	if c.expires != nil {
		left := c.expires.Sub(now).Truncate(time.Second)
		if left < mqttcred.MinTTL {
			return refuse("key expires within a minute", service.Forbidden(CodeForbidden,
				"the calling key expires within a minute; no credential can be issued through it"))
		}
		ttl = min(ttl, left)
	}
	if d := s.wait(c.limitKey, now); d > 0 {
		return refuse("rate limited", &service.Error{Kind: service.ErrThrottled, Code: CodeThrottled, RetryAfter: d,
			Msg: "too many token exchanges by this caller; retry after the time in Retry-After"})
	}

	issuedAt := req.IssuedAt
	var subject string
	var topics []topicfilter.Grant
	var idpTokenExpires time.Time
	from := c.from
	if c.operator {
		if req.Provider != OperatorProvider || req.Token != "" {
			return mqttcred.Credential{}, service.Invalid("provider", `with an operator's access token send {"provider": "iotauth"} and no token`)
		}
		subject, topics = "user:"+c.userID, operatorTopics
		if c.viewer {
			topics = viewerTopics
		}
	} else {
		var prov Provider
		ok := s.cfg.Providers != nil && req.Provider != OperatorProvider
		if ok {
			prov, ok = s.cfg.Providers.Provider(req.Provider)
		}
		if !ok {
			return refuse("unknown provider", &service.Error{Kind: service.ErrInvalid, Code: CodeUnknownProvider,
				Msg: "no identity provider of that name is configured (OIDC_PROVIDERS_FILE); \"iotauth\" takes an operator's access token"})
		}
		if c.publishable && !slices.Contains(c.providers, prov.Name()) {
			return refuse("provider not allowed", service.Forbidden(CodeProviderNotAllowed,
				"this publishable key may not use that identity provider; an admin lists its providers at creation"))
		}
		if req.Token == "" {
			return mqttcred.Credential{}, service.Invalid("token", "token is required: the identity provider's token (a JWT) of the end user")
		}
		id, err := prov.Verify(ctx, req.Token)
		if err != nil {
			s.cfg.Logger.Info("identity provider token refused", "provider", prov.Name(), "caller", c.name, "error", err.Error())
			detail := "the identity provider's token is invalid, expired, not yet valid, or not for this issuer and audience"
			if errors.Is(err, ErrTokenExpired) {
				detail = "the identity provider's token has expired (its exp allows no clock skew here); sign in again to get a fresh one"
			}
			return refuse("token refused: "+truncate(err.Error(), 160),
				&service.Error{Kind: service.ErrUnauthenticated, Code: CodeInvalidIdPToken, Msg: detail})
		}
		idpToken, idpTokenExpires = id.TokenID, id.Expiry
		if !prov.MayOutliveToken() {
			// The credential expires no later than the token it is exchanged for (the signer counts
			// from issuedAt in whole seconds, as here).
			start := issuedAt
			if start.IsZero() {
				start = time.Now()
			}
			left := id.Expiry.Sub(start.Truncate(time.Second))
			if left < mqttcred.MinTTL {
				return refuse("identity provider token expires within a minute", &service.Error{Kind: service.ErrUnauthenticated, Code: CodeInvalidIdPToken,
					Msg: "the identity provider's token expires within a minute, and a credential never outlives the token it is exchanged for; sign in again to get a fresh token"})
			}
			ttl = min(ttl, left)
		}
		wanted, err := prov.Grants(id)
		if err != nil {
			return refuse("mapping refused: "+truncate(err.Error(), 160), service.Forbidden(CodeUnmappableClaims,
				"the token's claims cannot be mapped to topics: a claim the mapping uses holds a value with + # / { } or spaces, a value that is not a UUID where the rule needs one, or is not a string or list of strings"))
		}
		topics = topicfilter.Narrow(wanted, c.allowed)
		subject = "oidc:" + prov.Name() + ":" + id.Subject
		from = append(slices.Clone(from), "provider:"+prov.Name())
	}
	if narrowTo != nil {
		topics = topicfilter.Narrow(narrowTo, topics)
	}
	if len(topics) == 0 {
		return refuse("no topics", service.Forbidden(CodeNoTopics,
			"nothing to issue: the provider's mapping grants no topic within this key's own topics, or the request's topics lie outside what the caller may have"))
	}
	if len(topics) > mqttcred.MaxTopics {
		return refuse("too many topics", service.Forbidden(CodeTooManyTopics,
			fmt.Sprintf("the mapping grants %d topics; one credential holds at most %d (use wildcards in the mapping)", len(topics), mqttcred.MaxTopics)))
	}
	grant := mqttcred.Grant{Subject: subject, ClientIDPrefix: ClientIDPrefix(), From: from, TTL: ttl, IssuedAt: issuedAt}
	for _, t := range topics {
		grant.Topics = append(grant.Topics, mqttcred.Topic{Access: string(t.Access), Pattern: t.Filter})
	}
	cred, err := signer.Issue(grant)
	if errors.Is(err, mqttcred.ErrBadGrant) {
		return refuse("grant refused", service.Invalid("token", "the credential cannot be issued: "+err.Error()))
	}
	if err != nil {
		return mqttcred.Credential{}, err
	}
	detail := map[string]any{"provider": req.Provider, "subject": truncate(subject, 200),
		"topics": len(cred.Topics), "ttlSeconds": int64(ttl / time.Second)}
	if idpToken != "" {
		detail["idpToken"], detail["idpTokenExpiresAt"] = idpToken, idpTokenExpires.UTC().Format(time.RFC3339)
	}
	ev := a.Event("token_exchange", detail)
	ev.Target = subject
	if err := s.st.Audit(ctx, ev); err != nil {
		return mqttcred.Credential{}, err
	}
	return cred, nil
}

// ClientIDPrefix is unique per credential and can never reach an agent's client ids ("agent-…"): "x"
// and 12 random base32 characters, then "-".
func ClientIDPrefix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return "x" + string(b) + "-"
}
