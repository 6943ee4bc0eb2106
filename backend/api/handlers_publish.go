package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/service/publish"
	"github.com/prometheus/client_golang/prometheus"
)

// publishAPI serves the publish bridge: application keys publishing to the broker through the API. The
// checks, the rate limit, the publish and its audit are backend/service/publish's.
type publishAPI struct {
	cfg     Config
	metrics *metrics
	svc     *publish.Service
}

// Problem codes of the publish bridge (POST /api/v1/publish).
const (
	CodeTopicNotGranted    = publish.CodeTopicNotGranted   // 403: the application key has no write grant covering the topic
	CodePublishRateLimited = publish.CodeRateLimited       // 429: this key's publish rate is spent; see Retry-After
	CodePublishRefused     = publish.CodeRefused           // 502: the broker answered the publish with a failure reason code
	CodeBrokerUnavailable  = publish.CodeBrokerUnavailable // 503: the bridge has no broker connection (or is not configured); see Retry-After
	CodePublishBusy        = publish.CodeBusy              // 503: too many publishes in flight; see Retry-After
	CodePublishTimeout     = publish.CodeTimeout           // 504: no PUBACK in time; the message may have been delivered
)

// Publish bridge defaults (PUBLISH_MAX_PAYLOAD, PUBLISH_RATE, PUBLISH_BURST, PUBLISH_TIMEOUT).
const (
	DefaultPublishMaxPayload = 256 << 10
	DefaultPublishRate       = 10.0
	DefaultPublishBurst      = 20
	DefaultPublishTimeout    = 5 * time.Second
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

// publishMaxBody is the body limit of POST /api/v1/publish: a payload of the largest size in base64
// plus room for the other members. It is enforced before the body is read.
func publishMaxBody(maxPayload int) int64 {
	return int64(4*((maxPayload+2)/3)) + 8<<10
}

// bridgePublisher adapts a Publisher's backend/bridge errors to the kinds the publish service knows
// (the service does not import the bridge), keeping their text.
type bridgePublisher struct{ p Publisher }

func (b bridgePublisher) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	err := b.p.Publish(ctx, topic, payload, qos, retain)
	if err == nil {
		return nil
	}
	for _, k := range []struct{ bridge, svc error }{
		{bridge.ErrTopic, publish.ErrTopic}, {bridge.ErrBusy, publish.ErrBusy}, {bridge.ErrTimeout, publish.ErrTimeout},
		{bridge.ErrRefused, publish.ErrRefused}, {bridge.ErrUnavailable, publish.ErrUnavailable},
	} {
		if errors.Is(err, k.bridge) {
			return &publish.Failure{Kind: k.svc, Reason: strings.TrimPrefix(err.Error(), k.bridge.Error()+": "), Err: err}
		}
	}
	return err
}

// newPublishService builds the publish bridge's service from c (its defaults applied).
func newPublishService(st publish.Store, c Config) *publish.Service {
	var p publish.Publisher
	if c.Publisher != nil {
		p = bridgePublisher{c.Publisher}
	}
	return publish.New(st, publish.Config{Publisher: p, MaxPayload: c.PublishMaxPayload, Rate: c.PublishRate, Burst: c.PublishBurst,
		Timeout: c.PublishTimeout, Now: c.Now, Logger: c.Logger})
}

// publish: POST /api/v1/publish (an application key with the publish right; docs/security.md, B1). The order
// is: rate limit per key, strict body (size capped before reading), topic and payload checks, the key's
// write grants for the exact topic, the publish (QoS 1 waits for the PUBACK), the audit event.
func (s *publishAPI) publish(w http.ResponseWriter, r *http.Request) error {
	caller, ok := AppCallerFrom(r.Context())
	if !ok {
		return problem(http.StatusForbidden, CodeForbidden, "publishing takes an application key with the publish right")
	}
	if err := s.svc.Admit(caller.KeyID); err != nil {
		return err
	}
	var req publishRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	res, err := s.svc.Publish(r.Context(), actorOf(r), caller.Topics, publish.Request{Topic: req.Topic, Payload: req.Payload,
		Encoding: req.Encoding, QoS: req.QoS, Retain: req.Retain})
	if err != nil {
		return err
	}
	out := PublishResult{Topic: res.Topic, QoS: res.QoS, Retain: res.Retain, Size: res.Size, Status: "sent"}
	status := http.StatusAccepted
	if res.Acknowledged {
		out.Status, status = "acknowledged", http.StatusOK
	}
	writeJSON(w, status, out)
	return nil
}
