package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/oidc"
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

// maxLimiters bounds the per-caller limiter map; past it an arbitrary caller's limiter is forgotten (it
// starts afresh with a full burst, which only matters under a flood of distinct authenticated callers).
const maxLimiters = 10000

// exchangeAPI serves the token exchange and its CORS preflight.
type exchangeAPI struct {
	cfg      Config
	st       *store.Store
	log      *slog.Logger
	now      func() time.Time
	exchange *exchange
}

type exchange struct {
	cfg ExchangeConfig
	mu  sync.Mutex
	lim map[string]*rate.Limiter
	// audits bounds the audit events of refused publishable keys: the key is public, so anyone could
	// otherwise fill the audit trail with refusals (one a second per key, bursts of 10, beyond that
	// only logged).
	audits map[string]*rate.Limiter
}

func newExchange(c ExchangeConfig) (*exchange, error) {
	if c.Rate == 0 {
		c.Rate = 1
	}
	if c.Burst == 0 {
		c.Burst = 20
	}
	if c.Rate < 0 || c.Burst < 0 {
		return nil, errors.New("api: the exchange rate and burst must be positive")
	}
	return &exchange{cfg: c, lim: map[string]*rate.Limiter{}, audits: map[string]*rate.Limiter{}}, nil
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

// auditAllowed reports whether another refusal of caller may be audited now.
func (x *exchange) auditAllowed(caller string, now time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return limiter(x.audits, caller, 1, 10).AllowN(now, 1)
}

// wait reserves one exchange for caller and returns how long it would have to wait (0: go ahead).
func (x *exchange) wait(caller string, now time.Time) time.Duration {
	x.mu.Lock()
	defer x.mu.Unlock()
	l := limiter(x.lim, caller, x.cfg.Rate, x.cfg.Burst)
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// Operators' own exchange ("provider": "iotauth"): what the dashboard's user gets. Viewers only read.
var (
	operatorTopics = []topicfilter.Grant{{Access: topicfilter.ReadWrite, Filter: "agents/#"}}
	viewerTopics   = []topicfilter.Grant{{Access: topicfilter.Read, Filter: "agents/#"}}
)

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

// exchangeNarrowing reads the request's optional topics: nil when absent, else the grants (at most
// mqttcred.MaxTopics, each access read/write/readwrite and a filter that may be granted).
func exchangeNarrowing(topics []store.AppTopic) ([]topicfilter.Grant, error) {
	if topics == nil {
		return nil, nil
	}
	if len(topics) == 0 || len(topics) > mqttcred.MaxTopics {
		return nil, invalidField("topics", fmt.Sprintf("topics narrows the credential: give 1 to %d grants {\"access\": \"read\"|\"write\"|\"readwrite\", \"pattern\": \"<filter>\"}, or leave it out", mqttcred.MaxTopics))
	}
	out := make([]topicfilter.Grant, 0, len(topics))
	for i, t := range topics {
		switch topicfilter.Access(t.Access) {
		case topicfilter.Read, topicfilter.Write, topicfilter.ReadWrite:
		default:
			return nil, invalidField("topics", fmt.Sprintf("topics[%d].access must be read, write or readwrite", i))
		}
		if err := topicfilter.CheckGrant(t.Pattern); err != nil {
			return nil, invalidField("topics", fmt.Sprintf("topics[%d].pattern is not a filter that may be granted: %v", i, err))
		}
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: t.Pattern})
	}
	return out, nil
}

// exchangeTTL reads the request's ttl: absent or null is the default; anything but a whole number of
// seconds within the bounds is 400 validation_failed on "ttl".
func exchangeTTL(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return mqttcred.DefaultTTL, nil
	}
	minS, maxS := int64(mqttcred.MinTTL/time.Second), int64(mqttcred.MaxTTL/time.Second)
	bad := invalidField("ttl", fmt.Sprintf("ttl is a whole number of seconds from %d to %d (default %d), written as a JSON number such as 900",
		minS, maxS, int64(mqttcred.DefaultTTL/time.Second)))
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return 0, bad
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, bad
	}
	sec, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || sec < minS || sec > maxS {
		return 0, bad
	}
	return time.Duration(sec) * time.Second, nil
}

// ExchangedMQTT is the MQTT login a token exchange hands out.
type ExchangedMQTT struct {
	Username       string           `json:"username"`
	Password       string           `json:"password"`
	ClientIDPrefix string           `json:"clientIdPrefix"`
	ExpiresAt      time.Time        `json:"expiresAt"`
	Topics         []store.AppTopic `json:"topics"`
}

// exchangeCaller is who asks: its audit/rate-limit name, the subjects the credential derives from, and
// the topics it may not exceed (nil for an operator, whose topics are fixed by role).
type exchangeCaller struct {
	name    string
	from    []string
	allowed []topicfilter.Grant
	pk      *store.PublishableKey
	user    *Principal
	// expires is the calling key's expiry: no credential outlives it.
	expires *time.Time
	// limitKey names the caller's rate budget (name unless set).
	limitKey string
}

// tokenExchange: POST /api/v1/tokens/exchange (docs/token-exchange.md; docs/security.md, A1, T1, T4). An application key
// with token:exchange or a publishable key exchanges an identity provider's token for a short-lived
// MQTT credential whose topics are the provider's mapping narrowed to the key's own topics; an
// operator's access token with "provider": "iotauth" gets one for the operator (viewers read only).
func (s *exchangeAPI) tokenExchange(w http.ResponseWriter, r *http.Request) error {
	var c exchangeCaller
	if k, ok := PublishableFrom(r.Context()); ok {
		c = exchangeCaller{name: "pk:" + k.ID, from: []string{"pk:" + k.ID}, allowed: grantsOf(k.Topics), pk: &k, expires: k.ExpiresAt,
			// The key is public: its budget is per client address, so that one abuser cannot spend
			// every visitor's exchanges.
			limitKey: "pk:" + k.ID + "@" + throttleNet(clientAddr(r))}
	} else if a, ok := AppCallerFrom(r.Context()); ok {
		c = exchangeCaller{name: "app:" + a.KeyID, from: []string{"app:" + a.KeyID}, allowed: grantsOf(a.Topics), expires: a.ExpiresAt}
	} else if p, ok := PrincipalFrom(r.Context()); ok {
		c = exchangeCaller{name: "user:" + p.UserID, from: []string{"user:" + p.UserID}, user: &p}
	} else {
		return unauthorized(CodeAuthRequired, "send Authorization: Bearer with an application key, a publishable key or an access token")
	}
	signer := s.cfg.Exchange.Signer
	if signer == nil {
		return problem(http.StatusServiceUnavailable, CodeExchangeUnavailable,
			"the token exchange is not configured: create a signing key with `iotauth mqtt-token keygen -out DIR` and start serve with MQTT_TOKEN_PRIVATE_KEY_FILE=DIR/mqtt-token.key (give the broker's plugin DIR/mqtt-token.pub)")
	}
	var req exchangeRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	ttl, err := exchangeTTL(req.TTL)
	if err != nil {
		return err
	}
	narrowTo, err := exchangeNarrowing(req.Topics)
	if err != nil {
		return err
	}
	// idpToken names the identity provider's token in the audit trail once it verified (never the token
	// itself: its jti or a hash, oidc.Identity.TokenID), so that repeated exchanges of it can be found.
	var idpToken string
	refuse := func(reason string, p *Problem) error {
		d := map[string]any{"reason": reason, "provider": truncate(req.Provider, 64)}
		if idpToken != "" {
			d["idpToken"] = idpToken
		}
		e := auditOf(r, "token_exchange_refused", d)
		e.Outcome, e.Target = store.OutcomeFailure, c.name
		if err := s.st.AuditTrail.Audit(r.Context(), e); err != nil {
			s.log.Warn("could not audit a refused token exchange", "error", err.Error())
		}
		return p
	}
	if c.limitKey == "" {
		c.limitKey = c.name
	}
	if c.expires != nil {
		left := c.expires.Sub(s.now()).Truncate(time.Second)
		if left < mqttcred.MinTTL {
			return refuse("key expires within a minute", problem(http.StatusForbidden, CodeForbidden,
				"the calling key expires within a minute; no credential can be issued through it"))
		}
		ttl = min(ttl, left)
	}
	if d := s.exchange.wait(c.limitKey, s.now()); d > 0 {
		p := problem(http.StatusTooManyRequests, CodeExchangeThrottled, "too many token exchanges by this caller; retry after the time in Retry-After")
		p.retryAfter = int(math.Ceil(d.Seconds()))
		return refuse("rate limited", p)
	}

	// iat is the request's arrival, before the caller was checked: a revocation committed while the
	// identity provider's token was being verified still covers this credential (docs/short-lived-credentials.md).
	issuedAt := requestStart(r.Context())
	var subject string
	var topics []topicfilter.Grant
	var idpTokenExpires time.Time
	from := c.from
	if c.user != nil {
		if req.Provider != oidc.ReservedName || req.Token != "" {
			return invalidField("provider", `with an operator's access token send {"provider": "iotauth"} and no token`)
		}
		subject, topics = "user:"+c.user.UserID, operatorTopics
		if c.user.Role == store.RoleViewer {
			topics = viewerTopics
		}
	} else {
		set := s.cfg.Exchange.Providers
		var prov oidc.Provider
		ok := set != nil && req.Provider != oidc.ReservedName
		if ok {
			prov, ok = set.Provider(req.Provider)
		}
		if !ok {
			return refuse("unknown provider", problem(http.StatusBadRequest, CodeUnknownProvider,
				"no identity provider of that name is configured (OIDC_PROVIDERS_FILE); \"iotauth\" takes an operator's access token"))
		}
		if c.pk != nil && !slices.Contains(c.pk.Providers, prov.Name) {
			return refuse("provider not allowed", problem(http.StatusForbidden, CodeProviderNotAllowed,
				"this publishable key may not use that identity provider; an admin lists its providers at creation"))
		}
		if req.Token == "" {
			return invalidField("token", "token is required: the identity provider's token (a JWT) of the end user")
		}
		id, err := set.Verify(r.Context(), prov.Name, req.Token)
		if err != nil {
			s.log.Info("identity provider token refused", "provider", prov.Name, "caller", c.name, "error", err.Error())
			detail := "the identity provider's token is invalid, expired, not yet valid, or not for this issuer and audience"
			if errors.Is(err, oidc.ErrExpired) {
				detail = "the identity provider's token has expired (its exp allows no clock skew here); sign in again to get a fresh one"
			}
			return refuse("token refused: "+truncate(err.Error(), 160), unauthorized(CodeInvalidIdPToken, detail))
		}
		idpToken, idpTokenExpires = id.TokenID, id.Expiry
		if !prov.CredentialMayOutliveToken {
			// The credential expires no later than the token it is exchanged for (the signer counts
			// from issuedAt in whole seconds, as here).
			start := issuedAt
			if start.IsZero() {
				start = time.Now()
			}
			left := id.Expiry.Sub(start.Truncate(time.Second))
			if left < mqttcred.MinTTL {
				return refuse("identity provider token expires within a minute", unauthorized(CodeInvalidIdPToken,
					"the identity provider's token expires within a minute, and a credential never outlives the token it is exchanged for; sign in again to get a fresh token"))
			}
			ttl = min(ttl, left)
		}
		wanted, err := prov.Grants(id)
		if err != nil {
			return refuse("mapping refused: "+truncate(err.Error(), 160), problem(http.StatusForbidden, CodeUnmappableClaims,
				"the token's claims cannot be mapped to topics: a claim the mapping uses holds a value with + # / { } or spaces, a value that is not a UUID where the rule needs one, or is not a string or list of strings"))
		}
		topics = topicfilter.Narrow(wanted, c.allowed)
		subject = "oidc:" + prov.Name + ":" + id.Subject
		from = append(slices.Clone(from), "provider:"+prov.Name)
	}
	if narrowTo != nil {
		topics = topicfilter.Narrow(narrowTo, topics)
	}
	if len(topics) == 0 {
		return refuse("no topics", problem(http.StatusForbidden, CodeNoTopics,
			"nothing to issue: the provider's mapping grants no topic within this key's own topics, or the request's topics lie outside what the caller may have"))
	}
	if len(topics) > mqttcred.MaxTopics {
		return refuse("too many topics", problem(http.StatusForbidden, CodeTooManyTopics,
			fmt.Sprintf("the mapping grants %d topics; one credential holds at most %d (use wildcards in the mapping)", len(topics), mqttcred.MaxTopics)))
	}
	grant := mqttcred.Grant{Subject: subject, ClientIDPrefix: clientIDPrefix(), From: from, TTL: ttl, IssuedAt: issuedAt}
	for _, t := range topics {
		grant.Topics = append(grant.Topics, mqttcred.Topic{Access: string(t.Access), Pattern: t.Filter})
	}
	cred, err := signer.Issue(grant)
	if errors.Is(err, mqttcred.ErrBadGrant) {
		return refuse("grant refused", invalidField("token", "the credential cannot be issued: "+err.Error()))
	}
	if err != nil {
		return err
	}
	detail := map[string]any{"provider": req.Provider, "subject": truncate(subject, 200),
		"topics": len(cred.Topics), "ttlSeconds": int64(ttl / time.Second)}
	if idpToken != "" {
		detail["idpToken"], detail["idpTokenExpiresAt"] = idpToken, idpTokenExpires.UTC().Format(time.RFC3339)
	}
	e := auditOf(r, "token_exchange", detail)
	e.Target = subject
	if err := s.st.AuditTrail.Audit(r.Context(), e); err != nil {
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

// clientIDPrefix is unique per credential and can never reach an agent's client ids ("agent-…"):
// "x" and 12 random base32 characters, then "-".
func clientIDPrefix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return "x" + string(b) + "-"
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
