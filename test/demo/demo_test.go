// Package demo_test runs `make demo`'s script the way CI would (no terminal, so it stops by itself) and
// checks that the story it tells actually happened, so the README's first command cannot rot.
package demo_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

func TestDemoScript(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, text)
	}
	for _, want := range []string{
		"hello from the demo",                                 // CLI agent's mosquitto_rr round trip
		"(exit code 5: CONNACK not authorised)",               // wrong password refused
		"All subscription requests were denied.",              // namespace enforced
		"u'iotauth-agent:",                                    // the key is not in the broker log
		"hello over REST-provisioned credentials",             // REST-provisioned agent round trip
		`"code":"invalid_provisioning_key"`,                   // provisioning key single use
		"304 (not modified)",                                  // state polling with ETag
		"live mosquitto_sub session was closed by the broker", // revocation kicks
		"(exit code 5: refused)",                              // reconnect refused
		"the operator console answers at http://127.0.0.1:",   // docs/console.md: the console is served
		"demo stopped; everything it started is gone.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// make demo gives the broker a websockets listener and serve MQTT_WS_URL, and prints the /live page's
	// URL; a broker built without websockets (make test-compat's 2.0.20) runs the demo without them.
	live := "Live page: http://127.0.0.1:"
	if !harness.MosquittoHasWebSockets() {
		live = "(this Mosquitto has no websockets support, so no live page)"
	}
	if !strings.Contains(text, live) {
		t.Errorf("demo output lacks %q", live)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
	}
}
