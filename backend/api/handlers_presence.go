package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

// Presence (docs/presence.md): who is online, read from the sessions the brokers record.

type (
	presenceJSON    = view.Presence
	liveSessionJSON = view.LiveSession
)

// sessionJSON is a session in GET /api/v1/agents/{uuid}/sessions: disconnectedAt and reason are null
// while it is live.
type sessionJSON struct {
	liveSessionJSON
	DisconnectedAt *time.Time `json:"disconnectedAt"`
	Reason         *string    `json:"reason"`
	cursor         string
}

func liveSessionView(p store.PresenceSession) liveSessionJSON {
	return liveSessionJSON{Broker: p.Broker, ClientID: p.ClientID, Protocol: p.Protocol, RemoteAddress: p.Remote, ConnectedAt: p.ConnectedAt.UTC()}
}

func presenceView(p store.AgentPresence) *presenceJSON {
	v := &presenceJSON{Online: len(p.Sessions) > 0, Sessions: make([]liveSessionJSON, 0, len(p.Sessions)),
		LastConnectedAt: p.LastConnectedAt, LastDisconnectedAt: p.LastDisconnectedAt, LastDisconnectReason: p.LastDisconnectReason}
	for _, s := range p.Sessions {
		v.Sessions = append(v.Sessions, liveSessionView(s))
	}
	return v
}

// agentPresence is the presence GET /api/v1/agents/{uuid} adds to the agent.
func (s *agentsAPI) agentPresence(r *http.Request, agentUUID string) (*presenceJSON, error) {
	p, err := s.st.Presence.GetAgentPresence(r.Context(), agentUUID)
	if err != nil {
		return nil, err
	}
	return presenceView(p), nil
}

// onlineFilter reads ?online=true|false (nil when absent).
func onlineFilter(q url.Values) (*bool, error) {
	v := q.Get("online")
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil || (v != "true" && v != "false") {
		return nil, invalidField("online", "online must be true or false")
	}
	return &b, nil
}

// markOnline sets each listed agent's online flag.
func (s *agentsAPI) markOnline(r *http.Request, items []agentJSON) error {
	ids := make([]string, len(items))
	for i := range items {
		ids[i] = items[i].UUID
	}
	online, err := s.st.Presence.OnlineAgents(r.Context(), ids)
	if err != nil {
		return err
	}
	for i := range items {
		v := online[items[i].UUID]
		items[i].Online = &v
	}
	return nil
}

type presenceSummaryJSON struct {
	Total          int64            `json:"total"`
	Online         int64            `json:"online"`
	Offline        int64            `json:"offline"`
	NeverConnected int64            `json:"neverConnected"`
	Disabled       int64            `json:"disabled"`
	ByBroker       map[string]int64 `json:"byBroker"`
}

// agentsSummary: GET /api/v1/agents/summary (rights agents:read): agents that are not decommissioned by
// presence (docs/presence.md).
func (s *agentsAPI) agentsSummary(w http.ResponseWriter, r *http.Request) error {
	sum, err := s.st.Presence.GetPresenceSummary(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, presenceSummaryJSON{Total: sum.Total, Online: sum.Online, Offline: sum.Offline,
		NeverConnected: sum.NeverConnected, Disabled: sum.Disabled, ByBroker: sum.ByBroker})
	return nil
}

// agentSessions: GET /api/v1/agents/{uuid}/sessions?limit=&cursor= (rights agents:read): the agent's
// sessions, live ones first, then newest first by connect; nextCursor while more follow.
func (s *agentsAPI) agentSessions(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("uuid")
	if _, err := s.st.Agents.GetAgent(r.Context(), id); err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	p := store.PresenceSessionPage{Limit: limit}
	if c := q.Get("cursor"); c != "" {
		after, ok := parseSessionCursor(c)
		if !ok {
			return invalidField("cursor", "cursor must be a nextCursor value from an earlier page")
		}
		p.After = &after
	}
	rows, more, err := s.st.Presence.ListAgentSessions(r.Context(), id, p)
	if err != nil {
		return err
	}
	items := make([]sessionJSON, 0, len(rows))
	for _, row := range rows {
		items = append(items, sessionJSON{liveSessionJSON: liveSessionView(row), DisconnectedAt: utcPtr(row.DisconnectedAt),
			Reason: row.Reason, cursor: formatSessionCursor(row)})
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(last sessionJSON) string { return last.cursor }))
	return nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// A sessions cursor is "<1 live|0 ended>.<connect, unix microseconds>.<incarnation>.<sequence>".
func formatSessionCursor(p store.PresenceSession) string {
	live := 0
	if p.Live {
		live = 1
	}
	return fmt.Sprintf("%d.%d.%s.%d", live, p.ConnectedAt.UnixMicro(), p.Incarnation, p.Seq)
}

func parseSessionCursor(c string) (store.PresenceSession, bool) {
	f := strings.Split(c, ".")
	if len(f) != 4 || (f[0] != "0" && f[0] != "1") || !uuid.Valid(f[2]) {
		return store.PresenceSession{}, false
	}
	us, err1 := strconv.ParseInt(f[1], 10, 64)
	seq, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || us <= 0 || seq <= 0 {
		return store.PresenceSession{}, false
	}
	return store.PresenceSession{Live: f[0] == "1", ConnectedAt: time.UnixMicro(us), Incarnation: f[2], Seq: seq}, true
}
