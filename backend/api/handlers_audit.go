package api

import (
	"net/http"
	"strconv"
	"time"

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

// listAudit: GET /api/v1/audit[?limit=&cursor=&action=] (admin, or an application key with audit:read).
// Newest first; nextCursor pages back in time. Audit events never hold secrets.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p := store.AuditPage{Limit: defaultPageSize, Action: q.Get("action")}
	var err error
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
	if len(p.Action) > 100 {
		return invalidField("action", "action must be an audit action name such as app_key_create")
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
	out := map[string]any{"items": items}
	if more && len(events) > 0 {
		out["nextCursor"] = strconv.FormatInt(events[len(events)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
