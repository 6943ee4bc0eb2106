package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
)

// TestServeExchangeSettings: MQTT_TOKEN_PRIVATE_KEY (env or file) and OIDC_PROVIDERS_FILE are read and
// checked with the other settings; a bad key or providers file stops the start with the setting named
// and the key never echoed; neither is required.
func TestServeExchangeSettings(t *testing.T) {
	priv, _, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "mqtt-token.key")
	os.WriteFile(keyFile, priv, 0o600)
	good := filepath.Join(dir, "providers.json")
	os.WriteFile(good, []byte(`{"providers":[{"name":"p","issuer":"i","audience":"a","jwks_url":"https://idp.example/jwks","algs":["ES256"],
		"rules":[{"claim":"g","equals":"x","topics":[{"access":"read","pattern":"a/#"}]}]}]}`), 0o600)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"providers":[{"name":"p","issuer":"i","audience":"a","jwks_url":"https://idp.example/jwks","algs":["HS256"],
		"rules":[{"claim":"g","equals":"x","topics":[{"access":"read","pattern":"a/#"}]}]}]}`), 0o600)
	base := func(m map[string]string) map[string]string {
		m["DATABASE_URL"], m["JWT_SECRET"] = "postgres://db/x", "Zq8LmW2xVt5RbN7cPy3KdF6hJs9GaE1uQo4Ti0"
		return m
	}

	c, _, err := serveSettings(nil, envMap(base(map[string]string{"MQTT_TOKEN_PRIVATE_KEY_FILE": keyFile, "OIDC_PROVIDERS_FILE": good})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	x, err := loadExchange(c)
	if err != nil || x.signer == nil || x.providerCount() != 1 {
		t.Fatalf("exchange setup %+v, %v", x, err)
	}
	c, _, err = serveSettings(nil, envMap(base(map[string]string{"MQTT_TOKEN_PRIVATE_KEY": string(priv)})), io.Discard)
	if x, _ := loadExchange(c); err != nil || x.signer == nil || x.providers != nil {
		t.Fatalf("key from the environment: %v", err)
	}
	c, _, err = serveSettings(nil, envMap(base(map[string]string{})), io.Discard)
	if x, _ := loadExchange(c); err != nil || x.signer != nil {
		t.Fatalf("no exchange settings: %v", err)
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"bad key":      {map[string]string{"MQTT_TOKEN_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "MQTT_TOKEN_PRIVATE_KEY"},
		"missing file": {map[string]string{"MQTT_TOKEN_PRIVATE_KEY_FILE": filepath.Join(dir, "nope")}, "MQTT_TOKEN_PRIVATE_KEY"},
		"HS256":        {map[string]string{"OIDC_PROVIDERS_FILE": bad}, "HS256"},
		"no such file": {map[string]string{"OIDC_PROVIDERS_FILE": filepath.Join(dir, "none.json")}, "OIDC_PROVIDERS_FILE"},
		"key and file": {map[string]string{"MQTT_TOKEN_PRIVATE_KEY": string(priv), "MQTT_TOKEN_PRIVATE_KEY_FILE": keyFile}, "MQTT_TOKEN_PRIVATE_KEY"},
	} {
		_, _, err := serveSettings(nil, envMap(base(tc.env)), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "AAAA") || strings.Contains(err.Error(), string(priv[40:60])) {
			t.Errorf("%s: error %v, want one naming %s and no key material", name, err, tc.want)
		}
	}
}
