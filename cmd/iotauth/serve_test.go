package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestServeConfigPrecedence(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL": "postgres://db/x", "JWT_SECRET": "s", "ACCESS_TOKEN_TTL": "600", "REFRESH_TOKEN_TTL": "2h",
		"LISTEN_ADDR": "127.0.0.1:9000", "MQTT_PUBLIC_HOST": "mqtt.example.com", "MQTT_PUBLIC_PORT": "8883",
	}
	c, err := loadServeConfig([]string{"-listen", "127.0.0.1:9001", "-access-token-ttl", "15m"}, envMap(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" || c.JWT.AccessTTL != 15*time.Minute || c.JWT.RefreshTTL != 2*time.Hour ||
		c.MQTTHost != "mqtt.example.com" || c.MQTTPort != 8883 || c.DatabaseURL != "postgres://db/x" || string(c.JWT.Secret) != "s" {
		t.Fatalf("config %+v", c)
	}
	d, err := loadServeConfig(nil, envMap(map[string]string{"DATABASE_URL": "postgres://db/x"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.Listen != "127.0.0.1:8080" || d.JWT.AccessTTL != time.Hour || d.MQTTPort != 1883 {
		t.Fatalf("defaults %+v", d)
	}
}

func TestServeConfigErrorsNameTheSetting(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"bad ttl":      {map[string]string{"DATABASE_URL": "x", "ACCESS_TOKEN_TTL": "soon"}, nil, "ACCESS_TOKEN_TTL"},
		"bad port":     {map[string]string{"DATABASE_URL": "x", "MQTT_PUBLIC_PORT": "70000"}, nil, "MQTT_PUBLIC_PORT"},
		"no database":  {map[string]string{}, nil, "DATABASE_URL"},
		"key env":      {map[string]string{"DATABASE_URL": "x", "IOTAUTH_KEY_ENV": "prod"}, nil, "live"},
		"secret twice": {map[string]string{"DATABASE_URL": "x", "JWT_SECRET": "a"}, []string{"-jwt-secret-file", "/dev/null"}, "JWT_SECRET"},
	} {
		_, err := loadServeConfig(tc.args, envMap(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not name %s", name, err, tc.want)
		}
	}
}
