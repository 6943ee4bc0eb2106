package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/iotauth/iotauth/backend/redact"
)

// routes registers the console's pages and actions. Every POST is an action that checks the CSRF
// token before anything else and then makes one API request.
func (c *Console) routes() {
	m := c.mux
	m.Handle("GET "+Prefix+"static/", c.static())
	m.HandleFunc("GET "+Prefix+"{$}", c.page(c.overviewPage))
	m.HandleFunc("GET "+loginPath, c.loginPage)
	m.HandleFunc("POST "+loginPath, c.loginSubmit)
	m.HandleFunc("POST "+Prefix+"logout", c.logoutSubmit)
	m.HandleFunc("POST "+Prefix+"timezone", c.action(c.setTimezone))

	m.HandleFunc("GET "+Prefix+"agents", c.page(c.agentsPage))
	m.HandleFunc("GET "+Prefix+"agents.csv", c.page(c.agentsCSV))
	m.HandleFunc("GET "+Prefix+"agents/{uuid}", c.page(c.agentPage))
	m.HandleFunc("POST "+Prefix+"agents/bulk", c.action(c.bulkAgents))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/target-state", c.action(c.setTargetState))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/mqtt-password", c.action(c.rotatePassword))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/decommission", c.action(c.decommission))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/status", c.action(c.setAgentStatus))
	m.HandleFunc("POST "+Prefix+"agents/{uuid}/keys", c.action(c.createDeviceKey))

	m.HandleFunc("GET "+Prefix+"keys", c.page(c.keysPage))
	m.HandleFunc("POST "+Prefix+"keys", c.action(c.createDeviceKey))
	m.HandleFunc("POST "+Prefix+"keys/{id}/revoke", c.action(c.revokeDeviceKey))
	m.HandleFunc("POST "+Prefix+"app-keys", c.action(c.createAppKey))
	m.HandleFunc("POST "+Prefix+"app-keys/{id}/revoke", c.action(c.revokeAppKey))

	m.HandleFunc("GET "+Prefix+"provisioning", c.page(c.provisioningPage))
	m.HandleFunc("POST "+Prefix+"provisioning", c.action(c.createProvisioningKey))
	m.HandleFunc("POST "+Prefix+"provisioning/{id}/delete", c.action(c.deleteProvisioningKey))

	m.HandleFunc("GET "+Prefix+"users", c.page(c.usersPage))
	m.HandleFunc("GET "+Prefix+"license", c.page(c.licensePage))
	m.HandleFunc("GET "+Prefix+"audit", c.page(c.auditPage))
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
		s, err := c.sessionOf(r)
		if err != nil {
			c.unavailable(w, r, err)
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
		s, err := c.sessionOf(r)
		if err != nil {
			c.unavailable(w, r, err)
			return
		}
		if !c.checkCSRF(r, s) {
			c.log.Warn("console form refused: missing or wrong CSRF token, or a foreign Origin", "path", redact.String(r.URL.Path))
			c.errorPage(w, r, s, nil, &problem{Status: http.StatusForbidden, Code: "csrf_failed",
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
		c.clearSession(w, r)
	}
	http.Redirect(w, r, loginPath, http.StatusSeeOther)
}

func (c *Console) run(w http.ResponseWriter, r *http.Request, s *session, h handler) {
	res, err := c.call(r, s, http.MethodGet, "/api/v1/auth/me", nil, nil)
	if err == nil && !res.ok() {
		err = res.problem()
	}
	v := &view{CSRF: c.csrfToken(s), Path: Prefix, Live: c.ws != nil}
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
		c.clearSession(w, r)
		http.Redirect(w, r, loginPath, http.StatusSeeOther)
		return
	}
	var p *problem
	if !errors.As(err, &p) {
		c.log.Error("console page failed", "path", redact.String(r.URL.Path), "error", redact.String(err.Error()))
		p = &problem{Status: http.StatusInternalServerError, Detail: "the console could not show this page; the server log has details"}
	}
	c.errorPage(w, r, s, v, p)
}

// errorPage shows an API refusal or a console error with its status.
func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, s *session, v *view, p *problem) {
	if v == nil {
		v = &view{}
	}
	v.Title, v.Error, v.Data = "Error", p.Detail, p
	c.render(w, r, s, p.Status, "error", v)
}

// redirect ends an action with 303 See Other to a page, with a notice code (never a secret).
func (c *Console) redirect(w http.ResponseWriter, r *http.Request, s *session, to, done string) error {
	if s != nil && s.dirty {
		c.saveSession(w, r, s)
	}
	if done != "" {
		sep := "?"
		if strings.Contains(to, "?") {
			sep = "&"
		}
		to += sep + "done=" + url.QueryEscape(done)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
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

// get is a GET through the API that must succeed, decoded into v.
func (c *Console) get(r *http.Request, s *session, path string, v any) error {
	res, err := c.call(r, s, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	return res.decode(v)
}

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
