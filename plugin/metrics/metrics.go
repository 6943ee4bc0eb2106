// Package metrics is the plugin's Prometheus instrumentation (plugin_opt_metrics_listen): the series,
// on a registry of its own, and the small HTTP server that serves them from the broker's process.
//
// The connect path pays one atomic add per connect: every counter it touches is resolved to its label
// values once, in New, and kept in arrays indexed by small enumerations (Principal, Reason). Figures the
// other packages already keep (the cache's hit counters, the authorizer's store failures, the session
// table's size) are read only when Prometheus scrapes. Labels are bounded enumerations only: never a
// key, a password, a client id, a username or an agent's uuid.
//
// A nil *Metrics is valid and records nothing, so that the plugin without metrics calls the same methods
// at the cost of a nil check.
package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/session"
)

// Prefix starts the name of every series of the plugin's own.
const Prefix = "iotauth_plugin_"

// Principal is who a connect claimed to be: an agent (a device API key, an imported device's name, or
// anything that is none of the others), an application key, or a short-lived credential.
type Principal uint8

// The principals, the values of the principal label.
const (
	Agent Principal = iota
	App
	Token
	nPrincipals
)

var principalNames = [nPrincipals]string{"agent", "app", "token"}

// String is the label value.
func (p Principal) String() string { return principalNames[p] }

// Reason is why a connect was refused or a session kicked: a bounded enumeration derived from the
// authorizer's and the session table's sentinel errors.
type Reason uint8

// The reasons, the values of the reason label.
const (
	Other          Reason = iota // an error none of the others matches
	NoCredentials                // no username or no password
	Malformed                    // not a well-formed key (prefix, length, charset, checksum)
	BadIdentifier                // username or client id too long or with '+', '#', '/'
	SecretClientID               // the client id carries a secret
	UnknownKey                   // well-formed, but no database holds it
	LookupBudget                 // unknown key refused without a lookup (plugin_opt_unknown_key_lookups)
	BadPassword                  // wrong MQTT password
	NoMQTTPassword               // the agent has no MQTT password
	Revoked                      // the key is revoked
	Expired                      // the key expired
	AgentDisabled                // the agent is disabled or decommissioned
	NoMQTTRight                  // the key lacks the mqtt right
	ClientID                     // the client id does not belong to the key (or is an agent's, for an app key)
	ClientIDTaken                // another principal's session holds the client id
	Unavailable                  // PostgreSQL unreachable and nothing usable cached
	Corrupt                      // the credential row cannot be trusted
	CredsChanged                 // a live session's password hash or rules changed (kicks only)
	ReservedName                 // a username with the plugin's own session prefix that matches no session
	TokenInvalid                 // a short-lived credential that does not verify (or tokens are not configured)
	TokenDenied                  // a short-lived credential whose key, user or provider was revoked
	nReasons
)

var reasonNames = [nReasons]string{
	"other", "no_credentials", "malformed", "bad_identifier", "secret_client_id", "unknown_key", "lookup_budget",
	"bad_password", "no_mqtt_password", "revoked", "expired", "agent_disabled", "no_mqtt_right", "client_id",
	"client_id_taken", "unavailable", "corrupt", "creds_changed", "reserved_name", "token_invalid", "token_denied",
}

// String is the label value.
func (r Reason) String() string { return reasonNames[r] }

// Reasons lists every reason, in order.
func Reasons() []Reason {
	out := make([]Reason, nReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// reasonOf maps the sentinel errors to reasons; the first that matches wins.
var reasonOf = []struct {
	err    error
	reason Reason
}{
	{auth.ErrNoCredentials, NoCredentials},
	{auth.ErrMalformed, Malformed},
	{auth.ErrBadIdentifier, BadIdentifier},
	{auth.ErrSecretClientID, SecretClientID},
	{auth.ErrUnknownKey, UnknownKey},
	{auth.ErrLookupBudget, LookupBudget},
	{auth.ErrBadPassword, BadPassword},
	{auth.ErrNoMQTTPassword, NoMQTTPassword},
	{auth.ErrRevoked, Revoked},
	{auth.ErrExpired, Expired},
	{auth.ErrAgentDisabled, AgentDisabled},
	{auth.ErrNoMQTTRight, NoMQTTRight},
	{auth.ErrClientID, ClientID},
	{auth.ErrAgentClientID, ClientID},
	{session.ErrClientIDTaken, ClientIDTaken},
	{auth.ErrUnavailable, Unavailable},
	{auth.ErrCorrupt, Corrupt},
	{auth.ErrCredsChanged, CredsChanged},
	{ErrReservedName, ReservedName},
	{auth.ErrTokenExpired, Expired},
	{auth.ErrTokenClientID, ClientID},
	{auth.ErrTokenDenied, TokenDenied},
	{auth.ErrTokenInvalid, TokenInvalid},
	{auth.ErrTokenKeyRemoved, TokenInvalid},
	{auth.ErrTokensOff, TokenInvalid},
	{auth.ErrDenyListNotLoaded, Unavailable},
}

// ErrReservedName is the refusal of a username that starts with the plugin's own session prefix but
// matches no live session (the plugin main declares its prefix; the reason is counted here).
var ErrReservedName = errors.New("username uses the plugin's reserved prefix but matches no live session")

// ReasonOf classifies err (wrapped errors included). It does not allocate.
func ReasonOf(err error) Reason {
	// The common case, a sentinel or a chain of single wraps, is compared directly (errors.Is costs
	// about 20 ns per sentinel); anything else (errors.Join, custom Is methods) goes to errors.Is.
	for e := err; e != nil; e = errors.Unwrap(e) {
		for _, r := range reasonOf {
			if e == r.err {
				return r.reason
			}
		}
	}
	for _, r := range reasonOf {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return Other
}

// lookup results, the values of the result label of the lookup histogram.
const (
	lookupFound = iota
	lookupNotFound
	lookupCorrupt
	lookupError
	nLookupResults
)

var lookupNames = [nLookupResults]string{"found", "not_found", "corrupt", "error"}

// Sources are the figures other packages keep, read at scrape time. Any may be nil.
type Sources struct {
	Cache    func() cache.Stats
	Auth     func() auth.Stats
	Sessions func() (live, ended int)
	// KnownKeys is the size of the set of known keys (plugin/keyset).
	KnownKeys func() int
}

// Metrics holds the plugin's series. Its methods are safe for concurrent use and do nothing on a nil
// *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	allowed  [nPrincipals]prometheus.Counter
	refused  [nPrincipals][nReasons]prometheus.Counter
	deferred prometheus.Counter
	kicks    [nReasons]prometheus.Counter
	lookups  [nLookupResults]prometheus.Observer
	notifies prometheus.Counter
	applied  prometheus.Observer
	preloadN prometheus.Gauge
	preloadT prometheus.Gauge
	auditDrp prometheus.Counter
}

// lookupBuckets span a loopback PostgreSQL (sub-millisecond) to the default 250 ms db_timeout and past it.
var lookupBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// New builds the series on a registry of their own (never Prometheus's global default registry), with
// the Go runtime and process collectors of the broker's process beside them.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	allowed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: Prefix + "connects_allowed_total", Help: "CONNECTs the plugin admitted, by principal (agent or app).",
	}, []string{"principal"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: Prefix + "connects_refused_total", Help: "CONNECTs the plugin refused (CONNACK not authorised), by principal and reason.",
	}, []string{"principal", "reason"})
	m.deferred = prometheus.NewCounter(prometheus.CounterOpts{
		Name: Prefix + "connects_deferred_total", Help: "CONNECTs handed to the next plugin (plugin_opt_defer_unknown: not an iotauth key).",
	})
	kicks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: Prefix + "kicks_total", Help: "Live sessions the plugin disconnected after a re-check refused them, by reason.",
	}, []string{"reason"})
	lookups := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: Prefix + "db_lookup_duration_seconds", Help: "Credential lookups in PostgreSQL on the connect path (cache misses), by result.",
		Buckets: lookupBuckets,
	}, []string{"result"})
	m.notifies = prometheus.NewCounter(prometheus.CounterOpts{
		Name: Prefix + "notifications_total", Help: "Credential change notifications (NOTIFY iotauth_credentials) received.",
	})
	applied := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: Prefix + "notify_apply_seconds",
		Help: "Time from a credential change notification's arrival until the plugin applied it: cache entries dropped and the agent's " +
			"sessions re-checked in PostgreSQL (kicks queued). The commit-to-arrival delay is not included (NOTIFY carries no commit time).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.applied = applied
	m.preloadN = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: Prefix + "preload_credentials", Help: "Credentials the last completed preload put in the cache (0 until one completed).",
	})
	m.preloadT = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: Prefix + "preload_duration_seconds", Help: "How long the last completed preload took.",
	})
	for p := range nPrincipals {
		m.allowed[p] = allowed.WithLabelValues(p.String())
		for r := range nReasons {
			m.refused[p][r] = refused.WithLabelValues(p.String(), r.String())
		}
	}
	for r := range nReasons {
		m.kicks[r] = kicks.WithLabelValues(r.String())
	}
	for i, name := range lookupNames {
		m.lookups[i] = lookups.WithLabelValues(name)
	}
	m.auditDrp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: Prefix + "audit_events_dropped_total",
		Help: "Refused connects and kicks not written to the audit trail one by one: the bounded queue was full (PostgreSQL did not answer for long). Their count is audited as one event.",
	})
	m.reg.MustRegister(allowed, refused, m.deferred, kicks, lookups, m.notifies, applied, m.preloadN, m.preloadT, m.auditDrp,
		&sourced{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry the series are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Allowed counts an admitted connect.
func (m *Metrics) Allowed(p Principal) {
	if m != nil {
		m.allowed[p].Inc()
	}
}

// Refused counts a refused connect, by the reason err gives.
func (m *Metrics) Refused(p Principal, err error) {
	if m != nil {
		m.refused[p][ReasonOf(err)].Inc()
	}
}

// Deferred counts a connect handed to the next plugin.
func (m *Metrics) Deferred() {
	if m != nil {
		m.deferred.Inc()
	}
}

// Kicked counts a live session disconnected because a re-check refused it for reason.
func (m *Metrics) Kicked(reason error) {
	if m != nil {
		m.kicks[ReasonOf(reason)].Inc()
	}
}

// Notified counts a credential change notification; it returns its arrival time, for Applied.
func (m *Metrics) Notified() time.Time {
	if m == nil {
		return time.Time{}
	}
	m.notifies.Inc()
	return time.Now()
}

// Applied records that a change that arrived at since was applied. A zero since (a change the plugin
// was not notified of, or a nil *Metrics) is not recorded.
func (m *Metrics) Applied(since time.Time) {
	if m != nil && !since.IsZero() {
		m.applied.Observe(time.Since(since).Seconds())
	}
}

// AuditDropped counts n audit events that the plugin's queue could not hold.
func (m *Metrics) AuditDropped(n int) {
	if m != nil {
		m.auditDrp.Add(float64(n))
	}
}

// Preloaded records a completed preload of n credentials that took took.
func (m *Metrics) Preloaded(n int, took time.Duration) {
	if m != nil {
		m.preloadN.Set(float64(n))
		m.preloadT.Set(took.Seconds())
	}
}

// lookedUp records one store lookup on the connect path.
func (m *Metrics) lookedUp(took time.Duration, err error) {
	i := lookupFound
	switch {
	case err == nil:
	case errors.Is(err, credential.ErrNotFound):
		i = lookupNotFound
	case errors.Is(err, credential.ErrCorrupt):
		i = lookupCorrupt
	default:
		i = lookupError
	}
	m.lookups[i].Observe(took.Seconds())
}

// Store is what the authorizer looks credentials up in (auth.Lookup and auth.AppLookup).
type Store interface {
	auth.Lookup
	auth.AppLookup
}

// Timed returns st with its lookups timed into db_lookup_duration_seconds; st itself when m is nil.
func (m *Metrics) Timed(st Store) Store {
	if m == nil {
		return st
	}
	return timed{st: st, m: m}
}

type timed struct {
	st Store
	m  *Metrics
}

func (t timed) LookupCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	start := time.Now()
	c, err := t.st.LookupCredential(ctx, d)
	t.m.lookedUp(time.Since(start), err)
	return c, err
}

func (t timed) LookupAppCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	start := time.Now()
	c, err := t.st.LookupAppCredential(ctx, d)
	t.m.lookedUp(time.Since(start), err)
	return c, err
}

// sourced collects, at scrape time, the figures other packages keep.
type sourced struct{ src Sources }

var (
	descCacheLookups = prometheus.NewDesc(Prefix+"cache_lookups_total",
		"Credential cache lookups by result: hit (fresh), miss (nothing usable), negative_hit (a cached \"no such key\"), "+
			"stale (past its TTL, within stale_grace; served only while PostgreSQL is down, see stale_served_total).", []string{"result"}, nil)
	descCacheEvictions = prometheus.NewDesc(Prefix+"cache_evictions_total", "Cache entries evicted to make room (positive and negative).", nil, nil)
	descCacheEntries   = prometheus.NewDesc(Prefix+"cache_entries", "Positive credential entries in the cache (some may be expired or invalidated).", nil, nil)
	descStaleServed    = prometheus.NewDesc(Prefix+"stale_served_total", "Connects answered from a stale cache entry because PostgreSQL could not answer (stale_grace).", nil, nil)
	descDBErrors       = prometheus.NewDesc(Prefix+"db_errors_total", "Credential lookups on the connect path that failed or timed out (db_timeout).", nil, nil)
	descFailFast       = prometheus.NewDesc(Prefix+"db_fail_fast_windows_total", "Times a lookup failure made the plugin skip PostgreSQL on connects for a while (fail fast).", nil, nil)
	descDBDown         = prometheus.NewDesc(Prefix+"db_down", "1 while connects skip PostgreSQL after a failure, until it answers again; else 0.", nil, nil)
	descSessions       = prometheus.NewDesc(Prefix+"sessions", "Sessions the plugin holds: live (connected) and ended (kept for wills and offline deliveries).", []string{"state"}, nil)
	descKnownKeys      = prometheus.NewDesc(Prefix+"known_keys", "Keys in the set of every key PostgreSQL holds and has not revoked: they never spend the unknown-key lookup budget.", nil, nil)
)

func (s *sourced) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheLookups, descCacheEvictions, descCacheEntries, descStaleServed,
		descDBErrors, descFailFast, descDBDown, descSessions, descKnownKeys} {
		ch <- d
	}
}

func (s *sourced) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if s.src.Cache != nil {
		st := s.src.Cache()
		counter(descCacheLookups, st.Hits, "hit")
		counter(descCacheLookups, st.Misses, "miss")
		counter(descCacheLookups, st.NegativeHits, "negative_hit")
		counter(descCacheLookups, st.StaleHits, "stale")
		counter(descCacheLookups, st.AgedHits, "aged")
		counter(descCacheEvictions, st.Evictions)
		gauge(descCacheEntries, float64(st.Len))
	}
	if s.src.Auth != nil {
		st := s.src.Auth()
		counter(descStaleServed, st.StaleServed)
		counter(descDBErrors, st.StoreFailures)
		counter(descFailFast, st.FailFastWindows)
		down := 0.0
		if st.StoreDown {
			down = 1
		}
		gauge(descDBDown, down)
	}
	if s.src.Sessions != nil {
		live, ended := s.src.Sessions()
		gauge(descSessions, float64(live), "live")
		gauge(descSessions, float64(ended), "ended")
	}
	if s.src.KnownKeys != nil {
		gauge(descKnownKeys, float64(s.src.KnownKeys()))
	}
}
