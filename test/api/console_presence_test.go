package api_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/iotauth/iotauth/test/harness"
	"github.com/iotauth/iotauth/web/console"
)

// agentPresenceREST is an agent's presence as GET /api/v1/agents/{uuid} answers it.
type agentPresenceREST struct {
	Online   bool `json:"online"`
	Sessions []struct {
		Broker   string `json:"broker"`
		ClientID string `json:"clientId"`
		Protocol string `json:"protocol"`
	} `json:"sessions"`
	LastDisconnectReason *string `json:"lastDisconnectReason"`
}

// waitPresence polls the agent's presence over REST until ok holds (generous bound for a loaded
// machine; docs/presence.md promises 2 s for a session's start or end, a kick takes a re-check more).
func (e *env) waitPresence(tok, agent, what string, ok func(agentPresenceREST) bool) agentPresenceREST {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := e.expect(req{Method: "GET", Path: "/api/v1/agents/" + agent, Token: tok}, 200, "")
		var a struct {
			Presence agentPresenceREST `json:"presence"`
		}
		if err := json.Unmarshal(res.Body, &a); err != nil {
			e.t.Fatal(err)
		}
		if ok(a.Presence) {
			return a.Presence
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("agent %s is not %s: %s", agent, what, res.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isOnline(p agentPresenceREST) bool { return p.Online && len(p.Sessions) == 1 }

func endedWith(reason string) func(agentPresenceREST) bool {
	return func(p agentPresenceREST) bool {
		return !p.Online && p.LastDisconnectReason != nil && *p.LastDisconnectReason == reason
	}
}

// greenIn counts the elements under sel whose computed background is the console's green (the
// "online" badge's and the old "active" badge's), so that a test sees what an operator sees.
func (b *browser) greenIn(sel string) int {
	b.t.Helper()
	n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`Array.from(document.querySelectorAll(`+jsString(sel+", "+sel+" *")+`))
  .filter(el => getComputedStyle(el).backgroundColor === "rgb(231, 246, 234)").length`))
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

// timesInUTC fails the test when the page's main text shows a date and time without "UTC" after it.
func (b *browser) timesInUTC(page string) {
	b.t.Helper()
	text := b.text("main")
	times := regexp.MustCompile(`\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?( UTC)?`).FindAllStringSubmatch(text, -1)
	if len(times) == 0 {
		b.t.Errorf("%s shows no time at all; the check needs one", page)
	}
	for _, m := range times {
		if m[2] == "" {
			b.t.Errorf("%s shows the time %q without its zone", page, m[0])
		}
	}
}

// favicon checks that the page names an icon and that the console serves it.
func (ce *consoleEnv) favicon(b *browser) {
	ce.t.Helper()
	href := b.attr(`link[rel="icon"]`, "href")
	res, err := http.Get(ce.url + href)
	if err != nil {
		ce.t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/svg+xml" || !bytes.Contains(body, []byte("<svg")) {
		ce.t.Errorf("the favicon %s answers %d %q", href, res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// TestConsolePresence: with two real brokers recording presence, the agents list shows a connected agent
// online (green) and the others offline, its online filter keeps the right agents with the right
// total, an agent's page lists its live session (broker, client id, protocol) and its ended sessions
// with their reasons, an agent that is disabled or whose only key is revoked is never green, and the
// overview's counts, per broker too, equal the REST summary after connects and ends on both brokers.
func TestConsolePresence(t *testing.T) {
	e := newEnv(t, withBroker)
	if !e.broker.WaitLog("presence recording", 15*time.Second) {
		t.Fatalf("the broker did not start recording presence:\n%s", e.broker.Log())
	}
	second := harness.PluginBroker(t, e.dsn, [2]string{"broker_id", "second-broker"})
	if !second.WaitLog("presence recording", 15*time.Second) {
		t.Fatalf("the second broker did not start recording presence:\n%s", second.Log())
	}
	ce := newConsoleEnv(t, e, false)
	adm := e.admin()
	far := harness.CreateAgent(t, e.st, "far-away")
	on := harness.CreateAgent(t, e.st, "on-air")
	off := harness.CreateAgent(t, e.st, "gone-quiet")
	dis := harness.CreateAgent(t, e.st, "switched-off")
	rev := harness.CreateAgent(t, e.st, "key-revoked")
	never := harness.CreateAgent(t, e.st, "never-seen")
	for _, a := range []harness.Agent{far, on, off, dis, rev, never} {
		e.remember(a.Key, a.Password)
	}
	clients := map[string]interface{ Disconnect(uint) }{}
	for _, a := range []harness.Agent{on, dis, rev} {
		clients[a.UUID] = harness.MustConnect(t, e.broker, a)
	}
	// far stays online on the second broker; off connects there and leaves.
	for _, a := range []harness.Agent{far, off} {
		clients[a.UUID] = harness.MustConnect(t, second, a)
	}
	var live agentPresenceREST
	for _, a := range []harness.Agent{far, on, off, dis, rev} {
		p := e.waitPresence(adm.Access, a.UUID, "online", isOnline)
		if a.UUID == on.UUID {
			live = p
		}
	}
	// Before anything ends, the disabled-to-be agent is green: the check below can fail.
	b := newBrowser(t, ce.url)
	b.signIn("admin@example.com", "correct horse battery")
	b.open("/console/agents", `tr.agent[data-uuid="`+dis.UUID+`"]`)
	if n := b.greenIn(`tr.agent[data-uuid="` + dis.UUID + `"]`); n != 1 {
		t.Fatalf("a connected active agent shows %d green badges, want 1", n)
	}

	// off disconnects cleanly; dis is disabled (kicked); rev's only key is revoked (kicked).
	e.expect(req{Method: "PATCH", Path: "/api/v1/agents/" + dis.UUID, Body: map[string]string{"status": "disabled"}, Token: adm.Access}, 200, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/api-keys/" + rev.KeyID, Token: adm.Access}, 204, "")
	clients[off.UUID].Disconnect(100)
	e.waitPresence(adm.Access, off.UUID, "disconnected", endedWith("client"))
	e.waitPresence(adm.Access, dis.UUID, "kicked as disabled", endedWith("kicked_disabled"))
	e.waitPresence(adm.Access, rev.UUID, "kicked as revoked", endedWith("kicked_revoked"))

	b.open("/console/agents", `tr.agent[data-uuid="`+on.UUID+`"]`)
	badge := func(a harness.Agent) string {
		return b.text(`tr.agent[data-uuid="` + a.UUID + `"] .presence`)
	}
	if got := badge(on); got != "online" {
		t.Errorf("the connected agent's badge reads %q, want online", got)
	}
	for _, a := range []harness.Agent{off, dis, rev, never} {
		if got := badge(a); got != "offline" {
			t.Errorf("agent %s's badge reads %q, want offline", a.UUID, got)
		}
		if n := b.greenIn(`tr.agent[data-uuid="` + a.UUID + `"]`); n != 0 {
			t.Errorf("agent %s (disabled, revoked or never connected) shows %d green elements", a.UUID, n)
		}
	}
	if n := b.greenIn(`tr.agent[data-uuid="` + on.UUID + `"]`); n != 1 {
		t.Errorf("the online agent shows %d green badges, want 1", n)
	}
	if got := b.text(`tr.agent[data-uuid="` + dis.UUID + `"] .status`); got != "disabled" {
		t.Errorf("the disabled agent's status reads %q", got)
	}
	b.timesInUTC("the agents list")
	b.shot("agents-presence-1280")

	// The overview: the fleet's counts equal the REST summary, the broker holding the online agent is
	// listed with its count, and the revocation and the disable are among the security events.
	var sum struct {
		Total          int            `json:"total"`
		Online         int            `json:"online"`
		Offline        int            `json:"offline"`
		NeverConnected int            `json:"neverConnected"`
		Disabled       int            `json:"disabled"`
		ByBroker       map[string]int `json:"byBroker"`
	}
	if err := json.Unmarshal(e.expect(req{Method: "GET", Path: "/api/v1/agents/summary", Token: adm.Access}, 200, "").Body, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Total != 6 || sum.Online != 2 || sum.Offline != 4 || sum.NeverConnected != 1 || sum.Disabled != 1 || len(sum.ByBroker) != 2 || sum.ByBroker["second-broker"] != 1 {
		t.Fatalf("REST summary %+v, want 6 agents, 2 online (1 on second-broker, 1 on the other), 1 never connected, 1 disabled", sum)
	}
	e.expect(req{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]string{"email": "admin@example.com", "password": "not the password"}}, 401, "")
	b.open("/console/", "#fleet")
	if n := b.count(`#security-events tr.event[data-action="login"]`); n != 1 {
		t.Errorf("the security events list %d sign-ins, want only the 1 failed one (the successful ones are not security events)", n)
	}
	for _, f := range []struct {
		id, bar string
		want    int
	}{{"sum-total", "", sum.Total}, {"sum-online", "online", sum.Online}, {"sum-offline", "offline", sum.Offline},
		{"sum-never", "never", sum.NeverConnected}, {"sum-disabled", "disabled", sum.Disabled}} {
		if got := b.text("#" + f.id); got != strconv.Itoa(f.want) {
			t.Errorf("overview %s reads %s, REST summary says %d", f.id, got, f.want)
		}
		if f.bar != "" {
			if got := b.attr("#fleet-chart .bar."+f.bar, "data-value"); got != strconv.Itoa(f.want) {
				t.Errorf("overview chart bar %s holds %s, REST summary says %d", f.bar, got, f.want)
			}
		}
	}
	for broker, n := range sum.ByBroker {
		if got := b.text(`tr.broker[data-broker="` + broker + `"] td.n`); got != strconv.Itoa(n) {
			t.Errorf("overview broker %s reads %s online, REST says %d", broker, got, n)
		}
	}
	if n := b.count("tr.broker"); n != len(sum.ByBroker) {
		t.Errorf("overview lists %d brokers, REST %d", n, len(sum.ByBroker))
	}
	for _, action := range []string{"api_key_revoke", "agent_disable"} {
		if b.count(`#security-events tr.event[data-action="`+action+`"]`) != 1 {
			t.Errorf("the overview's security events lack %s", action)
		}
	}
	if got := b.text("#license-devices"); !strings.HasPrefix(got, "6 / ") {
		t.Errorf("license usage reads %q, want 6 devices used", got)
	}
	// The activity charts hold the sessions just made: 5 connects, 3 ends, and 2 agents online now.
	chartNum := func(sel, attr string) int {
		t.Helper()
		n, err := strconv.Atoi(b.attr(sel, attr))
		if err != nil {
			t.Fatalf("%s %s: %v", sel, attr, err)
		}
		return n
	}
	if n := chartNum("#chart-online", "data-steps"); n != 288 {
		t.Errorf("the online chart has %d points, want 288 (24 h in 5 minutes)", n)
	}
	if n := chartNum("#chart-online polyline.online", "data-last"); n != sum.Online {
		t.Errorf("the online chart ends at %d agents, REST summary says %d", n, sum.Online)
	}
	if n := chartNum("#chart-sessions polyline.connects", "data-total"); n < 5 {
		t.Errorf("the sessions chart counts %d connects, want at least the 5 just made", n)
	}
	if n := chartNum("#chart-sessions polyline.disconnects", "data-total"); n < 3 {
		t.Errorf("the sessions chart counts %d disconnects, want at least the 3 just made", n)
	}
	b.timesInUTC("the overview")
	ce.favicon(b)
	b.shot("overview-1280")

	// The online filter, with its total.
	b.open("/console/agents?online=true", "#agents-total")
	if n := b.count("tr.agent"); n != 2 || b.count(`tr.agent[data-uuid="`+on.UUID+`"]`) != 1 || b.count(`tr.agent[data-uuid="`+far.UUID+`"]`) != 1 {
		t.Errorf("?online=true lists %d agents, want only the two connected ones (one per broker)", n)
	}
	if got := b.attr("#agents-total", "data-total"); got != "2" {
		t.Errorf("?online=true total %s, want 2", got)
	}
	b.open("/console/agents?online=false", "#agents-total")
	if n := b.count("tr.agent"); n != 4 || b.count(`tr.agent[data-uuid="`+on.UUID+`"]`) != 0 {
		t.Errorf("?online=false lists %d agents, want the 4 others", n)
	}
	if got := b.attr("#agents-total", "data-total"); got != "4" {
		t.Errorf("?online=false total %s, want 4", got)
	}
	if got := b.attr(`#online option[value="false"]`, "selected"); got != "" && got != "selected" && got != "true" {
		t.Errorf("the filter does not keep its choice: %q", got)
	}

	// The connected agent's page: its live session as REST reports it.
	b.open("/console/agents/"+on.UUID, "#live-sessions")
	if got := b.text("#agent-presence"); got != "online" {
		t.Errorf("agent page badge %q, want online", got)
	}
	if n := b.count("tr.live-session"); n != 1 {
		t.Fatalf("the agent page lists %d live sessions, want 1", n)
	}
	row := b.text("tr.live-session")
	for _, want := range []string{live.Sessions[0].Broker, on.ClientID, "mqtt3.1.1", "127.0.0.1", "UTC"} {
		if !strings.Contains(row, want) {
			t.Errorf("the live session row %q lacks %q", row, want)
		}
	}
	b.timesInUTC("the agent page")
	b.shot("agent-online-1280")

	// The disabled and the revoked agents: offline, never green, their ended session with its reason.
	for _, x := range []struct {
		a      harness.Agent
		reason string
	}{{off, "client"}, {dis, "kicked_disabled"}, {rev, "kicked_revoked"}} {
		b.open("/console/agents/"+x.a.UUID, "#past-sessions")
		if got := b.text("#agent-presence"); got != "offline" {
			t.Errorf("agent %s page badge %q, want offline", x.a.UUID, got)
		}
		if n := b.greenIn("main"); n != 0 {
			t.Errorf("agent %s page shows %d green elements", x.a.UUID, n)
		}
		if n := b.count("tr.live-session"); n != 0 {
			t.Errorf("agent %s page lists %d live sessions", x.a.UUID, n)
		}
		if got := b.text("tr.past-session td.reason"); got != x.reason {
			t.Errorf("agent %s's last session ended with %q on its page, want %q", x.a.UUID, got, x.reason)
		}
		if !strings.Contains(b.text("#last-disconnect"), x.reason) {
			t.Errorf("agent %s: the page does not say why it went offline: %q", x.a.UUID, b.text("#last-disconnect"))
		}
	}
	if b.count("#no-usable-key") != 1 {
		t.Error("the agent whose only key is revoked is not flagged as unable to connect")
	}
	b.shot("agent-revoked-1280")
	// At a phone's 390 px the main screens are no wider than the window.
	b.do(chromedp.EmulateViewport(390, 844))
	for _, sc := range []struct{ path, sel, shot string }{
		{"/console/", "#fleet", "overview-390"}, {"/console/agents", "tr.agent", "agents-390"},
		{"/console/agents/" + on.UUID, "#live-sessions", "agent-390"},
	} {
		b.open(sc.path, sc.sel)
		if w, _ := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
			t.Errorf("%s is %d px wide in a 390 px window", sc.path, w)
		}
		b.shot(sc.shot)
	}
	b.do(chromedp.EmulateViewport(1280, 900))
	b.open("/console/agents/"+dis.UUID, "#agent-events")
	if b.count(`#agent-events tr.event[data-action="agent_disable"]`) != 1 {
		t.Error("the disabled agent's page does not list its disable among its audit events")
	}
}

// TestConsoleAgentsPagesBackAndRowsStayOneLine: the agents list walks forward with Next page and back
// with Previous page through the same pages (the API's cursors only go forward: the console keeps the
// trail), and at 1,280 px its rows stay one line however long the names, with the full values on hover.
func TestConsoleAgentsPagesBackAndRowsStayOneLine(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	e.createUser("admin@example.com", "correct horse battery", "admin")
	long := strings.Repeat("very-long-gateway-name-", 6)
	e.exec(`INSERT INTO agents (name, created_at) SELECT $1 || i, now() - (100 - i) * interval '1 minute' FROM generate_series(1, 70) i`, long)

	c := ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	rowRe := regexp.MustCompile(`<tr class="agent" data-uuid="([^"]+)"`)
	nextRe := regexp.MustCompile(`href="([^"]+)" class="next-page" id="agents-next"`)
	prevRe := regexp.MustCompile(`href="([^"]+)" class="prev-page" id="agents-prev"`)
	totalRe := regexp.MustCompile(`id="agents-total" data-total="(\d+)">([^<]*)<`)
	type page struct {
		ids   []string
		shown string
	}
	read := func(path string) (page, string, string) {
		t.Helper()
		res := c.get(t, path)
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d", path, res.StatusCode)
		}
		var p page
		for _, m := range rowRe.FindAllSubmatch(res.body, -1) {
			p.ids = append(p.ids, string(m[1]))
		}
		if m := totalRe.FindSubmatch(res.body); m != nil {
			p.shown = strings.TrimSpace(string(m[2]))
		}
		link := func(re *regexp.Regexp) string {
			m := re.FindSubmatch(res.body)
			if m == nil {
				return ""
			}
			u, err := url.Parse(html.UnescapeString(string(m[1])))
			if err != nil {
				t.Fatal(err)
			}
			return u.RequestURI()
		}
		return p, link(nextRe), link(prevRe)
	}
	var forward []page
	path := "/console/agents"
	seen := map[string]bool{}
	for {
		p, next, _ := read(path)
		for _, id := range p.ids {
			if seen[id] {
				t.Fatalf("agent %s listed twice going forward", id)
			}
			seen[id] = true
		}
		forward = append(forward, p)
		if next == "" {
			break
		}
		if len(forward) > 10 {
			t.Fatal("more than 10 pages")
		}
		path = next
	}
	if len(seen) != 70 || len(forward) != 3 || forward[2].shown != "51–70 of 70" {
		t.Fatalf("forward: %d agents on %d pages, last page %q", len(seen), len(forward), forward[len(forward)-1].shown)
	}
	// Back from the last page to the first, page by page.
	_, _, prev := read(path)
	for i := len(forward) - 2; i >= 0; i-- {
		if prev == "" {
			t.Fatalf("page %d has no Previous page link", i+2)
		}
		p, _, pv := read(prev)
		if strings.Join(p.ids, ",") != strings.Join(forward[i].ids, ",") || p.shown != forward[i].shown {
			t.Fatalf("Previous page to page %d shows %q (%d rows), forward it was %q", i+1, p.shown, len(p.ids), forward[i].shown)
		}
		prev = pv
	}
	if prev != "" {
		t.Fatalf("the first page offers a Previous page: %s", prev)
	}

	b := newBrowser(t, ce.url)
	b.signIn("admin@example.com", "correct horse battery")
	b.open("/console/agents", "tr.agent")
	heights, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]float64](`Array.from(document.querySelectorAll("#agents tr")).map(r => r.getBoundingClientRect().height)`))
	if err != nil {
		t.Fatal(err)
	}
	line, err := chromedp.Run(b.ctx, chromedp.Evaluate[float64](`parseFloat(getComputedStyle(document.querySelector("#agents td")).lineHeight)`))
	if err != nil || line <= 0 {
		t.Fatalf("line height %v: %v", line, err)
	}
	for i, h := range heights {
		if h > 1.9*line+16 { // one line plus the cell's padding and border; two lines would exceed it
			t.Errorf("row %d of the agents list is %.0f px high (line %.0f px): it wraps", i, h, line)
		}
	}
	if w, _ := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 1280 {
		t.Errorf("the agents list is %d px wide at 1,280 px", w)
	}
	if w, _ := chromedp.Run(b.ctx, chromedp.Evaluate[float64](`document.querySelector("tr.agent td.name").getBoundingClientRect().width`)); w < 150 {
		t.Errorf("the name column is %.0f px wide at 1,280 px, want at least 150", w)
	}
	// Times are shown whole (never cut): their cells' text fits.
	if cut, _ := chromedp.Run(b.ctx, chromedp.Evaluate[int](`Array.from(document.querySelectorAll("#agents td.t")).filter(td => td.scrollWidth > td.clientWidth).length`)); cut != 0 {
		t.Errorf("%d time cells of the agents list are cut at 1,280 px", cut)
	}
	if got := b.attr("tr.agent td.name", "title"); !strings.HasPrefix(got, long) {
		t.Errorf("a cut name's title is %q, want the full name", got)
	}
	b.shot("agents-1280")
}

// TestConsoleAgentsSortAndPage: 120 agents, created in an order unrelated to their names, some with
// key uses at various times; for each order of the list (created, name, last seen, each both ways)
// the console's pages walk all 120 exactly once, in that order, with the total on every page.
func TestConsoleAgentsSortAndPage(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	e.createUser("admin@example.com", "correct horse battery", "admin")
	// Name i is created (i*37 mod 120) minutes ago; agents with i divisible by 3 never used a key, the
	// others last used one (i*53 mod 120) minutes ago, some agents sharing a minute with another.
	e.exec(`INSERT INTO agents (name, created_at)
SELECT 'agent-' || lpad(i::text, 3, '0'), now() - ((i * 37) % 120) * interval '1 minute' FROM generate_series(0, 119) i`)
	e.exec(`INSERT INTO api_keys (agent_uuid, name, digest, prefix, last_used_at)
SELECT uuid, 'k', decode(md5(uuid::text) || md5(name), 'hex'), 'iotdk_x',
       CASE WHEN substr(name, 7)::int % 3 = 0 THEN NULL ELSE now() - ((substr(name, 7)::int * 53) % 60) * interval '1 minute' END
FROM agents`)
	type row struct {
		uuid, name string
		created    time.Time
		seen       *time.Time
	}
	var raw string
	if err := harness.QueryRow(t, e.dsn, `SELECT json_agg(json_build_object('uuid', uuid, 'name', name, 'created', created_at,
  'seen', (SELECT max(last_used_at) FROM api_keys k WHERE k.agent_uuid = a.uuid)))::text FROM agents a`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var js []struct {
		UUID    string     `json:"uuid"`
		Name    string     `json:"name"`
		Created time.Time  `json:"created"`
		Seen    *time.Time `json:"seen"`
	}
	if err := json.Unmarshal([]byte(raw), &js); err != nil {
		t.Fatal(err)
	}
	var rows []row
	for _, x := range js {
		rows = append(rows, row{x.UUID, x.Name, x.Created, x.Seen})
	}
	if len(rows) != 120 {
		t.Fatalf("%d agents", len(rows))
	}
	seenKey := func(x row) time.Time {
		if x.seen == nil {
			return time.Time{}
		}
		return *x.seen
	}
	orders := map[string]func(a, b row) int{
		"created": func(a, b row) int { return cmpThen(a.created.Compare(b.created), a.uuid, b.uuid) },
		"name":    func(a, b row) int { return cmpThen(strings.Compare(a.name, b.name), a.uuid, b.uuid) },
		"lastSeen": func(a, b row) int {
			return cmpThen(seenKey(a).Compare(seenKey(b)), a.uuid, b.uuid)
		},
	}
	c := ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	rowRe := regexp.MustCompile(`<tr class="agent" data-uuid="([^"]+)"`)
	for name, cmp := range orders {
		for _, desc := range []bool{false, true} {
			sort := name
			want := slices.Clone(rows)
			slices.SortFunc(want, cmp)
			if desc {
				sort = "-" + name
				slices.Reverse(want)
			}
			got := c.walkList(t, "/console/agents?sort="+sort, "agents", rowRe, 120)
			wantIDs := make([]string, len(want))
			for i, x := range want {
				wantIDs[i] = x.uuid
			}
			if strings.Join(got, ",") != strings.Join(wantIDs, ",") {
				t.Errorf("sort=%s: the console's pages list %d agents in another order than expected", sort, len(got))
			}
		}
	}
	// The CSV of the current filter and order: every matching agent (more than one API page of 500 is
	// not needed here; the paging loop is the list's), in order, formulas defused.
	e.exec(`INSERT INTO agents (name) VALUES ('=agent-1+cmd')`)
	page := c.get(t, "/console/agents?q=agent-1&sort=-name")
	link := regexp.MustCompile(`href="([^"]+)" id="agents-csv"`).FindSubmatch(page.body)
	if link == nil {
		t.Fatal("the agents list has no CSV link")
	}
	csvRes := c.get(t, html.UnescapeString(string(link[1])))
	if csvRes.StatusCode != 200 || !strings.HasPrefix(csvRes.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV: %d %s", csvRes.StatusCode, csvRes.Header.Get("Content-Type"))
	}
	records, err := csv.NewReader(bytes.NewReader(csvRes.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var wantNames []string
	for _, x := range rows {
		if strings.Contains(x.name, "agent-1") {
			wantNames = append(wantNames, x.name)
		}
	}
	wantNames = append(wantNames, "'=agent-1+cmd")
	slices.Sort(wantNames) // "'" sorts before "a" in both orders used here
	slices.Reverse(wantNames)
	var gotNames []string
	for _, rec := range records[1:] {
		gotNames = append(gotNames, rec[1])
	}
	if strings.Join(records[0], ",") != "uuid,name,status,online,lastSeenAt,reportedAt,createdAt" || len(records) != len(wantNames)+1 {
		t.Fatalf("CSV header %v with %d rows, want %d", records[0], len(records)-1, len(wantNames))
	}
	if strings.Join(gotNames, ",") != strings.Join(wantNames, ",") {
		t.Errorf("CSV names %v, want %v", gotNames, wantNames)
	}

	// A cursor of one order is refused by another (400 from the API, shown as an error page).
	res := c.get(t, "/console/agents?sort=name")
	next := regexp.MustCompile(`href="([^"]+)" class="next-page"`).FindSubmatch(res.body)
	if next == nil {
		t.Fatal("no next page")
	}
	u, _ := url.Parse(html.UnescapeString(string(next[1])))
	q := u.Query()
	q.Set("sort", "-lastSeen")
	if res := c.get(t, "/console/agents?"+q.Encode()); res.StatusCode != 400 {
		t.Errorf("a name cursor with sort=-lastSeen answered %d, want 400", res.StatusCode)
	}
	if res := c.get(t, "/console/agents?sort=bogus"); res.StatusCode != 400 {
		t.Errorf("sort=bogus answered %d, want 400", res.StatusCode)
	}
}

// cmpThen compares by c, then by the uuids.
func cmpThen(c int, a, b string) int {
	if c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// TestConsoleActivityMatchesItsDefinition: the overview's activity series (computed by sweeping the
// window's sessions in memory) equal, step by step, a plain SQL count of their definition over 3,000
// sessions of 300 agents on two brokers, one of them silent beyond its timeout (its open sessions read
// ended at its last heartbeat), with overlapping sessions of one agent, and refused connects.
func TestConsoleActivityMatchesItsDefinition(t *testing.T) {
	e := newEnv(t)
	e.exec(`INSERT INTO presence_brokers (broker_id, incarnation, timeout_ms) VALUES ('live-1', '00000000-0000-4000-8000-000000000001', 30000)`)
	e.exec(`INSERT INTO presence_brokers (broker_id, incarnation, timeout_ms, heartbeat_at) VALUES ('dead-2', '00000000-0000-4000-8000-000000000002', 30000, now() - interval '3 hours')`)
	e.exec(`INSERT INTO presence_sessions (incarnation, seq, broker_id, principal_kind, principal_id, client_id, protocol, connected_at, disconnected_at, reason)
SELECT CASE WHEN i % 7 = 0 THEN '00000000-0000-4000-8000-000000000002'::uuid ELSE '00000000-0000-4000-8000-000000000001'::uuid END, i,
  CASE WHEN i % 7 = 0 THEN 'dead-2' ELSE 'live-1' END, CASE WHEN i % 50 = 0 THEN 'app' ELSE 'agent' END, 'a' || (i % 300), 'c', 'mqtt5',
  c, CASE WHEN i % 9 = 0 THEN NULL ELSE c + (random() * 7200) * interval '1 second' END, CASE WHEN i % 9 = 0 THEN NULL ELSE 'client' END
FROM (SELECT i, now() - (random() * 100000) * interval '1 second' - interval '4 hours' AS c FROM generate_series(1, 3000) i) x`)
	e.exec(`INSERT INTO audit_events (actor, action, target, outcome, at) SELECT 'app-key:x', 'app_key_refused', 'app-key:x', 'failure', now() - (random() * 90000) * interval '1 second' FROM generate_series(1, 200)`)
	step := 5 * time.Minute
	since := time.Now().Add(-24 * time.Hour).Truncate(step)
	pts, err := e.st.Presence.PresenceActivity(t.Context(), since, step, 288)
	if err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := harness.QueryRow(t, e.dsn, `WITH t AS (
  SELECT at, least(at + $2::interval, now()) AS upto, at + $2::interval AS next
  FROM generate_series($1::timestamptz, $1::timestamptz + 287 * $2::interval, $2::interval) AS at),
 v AS (SELECT s.principal_id, s.connected_at,
   (s.disconnected_at IS NULL AND b.incarnation = s.incarnation AND b.heartbeat_at + b.timeout_ms * interval '1 millisecond' > now()) AS live,
   coalesce(s.disconnected_at, greatest(s.connected_at, b.heartbeat_at)) AS ended_at
  FROM presence_sessions s JOIN presence_brokers b ON b.broker_id = s.broker_id WHERE s.principal_kind = 'agent')
SELECT json_agg(json_build_array(
  (SELECT count(DISTINCT v.principal_id) FROM v WHERE v.connected_at <= t.upto AND (v.live OR v.ended_at > t.upto)),
  (SELECT count(*) FROM v WHERE v.connected_at >= t.at AND v.connected_at < t.next),
  (SELECT count(*) FROM v WHERE NOT v.live AND v.ended_at >= t.at AND v.ended_at < t.next),
  (SELECT count(*) FROM audit_events e WHERE e.action = 'app_key_refused' AND e.at >= t.at AND e.at < t.next)) ORDER BY t.at)::text FROM t`,
		since, "5 minutes").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var want [][4]int64
	if err := json.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatal(err)
	}
	if len(pts) != 288 || len(want) != 288 {
		t.Fatalf("%d points, %d expected", len(pts), len(want))
	}
	var sum [4]int64
	for i, p := range pts {
		got := [4]int64{p.Online, p.Connects, p.Disconnects, p.Refused}
		if got != want[i] {
			t.Errorf("step %d (%s): online, connects, disconnects, refused = %v, want %v", i, p.At.UTC().Format(time.RFC3339), got, want[i])
		}
		for j := range sum {
			sum[j] += want[i][j]
		}
	}
	if sum[0] == 0 || sum[1] == 0 || sum[2] == 0 || sum[3] == 0 {
		t.Fatalf("the data exercise too little: totals %v", sum)
	}
}

// TestConsoleBulkDisableAndRevoke: seven connected agents; ticking five in the list and choosing
// Disable answers a confirmation naming the count that changes nothing, and confirmed closes the
// five's sessions (kicked_disabled) while the others stay online; ticking a sixth and choosing Revoke
// their keys closes its session (kicked_revoked) and revokes its key. The seventh stays online.
func TestConsoleBulkDisableAndRevoke(t *testing.T) {
	e := newEnv(t, withBroker)
	if !e.broker.WaitLog("presence recording", 15*time.Second) {
		t.Fatalf("the broker did not start recording presence:\n%s", e.broker.Log())
	}
	ce := newConsoleEnv(t, e, false)
	adm := e.admin()
	var agents []harness.Agent
	for i := 0; i < 7; i++ {
		a := harness.CreateAgent(t, e.st, "bulk-"+strconv.Itoa(i))
		e.remember(a.Key, a.Password)
		harness.MustConnect(t, e.broker, a)
		agents = append(agents, a)
	}
	for _, a := range agents {
		e.waitPresence(adm.Access, a.UUID, "online", isOnline)
	}
	b := newBrowser(t, ce.url)
	b.signIn("admin@example.com", "correct horse battery")
	b.open("/console/agents", "#bulk-form")
	tick := func(a harness.Agent) chromedp.Action[chromedp.Void] {
		return chromedp.Click(chromedp.CSS(`tr.agent[data-uuid="` + a.UUID + `"] td.sel input`))
	}
	b.do(tick(agents[0]), tick(agents[1]), tick(agents[2]), tick(agents[3]), tick(agents[4]),
		chromedp.Click(chromedp.ID("bulk-disable")), chromedp.WaitVisible(chromedp.ID("confirm-form")))
	if got := b.text("#confirm-target"); !strings.Contains(got, "5 agents") || !strings.Contains(got, "bulk-0") {
		t.Errorf("the bulk confirmation reads %q, want the count and the names", got)
	}
	b.shot("bulk-confirm-1280")
	if n := e.count("agents", "status = 'disabled'"); n != 0 {
		t.Fatalf("the confirmation page disabled %d agents already", n)
	}
	b.do(chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("notice")))
	for i, a := range agents {
		if i < 5 {
			e.waitPresence(adm.Access, a.UUID, "kicked as disabled", endedWith("kicked_disabled"))
		}
	}
	if n := e.count("agents", "status = 'disabled'"); n != 5 {
		t.Errorf("%d agents disabled, want 5", n)
	}
	b.open("/console/agents", "#bulk-form")
	b.do(tick(agents[5]), chromedp.Click(chromedp.ID("bulk-revoke")), chromedp.WaitVisible(chromedp.ID("confirm-form")))
	if got := b.text("#confirm-target"); !strings.Contains(got, "1 agent: bulk-5") {
		t.Errorf("the revoke confirmation reads %q", got)
	}
	b.do(chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("notice")))
	e.waitPresence(adm.Access, agents[5].UUID, "kicked as revoked", endedWith("kicked_revoked"))
	if n := e.count("api_keys", "agent_uuid = $1 AND revoked_at IS NULL", agents[5].UUID); n != 0 {
		t.Errorf("agent 6 keeps %d unrevoked keys", n)
	}
	if p := e.waitPresence(adm.Access, agents[6].UUID, "online", isOnline); !p.Online {
		t.Error("the unselected agent went offline")
	}
	if n := e.count("audit_events", "action = 'agent_disable'"); n != 5 {
		t.Errorf("%d agent_disable audit events, want 5 (one API request per agent)", n)
	}
}

// TestConsoleTimeZone: times show in UTC with the zone by default; an operator who sets Asia/Tokyo sees
// the same instants in JST on every page (the charts' axis too) until setting UTC again. An unknown
// zone is refused with 400, a form without the CSRF token with 403 (the zone unchanged), and the form
// goes back only to a console page.
func TestConsoleTimeZone(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	e.createUser("admin@example.com", "correct horse battery", "admin")
	e.exec(`INSERT INTO agents (name, created_at) VALUES ('tz-agent', '2026-01-02 03:04:05+00')`)
	var id string
	if err := harness.QueryRow(t, e.dsn, `SELECT uuid::text FROM agents WHERE name = 'tz-agent'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	c := ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	page := "/console/agents/" + id
	if res := c.get(t, page); !bytes.Contains(res.body, []byte("2026-01-02 03:04:05 UTC")) {
		t.Fatalf("the agent page does not show its creation in UTC by default")
	}
	if res := c.get(t, "/console/agents"); !bytes.Contains(res.body, []byte("2026-01-02 03:04 UTC")) {
		t.Fatalf("the list does not show the creation in UTC by default")
	}
	// Without the token: refused, nothing set.
	if res := c.post(t, "/console/timezone", url.Values{"tz": {"Asia/Tokyo"}, "back": {page}}, c.base); res.StatusCode != 403 {
		t.Fatalf("a time zone form without the CSRF token answered %d", res.StatusCode)
	}
	if res := c.get(t, page); !bytes.Contains(res.body, []byte("03:04:05 UTC")) {
		t.Fatal("a refused form changed the zone")
	}
	if res := c.post(t, "/console/timezone", url.Values{"csrf": {c.csrf}, "tz": {"Mars/Olympus_Mons"}, "back": {page}}, c.base); res.StatusCode != 400 {
		t.Fatalf("an unknown zone answered %d, want 400", res.StatusCode)
	}
	res := c.post(t, "/console/timezone", url.Values{"csrf": {c.csrf}, "tz": {"Asia/Tokyo"}, "back": {page}}, c.base)
	if res.StatusCode != 200 || res.Path != page {
		t.Fatalf("setting the zone: %d at %s, want back on %s", res.StatusCode, res.Path, page)
	}
	if !bytes.Contains(res.body, []byte("2026-01-02 12:04:05 JST")) || bytes.Contains(res.body, []byte("03:04:05 UTC")) {
		t.Fatal("after choosing Asia/Tokyo the agent page does not show its creation in JST")
	}
	if !bytes.Contains(res.body, []byte(`id="tz" value="Asia/Tokyo"`)) {
		t.Error("the zone form does not show the chosen zone")
	}
	if res := c.get(t, "/console/agents"); !bytes.Contains(res.body, []byte("2026-01-02 12:04 JST")) {
		t.Error("the list does not follow the chosen zone")
	}
	if res := c.get(t, "/console/"); !bytes.Contains(res.body, []byte("last 24 hours (Asia/Tokyo)")) || !bytes.Contains(res.body, []byte("Times are Asia/Tokyo")) {
		t.Error("the overview does not follow the chosen zone")
	}
	// Back to a foreign or odd place: the overview instead.
	if res := c.post(t, "/console/timezone", url.Values{"csrf": {c.csrf}, "tz": {"UTC"}, "back": {"//evil.example/"}}, c.base); res.Path != "/console/" {
		t.Errorf("the zone form went back to %s, want the overview", res.Path)
	}
	if res := c.get(t, page); !bytes.Contains(res.body, []byte("2026-01-02 03:04:05 UTC")) {
		t.Error("setting UTC again does not show UTC")
	}
	ck := c.setCookies[console.ZoneCookie]
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/" {
		t.Errorf("the zone cookie %+v, want HttpOnly, SameSite=Strict, Path=/console/", ck)
	}
}
