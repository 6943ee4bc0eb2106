package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// walkList reads every page of a list route with limit=2 and returns the ids seen, in order; it fails
// on a duplicate id (a cursor that repeats a row) or a runaway walk.
func walkList(t *testing.T, e *env, tok, path, idField string) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("%s: more than 100 pages of 2", path)
		}
		q := url.Values{"limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		m := e.expect(req{Method: "GET", Path: path + sep + q.Encode(), Token: tok}, 200, "").JSON(t)
		items := m["items"].([]any)
		if len(items) > 2 {
			t.Fatalf("%s: %d items on a page of limit 2", path, len(items))
		}
		for _, it := range items {
			id := fmt.Sprint(it.(map[string]any)[idField])
			if seen[id] {
				t.Fatalf("%s: %s listed twice", path, id)
			}
			seen[id] = true
			ids = append(ids, id)
		}
		next, ok := m["nextCursor"].(string)
		if !ok {
			return ids
		}
		if len(items) != 2 {
			t.Fatalf("%s: nextCursor on a short page", path)
		}
		cursor = next
	}
}

// TestPaginationOnEveryListRoute (docs/cli.md): every REST list route takes limit and cursor and
// answers nextCursor while more follow; walking the pages visits every row once; a bad limit or cursor
// is a 400 naming the field.
func TestPaginationOnEveryListRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	adm := e.admin()
	for i := range 4 {
		e.expect(req{Method: "POST", Path: "/api/v1/users", Token: adm.Access, Body: map[string]string{"email": fmt.Sprintf("u%d@example.com", i), "password": "a long passphrase", "role": "viewer"}}, 201, "")
	}
	e.remember("a long passphrase")
	a := e.provision(adm.Access, "gw")
	for i := range 4 {
		e.expect(req{Method: "POST", Path: "/api/v1/auth/api-keys", Token: adm.Access, Body: map[string]string{"name": fmt.Sprint("k", i), "agentUuid": a.AgentUUID}}, 201, "")
		e.provisioningKey(adm.Access)
		e.expect(req{Method: "POST", Path: "/api/v1/auth/app-keys", Token: adm.Access, Body: map[string]any{"name": fmt.Sprint("app", i), "rights": []string{"agents:read"}}}, 201, "")
		e.provision(adm.Access, fmt.Sprint("gw", i))
	}
	for _, tc := range []struct {
		path, idField, table string
	}{
		{"/api/v1/users", "id", "users"},
		{"/api/v1/auth/api-keys", "id", "api_keys"},
		{"/api/v1/auth/api-keys?agentUuid=" + a.AgentUUID, "id", "api_keys WHERE agent_uuid = '" + a.AgentUUID + "'"},
		{"/api/v1/provision/keys", "id", "provisioning_keys"},
		{"/api/v1/auth/app-keys", "id", "app_keys"},
		{"/api/v1/agents", "uuid", "agents"},
		{"/api/v1/audit", "id", "audit_events"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			ids := walkList(t, e, adm.Access, tc.path, tc.idField)
			if want := e.count(tc.table, ""); len(ids) != want || want < 3 {
				t.Fatalf("walked %d items, the table holds %d (want ≥ 3, two pages or more)", len(ids), want)
			}
			for _, bad := range []string{"limit=0", "limit=501", "limit=x", "cursor=junk", "cursor=1-notauuid"} {
				if tc.table == "audit_events" && bad == "cursor=1-notauuid" {
					continue
				}
				sep := "?"
				if strings.Contains(tc.path, "?") {
					sep = "&"
				}
				res := e.expect(req{Method: "GET", Path: tc.path + sep + bad, Token: adm.Access}, 400, "validation_failed")
				if want, _, _ := strings.Cut(bad, "="); res.Problem(t).Field != want {
					t.Errorf("%s: the problem does not name the field %q: %s", bad, want, res.Body)
				}
			}
		})
	}
}
