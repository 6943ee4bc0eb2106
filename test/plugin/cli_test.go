package plugin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// The CLI makes the plugin usable on its own: `iotauth agent create` prints credentials that connect
// exactly as printed, and `iotauth migrate` is idempotent.
func TestCLIAgentCreateConnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if out := e.iotauthCLI("migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate: %q", out)
	}
	var created struct {
		AgentUUID string `json:"agentUuid"`
		APIKey    string `json:"apiKey"`
		MQTT      struct {
			Username, Password, ClientID string
		} `json:"mqtt"`
	}
	if err := json.Unmarshal([]byte(e.iotauthCLI("agent", "create", "-name", "cli-agent")), &created); err != nil {
		t.Fatal(err)
	}
	if created.MQTT.Username != created.APIKey || created.MQTT.ClientID != "agent-"+created.AgentUUID {
		t.Fatalf("unexpected output %+v", created)
	}
	c, err := harness.Connect(e.b, created.MQTT.Username, created.MQTT.Password, created.MQTT.ClientID)
	if err != nil {
		t.Fatalf("credentials printed by the CLI do not connect: %v", err)
	}
	c.Disconnect(10)
}

// A bad plugin option stops Mosquitto at start with a log line naming the option and the fix.
func TestBadOptionsStopTheBroker(t *testing.T) {
	t.Parallel()
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts [][2]string
		want string
	}{
		{"no dsn", nil, "plugin_opt_dsn is required"},
		{"unknown option", [][2]string{{"dsn", "postgres://x@127.0.0.1/x"}, {"cache_sise", "10"}}, "unknown option plugin_opt_cache_sise"},
		{"bad duration", [][2]string{{"dsn", "postgres://x@127.0.0.1/x"}, {"db_timeout", "fast"}}, "plugin_opt_db_timeout \"fast\": use a duration like 250ms"},
		{"bad acl", [][2]string{{"dsn", "postgres://x@127.0.0.1/x"}, {"acl", "readwrite $SYS/#"}}, "plugin_opt_acl"},
		{"bad dsn", [][2]string{{"dsn", "postgres://x@127.0.0.1:notaport/x"}}, "plugin_opt_dsn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := harness.LaunchBroker(harness.BrokerConfig{Plugin: plugin, Options: tt.opts})
			if err == nil {
				b.Stop()
				t.Fatal("mosquitto started with a bad plugin option")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start error does not name the problem %q:\n%v", tt.want, err)
			}
		})
	}
}
