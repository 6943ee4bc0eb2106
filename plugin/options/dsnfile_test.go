package options

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDSNFile: plugin_opt_dsn_file (and listen_dsn_file) read the connection string from a file, so that
// mosquitto.conf holds no password; a trailing newline is ignored; a missing, empty, multi-line or huge
// file, or both forms of one option, are refused naming the option and the file but never its content.
func TestDSNFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const dsn = "postgres://iotauth:s3cret-pw@db:5432/iotauth?sslmode=disable"
	good := write("database_url", dsn+"\n")
	listen := write("listen_url", "postgres://iotauth:s3cret-pw@db-direct:5432/iotauth\r\n")
	c, err := Parse([][2]string{{"dsn_file", good}, {"listen_dsn_file", listen}})
	if err != nil {
		t.Fatal(err)
	}
	if c.DSN != dsn || c.ListenDSN != "postgres://iotauth:s3cret-pw@db-direct:5432/iotauth" {
		t.Fatalf("DSN %q, ListenDSN %q", c.DSN, c.ListenDSN)
	}
	tests := []struct {
		name string
		kv   [][2]string
		want string
	}{
		{"missing file", [][2]string{{"dsn_file", filepath.Join(dir, "nope")}}, "plugin_opt_dsn_file \"" + filepath.Join(dir, "nope") + "\": cannot read it"},
		{"empty path", [][2]string{{"dsn_file", " "}}, "plugin_opt_dsn_file is empty"},
		{"empty file", [][2]string{{"dsn_file", write("empty", "\n")}}, "one PostgreSQL connection string"},
		{"two lines", [][2]string{{"dsn_file", write("two", dsn+"\n"+dsn+"\n")}}, "on one line"},
		{"huge", [][2]string{{"dsn_file", write("huge", strings.Repeat("x", 5000))}}, "larger than 4096 bytes"},
		{"both dsn forms", [][2]string{{"dsn", dsn}, {"dsn_file", good}}, "plugin_opt_dsn and plugin_opt_dsn_file are both given"},
		{"both listen forms", [][2]string{{"dsn_file", good}, {"listen_dsn_file", listen}, {"listen_dsn", dsn}}, "plugin_opt_listen_dsn_file and plugin_opt_listen_dsn are both given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.kv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Fatalf("the error shows the file's password: %v", err)
			}
			if strings.Contains(err.Error(), "plugin_opt_dsn is required") {
				t.Fatalf("a refused dsn_file is reported twice: %v", err)
			}
		})
	}
}
