package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/core/secret"
)

func TestStringScrubsEverySecretKind(t *testing.T) {
	var in []string
	for _, k := range []secret.Kind{secret.APIKey, secret.TestAPIKey, secret.MQTTPassword, secret.ProvisioningKey,
		secret.AppKey, secret.TestAppKey} {
		s, _ := secret.Generate(k)
		in = append(in, s.Reveal())
	}
	in = append(in, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl")
	for _, s := range in {
		got := String("before " + s + " after")
		if strings.Contains(got, s) || !strings.HasPrefix(got, "before ") || !strings.HasSuffix(got, " after") {
			t.Errorf("%q → %q", s, got)
		}
		if Contains(got) {
			t.Errorf("scrubbed text still looks secret: %q", got)
		}
	}
	if got := String("GET /api/v1/agents/0b5e"); got != "GET /api/v1/agents/0b5e" {
		t.Errorf("ordinary text changed: %q", got)
	}
}

func TestHandlerScrubsMessagesAttrsAndErrors(t *testing.T) {
	key, _ := secret.Generate(secret.APIKey)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, Options(nil)))
	log.Info("got "+key.Reveal(), "k", key.Reveal(), "err", errors.New("bad key "+key.Reveal()), slog.Group("g", "v", key.Reveal()))
	if strings.Contains(buf.String(), key.Reveal()) {
		t.Fatalf("secret logged: %s", buf.String())
	}
}

func TestReplaceAttrScrubsComposites(t *testing.T) {
	key := "iotsk_live_" + strings.Repeat("A", 38)
	for _, v := range []any{[]string{"x", key}, map[string]string{"k": key}, struct{ K string }{key}} {
		a := ReplaceAttr(nil, slog.Any("v", v))
		if strings.Contains(a.Value.String(), strings.Repeat("A", 38)) {
			t.Errorf("%T value leaked: %s", v, a.Value.String())
		}
	}
}
