package api_test

import (
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/iotauth/iotauth/test/harness"
)

// walkList follows a console list's "Next page" links from path to the end. It returns the ids of the
// rows (rowRe's first group) and checks the total the pager
// shows on every page.
func (c *consoleClient) walkList(t *testing.T, path, id string, rowRe *regexp.Regexp, wantTotal int) []string {
	t.Helper()
	totalRe := regexp.MustCompile(`id="` + id + `-total" data-total="(\d+)">([^<]*)<`)
	nextRe := regexp.MustCompile(`href="([^"]+)" class="next-page" id="` + id + `-next"`)
	var ids []string
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatalf("%s: more than 20 pages", path)
		}
		res := c.get(t, path)
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d", path, res.StatusCode)
		}
		m := totalRe.FindSubmatch(res.body)
		if m == nil {
			t.Fatalf("%s: no total for %s", path, id)
		}
		if n, _ := strconv.Atoi(string(m[1])); n != wantTotal {
			t.Fatalf("%s: the %s total says %d, want %d", path, id, n, wantTotal)
		}
		rows := rowRe.FindAllSubmatch(res.body, -1)
		want := fmt.Sprintf("%d–%d of %d", len(ids)+1, len(ids)+len(rows), wantTotal)
		if got := strings.TrimSpace(string(m[2])); got != want {
			t.Fatalf("%s: the %s pager says %q, want %q", path, id, got, want)
		}
		for _, r := range rows {
			ids = append(ids, string(r[1]))
		}
		next := nextRe.FindSubmatch(res.body)
		if next == nil {
			return ids
		}
		u, err := url.Parse(html.UnescapeString(string(next[1])))
		if err != nil {
			t.Fatal(err)
		}
		path = u.RequestURI()
	}
}

// TestConsoleListsPageThroughEverything: every console list (agents, device, application and
// publishable keys, provisioning keys, users, audit) pages through all its rows, each exactly once,
// and shows the list's total on every page. Each list holds more than one page.
func TestConsoleListsPageThroughEverything(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	e.createUser("admin@example.com", "correct horse battery", "admin")
	rnd32 := `decode(md5(random()::text) || md5(random()::text), 'hex')`
	e.exec(`INSERT INTO users (email, password_hash, role) SELECT 'user' || i || '@example.com', 'x', 'viewer' FROM generate_series(1, 55) i`)
	e.exec(`INSERT INTO agents (name) SELECT 'agent-' || i FROM generate_series(1, 60) i`)
	e.exec(`INSERT INTO agents (name, status) SELECT 'gone-' || i, 'decommissioned' FROM generate_series(1, 3) i`)
	e.exec(`INSERT INTO api_keys (agent_uuid, name, digest, prefix) SELECT uuid, 'key-of-' || name, ` + rnd32 + `, 'iotdk_x' FROM agents`)
	e.exec(`INSERT INTO app_keys (name, digest, prefix, mqtt_password_hash) SELECT 'app-' || i, ` + rnd32 + `, 'iotak_x', 'sha256$x' FROM generate_series(1, 30) i`)
	e.exec(`INSERT INTO publishable_keys (name, digest, prefix, origins, topics, providers)
SELECT 'pub-' || i, ` + rnd32 + `, 'iotpk_x', ARRAY['https://app.example'], '[{"access":"read","pattern":"a/#"}]', ARRAY['idp'] FROM generate_series(1, 27) i`)
	e.exec(`INSERT INTO provisioning_keys (name, digest, prefix, expires_at) SELECT 'prov-' || i, ` + rnd32 + `, 'prov_x', now() + interval '1 day' FROM generate_series(1, 31) i`)
	e.exec(`INSERT INTO audit_events (actor, action, target) SELECT 'cli:test', 'test_event', 'agent:' || uuid FROM agents`)

	c := ce.client(t)
	c.signIn(t, "admin@example.com", "correct horse battery")
	for _, tc := range []struct {
		path, id string
		row      string
		table    string // the rows to expect, counted in the database
		where    string
	}{
		{"/console/agents", "agents", `<tr class="agent" data-uuid="([^"]+)"`, "agents", "status <> 'decommissioned'"},
		{"/console/agents?status=decommissioned", "agents", `<tr class="agent" data-uuid="([^"]+)"`, "agents", "status = 'decommissioned'"},
		{"/console/agents?q=AGENT-1", "agents", `<tr class="agent" data-uuid="([^"]+)"`, "agents", "name ILIKE '%agent-1%'"},
		{"/console/keys", "device-keys", `<tr class="key" data-id="([^"]+)"`, "api_keys", ""},
		{"/console/keys", "app-keys", `<tr class="appkey" data-id="([^"]+)"`, "app_keys", ""},
		{"/console/keys", "pub-keys", `<tr class="pubkey" data-id="([^"]+)"`, "publishable_keys", ""},
		{"/console/provisioning", "prov-keys", `<tr class="provkey" data-id="([^"]+)"`, "provisioning_keys", ""},
		{"/console/users", "users", `<tr class="user" data-id="([^"]+)"`, "users", ""},
		{"/console/audit", "audit", `<tr class="event" data-id="([^"]+)"`, "audit_events", ""},
		{"/console/audit?action=test_event", "audit", `<tr class="event" data-id="([^"]+)"`, "audit_events", "action = 'test_event'"},
	} {
		t.Run(tc.path+"#"+tc.id, func(t *testing.T) {
			want := e.count(tc.table, tc.where)
			ids := c.walkList(t, tc.path, tc.id, regexp.MustCompile(tc.row), want)
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					t.Fatalf("row %s shown twice", id)
				}
				seen[id] = true
			}
			if len(ids) != want {
				t.Fatalf("paged through %d rows, want all %d", len(ids), want)
			}
		})
	}
}

// TestConsoleAuditScreen: in a 1,280 px wide headless Chromium the audit screen, filter row included,
// is no wider than the window; actors and targets show the user's email and the agent's name, with the
// raw reference on hover (title); details show their text, not \u003c escapes.
func TestConsoleAuditScreen(t *testing.T) {
	e := newEnv(t)
	ce := newConsoleEnv(t, e, false)
	admin := e.createUser("admin@example.com", "correct horse battery", "admin")
	var agentUUID string
	e.exec(`INSERT INTO agents (name) VALUES ('press <7> & co')`)
	if err := harness.QueryRow(t, e.dsn, `SELECT uuid::text FROM agents WHERE name = 'press <7> & co'`).Scan(&agentUUID); err != nil {
		t.Fatal(err)
	}
	detail, _ := json.Marshal(map[string]any{"note": `a<b & "c">d`, "reason": strings.Repeat("long-detail ", 12)})
	e.exec(`INSERT INTO audit_events (actor, action, target, detail) VALUES ($1, 'agent_disable', $2, $3)`,
		"user:"+admin.ID, "agent:"+agentUUID, string(detail))

	b := newBrowser(t, ce.url)
	b.signIn("admin@example.com", "correct horse battery")
	b.open("/console/audit", `tr.event[data-action="agent_disable"]`)
	b.shot("audit-1280")
	var widths struct {
		Doc    int `json:"doc"`
		Window int `json:"window"`
		Filter int `json:"filter"`
	}
	js, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`JSON.stringify({doc: document.documentElement.scrollWidth, window: window.innerWidth,
		filter: Math.ceil(document.getElementById("audit-search").getBoundingClientRect().right)})`))
	if err != nil || json.Unmarshal([]byte(js), &widths) != nil {
		t.Fatalf("measure the audit screen: %v %s", err, js)
	}
	if widths.Window != 1280 || widths.Doc > widths.Window || widths.Filter > widths.Window {
		t.Fatalf("the audit screen is %d px wide (Filter button's right edge at %d) in a %d px window", widths.Doc, widths.Filter, widths.Window)
	}
	row := `tr.event[data-action="agent_disable"]`
	if got := b.text(row + " td.actor"); got != "admin@example.com" {
		t.Errorf("actor shows %q, want the email", got)
	}
	if got := b.attr(row+" td.actor a", "title"); got != "user:"+admin.ID {
		t.Errorf("actor's title is %q, want the reference", got)
	}
	if got := b.text(row + " td.target"); got != "press <7> & co" {
		t.Errorf("target shows %q, want the agent's name", got)
	}
	if got := b.attr(row+" td.target", "title"); got != "agent:"+agentUUID {
		t.Errorf("target's title is %q, want the reference", got)
	}
	got := b.text(row + " td.detail")
	if !strings.Contains(got, `a<b & \"c\">d`) || strings.Contains(got, `\u003c`) || strings.Contains(got, `\u0026`) {
		t.Errorf("detail shows %q, want the text with < & > as themselves", got)
	}
}
