package options

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	c, err := Parse([][2]string{{"dsn", "postgres://x@127.0.0.1/db"}, {"cache_ttl", "1m"}, {"clientid", "any"}, {"acl", "readwrite agents/%u/#; read fw/#"}, {"preload", "false"}, {"preload_wait", "2s"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.CacheTTL != time.Minute || c.ClientID != "any" || c.Preload || len(c.ACL) != 2 || c.DBTimeout != 250*time.Millisecond || c.PreloadWait != 2*time.Second {
		t.Fatalf("unexpected config %+v", c)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings for current options: %q", c.Warnings)
	}
	// A retired option is accepted with a warning, so that an upgrade does not stop the broker.
	if c, err := Parse([][2]string{{"dsn", "postgres://x@127.0.0.1/db"}, {"connect_memo", "0"}}); err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "plugin_opt_connect_memo is ignored") {
		t.Fatalf("connect_memo 0: %v, %q", err, c.Warnings)
	}
}

func TestParseErrors(t *testing.T) {
	dsn := [2]string{"dsn", "postgres://x@127.0.0.1/db"}
	tests := []struct {
		name string
		kv   [][2]string
		want string
	}{
		{"missing dsn", nil, "plugin_opt_dsn is required"},
		{"unknown", [][2]string{dsn, {"cache_sise", "1"}}, "unknown option plugin_opt_cache_sise"},
		{"bad int", [][2]string{dsn, {"cache_size", "lots"}}, "plugin_opt_cache_size \"lots\""},
		{"bad duration", [][2]string{dsn, {"db_timeout", "10"}}, "plugin_opt_db_timeout"},
		{"timeout too long", [][2]string{dsn, {"db_timeout", "1m"}}, "plugin_opt_db_timeout"},
		{"bad bool", [][2]string{dsn, {"preload", "maybe"}}, "plugin_opt_preload"},
		{"preload wait too long", [][2]string{dsn, {"preload_wait", "1h"}}, "plugin_opt_preload_wait"},
		{"bad clientid", [][2]string{dsn, {"clientid", "agent-%u/x"}}, "plugin_opt_clientid"},
		{"bad acl", [][2]string{dsn, {"acl", "read $SYS/#"}}, "plugin_opt_acl"},
		{"twice", [][2]string{dsn, dsn}, "given twice"},
		{"key env", [][2]string{dsn, {"key_env", "prod"}}, "live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.kv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
