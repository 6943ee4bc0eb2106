package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/backend/store"
	apiview "github.com/iotauth/iotauth/backend/view"
)

// licenseView is GET /api/v1/license as the console shows it.
type licenseView struct {
	Status      string     `json:"status"`
	Restricted  bool       `json:"restricted"`
	Reason      string     `json:"reason"`
	Warning     bool       `json:"warning"`
	Message     string     `json:"message"`
	Customer    string     `json:"customer"`
	MaxDevices  *int       `json:"maxDevices"`
	Features    []string   `json:"features"`
	ExpiresAt   *time.Time `json:"expiresAt"`
	GraceEndsAt *time.Time `json:"graceEndsAt"`
	DeviceCount int        `json:"deviceCount"`
}

// adminScreen shows the license, the audit trail and the operators.
type adminScreen struct {
	api *apiClient
	db  interface {
		CountUsers(ctx context.Context) (int64, error)
		CountAudit(ctx context.Context, p store.AuditPage) (int64, error)
	}
	ui    *ui
	names *namer
	now   func() time.Time
}

// licensePage: status, customer, device count and limit, features, and a warning when the license
// needs attention (warning or grace state, restricted, or expiring within 30 days).
func (c *adminScreen) licensePage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	var l licenseView
	if err := c.api.get(r, s, "/api/v1/license", &l); err != nil {
		return err
	}
	warn := licenseWarning(l, c.now())
	v.Title, v.Nav = "License", "license"
	v.Data = map[string]any{"License": l, "Warn": warn}
	c.ui.render(w, r, s, http.StatusOK, "license", v)
	return nil
}

// auditEvent is one entry of GET /api/v1/audit: the API's own JSON form.
type auditEvent = apiview.Audit

// auditFilters are the query parameters the audit screen passes on to GET /api/v1/audit: actor and
// action (exact), agent (a uuid: events whose target or actor is that agent), since and until (the
// form's datetime-local values are UTC; RFC 3339 is passed on as is).
var auditFilters = []string{"actor", "action", "agent", "since", "until"}

// auditTime turns a datetime-local value (2026-01-02T15:04, read as UTC) into RFC 3339; anything else
// is passed on for the API to judge.
func auditTime(v string) string {
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return v
}

// auditPage: the audit trail, newest first, filtered, paged with the API's cursor.
func (c *adminScreen) auditPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	q := r.URL.Query()
	filter := map[string]string{}
	for _, f := range auditFilters {
		filter[f] = strings.TrimSpace(q.Get(f))
	}
	cursor, from := listCursor(r, "cursor")
	args := map[string]string{"limit": "50", "cursor": cursor}
	apiQuery := url.Values{}
	for k, val := range filter {
		if k == "since" || k == "until" {
			val = auditTime(val)
		}
		args[k] = val
		if val != "" {
			apiQuery.Set(k, val)
		}
	}
	var list struct {
		Items      []auditEvent `json:"items"`
		NextCursor string       `json:"nextCursor"`
	}
	if err := c.api.get(r, s, apiPath("/api/v1/audit", args), &list); err != nil {
		return err
	}
	// The API accepted these filters, so they parse.
	ap, err := api.AuditFilter(apiQuery)
	if err != nil {
		return err
	}
	total, err := c.db.CountAudit(r.Context(), ap)
	if err != nil {
		return err
	}
	v.Title, v.Nav = "Audit", "audit"
	v.Data = map[string]any{"Events": c.names.auditRows(r, list.Items), "Filter": filter,
		"Pager": newPager(r, "audit", "cursor", from, len(list.Items), list.NextCursor, total)}
	c.ui.render(w, r, s, http.StatusOK, "audit", v)
	return nil
}

// auditRow is an audit event as the audit screen shows it: actor and target by name (the email of a
// user, the name of an agent or key) with the raw reference kept for the hover text and the filter
// link, and the detail as plain JSON text.
type auditRow struct {
	auditEvent
	ActorName, TargetName string
	DetailText            string
}

// auditRows names the actors and targets of a page of events. A reference the database cannot name
// (a deleted user, a CLI actor, a refresh family) is shortened to its kind and the id's first 8
// characters; the full reference stays in the title attribute.
func (c *namer) auditRows(r *http.Request, events []auditEvent) []auditRow {
	refs := make([]string, 0, 2*len(events))
	for _, e := range events {
		refs = append(refs, e.Actor, e.Target)
	}
	names, err := c.db.RefNames(r.Context(), refs)
	if err != nil {
		c.log.Warn("console could not name audit references; showing ids", "error", redact.String(err.Error()))
		names = nil
	}
	rows := make([]auditRow, len(events))
	for i, e := range events {
		rows[i] = auditRow{auditEvent: e, ActorName: refName(names, e.Actor), TargetName: refName(names, e.Target), DetailText: detailText(e.Detail)}
	}
	return rows
}

// refName is the label of an audit reference: its name when known, else "<kind> <first 8>…" for a
// "<kind>:<long id>", else the reference itself.
func refName(names map[string]string, ref string) string {
	if n, ok := names[ref]; ok && n != "" {
		return n
	}
	kind, id, ok := strings.Cut(ref, ":")
	if ok && len(id) > 12 {
		return strings.ReplaceAll(kind, "-", " ") + " " + id[:8] + "…"
	}
	return ref
}

// detailText is an event's detail as compact JSON without HTML escaping (the template escapes it once,
// so "<" shows as "<", not as \u003c).
func detailText(m map[string]any) string {
	if len(m) == 0 {
		return ""
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// user is an operator as GET /api/v1/users lists it: the API's own JSON form.
type user = apiview.User

// usersPage: the operators, oldest first, paged with their total. Users are managed with the CLI or
// the REST API; the console lists them.
func (c *adminScreen) usersPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["userList"] {
		return &problem{Status: http.StatusForbidden, Detail: "your role (" + v.Me.Role + ") may not see users"}
	}
	users, p, err := listOf[user](c.api, r, s, "/api/v1/users", "users", "cursor", 50, func() (int64, error) { return c.db.CountUsers(r.Context()) })
	if err != nil {
		return err
	}
	v.Title, v.Nav = "Users", "users"
	v.Data = map[string]any{"Users": users, "Pager": p}
	c.ui.render(w, r, s, http.StatusOK, "users", v)
	return nil
}
