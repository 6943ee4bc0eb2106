package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/test/harness"
	"github.com/iotauth/iotauth/web/console"
	"github.com/iotauth/iotauth/web/live"
)

// pageWatch records, on a console browser, what the page's scripts must never do: violate the CSP or
// throw.
type pageWatch struct {
	mu         sync.Mutex
	exceptions []string
}

func (w *pageWatch) thrown() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.exceptions...)
}

// watchPage records the browser's uncaught exceptions and, through a script DevTools runs before the
// page's own (the page's CSP does not apply to it), every CSP violation (window.__cspViolations).
func watchPage(t *testing.T, b *browser) *pageWatch {
	t.Helper()
	w := &pageWatch{}
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			w.mu.Lock()
			w.exceptions = append(w.exceptions, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber+1))
			w.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(b.ctx, func(ctx context.Context, tg *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// poll waits (up to 30 s: a loaded 2-core machine) for a JavaScript predicate on the current page.
func (b *browser) poll(predicate, what string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		st, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.getElementById("watch-status") || document.body).textContent.slice(0, 300)`))
		b.t.Fatalf("waiting for %s: %v (status: %q)", what, err, st)
	}
}

func evalB[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %.80s: %v", expr, err)
	}
	return v
}

// setZone chooses the console's time zone in the form at the bottom of the page and waits for the
// page the form goes back to (rendered with the zone as the field's value attribute).
func (b *browser) setZone(zone string) {
	b.t.Helper()
	b.do(chromedp.SetValue(chromedp.ID("tz"), zone), chromedp.Click(chromedp.ID("tz-save")))
	b.across(`document.readyState === "complete" && !!document.getElementById("tz") && document.getElementById("tz").defaultValue === `+jsString(zone), "the page in "+zone)
}

// across polls a JavaScript predicate (up to 30 s) across navigations: an evaluation cut short by the
// page being replaced is tried again on the next one.
func (b *browser) across(predicate, what string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](predicate))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond) // the polling interval, bounded by the deadline
	}
}

// watchMessages is the Watch live list, newest first, as "topic payload".
const watchMessages = `Array.from(document.querySelectorAll("#watch-messages li"), (li) => li.querySelector(".topic").textContent + " " + li.querySelector(".payload").textContent)`

// checkNothingKept: no token or credential where script or a later visitor could read it (nothing in
// localStorage or sessionStorage, no cookie readable by script, no signed credential in the page's
// markup), no CSP violation, no uncaught error.
func checkNothingKept(t *testing.T, b *browser, w *pageWatch) {
	t.Helper()
	if n := evalB[int](b, `localStorage.length + sessionStorage.length`); n != 0 {
		t.Errorf("U1: the page keeps %d items in localStorage/sessionStorage", n)
	}
	if c := evalB[string](b, `document.cookie`); c != "" {
		t.Errorf("U1: script can read a cookie: %q", c)
	}
	if m := secretPattern.FindString(evalB[string](b, `document.documentElement.outerHTML`)); m != "" {
		t.Errorf("U1: the page's markup holds a secret-shaped string starting %.8q", m)
	}
	if v := evalB[[]string](b, `window.__cspViolations || ["the CSP recorder did not run"]`); len(v) != 0 {
		t.Errorf("the page violated its CSP: %v", v)
	}
	if ex := w.thrown(); len(ex) != 0 {
		t.Errorf("the page threw: %v", ex)
	}
}

// axeSource is axe-core's browser build, which `make build` installs with npm from web/live's pinned
// package-lock.json (a dev dependency: never embedded or served).
func axeSource(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "web", "live", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatalf("axe-core is not installed (%v): run make build (npm ci in web/live installs it)", err)
	}
	return string(b)
}

// axeRun is what the test asks axe: the WCAG 2.x A/AA rules and best practices on the whole page; it
// answers the serious and critical violations, each with up to three of its elements.
const axeRun = `axe.run(document, {resultTypes: ["violations"]}).then((r) => r.violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => v.id + " (" + v.impact + "): " + v.help + " at " + v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("; ")))`

// axeCheck injects axe-core into the current page through DevTools (so the page's CSP stays as served:
// the product never loads axe) and fails on any serious or critical violation.
func axeCheck(t *testing.T, b *browser, src, screen string) {
	t.Helper()
	if !evalB[bool](b, `typeof axe === "object" || (function () { `+src+`
; return typeof axe === "object"; })()`) {
		t.Fatalf("%s: axe-core did not load into the page", screen)
	}
	for _, v := range evalB[[]string](b, axeRun) {
		t.Errorf("axe on %s: %s", screen, v)
	}
}

// TestConsoleWatchLiveAxeAndScreens drives the console's Watch live, /live in the console's layout,
// axe-core on every main screen and the screenshots of every screen at 1,280 and 390 px, in one
// headless Chromium against one server: PostgreSQL, the API with its real token exchange, the console
// with MQTT_WS_URL, and Mosquitto with the plugin verifying the short-lived credentials on a websockets
// listener.
//
//   - Watch live on the agent page: the page gets its credential from POST /console/live/credential
//     (CSRF-checked: refused without the token, with a foreign Origin, and by GET), reports subscribed,
//     and then shows a message the agent publishes with a real MQTT client; no token in web storage,
//     no cookie readable by script, nothing secret in the markup, no CSP violation; the agent page's
//     CSP adds the broker's WebSocket origin and the other pages' do not.
//   - /live opened by a browser signed in to the console becomes /console/live: the console's navigation,
//     a way back to the agent, no sign-in, times in the operator's zone (Asia/Tokyo here).
//   - axe-core finds no serious or critical violation on the sign-in, overview, agents, agent, keys,
//     provisioning, users, license, audit and live screens and on /live's own sign-in, at 1,280 and
//     390 px, and on a confirmation page and an error page; each is photographed into
//     build/console/screen-<screen>-<width>.png.
func TestConsoleWatchLiveAxeAndScreens(t *testing.T) {
	if !live.BundleBuilt() {
		t.Fatal("MQTT.js's bundle is not in web/live/static/vendor: run make build (it runs npm ci) before this test")
	}
	axe := axeSource(t)
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
	mb := harness.StartBroker(t, harness.BrokerConfig{
		Plugin:  plugin,
		Options: [][2]string{{"dsn", e.dsn}, {"mqtt_token_public_key", pubPath}},
		Extra:   []string{"listener " + strconv.Itoa(wsPort) + " 127.0.0.1", "protocol websockets"},
	})
	if !mb.WaitLog("subject deny list loaded", 15*time.Second) {
		t.Fatal("the plugin did not load the subject deny list")
	}
	ce := newConsoleEnv(t, e, false, func(c *console.Config) { c.MQTTWebSocketURL = wsURL })
	admin := e.admin()
	agent := e.provision(admin.Access, "live-gateway")
	e.remember(agent.APIKey, agent.MQTT.Password)
	other := e.provision(admin.Access, "quiet-sensor")
	e.remember(other.APIKey, other.MQTT.Password)
	e.createUser("viewer@example.com", "viewer-watches-1", "viewer")

	b := newBrowser(t, ce.url)
	pw := watchPage(t, b)
	as := func(t *testing.T) func() {
		prev := b.t
		b.t = t
		return func() { b.t = prev }
	}
	// screens: every screen at both widths, axe on each, a screenshot of each.
	screens := func(t *testing.T, list []struct{ name, path, sel string }) {
		t.Helper()
		for _, width := range []int{1280, 390} {
			height := 900
			if width == 390 {
				height = 844
			}
			b.do(chromedp.EmulateViewport(int64(width), int64(height)))
			for _, sc := range list {
				b.open(sc.path, sc.sel)
				axeCheck(t, b, axe, fmt.Sprintf("%s at %d px", sc.name, width))
				if w := evalB[int](b, `document.documentElement.scrollWidth`); w > width {
					t.Errorf("%s is %d px wide in a %d px window", sc.name, w, width)
				}
				b.shot(fmt.Sprintf("screen-%s-%d", sc.name, width))
			}
		}
		b.do(chromedp.EmulateViewport(1280, 900))
	}

	t.Run("SignedOutScreens", func(t *testing.T) {
		defer as(t)()
		// Not signed in to the console: /live stays the standalone page with its own sign-in.
		screens(t, []struct{ name, path, sel string }{
			{"login", "/console/login", "#login-form"},
			{"live-standalone", "/live", "#login-form"},
		})
		if got := evalB[string](b, `location.pathname`); got != "/live" {
			t.Errorf("signed out, /live went to %s", got)
		}
	})

	b.signIn("admin@example.com", "correct horse battery")
	agentPath := "/console/agents/" + agent.AgentUUID
	topic := "agents/" + agent.AgentUUID + "/telemetry"

	t.Run("WatchLiveOnAgentPage", func(t *testing.T) {
		defer as(t)()
		b.open(agentPath, "#watch-live")
		if got := b.attr("#watch", "data-zone"); got != "UTC" {
			t.Errorf("the watch section's zone is %q, want UTC (the default)", got)
		}
		b.do(chromedp.Click(chromedp.ID("watch-live")))
		// The page reports subscribed (data-state live) only once the broker granted the subscription.
		b.poll(`document.getElementById("watch-status").dataset.state === "live"`, "Watch live to subscribe")
		if got := b.text("#watch-status"); got != "Live: agents/"+agent.AgentUUID+"/#" {
			t.Errorf("status %q", got)
		}
		if !regexp.MustCompile(`as x[a-z2-7]{12}-[0-9a-f]{16} `).MatchString(mb.Log()) {
			t.Errorf("the broker did not see the page's client id (the exchange's clientIdPrefix + 16 hex digits):\n%s", mb.Log())
		}
		publish(t, mb, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID, topic, `{"temperature":21.5}`)
		b.poll(`(`+watchMessages+`).includes(`+jsString(topic+` {"temperature":21.5}`)+`)`, "the agent's message on the agent page")
		if tm := b.text("#watch-messages li .time"); !regexp.MustCompile(`^\d\d:\d\d:\d\d UTC$`).MatchString(tm) {
			t.Errorf("the message's time is %q, want HH:MM:SS UTC", tm)
		}
		// Another agent's messages are not shown (that agent may not publish on this one's topics anyway).
		publish(t, mb, other.MQTT.Username, other.MQTT.Password, other.MQTT.ClientID, "agents/"+other.AgentUUID+"/telemetry", "someone else")
		publish(t, mb, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID, topic, "second")
		b.poll(`(`+watchMessages+`).includes(`+jsString(topic+" second")+`)`, "the second message")
		for _, m := range evalB[[]string](b, watchMessages) {
			if strings.Contains(m, "someone else") {
				t.Errorf("the agent page shows another agent's message: %q", m)
			}
		}
		checkNothingKept(t, b, pw)
		b.shot("agent-watch-live-1280")
		b.do(chromedp.Click(chromedp.ID("watch-stop")))
		b.poll(`document.getElementById("watch-status").dataset.state === "idle"`, "Stop")

		// The credential endpoint, as any client would call it.
		c := ce.client(t)
		c.signIn(t, "admin@example.com", "correct horse battery")
		agentPage := c.get(t, agentPath)
		csp := agentPage.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "connect-src 'self' ws://127.0.0.1:"+strconv.Itoa(wsPort)) || strings.Contains(csp, "unsafe") {
			t.Errorf("the agent page's CSP is %q: want connect-src to the broker and nothing unsafe", csp)
		}
		if over := c.get(t, "/console/").Header.Get("Content-Security-Policy"); over != console.ContentSecurityPolicy {
			t.Errorf("the overview's CSP is %q, want the console's own (no WebSocket origin)", over)
		}
		token := c.csrf
		for _, bad := range []struct {
			what   string
			form   url.Values
			origin string
		}{
			{"no CSRF token", url.Values{}, ce.url},
			{"a wrong CSRF token", url.Values{"csrf": {"AAAA" + token[4:]}}, ce.url},
			{"a foreign Origin", url.Values{"csrf": {token}}, "http://evil.example"},
		} {
			if res := c.post(t, "/console/live/credential", bad.form, bad.origin); res.StatusCode != http.StatusForbidden || secretPattern.Match(res.body) {
				t.Errorf("credential with %s: %d %s, want 403 and no credential", bad.what, res.StatusCode, res.body)
			}
		}
		if res := c.get(t, "/console/live/credential"); res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /console/live/credential: %d, want 405", res.StatusCode)
		}
		if res := c.post(t, "/console/live/credential", url.Values{"csrf": {token}, "agent": {"not-a-uuid"}}, ce.url); res.StatusCode != http.StatusBadRequest || secretPattern.Match(res.body) {
			t.Errorf("credential without an agent's UUID: %d %s, want 400 and no credential", res.StatusCode, res.body)
		}
		// Typed in capitals, the UUID names the same agent.
		res := c.post(t, "/console/live/credential", url.Values{"csrf": {token}, "agent": {strings.ToUpper(agent.AgentUUID)}}, ce.url)
		var cred struct {
			MQTT struct {
				Username, Password, ClientIDPrefix string
				ExpiresAt                          time.Time
			} `json:"mqtt"`
		}
		if res.StatusCode != 200 || json.Unmarshal(res.body, &cred) != nil || cred.MQTT.Password == "" {
			t.Fatalf("credential: %d %s", res.StatusCode, res.body)
		}
		if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("the credential's Cache-Control is %q, want no-store", cc)
		}
		if left := time.Until(cred.MQTT.ExpiresAt); left <= 0 || left > 5*time.Minute+5*time.Second {
			t.Errorf("the credential ends in %v, want at most 5 minutes", left)
		}
		// The credential reads the watched agent and nothing else, though the admin's role would allow
		// readwrite agents/#: another agent's topics are refused at SUBSCRIBE, and so is a publish.
		mc, err := harness.Connect(mb, cred.MQTT.Username, cred.MQTT.Password, cred.MQTT.ClientIDPrefix+"00112233445566ff")
		if err != nil {
			t.Fatalf("connect with the console's credential: %v", err)
		}
		defer mc.Disconnect(50)
		for filter, want := range map[string]byte{"agents/" + agent.AgentUUID + "/#": 0, "agents/" + other.AgentUUID + "/#": 0x80, "agents/#": 0x80} {
			tok := mc.Subscribe(filter, 0, nil)
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe %s: %v", filter, tok.Error())
			}
			if got := tok.(*mqtt.SubscribeToken).Result()[filter]; got != want {
				t.Errorf("the console's credential subscribing to %s got %#x, want %#x", filter, got, want)
			}
		}
		var n int
		if err := harness.QueryRow(t, e.dsn, `SELECT count(*) FROM audit_events WHERE action = 'token_exchange' AND actor LIKE 'user:%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 2 {
			t.Errorf("%d token_exchange audit events by a user, want the page's and this one", n)
		}
		if res := c.get(t, "/console/session"); res.StatusCode != 200 || strings.TrimSpace(string(res.body)) != `{"signedIn":true}` {
			t.Errorf("GET /console/session signed in: %d %s", res.StatusCode, res.body)
		}
		if res := ce.client(t).get(t, "/console/session"); res.StatusCode != 200 || strings.TrimSpace(string(res.body)) != `{"signedIn":false}` {
			t.Errorf("GET /console/session without a session: %d %s", res.StatusCode, res.body)
		}
	})

	t.Run("LiveInConsoleLayout", func(t *testing.T) {
		defer as(t)()
		// The operator chooses Asia/Tokyo in the console.
		b.open("/console/agents", "#tz-form")
		b.setZone("Asia/Tokyo")
		// /live opened by this browser: the console's live screen, in its layout, without a sign-in.
		// The page replaces itself while loading: chromedp's Navigate may report the target navigated.
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		_ = chromedp.Do(ctx, chromedp.Navigate(b.base+"/live?agent="+agent.AgentUUID))
		cancel()
		b.do(chromedp.WaitVisible(chromedp.ID("watch-agent")))
		if got := evalB[string](b, `location.pathname`); got != "/console/live" {
			t.Fatalf("/live opened signed in to the console went to %s, want /console/live", got)
		}
		if got := evalB[string](b, `location.search`); got != "?agent="+agent.AgentUUID {
			t.Errorf("the live screen's query is %q", got)
		}
		for _, sel := range []string{"#nav-overview", "#nav-agents", "#nav-live.active", "#me", "#logout", "#tz-form", "#back-to-agent"} {
			if b.count(sel) != 1 {
				t.Errorf("/live from the console lacks %s (the console's layout and navigation, a way back)", sel)
			}
		}
		if b.count("#login-form") != 0 || b.count("#password") != 0 {
			t.Error("/live from the console asks to sign in again")
		}
		if got := b.attr("#watch", "data-zone"); got != "Asia/Tokyo" {
			t.Errorf("the live screen's zone is %q, want the operator's Asia/Tokyo", got)
		}
		// ?agent= starts watching at once.
		b.poll(`document.getElementById("watch-status").dataset.state === "live"`, "the live screen to subscribe")
		publish(t, mb, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID, topic, `{"door":"closed"}`)
		b.poll(`(`+watchMessages+`).includes(`+jsString(topic+` {"door":"closed"}`)+`)`, "the agent's message on the live screen")
		tm := b.text("#watch-messages li .time")
		tokyo, _ := time.LoadLocation("Asia/Tokyo")
		now := time.Now().In(tokyo)
		if m := regexp.MustCompile(`^(\d\d):(\d\d):\d\d (GMT\+9|JST)$`).FindStringSubmatch(tm); m == nil {
			t.Errorf("the message's time is %q, want HH:MM:SS in Tokyo's zone", tm)
		} else if h, _ := strconv.Atoi(m[1]); h != now.Hour() && h != now.Add(-2*time.Minute).Hour() {
			t.Errorf("the message's time %q is not Tokyo's (now %s)", tm, now.Format("15:04:05 MST"))
		}
		checkNothingKept(t, b, pw)
		b.shot("live-console-1280")
		// The way back: to the agent's page.
		b.do(chromedp.Click(chromedp.ID("back-to-agent")), chromedp.WaitVisible(chromedp.ID("agent-uuid")))
		if got := b.text("#agent-uuid"); got != agent.AgentUUID {
			t.Errorf("the way back leads to agent %q", got)
		}
		// The nav's Live entry opens the screen without an agent; entering one watches it.
		b.do(chromedp.Click(chromedp.ID("nav-live")), chromedp.WaitVisible(chromedp.ID("watch-agent")))
		b.do(chromedp.SendKeys(chromedp.ID("watch-agent"), agent.AgentUUID), chromedp.Click(chromedp.ID("watch-start")))
		b.poll(`document.getElementById("watch-status").dataset.state === "live"`, "the live screen's form to subscribe")
		publish(t, mb, agent.MQTT.Username, agent.MQTT.Password, agent.MQTT.ClientID, topic, "from the form")
		b.poll(`(`+watchMessages+`).includes(`+jsString(topic+" from the form")+`)`, "the message watched from the form")
		checkNothingKept(t, b, pw)
		// Back to UTC for the screenshots.
		b.setZone("UTC")
	})

	t.Run("AxeAndScreenshots", func(t *testing.T) {
		defer as(t)()
		screens(t, []struct{ name, path, sel string }{
			{"overview", "/console/", "#fleet"},
			{"agents", "/console/agents", "tr.agent"},
			{"agent", agentPath, "#watch"},
			{"keys", "/console/keys", "#nav-keys"},
			{"provisioning", "/console/provisioning", "#create-prov-form"},
			{"users", "/console/users", "#nav-users"},
			{"license", "/console/license", "#nav-license"},
			{"audit", "/console/audit", "#nav-audit"},
			{"live", "/console/live", "#watch-agent"},
			{"error", "/console/agents/00000000-0000-4000-8000-000000000000", "#error"},
		})
		// A confirmation page (the key revocation's, which changes nothing until confirmed).
		for _, width := range []int64{1280, 390} {
			b.do(chromedp.EmulateViewport(width, 900))
			b.open(agentPath, "#agent-keys button.revoke")
			b.do(chromedp.Click(chromedp.CSS("#agent-keys button.revoke")), chromedp.WaitVisible(chromedp.ID("confirm-form")))
			axeCheck(t, b, axe, fmt.Sprintf("the confirmation page at %d px", width))
			b.shot(fmt.Sprintf("screen-confirm-%d", width))
		}
		b.do(chromedp.EmulateViewport(1280, 900))
		checkNothingKept(t, b, pw)
		ce.checkURLs(b) // no URL the browser requested carries a secret
	})
}
