// Package publish is the service of the publish bridge: an application key with the publish right
// sends one MQTT message to the broker. The service owns the per-key rate limit, the checks of the topic,
// payload and QoS, the key's write grant for the exact topic, the publish itself (through the Publisher
// interface; QoS 1 waits for the broker's PUBACK) and the audit event of each publish (never its payload).
package publish

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
	"golang.org/x/time/rate"
)

// Stable codes of the publish bridge's refusals; the REST API sends them as the problem's code.
const (
	CodeTopicNotGranted   = "topic_not_granted"    // the key has no write grant covering the topic
	CodeRateLimited       = "publish_rate_limited" // this key's publish rate is spent
	CodeRefused           = "publish_refused"      // the broker answered the publish with a failure reason code
	CodeBrokerUnavailable = "broker_unavailable"   // no broker connection (or no bridge configured)
	CodeBusy              = "publish_busy"         // too many publishes in flight
	CodeTimeout           = "publish_timeout"      // no PUBACK in time; the message may have been delivered
	CodePayloadTooLarge   = "body_too_large"       // the payload is larger than MaxPayload
	CodeInternal          = "internal_error"       // an unknown failure of the Publisher (the audit's reason)
	codeValidation        = "validation_failed"    // the code of a service.ErrInvalid refusal (the audit's reason)
)

const (
	// brokerRetryAfter is about how long the bridge takes to notice a broker that is back (its
	// reconnect backoff is at most 5 s).
	brokerRetryAfter = 5 * time.Second
	// notConfiguredRetry is the Retry-After of a server running without a bridge.
	notConfiguredRetry = time.Minute
	// maxLimiters bounds the per-key rate limiters kept in memory.
	maxLimiters            = 10000
	auditTimeout           = 5 * time.Second
	defaultPublishTimeout  = 5 * time.Second
	defaultMaxPayloadBytes = 256 << 10
)

// Kinds of a Publisher's failure, matched with errors.Is (backend/api adapts backend/bridge's errors to
// them; the service does not import the bridge, which speaks HTTP for its health).
var (
	ErrTopic       = errors.New("the topic is not one the publish bridge may publish to")
	ErrBusy        = errors.New("too many publishes are in flight on the publish bridge")
	ErrTimeout     = errors.New("the broker did not acknowledge the publish in time")
	ErrRefused     = errors.New("the broker refused the publish")
	ErrUnavailable = errors.New("the MQTT broker is not reachable from the publish bridge")
)

// Failure is a Publisher's failure of one of the kinds above, with the reason to show (the bridge's text
// after its kind's: "reason code 0x87", the topic's fault) and the original error.
type Failure struct {
	Kind   error
	Reason string
	Err    error
}

// Error is the original error's text.
func (f *Failure) Error() string { return f.Err.Error() }

// Unwrap gives errors.Is both the kind and the original.
func (f *Failure) Unwrap() []error { return []error{f.Kind, f.Err} }

// Publisher sends messages to the broker. Publish returns nil once the message is out (QoS 0) or
// acknowledged (QoS 1), or an error (a Failure for the kinds above).
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

// Store is what the service needs of the database (backend/store implements it).
type Store interface {
	Audit(ctx context.Context, e store.AuditEvent) error
}

// Config configures a Service.
type Config struct {
	// Publisher sends the messages. Nil: every publish is refused as unavailable.
	Publisher Publisher
	// MaxPayload caps a payload in bytes once decoded (default 256 KiB).
	MaxPayload int
	// Rate and Burst are each key's token bucket (default 10 a second, burst 20).
	Rate  float64
	Burst int
	// Timeout bounds one publish, PUBACK included (default 5 s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the audit events the database refused (default: discard).
	Logger *slog.Logger
}

// Service publishes through the bridge.
type Service struct {
	st  Store
	cfg Config
	lim *keyLimiter
}

// New builds a Service on st.
func New(st Store, c Config) *Service {
	if c.MaxPayload <= 0 {
		c.MaxPayload = defaultMaxPayloadBytes
	}
	if c.Rate <= 0 {
		c.Rate = 10
	}
	if c.Burst <= 0 {
		c.Burst = 20
	}
	if c.Timeout <= 0 {
		c.Timeout = defaultPublishTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, cfg: c, lim: newKeyLimiter(c.Rate, c.Burst, maxLimiters, c.Now)}
}

// Admit takes one publish from keyID's budget, before its request is read: nil, or ErrUnavailable
// (CodeBrokerUnavailable) without a Publisher, or ErrThrottled (CodeRateLimited) with RetryAfter.
func (s *Service) Admit(keyID string) error {
	if s.cfg.Publisher == nil {
		return &service.Error{Kind: service.ErrUnavailable, Code: CodeBrokerUnavailable, RetryAfter: notConfiguredRetry,
			Msg: "the publish bridge is not configured: start iotauth serve with PUBLISH_BROKER_URL (or -publish-broker-url) set to the broker, e.g. tcp://127.0.0.1:1883"}
	}
	if ok, wait := s.lim.allow(keyID); !ok {
		return &service.Error{Kind: service.ErrThrottled, Code: CodeRateLimited, RetryAfter: max(wait, time.Second),
			Msg: fmt.Sprintf("this application key may publish %g messages a second (burst %d); retry after the time in Retry-After", s.cfg.Rate, s.cfg.Burst)}
	}
	return nil
}

// Request is one publish as asked: a nil member was not given.
type Request struct {
	Topic    *string
	Payload  *string
	Encoding string // "utf8" (or "") or "base64"
	QoS      *int
	Retain   bool
}

// Result is what was published (never the payload). Acknowledged: QoS 1's PUBACK came.
type Result struct {
	Topic        string
	QoS          int
	Retain       bool
	Size         int
	Acknowledged bool
}

// message is a checked request.
type message struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
}

// check validates a request (docs/security.md, A2, B1, H1): a concrete topic (no wildcard, no $ topic,
// no NUL, 1 to topicfilter.MaxLen bytes), qos 0 or 1, the payload in utf8 or base64 and at most
// maxPayload bytes once decoded. Refusals name the member at fault.
func check(req Request, maxPayload int) (message, error) {
	var m message
	if req.Topic == nil || *req.Topic == "" {
		return m, service.Invalid("topic", "topic is required: the concrete MQTT topic to publish to, e.g. agents/<uuid>/cmd")
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
		return m, service.Invalid("topic", msg)
	}
	m.topic = *req.Topic
	if req.QoS == nil || (*req.QoS != 0 && *req.QoS != 1) {
		return m, service.Invalid("qos", "qos is required and must be 0 (answer 202 once sent) or 1 (answer 200 after the broker's PUBACK)")
	}
	m.qos = byte(*req.QoS)
	if req.Payload == nil {
		return m, service.Invalid("payload", `payload is required (it may be ""): text, or base64 with "encoding": "base64"`)
	}
	tooLarge := func(n int) error {
		return &service.Error{Kind: service.ErrTooLarge, Code: CodePayloadTooLarge, Field: "payload",
			Msg: fmt.Sprintf("the payload is %d bytes; at most %d are accepted (PUBLISH_MAX_PAYLOAD)", n, maxPayload)}
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
			return m, service.Invalid("payload", "payload is not valid base64 (the standard alphabet with = padding, RFC 4648 section 4)")
		}
		m.payload = b
	default:
		return m, service.Invalid("encoding", `encoding must be "utf8" (the default) or "base64"`)
	}
	if len(m.payload) > maxPayload {
		return m, tooLarge(len(m.payload))
	}
	m.retain = req.Retain
	return m, nil
}

// Publish checks req, the key's write grants (topics) for its exact topic, publishes it and audits
// the publish (mqtt_publish, on "mqtt-topic:<topic>", success or failure with its reason), as a. Call
// Admit first: Publish does not take from the key's budget.
func (s *Service) Publish(ctx context.Context, a service.Actor, topics []store.AppTopic, req Request) (Result, error) {
	if s.cfg.Publisher == nil {
		return Result{}, s.Admit("")
	}
	m, err := check(req, s.cfg.MaxPayload)
	if err != nil {
		return Result{}, err
	}
	detail := map[string]any{"topic": m.topic, "size": len(m.payload), "qos": int(m.qos), "retain": m.retain}
	if !topicfilter.AllowsWrite(grantsOf(topics), m.topic) {
		detail["reason"] = "topic not granted"
		s.audit(ctx, a, m.topic, detail, store.OutcomeFailure)
		return Result{}, &service.Error{Kind: service.ErrForbidden, Code: CodeTopicNotGranted, Field: "topic",
			Msg: "this application key has no write grant covering the topic; an admin fixes a key's topics at creation"}
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err = s.cfg.Publisher.Publish(pctx, m.topic, m.payload, m.qos, m.retain)
	cancel()
	if err != nil {
		refusal, code := failure(err)
		detail["reason"] = code
		s.audit(ctx, a, m.topic, detail, store.OutcomeFailure)
		return Result{}, refusal
	}
	s.audit(ctx, a, m.topic, detail, store.OutcomeSuccess)
	return Result{Topic: m.topic, QoS: int(m.qos), Retain: m.retain, Size: len(m.payload), Acknowledged: m.qos == 1}, nil
}

// failure is the refusal of a Publisher's error, and its code for the audit's reason.
func failure(err error) (error, string) {
	var f *Failure
	reason := ""
	if errors.As(err, &f) {
		reason = f.Reason
	}
	var e *service.Error
	switch {
	case errors.Is(err, ErrTopic):
		e = service.Invalid("topic", "topic is not a topic one may publish to: "+reason)
	case errors.Is(err, ErrBusy):
		e = &service.Error{Kind: service.ErrUnavailable, Code: CodeBusy, RetryAfter: time.Second,
			Msg: "too many publishes are in flight on the bridge; retry after the time in Retry-After"}
	case errors.Is(err, ErrTimeout):
		e = &service.Error{Kind: service.ErrUpstreamTimeout, Code: CodeTimeout, RetryAfter: time.Second,
			Msg: "the broker did not acknowledge the publish in time; it may have been delivered, and retrying may deliver it twice (QoS 1 is at-least-once)"}
	case errors.Is(err, ErrRefused):
		e = &service.Error{Kind: service.ErrUpstream, Code: CodeRefused, Msg: "the broker refused the publish (" + reason + ")"}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		e = &service.Error{Kind: service.ErrUnavailable, Code: CodeBrokerUnavailable, RetryAfter: brokerRetryAfter,
			Msg: "the MQTT broker is not reachable from the publish bridge; nothing was published; retry after the time in Retry-After"}
	default:
		return fmt.Errorf("publish: %w", err), CodeInternal
	}
	e.Err = err
	if e.Code == "" {
		// The audit's reason is the code the caller sees: a validation refusal's.
		return e, codeValidation
	}
	return e, e.Code
}

// audit writes one publish's audit event (topic, size, qos, retain, outcome; never the payload). Each
// event is its own INSERT, written before the answer. A message already handed to the broker cannot be
// called back, so when the database refuses the event it is logged instead, in full, at error level:
// never dropped silently.
func (s *Service) audit(ctx context.Context, a service.Actor, topic string, detail map[string]any, outcome string) {
	e := a.Event("mqtt_publish", detail)
	e.Target, e.Outcome = "mqtt-topic:"+topic, outcome
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := s.st.Audit(ctx, e); err != nil {
		s.cfg.Logger.Error("publish audit event not stored; it is recorded in this log line instead", "actor", e.Actor, "action", e.Action,
			"target", e.Target, "outcome", e.Outcome, "remote", e.RemoteAddr, "detail", e.Detail, "error", err.Error())
	}
}

func grantsOf(topics []store.AppTopic) []topicfilter.Grant {
	out := make([]topicfilter.Grant, 0, len(topics))
	for _, t := range topics {
		out = append(out, topicfilter.Grant{Access: topicfilter.Access(t.Access), Filter: t.Pattern})
	}
	return out
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
