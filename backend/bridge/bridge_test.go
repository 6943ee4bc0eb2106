package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

func TestParseBrokerURL(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"tcp://127.0.0.1:1883", true},
		{"mqtt://broker:1883", true},
		{"mqtts://broker.example.com:8883", true},
		{"wss://broker.example.com:443/mqtt", true},
		{"tcp://127.0.0.1", false},                    // no port
		{"http://127.0.0.1:1883", false},              // not MQTT
		{"tcp://user:s3cr3tpw@127.0.0.1:1883", false}, // credentials are the bridge's own
		{"127.0.0.1:1883", false},
		{"", false},
	} {
		_, err := ParseBrokerURL(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: error %v, want ok=%t", tt.in, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3tpw") {
			t.Errorf("%q: the error repeats the password: %v", tt.in, err)
		}
	}
}

type noIssuer struct{}

func (noIssuer) Issue(context.Context, time.Duration) (Credential, error) {
	return Credential{}, errors.New("database down")
}
func (noIssuer) Revoke(context.Context, string) error { return nil }

func TestNewRefusesAgentClientIDs(t *testing.T) {
	for _, prefix := range []string{"agent-x", "a/b", "a+b"} {
		if _, err := New(Config{BrokerURL: "tcp://127.0.0.1:1883", Issuer: noIssuer{}, ClientIDPrefix: prefix}); err == nil {
			t.Errorf("client id prefix %q accepted", prefix)
		}
	}
	if _, err := New(Config{BrokerURL: "tcp://127.0.0.1:1883"}); err == nil {
		t.Error("no issuer accepted")
	}
	b, err := New(Config{BrokerURL: "tcp://127.0.0.1:1883", Issuer: noIssuer{}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.cfg.ClientIDPrefix, "iotauth-bridge-") {
		t.Errorf("default client id prefix %q", b.cfg.ClientIDPrefix)
	}
	// Not started (or not startable): publishes fail as unavailable, Close is harmless.
	if err := b.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a credential")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := b.Publish(ctx, "a", nil, 1, false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("publish before start: %v", err)
	}
	b.Close()
}

func TestHostnameIsAClientIDPart(t *testing.T) {
	h := Hostname()
	if h == "" || len(h) > 40 || strings.ContainsAny(h, "+#/ ") {
		t.Fatalf("hostname %q", h)
	}
}

func TestRenewAt(t *testing.T) {
	exp := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	if got := renewAt(Credential{ExpiresAt: exp}, 24*time.Hour); !got.Equal(exp.Add(-8 * time.Hour)) {
		t.Fatalf("renew at %v, want 16 h into a 24 h key", got)
	}
}

// The bridge publishes exactly the topics the product's one topic definition accepts: up to
// topicfilter.MaxLen bytes, no wildcard, no $ topic. A refused topic never reaches the broker (this
// bridge has none: a topic it accepted would fail with ErrUnavailable instead).
func TestPublishChecksTheTopic(t *testing.T) {
	b, err := New(Config{BrokerURL: "tcp://127.0.0.1:1883", Issuer: noIssuer{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		topic string
		want  error
	}{
		{strings.Repeat("t", 300), ErrUnavailable},
		{strings.Repeat("t", topicfilter.MaxLen), ErrUnavailable},
		{strings.Repeat("t", topicfilter.MaxLen+1), topicfilter.ErrTooLong},
		{"", topicfilter.ErrEmpty},
		{"a/+", topicfilter.ErrWildTopic},
		{"$SYS/x", topicfilter.ErrDollar},
	} {
		err := b.Publish(ctx, tt.topic, nil, 0, false)
		if !errors.Is(err, tt.want) || (tt.want != ErrUnavailable) != errors.Is(err, ErrTopic) {
			t.Errorf("Publish to a %d-byte topic: %v, want %v", len(tt.topic), err, tt.want)
		}
	}
}
