package api_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/test/harness"
)

// TestLivePageEndToEnd is the /live page (docs/live.md) for real: PostgreSQL, Mosquitto with the built
// plugin verifying short-lived credentials with the public key (plugin_opt_mqtt_token_public_key) on a
// websockets listener, the API's real token exchange signing with the private key, and headless
// Chromium on /live. An operator (a viewer) signs in through the form and enters an agent's uuid; the
// agent publishes with mosquitto_pub under its own credentials; the page shows the message. Nothing is
// in the browser's storage after sign-in, the CSP has no 'unsafe-inline' and is never violated, and no
// signed credential reaches the broker's log. Disabling the operator then closes the page's MQTT
// session (the subject deny list) and the page signs out. A screenshot is written to
// build/live/live.png.
func TestLivePageEndToEnd(t *testing.T) {
	priv, pubPath := harness.TokenKeys(t)
	wsPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	wsURL := "ws://127.0.0.1:" + strconv.Itoa(wsPort) + "/"
	e := newEnv(t, withConfig(func(c *api.Config) {
		c.Exchange = api.ExchangeConfig{Signer: mqttcred.NewIssuing(priv, nil)}
		c.Pages = livePages(t, wsURL)
	}))
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	b := harness.StartBroker(t, harness.BrokerConfig{
		Plugin:  plugin,
		Options: [][2]string{{"dsn", e.dsn}, {"mqtt_token_public_key", pubPath}},
		Extra:   []string{"listener " + strconv.Itoa(wsPort) + " 127.0.0.1", "protocol websockets"},
	})
	if !b.WaitLog("subject deny list loaded", 15*time.Second) {
		t.Fatal("the plugin did not load the subject deny list")
	}
	t.Cleanup(func() {
		if m := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.`).FindString(b.Log()); m != "" {
			t.Errorf("T3: the broker's log holds a signed credential (%s…)", m[:12])
		}
	})
	checkPageHeaders(t, e.http.URL, wsURL)

	admin := e.admin()
	agent := e.provision(admin.Access, "live-gateway")
	e.remember(agent.APIKey, agent.MQTT.Password)
	viewer := e.createUser("viewer@example.com", "viewer-watches-1", "viewer")

	p := openLivePage(t, e.http.URL)
	p.login("viewer@example.com", "viewer-watches-1")
	p.checkClean() // U1: after sign-in, nothing in localStorage or sessionStorage
	p.watch(agent.AgentUUID)
	if !b.WaitLog("New client connected", 5*time.Second) || !regexp.MustCompile(`as x[a-z2-7]{12}-[0-9a-f]{16} `).MatchString(b.Log()) {
		t.Errorf("the broker did not see the page's client id (clientIdPrefix + 16 hex digits):\n%s", b.Log())
	}

	// The agent publishes with its own credentials over TCP.
	topic := "agents/" + agent.AgentUUID + "/telemetry"
	args := append(harness.CLIArgs(b, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID), "-q", "1", "-t", topic, "-m", `{"temperature":22.4,"door":"closed"}`)
	if out, code := harness.CLI(t, "mosquitto_pub", args...); code != 0 {
		t.Fatalf("the agent's mosquitto_pub failed (%d): %s", code, out)
	}
	p.waitMessage(topic, `{"temperature":22.4,"door":"closed"}`)
	args = append(harness.CLIArgs(b, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID), "-q", "1", "-t", "agents/"+agent.AgentUUID+"/state", "-m", `{"firmware":"2.1.0","online":true}`)
	if out, code := harness.CLI(t, "mosquitto_pub", args...); code != 0 {
		t.Fatalf("the agent's mosquitto_pub failed (%d): %s", code, out)
	}
	p.waitMessage("agents/"+agent.AgentUUID+"/state", `{"firmware":"2.1.0","online":true}`)
	p.checkClean()
	p.screenshot("live.png")

	// A4: disabling the operator ends the page's MQTT session and its API session: the page signs out.
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + viewer.ID, Token: admin.Access, Body: map[string]bool{"disabled": true}}, 200, "")
	p.wait(`!document.getElementById("login-section").hidden`, "the page to sign out after the operator was disabled")
	if s := p.status(); !strings.Contains(s, "sign in again") {
		t.Errorf("after the operator was disabled the page says %q", s)
	}
	p.checkClean()
}
