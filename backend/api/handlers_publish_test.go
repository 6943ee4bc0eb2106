package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/store"
)

// fakePublisher records publishes and answers with err.
type fakePublisher struct {
	mu   sync.Mutex
	err  error
	sent []string // topic|qos|retain|payload
}

func (f *fakePublisher) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("publish without a deadline")
	}
	if f.err != nil {
		return f.err
	}
	f.sent = append(f.sent, fmt.Sprintf("%s|%d|%t|%s", topic, qos, retain, payload))
	return nil
}

// publishAs runs the publish handler as if caller had authenticated, with the route's body limit.
func publishAs(s *Server, caller AppCaller, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/api/v1/publish", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	ctx := context.WithValue(r.Context(), appKeyKey{}, caller)
	ctx = context.WithValue(ctx, maxBodyKey{}, publishMaxBody(s.cfg.PublishMaxPayload))
	r = r.WithContext(ctx)
	w := httptest.NewRecorder()
	if err := s.bridge.publish(w, r); err != nil {
		s.fail(w, r, err)
	}
	return w
}

var writer = AppCaller{KeyID: "k1", Rights: []string{store.RightPublish}, Topics: []store.AppTopic{
	{Access: "write", Pattern: "agents/+/cmd/#"}, {Access: "read", Pattern: "agents/+/telemetry"}, {Access: "readwrite", Pattern: "apps/x"}}}

// TestPublishDecisions: the handler's checks in order, each answer with its status, code and field,
// and what reached the publisher.
func TestPublishDecisions(t *testing.T) {
	fp := &fakePublisher{}
	var logs bytes.Buffer
	s := offlineServer(t, func(c *Config) {
		c.Publisher = fp
		c.PublishMaxPayload = 16
		c.PublishBurst = 1000
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	for _, tt := range []struct {
		name   string
		body   string
		status int
		code   string
		field  string
		sent   string
	}{
		{"qos 1 acknowledged", `{"topic":"agents/u1/cmd/reboot","payload":"go","qos":1}`, 200, "", "", "agents/u1/cmd/reboot|1|false|go"},
		{"qos 0 sent", `{"topic":"agents/u1/cmd","payload":"","qos":0}`, 202, "", "", "agents/u1/cmd|0|false|"},
		{"readwrite grant, retain", `{"topic":"apps/x","payload":"r","qos":1,"retain":true}`, 200, "", "", "apps/x|1|true|r"},
		{"base64 byte-exact", `{"topic":"apps/x","payload":"` + b64([]byte{0, 255, 10}) + `","encoding":"base64","qos":0}`, 202, "", "", "apps/x|0|false|\x00\xff\n"},
		{"read-only grant", `{"topic":"agents/u1/telemetry","payload":"x","qos":1}`, 403, CodeTopicNotGranted, "topic", ""},
		{"outside grants", `{"topic":"agents/u1/other","payload":"x","qos":1}`, 403, CodeTopicNotGranted, "topic", ""},
		{"$SYS", `{"topic":"$SYS/x","payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"+ wildcard", `{"topic":"a/+","payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"# wildcard", `{"topic":"a/#","payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"empty topic", `{"topic":"","payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"no topic", `{"payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"NUL in topic", `{"topic":"a\u0000b","payload":"x","qos":1}`, 400, CodeInvalidCharacter, "topic", ""},
		{"long topic", `{"topic":"` + strings.Repeat("a", topicfilter.MaxLen+1) + `","payload":"x","qos":1}`, 400, CodeValidation, "topic", ""},
		{"qos 2", `{"topic":"apps/x","payload":"x","qos":2}`, 400, CodeValidation, "qos", ""},
		{"no qos", `{"topic":"apps/x","payload":"x"}`, 400, CodeValidation, "qos", ""},
		{"no payload", `{"topic":"apps/x","qos":0}`, 400, CodeValidation, "payload", ""},
		{"bad base64", `{"topic":"apps/x","payload":"!!!","encoding":"base64","qos":0}`, 400, CodeValidation, "payload", ""},
		{"unpadded base64", `{"topic":"apps/x","payload":"YQ","encoding":"base64","qos":0}`, 400, CodeValidation, "payload", ""},
		{"bad encoding", `{"topic":"apps/x","payload":"x","encoding":"hex","qos":0}`, 400, CodeValidation, "encoding", ""},
		{"unknown member", `{"topic":"apps/x","payload":"x","qos":0,"dup":1}`, 400, CodeInvalidJSON, "dup", ""},
		{"payload over the cap", `{"topic":"apps/x","payload":"` + strings.Repeat("p", 17) + `","qos":0}`, 413, CodeBodyTooLarge, "payload", ""},
		{"base64 over the cap", `{"topic":"apps/x","payload":"` + b64(make([]byte, 17)) + `","encoding":"base64","qos":0}`, 413, CodeBodyTooLarge, "payload", ""},
		{"body over the limit", `{"topic":"apps/x","payload":"` + strings.Repeat("p", int(publishMaxBody(16))) + `","qos":0}`, 413, CodeBodyTooLarge, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fp.sent = nil
			w := publishAs(s, writer, tt.body)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.code != "" {
				if p := problemOf(t, w); p.Code != tt.code || p.Field != tt.field {
					t.Fatalf("code %q field %q, want %q %q: %s", p.Code, p.Field, tt.code, tt.field, w.Body)
				}
			}
			got := strings.Join(fp.sent, ",")
			if got != tt.sent {
				t.Fatalf("published %q, want %q", got, tt.sent)
			}
			if tt.status < 300 {
				var res PublishResult
				if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || res.Topic == "" || (res.QoS == 1) != (res.Status == "acknowledged") {
					t.Fatalf("answer %s", w.Body)
				}
			}
		})
	}
	// The offline store refuses the audit events: each is logged instead, and never with its payload.
	if !strings.Contains(logs.String(), "publish audit event not stored") || strings.Contains(logs.String(), `"go"`) {
		t.Fatalf("audit fallback log: %s", logs.String())
	}
}

// TestPublishErrors: each publisher outcome becomes one answer; nothing is retried behind the caller's back.
func TestPublishErrors(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		code   string
		retry  bool
	}{
		{bridge.ErrUnavailable, 503, CodeBrokerUnavailable, true},
		{fmt.Errorf("%w: connection reset", bridge.ErrUnavailable), 503, CodeBrokerUnavailable, true},
		{bridge.ErrBusy, 503, CodePublishBusy, true},
		{bridge.ErrTimeout, 504, CodePublishTimeout, true},
		{fmt.Errorf("%w: reason code 0x87", bridge.ErrRefused), 502, CodePublishRefused, false},
		{errors.New("boom"), 500, CodeInternal, false},
	} {
		s := offlineServer(t, func(c *Config) { c.Publisher = &fakePublisher{err: tt.err} })
		w := publishAs(s, writer, `{"topic":"apps/x","payload":"x","qos":1}`)
		if p := problemOf(t, w); w.Code != tt.status || p.Code != tt.code || (w.Header().Get("Retry-After") != "") != tt.retry {
			t.Errorf("%v: %d %s Retry-After %q", tt.err, w.Code, p.Code, w.Header().Get("Retry-After"))
		}
	}
	s := offlineServer(t)
	w := publishAs(s, writer, `{"topic":"apps/x","payload":"x","qos":1}`)
	if p := problemOf(t, w); w.Code != 503 || p.Code != CodeBrokerUnavailable || !strings.Contains(p.Detail, "PUBLISH_BROKER_URL") || w.Header().Get("Retry-After") == "" {
		t.Errorf("not configured: %d %s", w.Code, w.Body)
	}
}

// TestPublishRateLimit: a key's burst, then 429 with Retry-After; another key has its own bucket.
func TestPublishRateLimit(t *testing.T) {
	s := offlineServer(t, func(c *Config) { c.Publisher = &fakePublisher{}; c.PublishRate = 0.5; c.PublishBurst = 3 })
	body := `{"topic":"apps/x","payload":"x","qos":0}`
	for i := 0; i < 3; i++ {
		if w := publishAs(s, writer, body); w.Code != 202 {
			t.Fatalf("publish %d: %d %s", i, w.Code, w.Body)
		}
	}
	w := publishAs(s, writer, body)
	if p := problemOf(t, w); w.Code != 429 || p.Code != CodePublishRateLimited || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("over the rate: %d %s Retry-After %q", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
	other := writer
	other.KeyID = "k2"
	if w := publishAs(s, other, body); w.Code != 202 {
		t.Fatalf("another key: %d %s", w.Code, w.Body)
	}
}

// TestPublishableKeyRefused: a publishable key gets 403 before any database work (T4; the check in wrap
// that answers it for every route but the exchange).
func TestPublishableKeyRefused(t *testing.T) {
	s := offlineServer(t, func(c *Config) { c.Publisher = &fakePublisher{} })
	w := call(s, "POST", "/api/v1/publish", "application/json", `{"topic":"apps/x","payload":"x","qos":0}`,
		"Authorization", "Bearer iotpk_live_0123456789abcdefghijklmnopqrstuvwxyzABCD")
	if p := problemOf(t, w); w.Code != http.StatusForbidden || p.Code != "publishable_key_exchange_only" {
		t.Fatalf("publishable key: %d %s", w.Code, w.Body)
	}
	w = call(s, "POST", "/api/v1/publish", "application/json", `{}`)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d %s", w.Code, w.Body)
	}
}

// connectedPublisher is a fakePublisher that reports a connection state.
type connectedPublisher struct {
	fakePublisher
	up bool
}

func (c *connectedPublisher) Connected() bool { return c.up }

// TestPublishBridgeMetric: the bridge's connection state is a gauge on /metrics.
func TestPublishBridgeMetric(t *testing.T) {
	cp := &connectedPublisher{up: true}
	s := offlineServer(t, func(c *Config) { c.Publisher = cp })
	scrape := func() string {
		w := httptest.NewRecorder()
		s.MetricsHandler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		return w.Body.String()
	}
	if !strings.Contains(scrape(), "iotauth_publish_bridge_connected 1") {
		t.Fatal("connected bridge not reported")
	}
	cp.up = false
	if !strings.Contains(scrape(), "iotauth_publish_bridge_connected 0") {
		t.Fatal("disconnected bridge not reported")
	}
}
