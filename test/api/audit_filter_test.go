package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAuditFilters: GET /api/v1/audit filters by actor, action, agent (target or
// actor), since and until, keeps limit/cursor/nextCursor, and answers a bad filter value with a 400
// naming the field.
func TestAuditFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	adm := e.admin()
	admID := e.expect(req{Method: "GET", Path: "/api/v1/auth/me", Token: adm.Access}, 200, "").JSON(t)["id"].(string)
	a := e.provision(adm.Access, "gw-a")
	b := e.provision(adm.Access, "gw-b")
	for i := 0; i < 3; i++ {
		e.expect(req{Method: "PUT", Path: "/api/v1/agents/" + a.AgentUUID + "/target-state", Token: adm.Access, Body: `{"targetState":{"n":1}}`}, 200, "")
	}
	e.expect(req{Method: "PUT", Path: "/api/v1/agents/" + b.AgentUUID + "/target-state", Token: adm.Access, Body: `{"targetState":{}}`}, 200, "")
	// An event whose actor is the agent (its own device key on a REST route would do it; SQL is simpler).
	e.exec(`INSERT INTO audit_events (actor, action, target) VALUES ($1, 'state_report', '')`, "agent:"+a.AgentUUID)
	e.exec(`INSERT INTO audit_events (at, actor, action) VALUES ('2020-01-01T00:00:00Z', 'cli:old', 'agent_create')`)

	list := func(q url.Values) []map[string]any {
		t.Helper()
		var all []map[string]any
		for {
			m := e.expect(req{Method: "GET", Path: "/api/v1/audit?" + q.Encode(), Token: adm.Access}, 200, "").JSON(t)
			for _, it := range m["items"].([]any) {
				all = append(all, it.(map[string]any))
			}
			next, ok := m["nextCursor"].(string)
			if !ok {
				return all
			}
			q.Set("cursor", next)
		}
	}
	check := func(name string, q url.Values, want int, ok func(map[string]any) bool) {
		t.Helper()
		q.Set("limit", "2")
		got := list(q)
		if len(got) != want {
			t.Errorf("%s: %d events, want %d: %v", name, len(got), want, got)
		}
		for i, ev := range got {
			if !ok(ev) {
				t.Errorf("%s: event does not match: %v", name, ev)
			}
			if i > 0 && ev["id"].(float64) >= got[i-1]["id"].(float64) {
				t.Errorf("%s: not newest first", name)
			}
		}
	}
	check("action", url.Values{"action": {"target_state_set"}}, 4, func(ev map[string]any) bool { return ev["action"] == "target_state_set" })
	check("agent", url.Values{"agent": {a.AgentUUID}}, 5, func(ev map[string]any) bool {
		return ev["target"] == "agent:"+a.AgentUUID || ev["actor"] == "agent:"+a.AgentUUID
	}) // provision + 3 target states + its own report
	check("agent and action", url.Values{"agent": {a.AgentUUID}, "action": {"target_state_set"}}, 3, func(ev map[string]any) bool { return ev["target"] == "agent:"+a.AgentUUID })
	check("actor", url.Values{"actor": {"user:" + admID}, "action": {"target_state_set"}}, 4, func(ev map[string]any) bool { return ev["actor"] == "user:"+admID })
	check("until", url.Values{"until": {"2021-01-01T00:00:00Z"}}, 1, func(ev map[string]any) bool { return ev["actor"] == "cli:old" })
	check("since", url.Values{"since": {"2021-01-01T00:00:00Z"}, "actor": {"cli:old"}}, 0, nil)
	check("since and until", url.Values{"since": {"2019-12-31T23:00:00+01:00"}, "until": {"2020-01-01T00:00:01Z"}}, 1, func(ev map[string]any) bool { return ev["actor"] == "cli:old" })

	for field, bad := range map[string][]string{
		"action": {"Target State", "x;drop", strings.Repeat("a", 101)},
		"agent":  {"gw-a", "00000000-0000-4000-8000"},
		"actor":  {"user:\n1", strings.Repeat("a", 301)},
		"since":  {"yesterday", "2020-01-01"},
		"until":  {"2020-13-01T00:00:00Z"},
		"cursor": {"x", "-1"},
		"limit":  {"0", "501"},
	} {
		for _, v := range bad {
			res := e.expect(req{Method: "GET", Path: "/api/v1/audit?" + url.Values{field: {v}}.Encode(), Token: adm.Access}, 400, "validation_failed")
			if p := res.Problem(t); p.Field != field {
				t.Errorf("%s=%q: problem names %q", field, v, p.Field)
			}
		}
	}
	res := e.expect(req{Method: "GET", Path: "/api/v1/audit?since=2021-01-01T00:00:00Z&until=2020-01-01T00:00:00Z", Token: adm.Access}, 400, "validation_failed")
	if p := res.Problem(t); p.Field != "until" {
		t.Errorf("until before since: field %q", p.Field)
	}
	e.expect(req{Method: "GET", Path: "/api/v1/audit?action=login", Token: e.userWithRole("operator").Access}, 403, "forbidden")
}

// TestAuditTailCLI: `iotauth audit tail` prints the newest events oldest first with filters, and
// --follow prints events written after it started (by another CLI process) until interrupted, then
// exits 0.
func TestAuditTailCLI(t *testing.T) {
	t.Parallel()
	dsn := pg.NewDatabase(t)
	var first map[string]any
	for _, name := range []string{"a", "b", "c"} {
		if err := json.Unmarshal([]byte(mustCLI(t, dsn, "agent", "create", "-name", name)), &first); err != nil {
			t.Fatal(err)
		}
	}
	mustCLI(t, dsn, "agent", "disable", first["agentUuid"].(string))
	got := jsonLines(t, mustCLI(t, dsn, "audit", "tail", "--json", "-n", "2", "--action", "agent_create"))
	if len(got) != 2 || got[0]["id"].(float64) >= got[1]["id"].(float64) || got[1]["target"] != "agent:"+first["agentUuid"].(string) {
		t.Fatalf("audit tail -n 2 --action agent_create: %v", got)
	}
	if got := jsonLines(t, mustCLI(t, dsn, "audit", "tail", "--json", "--agent", first["agentUuid"].(string))); len(got) != 2 || got[1]["action"] != "agent_disable" {
		t.Fatalf("audit tail --agent: %v", got)
	}
	if text := mustCLI(t, dsn, "audit", "tail"); strings.Count(text, "\n") != 4 || !strings.Contains(text, "agent_disable") || !strings.Contains(text, "cli:") {
		t.Fatalf("audit tail text:\n%s", text)
	}
	for _, bad := range [][]string{{"--agent", "x"}, {"--action", "Bad"}, {"--since", "today"}, {"-interval", "1ns"}} {
		if _, errOut, code := cli(t, dsn, nil, append([]string{"audit", "tail"}, bad...)...); code != 2 || !strings.Contains(errOut, strings.TrimLeft(bad[0], "-")) {
			t.Errorf("audit tail %v: exit %d, want 2 naming the flag:\n%s", bad, code, errOut)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "audit", "tail", "--follow", "--json", "-n", "0", "-interval", "100ms", "--action", "agent_create")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan map[string]any, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
	}()
	// The follower may not have read its starting point yet: keep creating until one is seen, then check
	// that it sees every later one in order.
	var created []string
	deadline := time.After(30 * time.Second)
	var seen []map[string]any
	for len(seen) == 0 || len(seen) < len(created)-firstSeenIndex(seen, created) {
		if len(created) < 50 && (len(seen) == 0 || len(created) < 3) {
			var a map[string]any
			if err := json.Unmarshal([]byte(mustCLI(t, dsn, "agent", "create", "-name", "new")), &a); err != nil {
				t.Fatal(err)
			}
			created = append(created, "agent:"+a["agentUuid"].(string))
		}
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("audit tail --follow ended early")
			}
			seen = append(seen, m)
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("audit tail --follow printed %d of %d new events in 30 s", len(seen), len(created))
		}
	}
	start := firstSeenIndex(seen, created)
	for i, m := range seen {
		if m["action"] != "agent_create" || m["target"] != created[start+i] {
			t.Fatalf("follow printed %v at %d, want %s", m, i, created[start+i])
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("audit tail --follow after SIGINT: %v", err)
	}
}

// firstSeenIndex is the index in created of the first event seen (0 when none).
func firstSeenIndex(seen []map[string]any, created []string) int {
	if len(seen) == 0 {
		return 0
	}
	for i, c := range created {
		if seen[0]["target"] == c {
			return i
		}
	}
	return 0
}
