package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEveryHelpExitsZero asks every registered command, and every command group, for its help in each
// spelling the flag package and the groups accept: each must print a usage and exit 0 without doing
// anything (docs/cli.md, exit codes). A command registered later is covered without editing this test.
func TestEveryHelpExitsZero(t *testing.T) {
	var names []string
	for name := range commands {
		names = append(names, name)
	}
	for group := range groups() {
		names = append(names, group)
	}
	if len(names) < 30 {
		t.Fatalf("only %d commands and groups registered: %v", len(names), names)
	}
	for _, name := range names {
		for _, h := range []string{"-h", "--help", "-help"} {
			args := append(strings.Fields(name), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
				var stdout, stderr bytes.Buffer
				if code := run(args, &stdout, &stderr); code != exitOK {
					t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
				}
				if out := strings.ToLower(stdout.String() + stderr.String()); !strings.Contains(out, "usage") || !strings.Contains(out, "iotauth") {
					t.Errorf("no usage printed:\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
				}
			})
		}
	}
}

// TestUsageErrorsStillExitTwo: the help fix must not turn a malformed command line into success.
func TestUsageErrorsStillExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"import"},
		{"import", "a", "b"},
		{"import", "-nosuchflag", "f"},
		{"agent", "rotate-password"},
		{"agent", "rotate-password", "-nosuchflag", "00000000-0000-4000-8000-000000000000"},
		{"publishable-key", "list", "extra"},
		{"publishable-key", "list", "--nosuchflag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, stderr.String())
		}
	}
}
