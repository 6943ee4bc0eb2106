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

func TestMetricsListen(t *testing.T) {
	dsn := [2]string{"dsn", "postgres://x@127.0.0.1/db"}
	for v, want := range map[string]string{
		"127.0.0.1:9234": "127.0.0.1:9234", " [::1]:9234 ": "[::1]:9234", ":9234": ":9234", "off": "", "": "",
	} {
		c, err := Parse([][2]string{dsn, {"metrics_listen", v}})
		if err != nil || c.MetricsListen != want {
			t.Errorf("metrics_listen %q: %q, %v; want %q", v, c.MetricsListen, err, want)
		}
	}
	if c, _ := Parse([][2]string{dsn}); c.MetricsListen != "" {
		t.Errorf("metrics are on by default: %q", c.MetricsListen)
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
		{"metrics no port", [][2]string{dsn, {"metrics_listen", "127.0.0.1"}}, "plugin_opt_metrics_listen \"127.0.0.1\": use host:port"},
		{"metrics port 0", [][2]string{dsn, {"metrics_listen", "127.0.0.1:0"}}, "plugin_opt_metrics_listen"},
		{"metrics port too big", [][2]string{dsn, {"metrics_listen", "127.0.0.1:70000"}}, "port from 1 to 65535"},
		{"metrics port name", [][2]string{dsn, {"metrics_listen", "localhost:http"}}, "plugin_opt_metrics_listen"},
		{"metrics ipv6 without brackets", [][2]string{dsn, {"metrics_listen", "::1:9234"}}, "plugin_opt_metrics_listen"},
		{"metrics url", [][2]string{dsn, {"metrics_listen", "http://127.0.0.1:9234/metrics"}}, "plugin_opt_metrics_listen"},
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

// TestParseReportsEveryProblem: several bad lines in mosquitto.conf are reported together, each naming
// its option and what it accepts, and nothing is reported twice.
func TestParseReportsEveryProblem(t *testing.T) {
	dsn := [2]string{"dsn", "postgres://x@127.0.0.1/db"}
	tests := []struct {
		name string
		kv   [][2]string
		want []string
	}{
		{"three bad values", [][2]string{dsn, {"cache_size", "lots"}, {"db_timeout", "10"}, {"preload", "maybe"}}, []string{
			"plugin_opt_cache_size \"lots\": use a whole number from 0 to 50000000",
			"plugin_opt_db_timeout \"10\": use a duration like 250ms, 10s or 5m, from 1ms to 5s",
			"plugin_opt_preload \"maybe\": use true or false",
		}},
		{"unknown, twice and no dsn", [][2]string{{"cache_sise", "1"}, {"preload", "true"}, {"preload", "false"}}, []string{
			"unknown option plugin_opt_cache_sise: accepted options are plugin_opt_",
			"plugin_opt_preload is given twice: keep one",
			"plugin_opt_dsn is required",
		}},
		{"bad values and a bad acl", [][2]string{dsn, {"clientid", "agent-%u/x"}, {"acl", "read $SYS/#"}, {"log_level", "loud"}, {"max_conns", "0"}, {"key_env", "prod"}}, []string{
			"plugin_opt_clientid \"agent-%u/x\": use a template with exactly one %u",
			"plugin_opt_log_level \"loud\": use debug, info, warning or error",
			"plugin_opt_max_conns \"0\": use a whole number from 1 to 100",
			"plugin_opt_key_env unknown key environment \"prod\": use \"live\" or \"test\"",
			"plugin_opt_acl acl pattern \"$SYS/#\": $ topics are reserved",
		}},
		{"an empty dsn is not also missing", [][2]string{{"dsn", " "}, {"cache_ttl", "forever"}}, []string{
			"plugin_opt_dsn is empty: give a PostgreSQL connection string",
			"plugin_opt_cache_ttl \"forever\"",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.kv)
			checkAll(t, err, tt.want)
		})
	}
}

// TestValidateReportsEveryProblem: Validate on its own reports a missing DSN and a bad ACL together.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{ACLSpec: "read $SYS/#"}
	checkAll(t, c.Validate(), []string{"plugin_opt_dsn is required", "plugin_opt_acl"})
}

// checkAll fails unless err joins exactly len(want) errors, the i-th mentioning want[i].
func checkAll(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d", len(want))
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("err = %v, not a joined error", err)
	}
	got := j.Unwrap()
	if len(got) != len(want) {
		t.Fatalf("%d errors reported, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(got[i].Error(), w) {
			t.Errorf("error %d = %q, want it to mention %q", i, got[i], w)
		}
	}
}
