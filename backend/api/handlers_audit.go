package api

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/iotauth/iotauth/backend/service/audit"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

type auditJSON = view.Audit

// adminAPI serves what an admin reads about the deployment: the audit trail and the license.
type adminAPI struct {
	st    *store.Store
	audit *audit.Service
	lic   Licenser
	now   func() time.Time
}

// AuditFilter reads the audit trail's filters from a query (the REST route's and the console's): actor
// (exact), action (exact), agent (a uuid: events whose target or actor is that agent), since and until
// (RFC 3339), checked by the audit service. A bad value is a 400 *Problem naming the field.
func AuditFilter(q url.Values) (store.AuditPage, error) {
	p, err := audit.Filter{Action: q.Get("action"), Actor: q.Get("actor"), Agent: q.Get("agent"), Since: q.Get("since"), Until: q.Get("until")}.Page()
	if err != nil {
		return p, toProblem(err)
	}
	return p, nil
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
	events, more, err := s.audit.List(r.Context(), p)
	if err != nil {
		return err
	}
	items := make([]auditJSON, 0, len(events))
	for _, e := range events {
		items = append(items, view.AuditOf(e))
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(e auditJSON) string { return strconv.FormatInt(e.ID, 10) }))
	return nil
}
