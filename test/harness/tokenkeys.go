package harness

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
)

// TokenKeys makes a signing key pair for short-lived MQTT credentials and writes its public half to a
// PEM file for plugin_opt_mqtt_token_public_key, removed when the test ends. The file and its folder are
// world-readable: Mosquitto started as root reads it as the mosquitto user.
func TokenKeys(t testing.TB) (priv ed25519.PrivateKey, pubPath string) {
	t.Helper()
	privPEM, pubPEM, err := mqttcred.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if priv, err = mqttcred.ParsePrivateKey(privPEM); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "iotauth-tokkeys-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pubPath = filepath.Join(dir, "mqtt-token.pub")
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pubPath
}
