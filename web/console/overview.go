package console

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// summary is GET /api/v1/agents/summary (docs/presence.md).
type summary struct {
	Total          int64            `json:"total"`
	Online         int64            `json:"online"`
	Offline        int64            `json:"offline"`
	NeverConnected int64            `json:"neverConnected"`
	Disabled       int64            `json:"disabled"`
	ByBroker       map[string]int64 `json:"byBroker"`
}

// brokerCount is one broker's online agents, for the overview's table.
type brokerCount struct {
	Broker string
	Online int64
}

// securityActions are the audit actions the overview lists as security events: refused connects and
// exchanges of existing keys and credentials, sessions closed by a re-check, revocations, disabled and
// decommissioned agents, a replayed refresh token, and failed sign-ins (action login, outcome failure;
// the API's filter has no outcome, so the console keeps the failures of the newest logins).
var securityActions = []struct {
	Action      string
	FailureOnly bool
}{
	{"app_key_refused", false}, {"mqtt_token_refused", false}, {"publishable_key_refused", false},
	{"token_exchange_refused", false}, {"session_kick", false},
	{"api_key_revoke", false}, {"app_key_revoke", false}, {"publishable_key_revoke", false},
	{"agent_disable", false}, {"agent_decommission", false}, {"refresh_token_reuse", false},
	{"login", true},
}

// securityEventsShown is how many security events the overview lists.
const securityEventsShown = 10

// overviewScreen is the landing page: the fleet's presence, its activity, the license and the newest
// security events.
type overviewScreen struct {
	api *apiClient
	db  interface {
		PresenceActivity(ctx context.Context, since time.Time, step time.Duration, n int) ([]store.ActivityPoint, error)
	}
	ui    *ui
	names *namer
	now   func() time.Time
}

// overviewPage: the landing page after sign-in. The fleet's presence summary with its counts by
// broker (any role), the license's usage (roles that may read the license) and the newest security
// events (roles that may read the audit trail). Every figure is an API answer.
func (c *overviewScreen) overviewPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	var sum summary
	if err := c.api.get(r, s, "/api/v1/agents/summary", &sum); err != nil {
		return err
	}
	brokers := make([]brokerCount, 0, len(sum.ByBroker))
	for b, n := range sum.ByBroker {
		brokers = append(brokers, brokerCount{b, n})
	}
	sort.Slice(brokers, func(i, j int) bool {
		if brokers[i].Online != brokers[j].Online {
			return brokers[i].Online > brokers[j].Online
		}
		return brokers[i].Broker < brokers[j].Broker
	})
	charts, err := c.activityCharts(r)
	if err != nil {
		return err
	}
	data := map[string]any{"Summary": sum, "Brokers": brokers, "Chart": fleetChart(sum), "Activity": charts}
	if v.Can["license"] {
		var l licenseView
		if err := c.api.get(r, s, "/api/v1/license", &l); err != nil {
			return err
		}
		data["License"] = l
		data["LicenseWarn"] = licenseWarning(l, c.now())
	}
	if v.Can["audit"] {
		events, err := c.securityEvents(r, s)
		if err != nil {
			return err
		}
		data["Events"] = c.names.auditRows(r, events)
	}
	v.Title, v.Nav = "Overview", "overview"
	v.Data = data
	c.ui.render(w, r, s, http.StatusOK, "overview", v)
	return nil
}

// securityEvents reads the newest events of each security action through the API (its audit filter
// takes one action at a time) and keeps the newest securityEventsShown of them all.
func (c *overviewScreen) securityEvents(r *http.Request, s *session) ([]auditEvent, error) {
	var all []auditEvent
	for _, a := range securityActions {
		var list struct {
			Items []auditEvent `json:"items"`
		}
		limit := "10"
		if a.FailureOnly {
			limit = "100"
		}
		if err := c.api.get(r, s, apiPath("/api/v1/audit", map[string]string{"action": a.Action, "limit": limit}), &list); err != nil {
			return nil, err
		}
		for _, e := range list.Items {
			if !a.FailureOnly || e.Outcome == "failure" {
				all = append(all, e)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].At.Equal(all[j].At) {
			return all[i].At.After(all[j].At)
		}
		return all[i].ID > all[j].ID
	})
	if len(all) > securityEventsShown {
		all = all[:securityEventsShown]
	}
	return all, nil
}

// licenseWarning is the license's warning text, "" when it needs no attention: restricted mode, the
// warning or grace state, or expiry within 30 days.
func licenseWarning(l licenseView, now time.Time) string {
	switch {
	case l.Restricted:
		return "Restricted mode: new agents cannot register and premium features are off. " + l.Message
	case l.Warning:
		return l.Message
	case l.ExpiresAt != nil && l.ExpiresAt.Sub(now) < 30*24*time.Hour:
		return "The license expires on " + l.ExpiresAt.UTC().Format("2006-01-02") + "; ask the vendor for a new one."
	}
	return ""
}

// chartBar is one bar of a server-rendered SVG bar chart: its geometry in the SVG's user units, its
// class (the stylesheet colours it: no inline style under the CSP) and its label.
type chartBar struct {
	Class, Label string
	Value        int64
	Y, Width     int
	TextY        int
}

// chart is a horizontal bar chart drawn by the server as SVG.
type chart struct {
	Bars   []chartBar
	Height int
}

// chartWidth is the length of a full bar (the value equal to the fleet's total).
const chartWidth = 520

// fleetChart draws the summary's counts as bars proportional to the total.
func fleetChart(s summary) chart {
	rows := []struct {
		class, label string
		n            int64
	}{{"online", "online", s.Online}, {"offline", "offline", s.Offline}, {"never", "never connected", s.NeverConnected}, {"disabled", "disabled", s.Disabled}}
	var ch chart
	for i, row := range rows {
		w := 0
		if s.Total > 0 {
			w = int(row.n * chartWidth / s.Total)
		}
		if row.n > 0 && w < 2 {
			w = 2 // a count above zero stays visible
		}
		y := 4 + i*30
		ch.Bars = append(ch.Bars, chartBar{Class: row.class, Label: row.label, Value: row.n, Y: y, Width: w, TextY: y + 16})
	}
	ch.Height = 4 + len(rows)*30
	return ch
}

// The activity charts: the last 24 hours in 5-minute steps.
const (
	activityStep  = 5 * time.Minute
	activitySteps = 288
	plotW, plotH  = 860, 150 // the plot area, in the SVG's user units
	plotX, plotY  = 44, 10   // its top-left corner (room for the y labels on the left)
)

// series is one line of a time chart: its polyline's points, its total and last value (shown, and
// carried in data- attributes), and its class (the stylesheet colours it).
type series struct {
	Class, Label string
	Points       string
	Total, Last  int64
	Now          bool // the legend shows the last value (a state), not the total (events)
}

// axisLabel is a label on a chart's axis, at X (time axis) or Y (value axis).
type axisLabel struct {
	X, Y int
	Text string
}

// timeChart is a line chart over the activity window, drawn by the server as SVG.
type timeChart struct {
	ID            string
	Title         string
	Series        []series
	Max           int64
	XLabels       []axisLabel
	YLabels       []axisLabel
	Width, Height int
	PlotX, PlotY  int
	PlotW, PlotH  int
	PlotR, PlotB  int // the plot area's right and bottom edges
	Steps         int
	Start, End    time.Time
}

// activityCharts reads the last 24 hours from the database and draws the online agents and the
// connects, disconnects and refused connects per step.
func (c *overviewScreen) activityCharts(r *http.Request) ([]timeChart, error) {
	now := c.now().UTC()
	end := now.Truncate(activityStep)
	since := end.Add(-(activitySteps - 1) * activityStep)
	pts, err := c.db.PresenceActivity(r.Context(), since, activityStep, activitySteps)
	if err != nil {
		return nil, err
	}
	online := make([]int64, len(pts))
	con, dis, ref := make([]int64, len(pts)), make([]int64, len(pts)), make([]int64, len(pts))
	for i, p := range pts {
		online[i], con[i], dis[i], ref[i] = p.Online, p.Connects, p.Disconnects, p.Refused
	}
	loc := zoneOf(r)
	a := newTimeChart("chart-online", "Online agents, last 24 hours ("+zoneName(loc)+")", since.In(loc), len(pts),
		series{Class: "online", Label: "online"}, online)
	b := newTimeChart("chart-sessions", "Connects, disconnects and refused connects per 5 minutes, last 24 hours ("+zoneName(loc)+")", since.In(loc), len(pts),
		series{Class: "connects", Label: "connects"}, con, series{Class: "disconnects", Label: "disconnects"}, dis,
		series{Class: "refused", Label: "refused connects"}, ref)
	// The online chart's legend is the newest step's count; a sum of states means nothing.
	a.Series[0].Total, a.Series[0].Now = 0, true
	return []timeChart{a, b}, nil
}

// newTimeChart lays out series (given as pairs of a series and its values) on a common scale.
func newTimeChart(id, title string, start time.Time, n int, pairs ...any) timeChart {
	ch := timeChart{ID: id, Title: title, Width: plotX + plotW + 24, Height: plotY + plotH + 28, PlotX: plotX, PlotY: plotY,
		PlotW: plotW, PlotH: plotH, PlotR: plotX + plotW, PlotB: plotY + plotH, Steps: n, Start: start,
		End: start.Add(time.Duration(n) * activityStep)}
	var all [][]int64
	for i := 0; i+1 < len(pairs); i += 2 {
		vals := pairs[i+1].([]int64)
		all = append(all, vals)
		for _, v := range vals {
			ch.Max = max(ch.Max, v)
		}
	}
	scale := max(ch.Max, 1)
	for i := 0; i+1 < len(pairs); i += 2 {
		s := pairs[i].(series)
		vals := all[i/2]
		var b strings.Builder
		for j, v := range vals {
			x := plotX
			if n > 1 {
				x = plotX + j*plotW/(n-1)
			}
			y := plotY + plotH - int(v*plotH/scale)
			fmt.Fprintf(&b, "%d,%d ", x, y)
			s.Total += v
		}
		if len(vals) > 0 {
			s.Last = vals[len(vals)-1]
		}
		s.Points = strings.TrimSpace(b.String())
		ch.Series = append(ch.Series, s)
	}
	for h := 0; h <= 24; h += 6 {
		x := plotX + h*plotW/24
		ch.XLabels = append(ch.XLabels, axisLabel{X: x, Y: plotY + plotH + 18, Text: start.Add(time.Duration(h) * time.Hour).Format("15:04")})
	}
	ch.YLabels = []axisLabel{{X: plotX - 6, Y: plotY + 5, Text: strconv.FormatInt(ch.Max, 10)}, {X: plotX - 6, Y: plotY + plotH, Text: "0"}}
	return ch
}
