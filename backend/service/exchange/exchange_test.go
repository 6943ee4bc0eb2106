package exchange

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
)

// fakeStore records audit events.
type fakeStore struct{ events []store.AuditEvent }

func (f *fakeStore) Audit(_ context.Context, e store.AuditEvent) error {
	f.events = append(f.events, e)
	return nil
}

// fakeProvider verifies "good", "expired" and "short" tokens and maps every token to its grants.
type fakeProvider struct {
	name     string
	outlive  bool
	grants   []topicfilter.Grant
	grantErr error
	now      time.Time
}

func (p fakeProvider) Name() string          { return p.name }
func (p fakeProvider) MayOutliveToken() bool { return p.outlive }
func (p fakeProvider) Verify(_ context.Context, raw string) (Identity, error) {
	switch raw {
	case "good":
		return Identity{Subject: "alice", Expiry: p.now.Add(time.Hour), TokenID: "jti:1"}, nil
	case "short":
		return Identity{Subject: "alice", Expiry: p.now.Add(30 * time.Second), TokenID: "jti:2"}, nil
	case "expired":
		return Identity{}, fmt.Errorf("bad token: %w", ErrTokenExpired)
	}
	return Identity{}, errors.New("bad signature")
}
func (p fakeProvider) Grants(Identity) ([]topicfilter.Grant, error) { return p.grants, p.grantErr }

type fakeProviders map[string]Provider

func (f fakeProviders) Provider(name string) (Provider, bool) { p, ok := f[name]; return p, ok }

func signer(t *testing.T, now func() time.Time) *mqttcred.Issuing {
	t.Helper()
	priv, _, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := mqttcred.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return mqttcred.NewIssuing(k, now)
}

func ptr[T any](v T) *T { return &v }

// TestExchange: each caller kind gets what its rules allow, and every refusal is its kind, code and
// field, audited (or not) as the API documents.
func TestExchange(t *testing.T) {
	now := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	sg := signer(t, func() time.Time { return now })
	devices := []topicfilter.Grant{{Access: topicfilter.Read, Filter: "devices/alice/#"}}
	provs := fakeProviders{
		"idp":      fakeProvider{name: "idp", grants: devices, now: now},
		"outlive":  fakeProvider{name: "outlive", outlive: true, grants: devices, now: now},
		"wide":     fakeProvider{name: "wide", grants: []topicfilter.Grant{{Access: topicfilter.ReadWrite, Filter: "elsewhere/#"}}, now: now},
		"unmapped": fakeProvider{name: "unmapped", grantErr: errors.New("claim holds a /"), now: now},
	}
	app := AppKey("k1", []store.AppTopic{{Access: "readwrite", Pattern: "devices/#"}}, nil)
	pk := PublishableKey(store.PublishableKey{ID: "p1", Providers: []string{"idp"}, Topics: []store.AppTopic{{Access: "read", Pattern: "devices/#"}}}, "192.0.2.1")
	soon := now.Add(30 * time.Second)
	expiring := AppKey("k2", []store.AppTopic{{Access: "readwrite", Pattern: "devices/#"}}, &soon)
	inHalfAnHour := now.Add(30 * time.Minute)
	halfHour := AppKey("k3", []store.AppTopic{{Access: "readwrite", Pattern: "devices/#"}}, &inHalfAnHour)

	cases := []struct {
		name    string
		noSign  bool
		caller  Caller
		req     Request
		kind    error
		code    string
		field   string
		audited string // the audit action written, "" for none
		topics  []mqttcred.Topic
		ttl     time.Duration
	}{
		{name: "no signer", noSign: true, caller: app, req: Request{Provider: "idp", Token: "good"}, kind: service.ErrUnavailable, code: CodeUnavailable},
		{name: "operator", caller: Operator("u1", false), req: Request{Provider: OperatorProvider},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "readwrite", Pattern: "agents/#"}}, ttl: mqttcred.DefaultTTL},
		{name: "viewer reads only", caller: Operator("u2", true), req: Request{Provider: OperatorProvider, TTLSeconds: ptr[int64](120)},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "agents/#"}}, ttl: 2 * time.Minute},
		{name: "operator with a token", caller: Operator("u1", false), req: Request{Provider: OperatorProvider, Token: "x"}, kind: service.ErrInvalid, field: "provider"},
		{name: "operator naming a provider", caller: Operator("u1", false), req: Request{Provider: "idp"}, kind: service.ErrInvalid, field: "provider"},
		{name: "ttl too short", caller: app, req: Request{Provider: "idp", Token: "good", TTLSeconds: ptr[int64](59)}, kind: service.ErrInvalid, field: "ttl"},
		{name: "ttl too long", caller: app, req: Request{Provider: "idp", Token: "good", TTLSeconds: ptr[int64](86401)}, kind: service.ErrInvalid, field: "ttl"},
		{name: "empty topics", caller: app, req: Request{Provider: "idp", Token: "good", Topics: []store.AppTopic{}}, kind: service.ErrInvalid, field: "topics"},
		{name: "bad access", caller: app, req: Request{Provider: "idp", Token: "good", Topics: []store.AppTopic{{Access: "all", Pattern: "a"}}}, kind: service.ErrInvalid, field: "topics"},
		{name: "app key", caller: app, req: Request{Provider: "idp", Token: "good"},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/#"}}, ttl: mqttcred.DefaultTTL},
		{name: "ttl bounded by the provider's token", caller: app, req: Request{Provider: "idp", Token: "good", TTLSeconds: ptr[int64](7200)},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/#"}}, ttl: time.Hour},
		{name: "provider lets it outlive the token", caller: app, req: Request{Provider: "outlive", Token: "good", TTLSeconds: ptr[int64](7200)},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/#"}}, ttl: 2 * time.Hour},
		{name: "ttl bounded by the calling key", caller: halfHour, req: Request{Provider: "outlive", Token: "good", TTLSeconds: ptr[int64](7200)},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/#"}}, ttl: 30 * time.Minute},
		{name: "narrowed by the request", caller: app, req: Request{Provider: "idp", Token: "good", Topics: []store.AppTopic{{Access: "read", Pattern: "devices/alice/lamp"}}},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/lamp"}}, ttl: mqttcred.DefaultTTL},
		{name: "publishable key", caller: pk, req: Request{Provider: "idp", Token: "good"},
			audited: "token_exchange", topics: []mqttcred.Topic{{Access: "read", Pattern: "devices/alice/#"}}, ttl: mqttcred.DefaultTTL},
		{name: "publishable key, provider not its own", caller: pk, req: Request{Provider: "outlive", Token: "good"},
			kind: service.ErrForbidden, code: CodeProviderNotAllowed, audited: "token_exchange_refused"},
		{name: "key expires within a minute", caller: expiring, req: Request{Provider: "idp", Token: "good"},
			kind: service.ErrForbidden, code: CodeForbidden, audited: "token_exchange_refused"},
		{name: "unknown provider", caller: app, req: Request{Provider: "nope", Token: "good"},
			kind: service.ErrInvalid, code: CodeUnknownProvider, audited: "token_exchange_refused"},
		{name: "reserved name for a key", caller: app, req: Request{Provider: OperatorProvider, Token: "good"},
			kind: service.ErrInvalid, code: CodeUnknownProvider, audited: "token_exchange_refused"},
		{name: "no token", caller: app, req: Request{Provider: "idp"}, kind: service.ErrInvalid, field: "token"},
		{name: "bad token", caller: app, req: Request{Provider: "idp", Token: "forged"},
			kind: service.ErrUnauthenticated, code: CodeInvalidIdPToken, audited: "token_exchange_refused"},
		{name: "expired token", caller: app, req: Request{Provider: "idp", Token: "expired"},
			kind: service.ErrUnauthenticated, code: CodeInvalidIdPToken, audited: "token_exchange_refused"},
		{name: "token expires within a minute", caller: app, req: Request{Provider: "idp", Token: "short"},
			kind: service.ErrUnauthenticated, code: CodeInvalidIdPToken, audited: "token_exchange_refused"},
		{name: "unmappable claims", caller: app, req: Request{Provider: "unmapped", Token: "good"},
			kind: service.ErrForbidden, code: CodeUnmappableClaims, audited: "token_exchange_refused"},
		{name: "mapping outside the key's topics", caller: app, req: Request{Provider: "wide", Token: "good"},
			kind: service.ErrForbidden, code: CodeNoTopics, audited: "token_exchange_refused"},
		{name: "request outside the mapping", caller: app, req: Request{Provider: "idp", Token: "good", Topics: []store.AppTopic{{Access: "write", Pattern: "devices/alice/#"}}},
			kind: service.ErrForbidden, code: CodeNoTopics, audited: "token_exchange_refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &fakeStore{}
			cfg := Config{Signer: sg, Providers: provs, Now: func() time.Time { return now }}
			if c.noSign {
				cfg.Signer = nil
			}
			svc, err := New(st, cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.req.IssuedAt = now
			cred, err := svc.Exchange(context.Background(), service.Actor{Name: "caller", RemoteAddr: "192.0.2.1"}, c.caller, c.req)
			if c.kind != nil {
				var se *service.Error
				if !errors.Is(err, c.kind) || !errors.As(err, &se) || se.Code != c.code || se.Field != c.field || se.Msg == "" {
					t.Fatalf("got %#v, want kind %v code %q field %q with a message", err, c.kind, c.code, c.field)
				}
			} else if err != nil {
				t.Fatal(err)
			} else {
				if fmt.Sprint(cred.Topics) != fmt.Sprint(c.topics) {
					t.Errorf("topics %v, want %v", cred.Topics, c.topics)
				}
				if got := cred.ExpiresAt.Sub(now); got != c.ttl {
					t.Errorf("lives %s, want %s", got, c.ttl)
				}
			}
			switch {
			case c.audited == "" && len(st.events) > 0:
				t.Errorf("audited %+v, want nothing", st.events)
			case c.audited != "" && (len(st.events) != 1 || st.events[0].Action != c.audited || st.events[0].RemoteAddr != "192.0.2.1"):
				t.Errorf("audited %+v, want one %s", st.events, c.audited)
			case c.audited == "token_exchange_refused" && (st.events[0].Outcome != store.OutcomeFailure || st.events[0].Target != c.caller.Name()):
				t.Errorf("refusal audited as %+v, want a failure on %s", st.events[0], c.caller.Name())
			}
		})
	}
}

// TestExchangeExpiredDetail: an expired provider token is told apart from any other refusal.
func TestExchangeExpiredDetail(t *testing.T) {
	now := time.Now()
	svc, err := New(&fakeStore{}, Config{Signer: signer(t, nil), Providers: fakeProviders{"idp": fakeProvider{name: "idp", now: now}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(tok string) string {
		_, err := svc.Exchange(context.Background(), service.Actor{}, AppKey("k", nil, nil), Request{Provider: "idp", Token: tok})
		var se *service.Error
		if !errors.As(err, &se) {
			t.Fatalf("%s: %v", tok, err)
		}
		return se.Msg
	}
	if e, f := msg("expired"), msg("forged"); e == f {
		t.Errorf("an expired and a forged token are refused alike: %q", e)
	}
}

// TestExchangeThrottled: past its burst a caller is throttled with a Retry-After, audited; another
// caller, and a publishable key from another network, still have their own budget.
func TestExchangeThrottled(t *testing.T) {
	now := time.Now()
	st := &fakeStore{}
	svc, err := New(st, Config{Signer: signer(t, nil), Rate: 1, Burst: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	op := func(c Caller) error {
		_, err := svc.Exchange(context.Background(), service.Actor{}, c, Request{Provider: OperatorProvider})
		return err
	}
	for i := range 2 {
		if err := op(Operator("u1", false)); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
	}
	err = op(Operator("u1", false))
	var se *service.Error
	if !errors.Is(err, service.ErrThrottled) || !errors.As(err, &se) || se.Code != CodeThrottled || se.RetryAfter <= 0 || se.RetryAfter > time.Second {
		t.Fatalf("third exchange: %#v, want throttled with a RetryAfter up to 1s", err)
	}
	if last := st.events[len(st.events)-1]; last.Action != "token_exchange_refused" || last.Detail["reason"] != "rate limited" {
		t.Errorf("throttling audited as %+v", last)
	}
	if err := op(Operator("u2", false)); err != nil {
		t.Errorf("another caller: %v", err)
	}
	now = now.Add(time.Second)
	if err := op(Operator("u1", false)); err != nil {
		t.Errorf("after a second: %v", err)
	}

	k := store.PublishableKey{ID: "p", Providers: []string{"idp"}}
	if PublishableKey(k, "192.0.2.1").limitKey == PublishableKey(k, "192.0.2.2").limitKey {
		t.Error("a publishable key's budget is shared between networks")
	}
	for i := range 10 {
		if !svc.AuditAllowed("pk:p") {
			t.Fatalf("audit %d of a refused publishable key not allowed", i)
		}
	}
	if svc.AuditAllowed("pk:p") {
		t.Error("an 11th refusal in the same instant may be audited")
	}
	if !svc.AuditAllowed("pk:q") {
		t.Error("another key's refusals share the budget")
	}
}

// TestNewRefusesNegativeRates: a negative rate or burst is a configuration error.
func TestNewRefusesNegativeRates(t *testing.T) {
	for _, c := range []Config{{Rate: -1}, {Burst: -1}} {
		if _, err := New(&fakeStore{}, c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
