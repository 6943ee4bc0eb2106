package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/service/agents"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

// agentsAPI serves agents, their registration, state and presence (backend/service/agents); presence
// and the export are read from the store directly.
type agentsAPI struct {
	svc      *agents.Service
	st       *store.Store
	log      *slog.Logger
	metrics  *metrics
	mqttHost string
	mqttPort int
	audit    func(context.Context, store.AuditEvent)
}

type agentJSON = view.Agent

var agentView = view.AgentOf

// Pagination bounds for GET /api/v1/agents.
const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// pageLimit reads a list route's limit (defaultPageSize when absent).
func pageLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPageSize {
		return 0, invalidField("limit", fmt.Sprintf("limit must be 1 to %d", maxPageSize))
	}
	return n, nil
}

// pageCursor reads a keyset cursor (creation time and id of the last row seen); zero values when absent.
func pageCursor(q url.Values) (time.Time, string, error) {
	v := q.Get("cursor")
	if v == "" {
		return time.Time{}, "", nil
	}
	t, id, ok := parseCursor(v)
	if !ok {
		return time.Time{}, "", invalidField("cursor", "cursor must be a nextCursor value from an earlier page")
	}
	return t, id, nil
}

// listAgents: GET /api/v1/agents?limit=&cursor=&status=&q= (any role). Keyset pagination: nextCursor is
// present while more agents follow. Decommissioned agents are listed only with status=decommissioned.
// q keeps the agent whose uuid it is, or those whose name contains it (case insensitive).
//
// sort orders the list: created (the default), name or lastSeen, ascending or with a leading "-"
// descending (docs/console.md); a cursor belongs to the order it was made in.
func (s *agentsAPI) listAgents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	sort := q.Get("sort")
	if sort == store.SortCreated {
		sort = ""
	}
	if !slices.Contains(store.AgentSorts, sort) {
		return invalidField("sort", "sort must be created, name or lastSeen, with a leading - for the reverse order")
	}
	var p store.AgentPage
	var err error
	if sort == "" {
		kp, err := keysetPage(q)
		if err != nil {
			return err
		}
		p = store.AgentPage{Limit: kp.Limit, AfterTime: kp.AfterTime, AfterUUID: kp.AfterID}
	} else {
		if p.Limit, err = pageLimit(q); err != nil {
			return err
		}
		if c := q.Get("cursor"); c != "" {
			if !parseSortedCursor(c, sort, &p) {
				return invalidField("cursor", "cursor must be a nextCursor value from an earlier page of the same sort")
			}
		}
	}
	p.Sort = sort
	p.Search, p.Status = strings.TrimSpace(q.Get("q")), q.Get("status")
	if p.Online, err = onlineFilter(q); err != nil {
		return err
	}
	agents, more, err := s.svc.List(r.Context(), p)
	if err != nil {
		return err
	}
	items := make([]agentJSON, 0, len(agents))
	for _, a := range agents {
		items = append(items, agentView(a, false))
	}
	if err := s.markOnline(r, items); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(a agentJSON) string { return sortedCursor(sort, a) }))
	return nil
}

// sortedCursor is the nextCursor of a page of agents in that order whose last row is a. The default
// order keeps the keyset cursor of every list; the others are "<sort>.<key>.<uuid>", the key a name in
// unpadded base64url or a time in unix microseconds (0 for an agent never seen).
func sortedCursor(sort string, a agentJSON) string {
	switch strings.TrimPrefix(sort, "-") {
	case "":
		return FormatCursor(a.CreatedAt, a.UUID)
	case store.SortName:
		return sort + "." + base64.RawURLEncoding.EncodeToString([]byte(a.Name)) + "." + a.UUID
	case store.SortLastSeen:
		us := int64(0)
		if a.LastSeenAt != nil {
			us = a.LastSeenAt.UnixMicro()
		}
		return sort + "." + strconv.FormatInt(us, 10) + "." + a.UUID
	}
	return sort + "." + strconv.FormatInt(a.CreatedAt.UnixMicro(), 10) + "." + a.UUID
}

// parseSortedCursor reads a sortedCursor made in order sort into p.
func parseSortedCursor(c, sort string, p *store.AgentPage) bool {
	f := strings.Split(c, ".")
	if len(f) != 3 || f[0] != sort || !uuid.Valid(f[2]) {
		return false
	}
	p.AfterUUID = f[2]
	if strings.TrimPrefix(sort, "-") == store.SortName {
		name, err := base64.RawURLEncoding.DecodeString(f[1])
		if err != nil {
			return false
		}
		p.AfterName = string(name)
		return true
	}
	us, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || us < 0 {
		return false
	}
	if us > 0 {
		p.AfterTime = time.UnixMicro(us)
	}
	return true
}

// parseCursor reads "<unix microseconds>-<uuid>".
func parseCursor(s string) (time.Time, string, bool) {
	us, id, ok := strings.Cut(s, "-")
	if !ok || !uuid.Valid(id) {
		return time.Time{}, "", false
	}
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, "", false
	}
	return time.UnixMicro(n), id, true
}

// getAgent: GET /api/v1/agents/{uuid} (any role).
func (s *agentsAPI) getAgent(w http.ResponseWriter, r *http.Request) error {
	a, err := s.svc.Get(r.Context(), r.PathValue("uuid"))
	if err != nil {
		return err
	}
	v := agentView(a, true)
	if v.Presence, err = s.agentPresence(r, a.UUID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

type targetStateRequest struct {
	TargetState json.RawMessage `json:"targetState"`
}

type targetStateJSON struct {
	AgentUUID     string          `json:"agentUuid"`
	TargetState   json.RawMessage `json:"targetState"`
	TargetVersion int64           `json:"targetVersion"`
}

// etagOf is the entity tag of a target state version.
func etagOf(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// putTargetState: PUT /api/v1/agents/{uuid}/target-state (admin, operator). Bumps targetVersion. An
// If-Match header with the current ETag makes the update conditional (412 when it changed).
func (s *agentsAPI) putTargetState(w http.ResponseWriter, r *http.Request) error {
	var req targetStateRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	var ifVersion int64
	if im := strings.TrimSpace(r.Header.Get("If-Match")); im != "" {
		v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || v < 1 {
			return problem(http.StatusPreconditionFailed, CodePreconditionFailed, "If-Match must be an ETag from GET, e.g. \"3\"")
		}
		ifVersion = v
	}
	a, err := s.svc.SetTargetState(r.Context(), actorOf(r), r.PathValue("uuid"), req.TargetState, ifVersion)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etagOf(a.TargetVersion))
	writeJSON(w, http.StatusOK, targetStateJSON{AgentUUID: a.UUID, TargetState: a.TargetState, TargetVersion: a.TargetVersion})
	return nil
}

// rotateMQTTPassword: POST /api/v1/agents/{uuid}/mqtt-password (admin). The new password is in this
// answer only; brokers close the sessions that used the old one.
func (s *agentsAPI) rotateMQTTPassword(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("uuid")
	pw, err := s.svc.RotatePassword(r.Context(), actorOf(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"agentUuid": id, "password": pw.Reveal(), "clientId": "agent-" + id})
	return nil
}

type agentPatchRequest struct {
	Status string `json:"status"`
}

// patchAgent: PATCH /api/v1/agents/{uuid} (admin) with {"status":"disabled"} or {"status":"active"}.
// Disabling closes the agent's sessions on every broker and refuses its MQTT logins and device REST
// calls until it is enabled again; its keys and password are kept. A decommissioned agent is final
// (409).
func (s *agentsAPI) patchAgent(w http.ResponseWriter, r *http.Request) error {
	var req agentPatchRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	a, err := s.svc.SetStatus(r.Context(), actorOf(r), r.PathValue("uuid"), req.Status)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, agentView(a, false))
	return nil
}

// decommissionAgent: DELETE /api/v1/agents/{uuid} (admin): status decommissioned, keys revoked, MQTT
// credentials deleted; brokers kick it.
func (s *agentsAPI) decommissionAgent(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.Decommission(r.Context(), actorOf(r), r.PathValue("uuid")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deviceGetState: GET /api/v1/device/{uuid}/state with the agent's X-Device-API-Key. Answers 304 when
// If-None-Match holds the current ETag.
func (s *agentsAPI) deviceGetState(w http.ResponseWriter, r *http.Request) error {
	d, _ := DeviceFrom(r.Context())
	a, err := s.svc.Get(r.Context(), d.AgentUUID)
	if err != nil {
		return err
	}
	etag := etagOf(a.TargetVersion)
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "private, no-cache")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, http.StatusOK, targetStateJSON{AgentUUID: a.UUID, TargetState: a.TargetState, TargetVersion: a.TargetVersion})
	return nil
}

// etagMatches applies If-None-Match's weak comparison.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

type reportStateRequest struct {
	ReportedState json.RawMessage `json:"reportedState"`
}

// deviceReportState: PATCH /api/v1/device/{uuid}/state with the agent's X-Device-API-Key.
func (s *agentsAPI) deviceReportState(w http.ResponseWriter, r *http.Request) error {
	d, _ := DeviceFrom(r.Context())
	var req reportStateRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if err := s.svc.ReportState(r.Context(), d.AgentUUID, req.ReportedState); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
