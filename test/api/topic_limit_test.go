package api_test

import (
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/test/harness"
)

// longTopic is prefix followed by '/' and 'x's up to n bytes in all.
func longTopic(prefix string, n int) string {
	return prefix + "/" + strings.Repeat("x", n-len(prefix)-1)
}

// TestTopicLimitCreationAndBridgeAgree: one topic definition with one limit (topicfilter.MaxLen) for
// key creation and the publish bridge. An application key granted a 300-byte filter publishes to that
// very topic through the bridge and the agent receives it (the bridge once refused topics over 256
// bytes that key creation accepted); a filter or topic over the limit is refused with a 400 that names
// the limit, at creation of both key kinds and at the bridge.
func TestTopicLimitCreationAndBridgeAgree(t *testing.T) {
	var br *bridge.Bridge
	e := newEnv(t, withBroker, withBridge(t, &br, nil))
	adm := e.admin()
	a := harness.CreateAgent(t, e.st, "gw")
	e.remember(a.Key, a.Password)
	got := subscriber(t, e.broker, a, a.Namespace()+"/cmd/#")

	topic := longTopic(a.Namespace()+"/cmd", 300)
	k := e.createAppKey(adm.Access, map[string]any{"name": "long", "rights": []string{"publish"},
		"topics": []map[string]string{{"access": "write", "pattern": topic}}})
	e.remember(k.Key, k.Password)
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(topic, "hi", 1)}, 200, "")
	if m := receive(t, got); m.Topic() != topic || string(m.Payload()) != "hi" {
		t.Fatalf("received %d bytes of topic, payload %q", len(m.Topic()), m.Payload())
	}

	// The limit itself is granted and published to; one byte more is refused everywhere.
	atLimit := longTopic(a.Namespace()+"/cmd", topicfilter.MaxLen)
	wide := e.createAppKey(adm.Access, map[string]any{"name": "at-limit", "rights": []string{"publish"},
		"topics": []map[string]string{{"access": "write", "pattern": atLimit}}})
	e.remember(wide.Key, wide.Password)
	e.expect(req{Method: "POST", Path: "/api/v1/publish", Token: wide.Key, Body: pubBody(atLimit, "edge", 1)}, 200, "")
	if m := receive(t, got); m.Topic() != atLimit {
		t.Fatalf("received a %d-byte topic, want the %d-byte one", len(m.Topic()), topicfilter.MaxLen)
	}

	over := longTopic(a.Namespace()+"/cmd", topicfilter.MaxLen+1)
	limit := "1024"
	for _, r := range []req{
		{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adm.Access, Body: map[string]any{"name": "over", "rights": []string{"publish"},
			"topics": []map[string]string{{"access": "write", "pattern": over}}}},
		{Method: "POST", Path: "/api/v1/auth/publishable-keys", Token: adm.Access, Body: map[string]any{"name": "over", "origins": []string{appOrigin},
			"topics": []map[string]string{{"access": "read", "pattern": over}}, "providers": []string{"any"}}},
		{Method: "POST", Path: "/api/v1/publish", Token: k.Key, Body: pubBody(over, "x", 1)},
	} {
		p := e.expect(r, 400, "validation_failed").Problem(t)
		if !strings.Contains(p.Detail, limit) || (p.Field != "topics" && p.Field != "topic") {
			t.Errorf("%s with a %d-byte topic: field %q, detail %q; want the topic field and the limit %s", r.Path, len(over), p.Field, p.Detail, limit)
		}
	}
}

// TestTopicLimitExchange: a key's 300-byte grant survives the token exchange (the credential issuer
// once refused filters over 256 bytes that key creation accepted).
func TestTopicLimitExchange(t *testing.T) {
	idp := newTestIdP(t, jose.RS256)
	x := newExchangeEnv(t, []map[string]any{providerJSON("test", idp)}, nil)
	adm := x.admin()
	grant := longTopic("users/+", 300)
	key := x.createAppKey(adm.Access, map[string]any{"name": "backend", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "readwrite", "pattern": grant}}})
	claims := idp.claims("alice", testAudience)
	claims["groups"] = []string{"users"}
	c := x.credential(x.exchange(key.Key, map[string]any{"provider": "test", "token": idp.token(claims)}, nil, 200, ""))
	if want := "readwrite:" + strings.Replace(grant, "+", "alice", 1); topicsOf(c) != want {
		t.Errorf("topics %.60q…, want %.60q…", topicsOf(c), want)
	}
}
