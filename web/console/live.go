package console

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/web/live"
)

// Watch live (docs/console.md): the agent page and the console's live screen show an agent's MQTT
// messages in the console itself. The page's script (watch.js, the same file /live runs) asks the
// console for a short-lived MQTT credential with a CSRF-checked POST; the console gets it through the
// API's token exchange in-process, on behalf of the session's user, exactly as /live's bearer exchange
// would (same audit event, same role topics, same rate budget), and hands it to the script, which keeps
// it in memory only. No token of the operator's ever reaches the browser.

// liveCredentialTTL is the lifetime the console asks for: the script renews a minute before it ends.
const liveCredentialTTL = 5 * time.Minute

// Paths of Watch live.
const (
	livePath       = Prefix + "live"
	credentialPath = Prefix + "live/credential"
	sessionPath    = Prefix + "session"
	watchScriptURL = Prefix + "static/live/" + live.WatchScript
	bundleURL      = Prefix + "static/live/mqtt.min.js"
)

// liveScreen is Watch live: the console's live screen, the short-lived MQTT credential its script
// connects with, and the sign-in state /live's script asks for.
type liveScreen struct {
	api   *apiClient
	sess  *sessions
	ui    *ui
	names *namer
	log   *slog.Logger
	ws    *url.URL // the broker's WebSocket URL; nil: Watch live is not offered
}

// watchCSP is the console's policy plus WebSockets to the broker, for the pages that watch (only
// those: the other pages keep connect-src at 'self').
func watchCSP(ws *url.URL) string {
	return ContentSecurityPolicy + "; connect-src 'self' " + ws.Scheme + "://" + ws.Host
}

// sharedFile serves one of /live's files that the console shares (its script and MQTT.js).
func sharedFile(name string) http.Handler {
	body, err := live.SharedFile(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(body)
	})
}

// watching prepares a page that watches the broker at ws: its scripts and its CSP.
func watching(w http.ResponseWriter, v *view, ws *url.URL) {
	v.Watch, v.WSURL = true, ws.String()
	w.Header().Set("Content-Security-Policy", watchCSP(ws))
}

// livePage: GET /console/live, /live in the console's layout: enter an agent's uuid and watch it
// (?agent=<uuid> fills it in and starts).
func (c *liveScreen) livePage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	agent := strings.ToLower(r.URL.Query().Get("agent"))
	if !uuid.Valid(agent) {
		agent = ""
	}
	name := ""
	if agent != "" {
		name = c.names.agentName(r, s, agent)
	}
	watching(w, v, c.ws)
	v.Title, v.Nav = "Live", "live"
	v.Data = map[string]any{"Agent": agent, "AgentName": name}
	c.ui.render(w, r, s, http.StatusOK, "live", v)
	return nil
}

// sessionState: GET /console/session → {"signedIn": true|false}, for /live's script, which sends a
// browser signed in to the console to /console/live (it cannot see the console's cookie, which is
// HttpOnly and scoped to /console/). Same-origin only: the answer has no CORS header.
func (c *liveScreen) sessionState(w http.ResponseWriter, r *http.Request) {
	s, err := c.sess.sessionOf(r)
	if err != nil {
		c.log.Error("console session store failed", "path", redact.String(r.URL.Path), "error", redact.String(err.Error()))
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"signedIn": false,
			"detail": "the console cannot reach its database; try again in a moment"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"signedIn": s.signedIn() && c.ws != nil})
}

// liveCredential: POST /console/live/credential with the session's CSRF token (form field csrf) →
// {"mqtt": {"username", "password", "clientIdPrefix", "expiresAt"}}: a short-lived MQTT credential
// from the API's token exchange, for the page's script to connect with. Errors are problem-shaped
// JSON: 403 for a missing or foreign CSRF token or Origin, 401 when the session has ended, and the
// exchange's own refusals (429 with Retry-After, 503 when it is not configured).
func (c *liveScreen) liveCredential(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	s, err := c.sess.sessionOf(r)
	if err != nil {
		c.log.Error("console session store failed", "path", redact.String(r.URL.Path), "error", redact.String(err.Error()))
		writeProblem(w, &problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Detail: "the console cannot reach its database; try again in a moment (the server log has details)"})
		return
	}
	if !c.sess.checkCSRF(r, s) {
		c.log.Warn("console live credential refused: missing or wrong CSRF token, or a foreign Origin")
		writeProblem(w, &problem{Status: http.StatusForbidden, Code: "csrf_failed",
			Detail: "this page expired or the request was not sent from the console; reload the page"})
		return
	}
	signedOut := &problem{Status: http.StatusUnauthorized, Code: "signed_out",
		Detail: "your console session has ended; sign in again"}
	if !s.signedIn() {
		c.sess.clearSession(w, r)
		writeProblem(w, signedOut)
		return
	}
	// The credential reads the watched agent's topics and nothing else, whatever the operator's role
	// would allow: the page needs no more.
	// The page posts the UUID as typed: either case is the same agent.
	agent := strings.ToLower(r.PostFormValue("agent"))
	if !uuid.Valid(agent) {
		writeProblem(w, &problem{Status: http.StatusBadRequest, Code: "validation_failed",
			Detail: "agent must be the UUID of the agent to watch (8-4-4-4-12 hexadecimal digits)"})
		return
	}
	res, err := c.api.call(r, s, http.MethodPost, api.ExchangePath,
		map[string]any{"provider": "iotauth", "ttl": int(liveCredentialTTL / time.Second),
			"topics": []map[string]string{{"access": "read", "pattern": "agents/" + agent + "/#"}}}, nil)
	if errors.Is(err, errSignedOut) {
		c.sess.clearSession(w, r)
		writeProblem(w, signedOut)
		return
	}
	if err != nil {
		c.log.Error("console live credential failed", "error", redact.String(err.Error()))
		writeProblem(w, &problem{Status: http.StatusInternalServerError, Detail: "the console could not get a credential; the server log has details"})
		return
	}
	if !res.ok() {
		if ra := res.Header.Get("Retry-After"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		writeProblem(w, res.problem())
		return
	}
	var out struct {
		MQTT struct {
			Username       string    `json:"username"`
			Password       string    `json:"password"`
			ClientIDPrefix string    `json:"clientIdPrefix"`
			ExpiresAt      time.Time `json:"expiresAt"`
		} `json:"mqtt"`
	}
	if err := res.decode(&out); err != nil || out.MQTT.Password == "" {
		writeProblem(w, &problem{Status: http.StatusBadGateway, Detail: "the token exchange answered without a credential; the server log has details"})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func writeProblem(w http.ResponseWriter, p *problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
