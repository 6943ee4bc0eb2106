package api

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
	"unicode"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/store"
)

type auditJSON struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Target     string         `json:"target"`
	Outcome    string         `json:"outcome"`
	RemoteAddr string         `json:"remoteAddr"`
	Detail     map[string]any `json:"detail"`
}

// adminAPI serves what an admin reads about the deployment: the audit trail and the license.
type adminAPI struct {
	st  *store.Store
	lic Licenser
	now func() time.Time
}

// auditAction is the shape of every audit action name (app_key_create, session_kick, …).
var auditAction = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// AuditFilter reads the audit trail's filters from a query (the REST route's and, with the same names,
// the CLI's): actor (exact), action (exact), agent (a uuid: events whose target or actor is that agent),
// since and until (RFC 3339). A bad value is a 400 naming the field.
func AuditFilter(q url.Values) (store.AuditPage, error) {
	var p store.AuditPage
	if v := q.Get("action"); v != "" {
		if !auditAction.MatchString(v) {
			return p, invalidField("action", "action must be an audit action name such as app_key_create (lower case, digits and _)")
		}
		p.Action = v
	}
	if v := q.Get("actor"); v != "" {
		if len(v) > 300 || hasControl(v) {
			return p, invalidField("actor", "actor must be an audit actor such as user:<id>, cli:<name> or agent:<uuid> (at most 300 bytes)")
		}
		p.Actor = v
	}
	if v := q.Get("agent"); v != "" {
		if !uuid.Valid(v) {
			return p, invalidField("agent", "agent must be an agent's uuid")
		}
		p.Agent = v
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &p.Since}, {"until", &p.Until}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return p, invalidField(f.name, f.name+" must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*f.dst = t
		}
	}
	if !p.Since.IsZero() && !p.Until.IsZero() && !p.Since.Before(p.Until) {
		return p, invalidField("until", "until must be later than since")
	}
	return p, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// listAudit: GET /api/v1/audit[?limit=&cursor=&actor=&action=&agent=&since=&until=] (admin, or an
// application key with audit:read). Newest first; nextCursor pages back in time. Audit events never
// hold secrets.
func (s *adminAPI) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p, err := AuditFilter(q)
	if err != nil {
		return err
	}
	if p.Limit, err = pageLimit(q); err != nil {
		return err
	}
	if v := q.Get("cursor"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 1 {
			return invalidField("cursor", "cursor must be a nextCursor value from an earlier page")
		}
		p.BeforeID = id
	}
	events, more, err := s.st.ListAudit(r.Context(), p)
	if err != nil {
		return err
	}
	items := make([]auditJSON, 0, len(events))
	for _, e := range events {
		if e.Detail == nil {
			e.Detail = map[string]any{}
		}
		items = append(items, auditJSON(e))
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(e auditJSON) string { return strconv.FormatInt(e.ID, 10) }))
	return nil
}
