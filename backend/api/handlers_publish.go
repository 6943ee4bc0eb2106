package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// publishAPI serves the publish bridge: application keys publishing to the broker through the API.
type publishAPI struct {
	cfg      Config
	st       *store.Store
	log      *slog.Logger
	metrics  *metrics
	pubLimit *keyLimiter
}

// Problem codes of the publish bridge (POST /api/v1/publish).
const (
	CodeTopicNotGranted    = "topic_not_granted"    // 403: the application key has no write grant covering the topic
	CodePublishRateLimited = "publish_rate_limited" // 429: this key's publish rate is spent; see Retry-After
	CodePublishRefused     = "publish_refused"      // 502: the broker answered the publish with a failure reason code
	CodeBrokerUnavailable  = "broker_unavailable"   // 503: the bridge has no broker connection (or is not configured); see Retry-After
	CodePublishBusy        = "publish_busy"         // 503: too many publishes in flight; see Retry-After
	CodePublishTimeout     = "publish_timeout"      // 504: no PUBACK in time; the message may have been delivered
)

// Publish bridge defaults (PUBLISH_MAX_PAYLOAD, PUBLISH_RATE, PUBLISH_BURST, PUBLISH_TIMEOUT).
const (
	DefaultPublishMaxPayload = 256 << 10
	DefaultPublishRate       = 10.0
	DefaultPublishBurst      = 20
	DefaultPublishTimeout    = 5 * time.Second
	// brokerRetryAfter is the Retry-After of broker_unavailable: about how long the bridge takes to
	// notice a broker that is back (its reconnect backoff is at most 5 s).
	brokerRetryAfter = 5
	// maxPublishLimiters bounds the per-key rate limiters kept in memory.
	maxPublishLimiters = 10000
)

// Publisher sends the publish bridge's messages to the broker (backend/bridge in production, a fake in
// unit tests). Publish returns nil once the message is out (QoS 0) or acknowledged by a PUBACK (QoS 1),
// or an error wrapping bridge.ErrUnavailable, ErrTimeout, ErrBusy or ErrRefused.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

// registerPublishMetrics adds iotauth_publish_bridge_connected (1 while the bridge has a broker
// connection) when the Publisher can tell. Publishes by outcome are iotauth_http_requests_total of the
// route "POST /api/v1/publish" by status code.
func (s *publishAPI) registerPublishMetrics() {
	c, ok := s.cfg.Publisher.(interface{ Connected() bool })
	if !ok {
		return
	}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "iotauth_publish_bridge_connected", Help: "1 while the REST publish bridge has a connection to the broker, else 0.",
	}, func() float64 {
		if c.Connected() {
			return 1
		}
		return 0
	}))
}

// publishRequest is the body of POST /api/v1/publish.
type publishRequest struct {
	Topic    *string `json:"topic"`
	Payload  *string `json:"payload"`
	Encoding string  `json:"encoding"`
	QoS      *int    `json:"qos"`
	Retain   bool    `json:"retain"`
}

// PublishResult is the answer of POST /api/v1/publish: what was published (never the payload).
type PublishResult struct {
	Topic  string `json:"topic"`
	QoS    int    `json:"qos"`
	Retain bool   `json:"retain"`
	Size   int    `json:"size"`
	// Status is "acknowledged" (QoS 1: the broker's PUBACK came) or "sent" (QoS 0).
	Status string `json:"status"`
}

// publishMessage is a checked publish request.
type publishMessage struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
}

// publishMaxBody is the body limit of POST /api/v1/publish: a payload of the largest size in base64
// plus room for the other members. It is enforced before the body is read.
func publishMaxBody(maxPayload int) int64 {
	return int64(4*((maxPayload+2)/3)) + 8<<10
}

// checkPublish validates a publish request (docs/security.md, A2, B1, H1): a concrete topic (no wildcard, no
// $ topic, no NUL, 1 to topicfilter.MaxLen bytes), qos 0 or 1, the payload in utf8 or base64 and at
// most maxPayload bytes once decoded. Problems name the member at fault.
func checkPublish(req publishRequest, maxPayload int) (publishMessage, *Problem) {
	var m publishMessage
	if req.Topic == nil || *req.Topic == "" {
		return m, invalidField("topic", "topic is required: the concrete MQTT topic to publish to, e.g. agents/<uuid>/cmd")
	}
	if err := topicfilter.CheckTopic(*req.Topic); err != nil {
		msg := "topic is not a topic one may publish to"
		switch {
		case errors.Is(err, topicfilter.ErrWildTopic):
			msg = "topic may not contain the wildcards + or #: publish to one concrete topic"
		case errors.Is(err, topicfilter.ErrDollar):
			msg = "topic may not start with $: $ topics are reserved for the broker"
		case errors.Is(err, topicfilter.ErrNUL):
			msg = "topic may not contain NUL"
		case errors.Is(err, topicfilter.ErrEmpty), errors.Is(err, topicfilter.ErrTooLong):
			msg = fmt.Sprintf("topic must be 1 to %d bytes", topicfilter.MaxLen)
		}
		return m, invalidField("topic", msg)
	}
	m.topic = *req.Topic
	if req.QoS == nil || (*req.QoS != 0 && *req.QoS != 1) {
		return m, invalidField("qos", "qos is required and must be 0 (answer 202 once sent) or 1 (answer 200 after the broker's PUBACK)")
	}
	m.qos = byte(*req.QoS)
	if req.Payload == nil {
		return m, invalidField("payload", `payload is required (it may be ""): text, or base64 with "encoding": "base64"`)
	}
	tooLarge := func(n int) *Problem {
		p := problem(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the payload is %d bytes; at most %d are accepted (PUBLISH_MAX_PAYLOAD)", n, maxPayload))
		p.Field = "payload"
		return p
	}
	switch req.Encoding {
	case "", "utf8":
		m.payload = []byte(*req.Payload)
	case "base64":
		if n := base64.StdEncoding.DecodedLen(len(*req.Payload)) - strings.Count(*req.Payload, "="); n > maxPayload {
			return m, tooLarge(n)
		}
		b, err := base64.StdEncoding.Strict().DecodeString(*req.Payload)
		if err != nil {
			return m, invalidField("payload", "payload is not valid base64 (the standard alphabet with = padding, RFC 4648 section 4)")
		}
		m.payload = b
	default:
		return m, invalidField("encoding", `encoding must be "utf8" (the default) or "base64"`)
	}
	if len(m.payload) > maxPayload {
		return m, tooLarge(len(m.payload))
	}
	m.retain = req.Retain
	return m, nil
}

// grantsOf converts an application key's topic grants for topicfilter.
func grantsOf(topics []store.AppTopic) []topicfilter.Grant {
	out := make([]topicfilter.Grant, 0, len(topics))
	for _, t := range topics {
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: t.Pattern})
	}
	return out
}

// publishProblem maps a Publisher's error to the answer a client sees; the cause is kept for the log.
func publishProblem(err error) *Problem {
	var p *Problem
	switch {
	case errors.Is(err, bridge.ErrTopic):
		p = invalidField("topic", "topic is not a topic one may publish to: "+strings.TrimPrefix(err.Error(), bridge.ErrTopic.Error()+": "))
	case errors.Is(err, bridge.ErrBusy):
		p = problem(http.StatusServiceUnavailable, CodePublishBusy, "too many publishes are in flight on the bridge; retry after the time in Retry-After")
		p.retryAfter = 1
	case errors.Is(err, bridge.ErrTimeout):
		p = problem(http.StatusGatewayTimeout, CodePublishTimeout,
			"the broker did not acknowledge the publish in time; it may have been delivered, and retrying may deliver it twice (QoS 1 is at-least-once)")
		p.retryAfter = 1
	case errors.Is(err, bridge.ErrRefused):
		p = problem(http.StatusBadGateway, CodePublishRefused, "the broker refused the publish ("+strings.TrimPrefix(err.Error(), bridge.ErrRefused.Error()+": ")+")")
	case errors.Is(err, bridge.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		p = problem(http.StatusServiceUnavailable, CodeBrokerUnavailable, "the MQTT broker is not reachable from the publish bridge; nothing was published; retry after the time in Retry-After")
		p.retryAfter = brokerRetryAfter
	default:
		p = problem(http.StatusInternalServerError, CodeInternal, "internal error; the server log has details")
	}
	p.cause = err
	return p
}

// bridgeNotConfigured is the answer when the server runs without a Publisher.
func bridgeNotConfigured() *Problem {
	p := problem(http.StatusServiceUnavailable, CodeBrokerUnavailable,
		"the publish bridge is not configured: start iotauth serve with PUBLISH_BROKER_URL (or -publish-broker-url) set to the broker, e.g. tcp://127.0.0.1:1883")
	p.retryAfter = 60
	return p
}

// publish: POST /api/v1/publish (an application key with the publish right; docs/security.md, B1). The order
// is: rate limit per key, strict body (size capped before reading), topic and payload checks, the key's
// write grants for the exact topic, the publish (QoS 1 waits for the PUBACK), the audit event.
func (s *publishAPI) publish(w http.ResponseWriter, r *http.Request) error {
	caller, ok := AppCallerFrom(r.Context())
	if !ok {
		return problem(http.StatusForbidden, CodeForbidden, "publishing takes an application key with the publish right")
	}
	if s.cfg.Publisher == nil {
		return bridgeNotConfigured()
	}
	if ok, wait := s.pubLimit.allow(caller.KeyID); !ok {
		p := problem(http.StatusTooManyRequests, CodePublishRateLimited,
			fmt.Sprintf("this application key may publish %g messages a second (burst %d); retry after the time in Retry-After", s.cfg.PublishRate, s.cfg.PublishBurst))
		p.retryAfter = int(math.Ceil(wait.Seconds()))
		if p.retryAfter < 1 {
			p.retryAfter = 1
		}
		return p
	}
	var req publishRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	m, p := checkPublish(req, s.cfg.PublishMaxPayload)
	if p != nil {
		return p
	}
	detail := map[string]any{"topic": m.topic, "size": len(m.payload), "qos": int(m.qos), "retain": m.retain}
	if !topicfilter.AllowsWrite(grantsOf(caller.Topics), m.topic) {
		e := auditOf(r, "mqtt_publish", detail)
		e.Outcome, e.Target = store.OutcomeFailure, "mqtt-topic:"+m.topic
		detail["reason"] = "topic not granted"
		s.auditPublish(r, e)
		p := problem(http.StatusForbidden, CodeTopicNotGranted, "this application key has no write grant covering the topic; an admin fixes a key's topics at creation")
		p.Field = "topic"
		return p
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
	err := s.cfg.Publisher.Publish(ctx, m.topic, m.payload, m.qos, m.retain)
	cancel()
	e := auditOf(r, "mqtt_publish", detail)
	e.Target = "mqtt-topic:" + m.topic
	if err != nil {
		e.Outcome = store.OutcomeFailure
		pp := publishProblem(err)
		detail["reason"] = pp.Code
		s.auditPublish(r, e)
		return pp
	}
	s.auditPublish(r, e)
	res := PublishResult{Topic: m.topic, QoS: int(m.qos), Retain: m.retain, Size: len(m.payload), Status: "sent"}
	status := http.StatusAccepted
	if m.qos == 1 {
		res.Status, status = "acknowledged", http.StatusOK
	}
	writeJSON(w, status, res)
	return nil
}

// auditPublish writes one publish's audit event (topic, size, qos, retain, outcome; never the payload).
// Each event is its own INSERT, written before the answer. A message already handed to the broker
// cannot be called back, so when the database refuses the event it is logged instead, in full, at
// error level: never dropped silently.
func (s *publishAPI) auditPublish(r *http.Request, e store.AuditEvent) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.st.AuditTrail.Audit(ctx, e); err != nil {
		s.log.Error("publish audit event not stored; it is recorded in this log line instead", "actor", e.Actor, "action", e.Action,
			"target", e.Target, "outcome", e.Outcome, "remote", e.RemoteAddr, "detail", e.Detail, "error", err.Error())
	}
}

// keyLimiter is a token bucket per application key, in a bounded map. A bucket that has refilled is
// the same as a new one, so idle buckets are dropped when the map is full; only when every bucket is
// busy is an arbitrary one dropped (that key then starts from a full bucket).
type keyLimiter struct {
	mu    sync.Mutex
	rate  rate.Limit
	burst int
	max   int
	keys  map[string]*rate.Limiter
	now   func() time.Time
}

func newKeyLimiter(perSecond float64, burst, max int, now func() time.Time) *keyLimiter {
	return &keyLimiter{rate: rate.Limit(perSecond), burst: burst, max: max, keys: map[string]*rate.Limiter{}, now: now}
}

// allow takes one token from key's bucket, or reports how long until one is there.
func (l *keyLimiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim := l.keys[key]
	if lim == nil {
		if len(l.keys) >= l.max {
			l.sweep(now)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.keys[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops full (idle) buckets, and an arbitrary one when none is idle.
func (l *keyLimiter) sweep(now time.Time) {
	for k, lim := range l.keys {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.keys, k)
		}
	}
	for k := range l.keys {
		if len(l.keys) < l.max {
			break
		}
		delete(l.keys, k)
	}
}

// size is the number of buckets held (for tests).
func (l *keyLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
