package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/web/live"
)

// routes registers the console's pages and actions: the one route table. Every POST is an action
// that checks the CSRF token before anything else and then makes API requests; Watch live's routes are
// there only when the broker's WebSocket URL is configured.
func (c *Console) routes() {
	m := c.mux
	m.Handle("GET "+Prefix+"static/", c.static())
	m.HandleFunc("GET "+Prefix+"{$}", c.page(c.overview.overviewPage))
	m.HandleFunc("GET "+loginPath, c.login.loginPage)
	m.HandleFunc("POST "+loginPath, c.login.loginSubmit)
	m.HandleFunc("POST "+Prefix+"logout", c.login.logoutSubmit)
	m.HandleFunc("POST "+Prefix+"timezone", c.action(c.login.setTimezone))

	m.HandleFunc("GET "+Prefix+"agents", c.page(c.agents.agentsPage))
	m.HandleFunc("GET "+Prefix+"agents.csv", c.page(c.agents.agentsCSV))
	m.HandleFunc("GET "+Prefix+"agents/{uuid}", c.page(c.agents.agentPage))
	m.HandleFunc("POST "+Prefix+"agents/bulk", c.action(c.agents.bulkAgents))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/target-state", c.action(c.agents.setTargetState))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/mqtt-password", c.action(c.agents.rotatePassword))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/decommission", c.action(c.agents.decommission))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/status", c.action(c.agents.setAgentStatus))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/keys", c.action(c.keys.createDeviceKey))

	m.HandleFunc("GET "+Prefix+"keys", c.page(c.keys.keysPage))
	m.HandleFunc("POST "+Prefix+"keys", c.action(c.keys.createDeviceKey))
	m.HandleFunc("POST "+Prefix+"keys/{id}/revoke", c.action(c.keys.remove(revokeDeviceKey)))
	m.HandleFunc("POST "+Prefix+"app-keys", c.action(c.keys.createAppKey))
	m.HandleFunc("POST "+Prefix+"app-keys/{id}/revoke", c.action(c.keys.remove(revokeAppKey)))

	m.HandleFunc("GET "+Prefix+"provisioning", c.page(c.keys.provisioningPage))
	m.HandleFunc("POST "+Prefix+"provisioning", c.action(c.keys.createProvisioningKey))
	m.HandleFunc("POST "+Prefix+"provisioning/{id}/delete", c.action(c.keys.remove(deleteProvisioningKey)))

	m.HandleFunc("GET "+Prefix+"users", c.page(c.admin.usersPage))
	m.HandleFunc("GET "+Prefix+"license", c.page(c.admin.licensePage))
	m.HandleFunc("GET "+Prefix+"audit", c.page(c.admin.auditPage))

	m.HandleFunc("GET "+sessionPath, c.live.sessionState)
	if c.ws == nil {
		return
	}
	m.HandleFunc("GET "+livePath, c.page(c.live.livePage))
	m.HandleFunc("POST "+credentialPath, c.live.liveCredential)
	m.Handle("GET "+watchScriptURL, sharedFile(live.WatchScript))
	if live.BundleBuilt() {
		m.Handle("GET "+bundleURL, sharedFile(live.BundleFile))
	}
}

// operator is the signed-in user, from GET /api/v1/auth/me.
type operator struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Role  string `json:"role"`
}

// view is what every page template gets.
type view struct {
	Title  string
	Nav    string
	Me     operator
	CSRF   string
	Can    map[string]bool
	Error  string
	Notice string
	Data   any
	Path   string // the page's own URL, for forms that come back to it (the time zone's)
	Live   bool   // Watch live is offered (the broker's WebSocket URL is configured)
	Watch  bool   // this page watches: it loads MQTT.js and watch.js
	WSURL  string // the broker's WebSocket URL, on a page that watches
}

// capabilities name the API routes behind the console's buttons; a button is shown only when the
// operator's role may call its route (the API's route table decides, and refuses forged requests).
var capabilities = map[string]string{
	"agentsList":      "GET /api/v1/agents",
	"provision":       "POST /api/v1/provision/keys",
	"provisionList":   "GET /api/v1/provision/keys",
	"provisionDelete": "DELETE /api/v1/provision/keys/{id}",
	"keyCreate":       "POST /api/v1/auth/api-keys",
	"keyList":         "GET /api/v1/auth/api-keys",
	"keyRevoke":       "DELETE /api/v1/auth/api-keys/{id}",
	"appKeyList":      "GET /api/v1/auth/app-keys",
	"appKeyCreate":    "POST /api/v1/auth/app-keys",
	"appKeyRevoke":    "DELETE /api/v1/auth/app-keys/{id}",
	"pubKeyList":      "GET /api/v1/auth/publishable-keys",
	"userList":        "GET /api/v1/users",
	"targetState":     "PUT /api/v1/agents/{uuid}/target-state",
	"rotate":          "POST /api/v1/agents/{uuid}/mqtt-password",
	"decommission":    "DELETE /api/v1/agents/{uuid}",
	"agentStatus":     "PATCH /api/v1/agents/{uuid}",
	"license":         "GET /api/v1/license",
	"audit":           "GET /api/v1/audit",
	"exchange":        "POST /api/v1/tokens/exchange",
}

func (c *Console) can(role string) map[string]bool {
	out := make(map[string]bool, len(capabilities))
	for name, pattern := range capabilities {
		out[name] = c.may(role, pattern)
	}
	return out
}

// handler is a signed-in page or action: it renders or redirects itself, or returns an error that
// becomes an error page (a *problem with the API's status and detail, or errSignedOut).
type handler func(w http.ResponseWriter, r *http.Request, s *session, v *view) error

// page wraps a GET page: a signed-in session (else the sign-in page), the operator from the API.
func (c *Console) page(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.sess.sessionOf(r)
		if err != nil {
			c.ui.unavailable(w, r, err)
			return
		}
		if !s.signedIn() {
			c.signInAgain(w, r, s)
			return
		}
		c.run(w, r, s, h)
	}
}

// action wraps a POST: the CSRF token (and Origin) first, then as page. A refused token changes
// nothing and answers 403.
func (c *Console) action(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		s, err := c.sess.sessionOf(r)
		if err != nil {
			c.ui.unavailable(w, r, err)
			return
		}
		if !c.sess.checkCSRF(r, s) {
			c.log.Warn("console form refused: missing or wrong CSRF token, or a foreign Origin", "path", redact.String(r.URL.Path))
			c.ui.errorPage(w, r, s, nil, &problem{Status: http.StatusForbidden, Code: "csrf_failed",
				Detail: "this form expired or was not sent from the console; reload the page and try again"})
			return
		}
		if !s.signedIn() {
			c.signInAgain(w, r, s)
			return
		}
		c.run(w, r, s, h)
	}
}

// signInAgain sends a browser without a live session to the sign-in page, deleting a cookie whose
// session has ended (signed out, expired, or ended by a change to its user).
func (c *Console) signInAgain(w http.ResponseWriter, r *http.Request, s *session) {
	if s != nil {
		c.sess.clearSession(w, r)
	}
	http.Redirect(w, r, loginPath, http.StatusSeeOther)
}

func (c *Console) run(w http.ResponseWriter, r *http.Request, s *session, h handler) {
	res, err := c.api.call(r, s, http.MethodGet, "/api/v1/auth/me", nil, nil)
	if err == nil && !res.ok() {
		err = res.problem()
	}
	v := &view{CSRF: c.sess.csrfToken(s), Path: Prefix, Live: c.ws != nil}
	if r.Method == http.MethodGet {
		v.Path = r.URL.RequestURI()
	}
	if err == nil {
		if derr := res.decode(&v.Me); derr != nil {
			err = derr
		}
		v.Can = c.can(v.Me.Role)
	}
	if err == nil {
		err = h(w, r, s, v)
	}
	if err == nil {
		return
	}
	if errors.Is(err, errSignedOut) {
		c.sess.clearSession(w, r)
		http.Redirect(w, r, loginPath, http.StatusSeeOther)
		return
	}
	var p *problem
	if !errors.As(err, &p) {
		c.log.Error("console page failed", "path", redact.String(r.URL.Path), "error", redact.String(err.Error()))
		p = &problem{Status: http.StatusInternalServerError, Detail: "the console could not show this page; the server log has details"}
	}
	c.ui.errorPage(w, r, s, v, p)
}

// notices are the messages a redirect's done code shows.
var notices = map[string]string{
	"revoked":       "The key is revoked; brokers close the sessions that used it.",
	"deleted":       "The provisioning key is deleted.",
	"saved":         "The target state is saved.",
	"decommission":  "The agent is decommissioned: its keys are revoked and its sessions closed.",
	"app-revoked":   "The application key is revoked.",
	"disabled":      "The agent is disabled: its sessions are closed and its logins refused until it is enabled.",
	"enabled":       "The agent is enabled again.",
	"bulk-disabled": "The selected agents are disabled: their sessions are closed and their logins refused until they are enabled.",
	"bulk-revoked":  "The selected agents' device keys are revoked; brokers close the sessions that used them.",
}

func notice(r *http.Request) string { return notices[r.URL.Query().Get("done")] }

// apiErr turns a non-2xx answer into the error page's problem.
func apiErr(res result) error { return res.problem() }

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// formValues returns the trimmed non-empty lines of a textarea.
func formLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checked returns the values of a checkbox group, keeping only known ones in order.
func checked(r *http.Request, name string, known []string) []string {
	vals := r.PostForm[name]
	var out []string
	for _, k := range known {
		if slices.Contains(vals, k) {
			out = append(out, k)
		}
	}
	return out
}
