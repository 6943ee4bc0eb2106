package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/test/harness"
	"github.com/iotauth/iotauth/web/live"
)

// livePage is a headless Chromium tab on iotauth's /live page. Every CSP violation and uncaught error
// of the page is recorded: the page must run with none.
type livePage struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // uncaught exceptions
}

// cspRecorder runs before the page's own scripts (through DevTools, so the page's CSP does not apply to
// it) and keeps every violation of the page's CSP.
const cspRecorder = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));`

// openLivePage opens base+"/live" in a fresh headless Chromium and waits until the page's script ran.
func openLivePage(t *testing.T, base string) *livePage {
	t.Helper()
	if !live.BundleBuilt() {
		t.Fatal("MQTT.js's bundle is not in web/live/static/vendor: run make build (it runs npm ci) before this test")
	}
	p := &livePage{t: t, ctx: harness.Browser(t)}
	if err := chromedp.Listen(p.ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			p.mu.Lock()
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			p.problems = append(p.problems, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber+1))
			p.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				t.Logf("page console %s: %s", e.Type, strings.Join(parts, " "))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(p.ctx, func(ctx context.Context, tg *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
	}); err != nil {
		t.Fatal(err)
	}
	p.do(chromedp.Navigate(base + "/live"))
	p.wait(`document.body.dataset.ready === "true"`, "the page's script to start")
	return p
}

// do runs steps, failing the test with the page's status line on error.
func (p *livePage) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v (page status: %q)", err, p.status())
	}
}

// wait polls a JavaScript predicate for up to 30 s (generous: a loaded 2-core machine runs Chromium,
// PostgreSQL, Mosquitto and the API at once).
func (p *livePage) wait(predicate, what string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		p.t.Fatalf("waiting for %s: %v (page status: %q; exceptions: %v)", what, err, p.status(), p.exceptions())
	}
}

func (p *livePage) exceptions() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

func (p *livePage) status() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
	return s
}

func evalIn[T any](p *livePage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v (page status: %q)", expr, err, p.status())
	}
	return v
}

// login signs in through the page's form, as a person would.
func (p *livePage) login(email, password string) {
	p.t.Helper()
	p.do(chromedp.SendKeys("#email", email), chromedp.SendKeys("#password", password), chromedp.Click("#login-button"))
	p.wait(`!document.getElementById("watch-section").hidden`, "the sign-in")
}

// watch enters an agent's uuid and waits until the page's subscription is granted.
func (p *livePage) watch(agent string) {
	p.t.Helper()
	p.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("agent").value = ""`), chromedp.SendKeys("#agent", agent), chromedp.Click("#watch-button"))
	p.wait(`document.getElementById("status").dataset.state === "live"`, "the page's MQTT subscription")
}

// messages returns the list the page shows, newest first, as "topic payload".
func (p *livePage) messages() []string {
	p.t.Helper()
	return evalIn[[]string](p, `Array.from(document.querySelectorAll("#messages li"), (li) => li.querySelector(".topic").textContent + " " + li.querySelector(".payload").textContent)`)
}

// waitMessage waits until the page lists topic with payload.
func (p *livePage) waitMessage(topic, payload string) {
	p.t.Helper()
	js, _ := json.Marshal(topic + " " + payload)
	p.wait(`Array.from(document.querySelectorAll("#messages li"), (li) => li.querySelector(".topic").textContent + " " + li.querySelector(".payload").textContent).includes(`+string(js)+`)`,
		"the message on "+topic+" to show")
}

// checkClean: nothing in the browser's storage (docs/security.md, U1: tokens live in JS variables only), no
// cookie visible to script, no CSP violation and no uncaught error.
func (p *livePage) checkClean() {
	p.t.Helper()
	if n := evalIn[int](p, `localStorage.length + sessionStorage.length`); n != 0 {
		p.t.Errorf("U1: the page keeps %d items in localStorage/sessionStorage", n)
	}
	if c := evalIn[string](p, `document.cookie`); c != "" {
		p.t.Errorf("U1: script can read a cookie: %q", c)
	}
	if v := evalIn[[]string](p, `window.__cspViolations`); len(v) != 0 {
		p.t.Errorf("the page violated its CSP: %v", v)
	}
	if ex := p.exceptions(); len(ex) != 0 {
		p.t.Errorf("the page threw: %v", ex)
	}
}

// screenshot writes a PNG of the page to build/live/<name> in the repository.
func (p *livePage) screenshot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatal(err)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(root, "build", "live", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// webSocketBroker starts a Mosquitto with a websockets listener beside its TCP one and returns it with
// the ws:// URL. Without a plugin it admits anyone (for the page's own tests); extra configures more.
func webSocketBroker(t *testing.T, c harness.BrokerConfig) (*harness.Broker, string) {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c.Extra = append(c.Extra, "listener "+strconv.Itoa(port)+" 127.0.0.1", "protocol websockets")
	b := harness.StartBroker(t, c)
	return b, fmt.Sprintf("ws://127.0.0.1:%d/", port)
}

// livePages is the /live page for a broker's WebSocket URL, as `iotauth serve` mounts it.
func livePages(t *testing.T, wsURL string) []api.Page {
	t.Helper()
	lp, err := live.Pages(live.Config{MQTTWebSocketURL: wsURL})
	if err != nil {
		t.Fatal(err)
	}
	var pages []api.Page
	for _, p := range lp {
		pages = append(pages, api.Page{Pattern: p.Pattern, Handler: p.Handler})
	}
	return pages
}

func randomUUID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// publish sends one QoS 1 message over TCP with paho and waits for the PUBACK.
func publish(t *testing.T, b *harness.Broker, user, pass, clientID, topic, payload string) {
	t.Helper()
	c, err := harness.Connect(b, user, pass, clientID)
	if err != nil {
		t.Fatalf("publisher %s could not connect: %v", clientID, err)
	}
	defer c.Disconnect(50)
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

// checkPageHeaders: the page's answers carry a CSP with no 'unsafe-inline' (nor any 'unsafe-'), that
// allows WebSockets to the broker only, and forbid framing and sniffing.
func checkPageHeaders(t *testing.T, base, wsURL string) {
	t.Helper()
	u, err := live.ParseWebSocketURL(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/live", "/live/live.js", "/live/config.json", live.BundleURL} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		csp := res.Header.Get("Content-Security-Policy")
		if res.StatusCode != 200 || csp == "" || strings.Contains(csp, "unsafe-") || !strings.Contains(csp, "connect-src 'self' ws://"+u.Host+";") {
			t.Errorf("GET %s: %d, CSP %q", path, res.StatusCode, csp)
		}
		if res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: X-Frame-Options %q, X-Content-Type-Options %q", path, res.Header.Get("X-Frame-Options"), res.Header.Get("X-Content-Type-Options"))
		}
	}
}

// exchangeRecorder stands in front of the API and answers POST /api/v1/tokens/exchange itself, passing
// every other request to the real API: the page's sign-in, exchange, connect and renewal then run
// against a real broker with credentials whose lifetime (ttl) is shorter than the real exchange issues
// (a minute at least), and the test sees exactly what the page sent. It accepts only a valid access
// token (it asks the API's GET /api/v1/auth/me) and answers credentials for an anonymous broker.
type exchangeRecorder struct {
	api http.Handler
	ttl time.Duration

	mu    sync.Mutex
	calls []exchangeCall
}

type exchangeCall struct {
	Auth  string
	CType string
	Body  map[string]any
}

func (x *exchangeRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/api/v1/tokens/exchange" {
		x.api.ServeHTTP(w, r)
		return
	}
	me := httptest.NewRequest("GET", "/api/v1/auth/me", nil)
	me.Header.Set("Authorization", r.Header.Get("Authorization"))
	check := httptest.NewRecorder()
	x.api.ServeHTTP(check, me)
	if check.Code != http.StatusOK {
		http.Error(w, "not a valid access token", http.StatusUnauthorized)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	x.mu.Lock()
	x.calls = append(x.calls, exchangeCall{Auth: r.Header.Get("Authorization"), CType: r.Header.Get("Content-Type"), Body: body})
	n := len(x.calls)
	x.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"mqtt": map[string]any{
		"username": fmt.Sprintf("iotmq_live%d", n), "password": "not-checked-by-an-anonymous-broker",
		"clientIdPrefix": "live-test-", "expiresAt": time.Now().Add(x.ttl).UTC().Format(time.RFC3339Nano),
		"topics": []map[string]string{{"access": "read", "pattern": "agents/#"}},
	}})
}

func (x *exchangeRecorder) snapshot() []exchangeCall {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]exchangeCall(nil), x.calls...)
}

// TestLivePageSignInExchangeAndWatch drives the /live page in headless Chromium against the real API
// and a real Mosquitto's websockets listener (anonymous; the exchange answered by exchangeRecorder in
// front of the API): an operator signs in through the form, enters an agent's uuid, and the page shows
// what the agent publishes. The page's exchange request carries the access token as a Bearer and exactly
// {"provider":"iotauth"}; it exchanges again before the credentials end and carries on with the new
// ones (a new client id), showing each message once; payloads are shown as text, never as markup; no
// token reaches the browser's storage; the CSP has no 'unsafe-inline' and is never violated.
func TestLivePageSignInExchangeAndWatch(t *testing.T) {
	b, wsURL := webSocketBroker(t, harness.BrokerConfig{})
	// Credentials that end 6 s after issue: the page renews them halfway (3 s).
	e := newEnv(t, withConfig(func(c *api.Config) { c.Pages = livePages(t, wsURL) }))
	x := &exchangeRecorder{api: e.srv, ttl: 6 * time.Second}
	front := httptest.NewServer(x)
	t.Cleanup(front.Close)
	e.createUser("watcher@example.com", "watching-password-1", "viewer")
	checkPageHeaders(t, front.URL, wsURL)

	p := openLivePage(t, front.URL)
	p.login("watcher@example.com", "watching-password-1")
	agent := randomUUID(t)
	p.watch(agent)

	calls := x.snapshot()
	if len(calls) == 0 {
		t.Fatal("the page did not call the exchange")
	}
	if !strings.HasPrefix(calls[0].Auth, "Bearer eyJ") {
		t.Errorf("the exchange's Authorization is %.12q…, want the access token as a Bearer", calls[0].Auth)
	}
	// The page asks for reading the watched agent only, not all its operator may have.
	wantTopics := fmt.Sprint([]any{map[string]any{"access": "read", "pattern": "agents/" + agent + "/#"}})
	if len(calls[0].Body) != 2 || calls[0].Body["provider"] != "iotauth" || fmt.Sprint(calls[0].Body["topics"]) != wantTopics || calls[0].CType != "application/json" {
		t.Errorf("the exchange's body is %v, want exactly {\"provider\":\"iotauth\",\"topics\":%s}", calls[0].Body, wantTopics)
	}
	firstID := evalIn[string](p, `document.getElementById("session").textContent`)
	if !strings.Contains(firstID, "live-test-") {
		t.Errorf("the page's client id does not start with the exchange's clientIdPrefix: %q", firstID)
	}
	if !strings.Contains(b.Log(), " as live-test-") {
		t.Errorf("the broker saw no client id starting with the clientIdPrefix:\n%s", b.Log())
	}

	topic := "agents/" + agent + "/telemetry"
	publish(t, b, "", "", "agent-pub-1", topic, `{"temperature":21.5}`)
	p.waitMessage(topic, `{"temperature":21.5}`)
	// Another agent's messages are not shown.
	publish(t, b, "", "", "agent-pub-2", "agents/"+randomUUID(t)+"/telemetry", "someone else")

	// Renewal: two more exchanges, each followed by a new session, then a message shows once.
	p.wait(`document.getElementById("session").textContent !== `+strconv.Quote(firstID), "a renewed session")
	for len(x.snapshot()) < 3 {
		p.wait(`document.getElementById("status").dataset.state === "live"`, "the page to stay live")
		time.Sleep(200 * time.Millisecond) // polling the recorder, bounded by the page waits above
	}
	p.wait(`document.getElementById("status").dataset.state === "live"`, "the page to be live after renewals")
	markup := `<img src=x onerror="document.body.dataset.pwned=1"><b>bold</b>`
	publish(t, b, "", "", "agent-pub-3", topic, markup)
	p.waitMessage(topic, markup)
	if n := evalIn[int](p, `document.querySelectorAll("#messages img, #messages b").length`); n != 0 {
		t.Errorf("a payload became markup (%d elements)", n)
	}
	got := p.messages()
	count := 0
	for _, m := range got {
		if m == topic+" "+markup {
			count++
		}
		if strings.Contains(m, "someone else") {
			t.Errorf("the page shows another agent's message: %q", m)
		}
	}
	if count != 1 {
		t.Errorf("the message after renewals shows %d times: %q", count, got)
	}
	for _, c := range x.snapshot() {
		if c.Auth != calls[0].Auth && !strings.HasPrefix(c.Auth, "Bearer eyJ") {
			t.Errorf("a renewal's Authorization is %.12q…", c.Auth)
		}
	}
	p.checkClean()
	p.screenshot("live-page-test.png")
}

// TestLivePageConnectWithGivenCredentials drives the page's MQTT part alone (window.iotauthLive.connect
// with given credentials, no sign-in): it connects over WebSockets with the credentials and shows the
// agent's messages, and a refused connection is reported, not hidden.
func TestLivePageConnectWithGivenCredentials(t *testing.T) {
	b, wsURL := webSocketBroker(t, harness.BrokerConfig{})
	e := newEnv(t, withConfig(func(c *api.Config) { c.Pages = livePages(t, wsURL) }))
	p := openLivePage(t, e.http.URL)
	agent := randomUUID(t)
	id := evalIn[string](p, `window.iotauthLive.connect({username: "given-user", password: "given-password", clientIdPrefix: "given-", expiresAt: Date.now() + 600000}, `+strconv.Quote(agent)+`)`)
	if !strings.HasPrefix(id, "given-") || len(id) != len("given-")+16 {
		t.Fatalf("client id %q: want the prefix and a 16-digit random suffix", id)
	}
	if !strings.Contains(b.Log(), "as "+id) || !strings.Contains(b.Log(), "u'given-user'") {
		t.Errorf("the broker did not see client %s with the given username:\n%s", id, b.Log())
	}
	topic := "agents/" + agent + "/state"
	publish(t, b, "", "", "agent-pub", topic, "online")
	p.waitMessage(topic, "online")
	// A binary payload is shown as bytes.
	publish(t, b, "", "", "agent-pub-bin", topic, "\xff\xfe\x00")
	p.waitMessage(topic, "3 bytes: ff fe 00")
	p.checkClean()
}

// TestServeBinaryServesLivePage: the binary `make build` makes embeds the page and MQTT.js's bundle
// (npm ci at build time, no CDN), serves them when MQTT_WS_URL is set, and says so in its log; its
// console offers Watch live with the same URL.
func TestServeBinaryServesLivePage(t *testing.T) {
	p := startServe(t, pg.NewDatabase(t), "MQTT_WS_URL=ws://127.0.0.1:9001/")
	res, err := http.Get(p.base + live.BundleURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") || len(body) < 100_000 || !strings.Contains(string(body[:200]), "mqtt") {
		t.Fatalf("GET %s: %d %q, %d bytes: the binary lacks MQTT.js (build it with make build)", live.BundleURL, res.StatusCode, res.Header.Get("Content-Type"), len(body))
	}
	checkPageHeaders(t, p.base, "ws://127.0.0.1:9001/")
	// The console gets the same URL: Watch live's scripts are served (docs/console.md).
	for _, path := range []string{"/console/static/live/watch.js", "/console/static/live/mqtt.min.js"} {
		res, err := http.Get(p.base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s: %d; serve did not give the console MQTT_WS_URL", path, res.StatusCode)
		}
	}
	if !strings.Contains(p.logs.String(), "live page at /live") {
		t.Errorf("serve did not log the live page:\n%s", p.logs.String())
	}
}
