package console

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/store"
	apiview "github.com/iotauth/iotauth/backend/view"
)

// agent is an agent as GET /api/v1/agents[/{uuid}] shows it, and agentPresence the presence the latter
// carries (docs/presence.md): the API's own JSON forms.
type (
	agent         = apiview.Agent
	agentPresence = apiview.Presence
)

// liveSession is one session as GET /api/v1/agents/{uuid}/sessions lists it (live and ended ones:
// DisconnectedAt and Reason are nil while it is live).
type liveSession struct {
	Broker         string     `json:"broker"`
	ClientID       string     `json:"clientId"`
	Protocol       string     `json:"protocol"`
	RemoteAddress  string     `json:"remoteAddress"`
	ConnectedAt    time.Time  `json:"connectedAt"`
	DisconnectedAt *time.Time `json:"disconnectedAt"`
	Reason         *string    `json:"reason"`
}

// badge is how the console shows an agent's connection state. Green ("online") needs both a live
// session and an active agent: a disabled or decommissioned agent is never green, even in the second
// or two before its kicked session reads ended; an agent whose keys are all revoked cannot connect,
// so it has no live session to show.
type badge struct {
	Class, Label, Title string
}

func presenceBadge(status string, online bool, neverConnected bool) badge {
	switch {
	case online && status == store.StatusActive:
		return badge{"online", "online", "connected now (live session on a broker)"}
	case online:
		return badge{"closing", "closing", "the agent is " + status + "; its session is being closed"}
	case neverConnected:
		return badge{"never", "never connected", "no session on record"}
	}
	return badge{"offline", "offline", "no live session"}
}

// pastSessionsShown is how many ended sessions the agent page lists.
const pastSessionsShown = 20

// deviceKey is a device API key as GET /api/v1/auth/api-keys lists it (a display prefix, never the key):
// the API's own JSON form.
type deviceKey = apiview.APIKey

const agentsPageSize = 25

// agentSorts are the list's orders (the API's sort values) with their labels.
var agentSorts = [][2]string{{"", "oldest first"}, {"-created", "newest first"}, {"name", "name A–Z"}, {"-name", "name Z–A"},
	{"-lastSeen", "recently seen first"}, {"lastSeen", "least recently seen first"}}

// agentRow is an agent of the list with its connection badge.
type agentRow struct {
	agent
	Badge badge
}

// agentsScreen is the agent list (with its CSV and bulk actions) and the agent page with its actions.
type agentsScreen struct {
	api *apiClient
	db  interface {
		CountAgentList(ctx context.Context, p store.AgentPage) (int64, error)
	}
	ui    *ui
	names *namer
	now   func() time.Time
	ws    *url.URL // the broker's WebSocket URL for Watch live; nil: not offered
}

// agentsPage: the agent list, searched by name or uuid, filtered by status, paged with the API's
// cursor.
func (c *agentsScreen) agentsPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	q := r.URL.Query()
	var list struct {
		Items      []agent `json:"items"`
		NextCursor string  `json:"nextCursor"`
	}
	cursor, from := listCursor(r, "cursor")
	online := q.Get("online")
	args := map[string]string{"limit": strconv.Itoa(agentsPageSize), "cursor": cursor, "q": q.Get("q"), "status": q.Get("status"),
		"online": online, "sort": q.Get("sort")}
	if err := c.api.get(r, s, apiPath("/api/v1/agents", args), &list); err != nil {
		return err
	}
	count := store.AgentPage{Status: q.Get("status"), Search: strings.TrimSpace(q.Get("q"))}
	if online != "" {
		b := online == "true" // the API accepted it: true or false
		count.Online = &b
	}
	total, err := c.db.CountAgentList(r.Context(), count)
	if err != nil {
		return err
	}
	rows := make([]agentRow, len(list.Items))
	for i, a := range list.Items {
		rows[i] = agentRow{agent: a, Badge: presenceBadge(a.Status, a.Online != nil && *a.Online, false)}
	}
	csvQuery := url.Values{}
	for _, k := range []string{"q", "status", "online", "sort"} {
		if val := q.Get(k); val != "" {
			csvQuery.Set(k, val)
		}
	}
	csvLink := Prefix + "agents.csv"
	if e := csvQuery.Encode(); e != "" {
		csvLink += "?" + e
	}
	v.Title, v.Nav, v.Notice = "Agents", "agents", notice(r)
	v.Data = map[string]any{"Agents": rows, "CSV": csvLink, "Q": q.Get("q"), "Status": q.Get("status"), "Online": online,
		"Pager":    newPager(r, "agents", "cursor", from, len(list.Items), list.NextCursor, total),
		"Statuses": []string{"active", "disabled", "decommissioned"}, "Sort": q.Get("sort"), "Sorts": agentSorts}
	c.ui.render(w, r, s, http.StatusOK, "agents", v)
	return nil
}

// agentPage: one agent, its target and reported state, its keys, and what the role may do to it.
func (c *agentsScreen) agentPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	id := r.PathValue("uuid")
	var a agent
	if err := c.api.get(r, s, "/api/v1/agents/"+url.PathEscape(id), &a); err != nil {
		return err
	}
	var keys struct {
		Items []deviceKey `json:"items"`
	}
	if v.Can["keyList"] {
		if err := c.api.get(r, s, apiPath("/api/v1/auth/api-keys", map[string]string{"agentUuid": a.UUID}), &keys); err != nil {
			return err
		}
	}
	var p agentPresence
	if a.Presence != nil {
		p = *a.Presence
	}
	// Live sessions come first in the history: ask for enough rows to hold them and 20 ended ones.
	var hist struct {
		Items []liveSession `json:"items"`
	}
	if err := c.api.get(r, s, apiPath("/api/v1/agents/"+url.PathEscape(a.UUID)+"/sessions",
		map[string]string{"limit": strconv.Itoa(pastSessionsShown + len(p.Sessions))}), &hist); err != nil {
		return err
	}
	past := make([]liveSession, 0, pastSessionsShown)
	for _, h := range hist.Items {
		if h.DisconnectedAt != nil && len(past) < pastSessionsShown {
			past = append(past, h)
		}
	}
	usable := 0
	for _, k := range keys.Items {
		if k.RevokedAt == nil && (k.ExpiresAt == nil || k.ExpiresAt.After(c.now())) {
			usable++
		}
	}
	var events []auditRow
	if v.Can["audit"] {
		var list struct {
			Items []auditEvent `json:"items"`
		}
		if err := c.api.get(r, s, apiPath("/api/v1/audit", map[string]string{"agent": a.UUID, "limit": "10"}), &list); err != nil {
			return err
		}
		events = c.names.auditRows(r, list.Items)
	}
	v.Title, v.Nav, v.Notice = "Agent "+a.Name, "agents", notice(r)
	if v.Live && v.Can["exchange"] {
		watching(w, v, c.ws)
	}
	v.Data = map[string]any{"Agent": a, "Keys": keys.Items, "Events": events, "TargetState": string(a.TargetState),
		"Presence": p, "Past": past, "Badge": presenceBadge(a.Status, p.Online, p.LastConnectedAt == nil && len(past) == 0),
		"NoUsableKey": v.Can["keyList"] && usable == 0}
	c.ui.render(w, r, s, http.StatusOK, "agent", v)
	return nil
}

// setTargetState: PUT /api/v1/agents/{uuid}/target-state with If-Match: the version the form was
// loaded with, so that an edit made meanwhile by anyone is not overwritten (412 shown).
func (c *agentsScreen) setTargetState(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	id := r.PathValue("uuid")
	state := r.PostFormValue("targetState")
	if !json.Valid([]byte(state)) {
		return &problem{Status: http.StatusBadRequest, Detail: "the target state is not valid JSON; fix it and save again"}
	}
	h := http.Header{}
	if ver := r.PostFormValue("version"); ver != "" {
		if _, err := strconv.ParseInt(ver, 10, 64); err != nil {
			return &problem{Status: http.StatusBadRequest, Detail: "the form's version is not a number; reload the page"}
		}
		h.Set("If-Match", `"`+ver+`"`)
	}
	res, err := c.api.call(r, s, http.MethodPut, "/api/v1/agents/"+url.PathEscape(id)+"/target-state",
		map[string]json.RawMessage{"targetState": json.RawMessage(state)}, h)
	if err != nil {
		return err
	}
	if res.Status == http.StatusPreconditionFailed {
		p := res.problem()
		p.Detail = "someone changed the target state since you loaded this page; reload it, then apply your edit again"
		return p
	}
	if !res.ok() {
		return apiErr(res)
	}
	return c.ui.redirect(w, r, s, Prefix+"agents/"+url.PathEscape(id), "saved")
}

// rotatePassword: POST /api/v1/agents/{uuid}/mqtt-password; the new password is shown on this answer
// only.
func (c *agentsScreen) rotatePassword(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["rotate"] {
		return refused(v)
	}
	id := r.PathValue("uuid")
	if !c.ui.confirmed(w, r, s, v, confirmation{Title: "Rotate MQTT password", Target: "agent " + orID(c.names.agentName(r, s, id)), TargetID: id,
		Consequence: "The agent's sessions that used the old password are closed and the old password is refused; the device needs the new one, shown once on the next page.",
		Button:      "Rotate the password", Back: Prefix + "agents/" + url.PathEscape(id)}) {
		return nil
	}
	res, err := c.api.call(r, s, http.MethodPost, "/api/v1/agents/"+url.PathEscape(id)+"/mqtt-password", nil, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	var out struct {
		Password string `json:"password"`
		ClientID string `json:"clientId"`
	}
	if err := res.decode(&out); err != nil {
		return err
	}
	v.Title, v.Nav = "New MQTT password", "agents"
	v.Data = secretShown{What: "MQTT password", Secret: out.Password, Back: Prefix + "agents/" + id,
		Note: "Sessions that used the old password are closed. Client id: " + out.ClientID}
	c.ui.render(w, r, s, http.StatusOK, "secret", v)
	return nil
}

// decommission: DELETE /api/v1/agents/{uuid}.
func (c *agentsScreen) decommission(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["decommission"] {
		return refused(v)
	}
	id := r.PathValue("uuid")
	if !c.ui.confirmed(w, r, s, v, confirmation{Title: "Decommission agent", Target: "agent " + orID(c.names.agentName(r, s, id)), TargetID: id,
		Consequence: "All its keys are revoked and its sessions closed on every broker; it can never connect again. This cannot be undone.",
		Button:      "Decommission the agent", Back: Prefix + "agents/" + url.PathEscape(id)}) {
		return nil
	}
	if err := c.api.do(r, s, http.MethodDelete, "/api/v1/agents/"+url.PathEscape(id), nil); err != nil {
		return err
	}
	return c.ui.redirect(w, r, s, Prefix+"agents/"+url.PathEscape(id), "decommission")
}

// setAgentStatus: PATCH /api/v1/agents/{uuid} with status disabled or active.
func (c *agentsScreen) setAgentStatus(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	id := r.PathValue("uuid")
	status := r.PostFormValue("status")
	if status == "disabled" {
		if !v.Can["agentStatus"] {
			return refused(v)
		}
		if !c.ui.confirmed(w, r, s, v, confirmation{Title: "Disable agent", Target: "agent " + orID(c.names.agentName(r, s, id)), TargetID: id,
			Consequence: "Its sessions are closed on every broker and its MQTT logins and device REST calls are refused until it is enabled again; its keys and password are kept.",
			Button:      "Disable the agent", Fields: map[string]string{"status": status}, Back: Prefix + "agents/" + url.PathEscape(id)}) {
			return nil
		}
	}
	if err := c.api.do(r, s, http.MethodPatch, "/api/v1/agents/"+url.PathEscape(id), map[string]string{"status": status}); err != nil {
		return err
	}
	done := "enabled"
	if status == "disabled" {
		done = "disabled"
	}
	return c.ui.redirect(w, r, s, Prefix+"agents/"+url.PathEscape(id), done)
}

// secretShown is the page that shows a new secret once.
type secretShown struct {
	What     string
	Secret   string
	Password string // an MQTT password that comes with the secret, if any
	Note     string
	Back     string
}
