package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHasPassword(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://iotauth:s3cret@db:5432/iotauth":        true,
		"postgresql://iotauth:s3cret@db/iotauth":           true,
		"postgres://iotauth:@db/iotauth":                   true,
		"postgres://iotauth@db/iotauth?password=s3cret":    true,
		"host=db user=iotauth password=s3cret":             true,
		"host=db password = 's3 cret' user=iotauth":        true,
		"postgres://iotauth@db/iotauth":                    false,
		"postgres://db/iotauth?sslmode=verify-full":        false,
		"host=db user=iotauth passfile=/run/secrets/pgpwd": false,
		"host=/run/postgresql dbname=iotauth":              false,
	} {
		if got := hasPassword(dsn); got != want {
			t.Errorf("hasPassword(%q) = %v, want %v", dsn, got, want)
		}
	}
}

func TestResolveDatabaseURL(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "db-url")
	if err := os.WriteFile(file, []byte("postgres://u:filepw@db/x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name       string
		flags      dbFlags
		env        map[string]string
		want, fail string
		warn       bool
	}{
		{name: "flag with password warns", flags: dbFlags{url: "postgres://u:pw@db/x"}, want: "postgres://u:pw@db/x", warn: true},
		{name: "flag without password", flags: dbFlags{url: "postgres://u@db/x"}, want: "postgres://u@db/x"},
		{name: "flag beats the environment", flags: dbFlags{url: "postgres://u@db/x"}, env: map[string]string{"DATABASE_URL": "postgres://u:pw@other/y"}, want: "postgres://u@db/x"},
		{name: "flag file", flags: dbFlags{file: file}, want: "postgres://u:filepw@db/x"},
		{name: "environment", env: map[string]string{"DATABASE_URL": "postgres://u:pw@db/x"}, want: "postgres://u:pw@db/x"},
		{name: "environment file", env: map[string]string{"DATABASE_URL_FILE": file}, want: "postgres://u:filepw@db/x"},
		{name: "both flags", flags: dbFlags{url: "postgres://db/x", file: file}, fail: "use one"},
		{name: "both variables", env: map[string]string{"DATABASE_URL": "postgres://db/x", "DATABASE_URL_FILE": file}, fail: "unset one"},
		{name: "missing file", flags: dbFlags{file: missing}, fail: missing},
		{name: "missing file from the environment", env: map[string]string{"DATABASE_URL_FILE": missing}, fail: "DATABASE_URL_FILE"},
		{name: "empty file", flags: dbFlags{file: empty}, fail: "is empty"},
		{name: "nothing", fail: "DATABASE_URL_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := tc.flags.resolve(func(k string) string { return tc.env[k] }, &stderr)
			if tc.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fail) {
					t.Fatalf("got %q, %v; want an error saying %q", got, err, tc.fail)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			if warned := strings.Contains(stderr.String(), "process list"); warned != tc.warn {
				t.Fatalf("warning %v, want %v: %q", warned, tc.warn, stderr.String())
			}
			if strings.Contains(stderr.String(), "pw") {
				t.Fatalf("the warning repeats the password: %q", stderr.String())
			}
		})
	}
}
