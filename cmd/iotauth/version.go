package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/iotauth/iotauth/backend/migrations"
)

// version is set at link time (-ldflags "-X main.version=1.2.3"); otherwise the module version or the
// VCS revision the binary was built from is shown.
var version = ""

func init() {
	register("version", "print the version, the commit it was built from and the database schema version it needs", versionCmd)
}

// versionInfo is what `iotauth version --json` prints.
type versionInfo struct {
	Version       string `json:"version"`
	Commit        string `json:"commit,omitempty"`
	Modified      bool   `json:"modified,omitempty"`
	Go            string `json:"go"`
	SchemaVersion int32  `json:"schemaVersion"`
}

func versionCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	jsonOut := fs.Bool("json", false, "print one line of JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := versionInfo{Version: version, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	latest, err := migrations.Latest()
	if err != nil {
		return err
	}
	v.SchemaVersion = latest
	if *jsonOut {
		return jsonLine(stdout, v)
	}
	fmt.Fprintf(stdout, "iotauth %s\n", v.Version)
	if v.Commit != "" {
		modified := ""
		if v.Modified {
			modified = " (modified)"
		}
		fmt.Fprintf(stdout, "commit %s%s\n", v.Commit, modified)
	}
	_, err = fmt.Fprintf(stdout, "%s\nschema version %d\n", v.Go, v.SchemaVersion)
	return err
}
