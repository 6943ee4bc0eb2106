package console

import (
	"net/http"
	"strings"
	"time"
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

// licensePage: status, customer, device count and limit, features, and a warning when the license
// needs attention (warning or grace state, restricted, or expiring within 30 days).
func (c *Console) licensePage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	var l licenseView
	if err := c.get(r, s, "/api/v1/license", &l); err != nil {
		return err
	}
	warn := ""
	switch {
	case l.Restricted:
		warn = "Restricted mode: new agents cannot register and premium features are off. " + l.Message
	case l.Warning:
		warn = l.Message
	case l.ExpiresAt != nil && l.ExpiresAt.Sub(c.now()) < 30*24*time.Hour:
		warn = "The license expires on " + l.ExpiresAt.UTC().Format("2006-01-02") + "; ask the vendor for a new one."
	}
	v.Title, v.Nav = "License", "license"
	v.Data = map[string]any{"License": l, "Warn": warn}
	c.render(w, r, s, http.StatusOK, "license", v)
	return nil
}

// auditEvent is one entry of GET /api/v1/audit.
type auditEvent struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Target     string         `json:"target"`
	Outcome    string         `json:"outcome"`
	RemoteAddr string         `json:"remoteAddr"`
	Detail     map[string]any `json:"detail"`
}

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
func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	q := r.URL.Query()
	filter := map[string]string{}
	for _, f := range auditFilters {
		filter[f] = strings.TrimSpace(q.Get(f))
	}
	args := map[string]string{"limit": "50", "cursor": q.Get("cursor")}
	for k, val := range filter {
		if k == "since" || k == "until" {
			val = auditTime(val)
		}
		args[k] = val
	}
	var list struct {
		Items      []auditEvent `json:"items"`
		NextCursor string       `json:"nextCursor"`
	}
	if err := c.get(r, s, apiPath("/api/v1/audit", args), &list); err != nil {
		return err
	}
	next := ""
	if list.NextCursor != "" {
		filter["cursor"] = list.NextCursor
		next = apiPath(Prefix+"audit", filter)
	}
	v.Title, v.Nav = "Audit", "audit"
	v.Data = map[string]any{"Events": list.Items, "Filter": filter, "Next": next, "Paged": q.Get("cursor") != ""}
	c.render(w, r, s, http.StatusOK, "audit", v)
	return nil
}
