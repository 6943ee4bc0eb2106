package api

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// exportColumns is the header row of the agents CSV export, in column order.
var exportColumns = []string{"uuid", "name", "status", "createdAt", "updatedAt", "reportedAt", "targetVersion"}

// exportAgents: GET /api/v1/agents/export?format=csv (any role; premium feature data_export, checked by
// RequireFeature before this runs). Every agent, decommissioned ones included, is streamed as CSV from
// the database cursor to the client one row at a time, never collected in memory. It carries no secret
// and no state documents: the same fields GET /api/v1/agents shows, which every role may read.
//
// Until the first buffered block reaches the client a failure is an ordinary problem answer; after that
// the status is already sent, so a failure aborts the connection, and the client sees a truncated
// transfer instead of a CSV that merely looks complete.
func (s *agentsAPI) exportAgents(w http.ResponseWriter, r *http.Request) error {
	switch f := r.URL.Query().Get("format"); f {
	case "", "csv":
	default:
		return invalidField("format", "format must be csv (the only export format)")
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="agents.csv"`)
	cw := csv.NewWriter(w)
	rows := 0
	err := cw.Write(exportColumns)
	if err == nil {
		err = s.st.Agents.EachAgent(r.Context(), func(a store.AgentRow) error {
			rows++
			return cw.Write(exportRecord(a))
		})
	}
	if err == nil {
		cw.Flush()
		err = cw.Error()
	}
	if err != nil {
		if sw, ok := w.(*statusWriter); ok && sw.wroteHeader {
			s.log.Error("agent export failed after streaming began; aborting the response", "requestId", w.Header().Get("X-Request-Id"), "rows", rows, "error", err.Error())
			panic(http.ErrAbortHandler)
		}
		w.Header().Del("Content-Disposition")
		return err
	}
	s.audit(r.Context(), auditOf(r, "agents_export", map[string]any{"format": "csv", "rows": rows}))
	return nil
}

// exportRecord is one agent's CSV row. Times are RFC 3339 in UTC; reportedAt is empty until the agent
// reports.
func exportRecord(a store.AgentRow) []string {
	reported := ""
	if a.ReportedAt != nil {
		reported = a.ReportedAt.UTC().Format(time.RFC3339Nano)
	}
	rec := []string{a.UUID, a.Name, a.Status, a.CreatedAt.UTC().Format(time.RFC3339Nano), a.UpdatedAt.UTC().Format(time.RFC3339Nano),
		reported, strconv.FormatInt(a.TargetVersion, 10)}
	for i := range rec {
		rec[i] = csvSafe(rec[i])
	}
	return rec
}

// csvSafe defuses CSV formula injection (OWASP): a spreadsheet evaluates a cell that starts with = + - @
// (or a tab or carriage return, which some strip first), so such a cell gets a leading single quote and
// is shown as text. Quoting of commas, quotes and newlines is encoding/csv's job.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
