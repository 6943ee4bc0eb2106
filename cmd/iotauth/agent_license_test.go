package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestAgentCreateHelpStatesLicensePolicy: the break-glass CLI is not gated by the license, and its help
// says so (and that its agents count toward the REST device limit).
func TestAgentCreateHelpStatesLicensePolicy(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"agent", "create", "-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"NOT gated by the license", "device_limit_reached", "count toward the limit"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stderr.String())
		}
	}
	stdout.Reset()
	run([]string{"help"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "not license-gated") {
		t.Errorf("command list does not say agent create is not license-gated:\n%s", stdout.String())
	}
}
