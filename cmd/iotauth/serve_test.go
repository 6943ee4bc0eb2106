package main

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/store"
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
		"proxies":      {map[string]string{"DATABASE_URL": "x", "TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, nil, "TRUSTED_PROXIES"},
		"addr budget":  {map[string]string{"DATABASE_URL": "x", "LOGIN_MAX_FAILURES_PER_ADDR": "0"}, nil, "LOGIN_MAX_FAILURES_PER_ADDR"},
		"metrics addr": {map[string]string{"DATABASE_URL": "x", "METRICS_ADDR": "9180"}, nil, "METRICS_ADDR"},
		"durable":      {map[string]string{"DATABASE_URL": "x", "DURABLE_COMMIT": "sync"}, nil, "DURABLE_COMMIT"},
		"durable wait": {map[string]string{"DATABASE_URL": "x", "DURABLE_COMMIT_TIMEOUT": "0"}, nil, "DURABLE_COMMIT_TIMEOUT"},
	} {
		_, err := loadServeConfig(tc.args, envMap(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not name %s", name, err, tc.want)
		}
	}
}

// TestServeSettingsReportEveryProblem: bad environment variables, bad flag values, a weak signing key
// and a bad license policy are reported together, each once and naming its setting, rather than one
// per start.
func TestServeSettingsReportEveryProblem(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    []string
		notWant []string
	}{
		{
			name: "environment and flags",
			env:  map[string]string{"ACCESS_TOKEN_TTL": "soon", "MQTT_PUBLIC_PORT": "x", "IOTAUTH_MIGRATE": "maybe", "LOG_FORMAT": "xml", "JWT_SECRET": goodSecret},
			args: []string{"-refresh-token-ttl", "never", "-log-level", "loud", "-login-max-failures", "0", "-login-throttle-window", "-5"},
			want: []string{
				`ACCESS_TOKEN_TTL="soon": want seconds (3600) or a duration (1h, 15m)`,
				`MQTT_PUBLIC_PORT="x": want a whole number`,
				`IOTAUTH_MIGRATE="maybe": want true or false`,
				`-refresh-token-ttl "never": want seconds (3600) or a duration (1h, 15m)`,
				`-login-throttle-window "-5": must be positive`,
				"no database given: set DATABASE_URL",
				`-log-level "loud": use debug, info, warn or error`,
				`-log-format "xml": use json or text`,
				"LOGIN_MAX_FAILURES must be at least 1",
			},
			// A refused value keeps its default: no second complaint about the lifetime or the port.
			notWant: []string{"lifetimes must be positive", "is not a TCP port"},
		},
		{
			name: "bad flag values",
			env:  map[string]string{"DATABASE_URL": "x", "IOTAUTH_KEY_ENV": "prod", "JWT_SECRET": goodSecret},
			args: []string{"-migrate=maybe", "-login-max-failures", "many", "-mqtt-public-port", "70000"},
			want: []string{
				`-migrate "maybe": want true or false`,
				`-login-max-failures "many": want a whole number`,
				"MQTT_PUBLIC_PORT 70000 is not a TCP port: use 1 to 65535",
				`unknown key environment "prod"`,
			},
		},
		{
			name: "weak key and license policy",
			env:  map[string]string{"DATABASE_URL": "x", "JWT_SECRET": "secret", "LICENSE_GRACE_PERIOD": "soon", "LOG_FORMAT": "xml"},
			want: []string{`-log-format "xml"`, "JWT_SECRET is 6 bytes", `LICENSE_GRACE_PERIOD="soon" is not a duration`},
		},
		{
			name:    "unreadable key is not also missing",
			env:     map[string]string{"DATABASE_URL": "x", "JWT_SECRET": "a", "LOG_LEVEL": "loud"},
			args:    []string{"-jwt-secret-file", "/dev/null"},
			want:    []string{"both $JWT_SECRET and a file for it are given", `-log-level "loud"`},
			notWant: []string{"no signing key", "JWT_SECRET is 1 bytes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := serveSettings(tt.args, envMap(tt.env), io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if n := strings.Count(err.Error(), w); n != 1 {
					t.Errorf("%q reported %d times, want once, in:\n%v", w, n, err)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(err.Error(), w) {
					t.Errorf("%q reported, want not, in:\n%v", w, err)
				}
			}
		})
	}
}

// TestServeSettingsUnknownFlag: a malformed command line is still a usage error, not a setting.
func TestServeSettingsUnknownFlag(t *testing.T) {
	_, _, err := serveSettings([]string{"-no-such-flag"}, envMap(map[string]string{"ACCESS_TOKEN_TTL": "soon"}), io.Discard)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v, want errUsage", err)
	}
}

// TestServeSettingsGood: good settings give a token manager and no error.
func TestServeSettingsGood(t *testing.T) {
	c, tokens, err := serveSettings([]string{"-migrate"}, envMap(map[string]string{"DATABASE_URL": "x", "JWT_SECRET": goodSecret}), io.Discard)
	if err != nil || tokens == nil || !c.Migrate {
		t.Fatalf("settings %+v, tokens %v, err %v", c, tokens, err)
	}
	// Safe by default: security changes wait for a synchronous standby, when one is configured, 5 s.
	if c.Durable != (store.Durability{Level: store.DurableRemoteApply, Timeout: 5 * time.Second}) {
		t.Fatalf("default durability %+v", c.Durable)
	}
}

// goodSecret is an HS256 secret that token.New accepts.
const goodSecret = "Zq3vN8xR2mK7pW4tY9bC6hJ1sL5dF0gA8eU3iO7nX2wQ"

// TestServeMetricsAndProxySettings: metrics default to a loopback address of their own, off (or an empty
// -metrics-addr) disables them, and TRUSTED_PROXIES takes CIDRs and addresses.
func TestServeMetricsAndProxySettings(t *testing.T) {
	d, err := loadServeConfig(nil, envMap(map[string]string{"DATABASE_URL": "x"}), io.Discard)
	if err != nil || d.MetricsAddr != defaultMetricsAddr || !d.metricsDefault || len(d.TrustedProxies) != 0 {
		t.Fatalf("defaults: %q %v %v %v", d.MetricsAddr, d.metricsDefault, d.TrustedProxies, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{map[string]string{"DATABASE_URL": "x", "METRICS_ADDR": "off"}, nil},
		{map[string]string{"DATABASE_URL": "x", "METRICS_ADDR": "127.0.0.1:1"}, []string{"-metrics-addr="}},
	} {
		c, err := loadServeConfig(tc.args, envMap(tc.env), io.Discard)
		if err != nil || c.MetricsAddr != "" {
			t.Errorf("%v %v: metrics %q, err %v; want disabled", tc.env, tc.args, c.MetricsAddr, err)
		}
	}
	c, err := loadServeConfig(nil, envMap(map[string]string{"DATABASE_URL": "x", "TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1", "METRICS_ADDR": "0.0.0.0:9999"}), io.Discard)
	if err != nil || len(c.TrustedProxies) != 2 || c.MetricsAddr != "0.0.0.0:9999" || c.metricsDefault {
		t.Fatalf("%+v %v", c, err)
	}
	// The login key follows the JWT key, so that every replica derives the same one.
	a, b := loginKey(c.JWT), loginKey(c.JWT)
	if len(a) != 32 || string(a) != string(b) {
		t.Fatal("login key not derived deterministically")
	}
}

// TestServeLivePageSetting: MQTT_WS_URL (or -mqtt-ws-url) turns the /live page on; a URL the page
// cannot use stops the start with an error naming the setting, and without it there is no page.
func TestServeLivePageSetting(t *testing.T) {
	c, err := loadServeConfig([]string{"-mqtt-ws-url", "wss://mqtt.example.com/mqtt"}, envMap(map[string]string{"DATABASE_URL": "x", "MQTT_WS_URL": "ws://127.0.0.1:9001/"}), io.Discard)
	if err != nil || c.MQTTWSURL != "wss://mqtt.example.com/mqtt" {
		t.Fatalf("flag over env: %q, %v", c.MQTTWSURL, err)
	}
	pages, err := livePages(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || len(pages) < 5 {
		t.Fatalf("pages %v, %v", pages, err)
	}
	if pages, err := livePages(serveConfig{}, nil); err != nil || pages != nil {
		t.Fatalf("without MQTT_WS_URL: pages %v, %v", pages, err)
	}
	for _, bad := range []string{"http://127.0.0.1:9001/", "ws://user:secret@host/", "127.0.0.1:9001"} {
		_, err := loadServeConfig(nil, envMap(map[string]string{"DATABASE_URL": "x", "MQTT_WS_URL": bad}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "MQTT_WS_URL") || strings.Contains(err.Error(), "secret") {
			t.Errorf("MQTT_WS_URL=%q: error %v", bad, err)
		}
	}
}
