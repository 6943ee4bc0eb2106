package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
)

type fakeStore struct {
	events []store.AuditEvent
	err    error
}

func (f *fakeStore) Audit(_ context.Context, e store.AuditEvent) error {
	f.events = append(f.events, e)
	return f.err
}

// fakePublisher records publishes and answers with err.
type fakePublisher struct {
	err  error
	sent []string
}

func (f *fakePublisher) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("publish without a deadline")
	}
	if f.err != nil {
		return f.err
	}
	f.sent = append(f.sent, fmt.Sprintf("%s|%d|%t|%s", topic, qos, retain, payload))
	return nil
}

func ptr[T any](v T) *T { return &v }

var grants = []store.AppTopic{{Access: "write", Pattern: "agents/+/cmd/#"}, {Access: "read", Pattern: "agents/+/telemetry"}}

// TestPublish: each request and publisher outcome becomes its result or refusal (kind, code, field,
// Retry-After), audited as a publish of that outcome, or not at all when the request itself is wrong.
func TestPublish(t *testing.T) {
	cases := []struct {
		name    string
		req     Request
		pubErr  error
		kind    error
		code    string
		field   string
		retry   time.Duration
		sent    string
		outcome string // audited outcome, "" for no event
		reason  string
	}{
		{name: "qos 1", req: Request{Topic: ptr("agents/a/cmd/x"), Payload: ptr("on"), QoS: ptr(1)}, sent: "agents/a/cmd/x|1|false|on", outcome: store.OutcomeSuccess},
		{name: "qos 0 base64 retained", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("aGk="), Encoding: "base64", QoS: ptr(0), Retain: true},
			sent: "agents/a/cmd|0|true|hi", outcome: store.OutcomeSuccess},
		{name: "no topic", req: Request{Payload: ptr("x"), QoS: ptr(0)}, kind: service.ErrInvalid, field: "topic"},
		{name: "wildcard", req: Request{Topic: ptr("agents/+/cmd"), Payload: ptr("x"), QoS: ptr(0)}, kind: service.ErrInvalid, field: "topic"},
		{name: "dollar", req: Request{Topic: ptr("$SYS/x"), Payload: ptr("x"), QoS: ptr(0)}, kind: service.ErrInvalid, field: "topic"},
		{name: "qos 2", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(2)}, kind: service.ErrInvalid, field: "qos"},
		{name: "no payload", req: Request{Topic: ptr("agents/a/cmd"), QoS: ptr(0)}, kind: service.ErrInvalid, field: "payload"},
		{name: "bad base64", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("!!"), Encoding: "base64", QoS: ptr(0)}, kind: service.ErrInvalid, field: "payload"},
		{name: "bad encoding", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), Encoding: "hex", QoS: ptr(0)}, kind: service.ErrInvalid, field: "encoding"},
		{name: "too large", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr(strings.Repeat("x", 17)), QoS: ptr(0)},
			kind: service.ErrTooLarge, code: CodePayloadTooLarge, field: "payload"},
		{name: "too large in base64", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr(strings.Repeat("A", 28)), Encoding: "base64", QoS: ptr(0)},
			kind: service.ErrTooLarge, code: CodePayloadTooLarge, field: "payload"},
		{name: "read grant only", req: Request{Topic: ptr("agents/a/telemetry"), Payload: ptr("x"), QoS: ptr(0)},
			kind: service.ErrForbidden, code: CodeTopicNotGranted, field: "topic", outcome: store.OutcomeFailure, reason: "topic not granted"},
		{name: "broker down", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: &Failure{Kind: ErrUnavailable, Err: errors.New("down")},
			kind: service.ErrUnavailable, code: CodeBrokerUnavailable, retry: 5 * time.Second, outcome: store.OutcomeFailure, reason: CodeBrokerUnavailable},
		{name: "deadline", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: context.DeadlineExceeded,
			kind: service.ErrUnavailable, code: CodeBrokerUnavailable, retry: 5 * time.Second, outcome: store.OutcomeFailure, reason: CodeBrokerUnavailable},
		{name: "busy", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: &Failure{Kind: ErrBusy, Err: errors.New("busy")},
			kind: service.ErrUnavailable, code: CodeBusy, retry: time.Second, outcome: store.OutcomeFailure, reason: CodeBusy},
		{name: "no puback", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: &Failure{Kind: ErrTimeout, Err: errors.New("late")},
			kind: service.ErrUpstreamTimeout, code: CodeTimeout, retry: time.Second, outcome: store.OutcomeFailure, reason: CodeTimeout},
		{name: "refused", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: &Failure{Kind: ErrRefused, Reason: "reason code 0x87", Err: errors.New("no")},
			kind: service.ErrUpstream, code: CodeRefused, outcome: store.OutcomeFailure, reason: CodeRefused},
		{name: "topic refused by the bridge", req: Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(1)}, pubErr: &Failure{Kind: ErrTopic, Reason: "bad", Err: errors.New("bad")},
			kind: service.ErrInvalid, field: "topic", outcome: store.OutcomeFailure, reason: "validation_failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, pub := &fakeStore{}, &fakePublisher{err: c.pubErr}
			svc := New(st, Config{Publisher: pub, MaxPayload: 16})
			res, err := svc.Publish(context.Background(), service.Actor{Name: "app-key:k1", RemoteAddr: "192.0.2.1"}, grants, c.req)
			if c.kind != nil {
				var se *service.Error
				if !errors.Is(err, c.kind) || !errors.As(err, &se) || se.Code != c.code || se.Field != c.field || se.RetryAfter != c.retry || se.Msg == "" {
					t.Fatalf("got %#v, want kind %v code %q field %q retry %s", err, c.kind, c.code, c.field, c.retry)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if res.Acknowledged != (*c.req.QoS == 1) || res.Topic != *c.req.Topic {
				t.Errorf("result %+v", res)
			}
			if c.sent != "" && (len(pub.sent) != 1 || pub.sent[0] != c.sent) {
				t.Errorf("sent %q, want %q", pub.sent, c.sent)
			}
			if c.outcome == "" {
				if len(st.events) != 0 {
					t.Errorf("audited %+v", st.events)
				}
				return
			}
			if len(st.events) != 1 {
				t.Fatalf("audited %+v, want one event", st.events)
			}
			e := st.events[0]
			if e.Action != "mqtt_publish" || e.Outcome != c.outcome || e.Target != "mqtt-topic:"+*c.req.Topic || e.Actor != "app-key:k1" || e.RemoteAddr != "192.0.2.1" {
				t.Errorf("audited %+v", e)
			}
			if c.reason != "" && e.Detail["reason"] != c.reason {
				t.Errorf("reason %v, want %s", e.Detail["reason"], c.reason)
			}
			if _, ok := e.Detail["payload"]; ok {
				t.Error("the payload is audited")
			}
		})
	}
}

// TestPublishUnknownFailure: an unknown publisher error is an error of no kind (a 500), audited with
// reason internal_error.
func TestPublishUnknownFailure(t *testing.T) {
	st := &fakeStore{}
	svc := New(st, Config{Publisher: &fakePublisher{err: errors.New("boom")}})
	_, err := svc.Publish(context.Background(), service.Actor{}, grants, Request{Topic: ptr("agents/a/cmd"), Payload: ptr("x"), QoS: ptr(0)})
	var se *service.Error
	if err == nil || errors.As(err, &se) {
		t.Fatalf("got %#v, want a plain error", err)
	}
	if len(st.events) != 1 || st.events[0].Detail["reason"] != CodeInternal {
		t.Errorf("audited %+v", st.events)
	}
}

// TestAdmit: without a publisher every publish is unavailable; a key's burst, then throttled with a
// Retry-After of at least a second; another key has its own bucket.
func TestAdmit(t *testing.T) {
	if err := New(&fakeStore{}, Config{}).Admit("k"); !errors.Is(err, service.ErrUnavailable) {
		t.Fatalf("without a publisher: %v", err)
	}
	now := time.Unix(1000, 0)
	svc := New(&fakeStore{}, Config{Publisher: &fakePublisher{}, Rate: 0.5, Burst: 3, Now: func() time.Time { return now }})
	for i := range 3 {
		if err := svc.Admit("k1"); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	err := svc.Admit("k1")
	var se *service.Error
	if !errors.As(err, &se) || !errors.Is(err, service.ErrThrottled) || se.Code != CodeRateLimited || se.RetryAfter != 2*time.Second {
		t.Fatalf("over the rate: %#v", err)
	}
	if err := svc.Admit("k2"); err != nil {
		t.Fatalf("another key: %v", err)
	}
}

// TestKeyLimiterBounded: the map never holds more than its bound; idle buckets go first.
func TestKeyLimiterBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newKeyLimiter(1, 2, 3, func() time.Time { return now })
	for _, k := range []string{"a", "a", "b", "c"} {
		l.allow(k)
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("a's burst of 2 is spent")
	}
	now = now.Add(10 * time.Second) // every bucket refills
	l.allow("d")
	if n := l.size(); n > 3 {
		t.Fatalf("%d buckets, bound 3", n)
	}
	for i := 0; i < 100; i++ {
		l.allow(fmt.Sprint("k", i))
	}
	if n := l.size(); n > 3 {
		t.Fatalf("%d buckets, bound 3", n)
	}
}
