package options

import (
	"strings"
	"testing"
	"time"
)

func TestPresenceOptions(t *testing.T) {
	dsn := [2]string{"dsn", "postgres://x@127.0.0.1/db"}
	c, err := Parse([][2]string{dsn})
	if err != nil || !c.Presence || !c.PresenceEvents || c.PresenceTimeout != 30*time.Second || c.BrokerID != "" || c.PresenceQueue != 100000 {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	c, err = Parse([][2]string{dsn, {"presence", "false"}, {"presence_events", "false"}, {"presence_timeout", "2s"}, {"broker_id", " mqtt-1 "}})
	if err != nil || c.Presence || c.PresenceEvents || c.PresenceTimeout != 2*time.Second || c.BrokerID != "mqtt-1" {
		t.Fatalf("set: %v %+v", err, c)
	}
	for _, kv := range [][2]string{{"presence_timeout", "500ms"}, {"presence_timeout", "2h"}, {"broker_id", " "}, {"broker_id", strings.Repeat("b", 201)}, {"presence", "maybe"}, {"presence_queue", "0"}} {
		if _, err := Parse([][2]string{dsn, kv}); err == nil || !strings.Contains(err.Error(), "plugin_opt_"+kv[0]) {
			t.Errorf("%s %q: %v", kv[0], kv[1], err)
		}
	}
}
