package console

import (
	"bytes"
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// csvMaxRows bounds the console's CSV of a list (the whole fleet has its own export,
// GET /api/v1/agents/export, with the data_export feature).
const csvMaxRows = 100000

// agentsCSV: GET /console/agents.csv with the list's filters and order (q, status, online, sort): the
// agents the list shows, every page of them, as CSV. It pages through GET /api/v1/agents like the list
// (so the operator's role and the API's checks apply), 500 at a time, and writes nothing until every
// page has been read (an error is an error page, never half a file).
func (c *agentsScreen) agentsCSV(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	q := r.URL.Query()
	args := map[string]string{"limit": "500", "q": q.Get("q"), "status": q.Get("status"), "online": q.Get("online"), "sort": q.Get("sort")}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write([]string{"uuid", "name", "status", "online", "lastSeenAt", "reportedAt", "createdAt"})
	rows := 0
	for {
		var list struct {
			Items      []agent `json:"items"`
			NextCursor string  `json:"nextCursor"`
		}
		if err := c.api.get(r, s, apiPath("/api/v1/agents", args), &list); err != nil {
			return err
		}
		for _, a := range list.Items {
			online := a.Online != nil && *a.Online
			_ = cw.Write([]string{a.UUID, csvSafe(a.Name), a.Status, strconv.FormatBool(online), csvTime(a.LastSeenAt), csvTime(a.ReportedAt), csvTime(&a.CreatedAt)})
			rows++
		}
		if list.NextCursor == "" {
			break
		}
		if rows >= csvMaxRows {
			return &problem{Status: http.StatusRequestEntityTooLarge,
				Detail: "more than " + strconv.Itoa(csvMaxRows) + " agents match; narrow the filter, or use the fleet export (GET /api/v1/agents/export)"}
		}
		args["cursor"] = list.NextCursor
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	c.ui.saveNewSession(w, r, s)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="agents.csv"`)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// csvTime is a time in RFC 3339, UTC; empty for never.
func csvTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// csvSafe defuses CSV formula injection as the API's own export does: a cell a spreadsheet would
// evaluate (starting with = + - @, a tab or a carriage return) gets a leading single quote.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
