package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/backend/redact"
)

// funcs are the helpers the templates use.
var funcs = template.FuncMap{
	"join": strings.Join,
	"reason": func(r *string) string {
		if r == nil {
			return ""
		}
		return *r
	},
	"reasonText": func(r *string) string {
		if r == nil {
			return ""
		}
		return disconnectReasons[*r]
	},
	"pretty": func(b json.RawMessage) string {
		if len(b) == 0 {
			return ""
		}
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") != nil {
			return string(b)
		}
		return out.String()
	},
	"detail": func(m map[string]any) string {
		if len(m) == 0 {
			return ""
		}
		b, _ := json.Marshal(m)
		return string(b)
	},
}

func init() {
	for k, f := range timeFuncs(time.UTC) {
		funcs[k] = f
	}
}

// parsePages parses every page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: parse %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// ui renders the console's pages from the embedded templates: pages, the error page (and the answer
// when the session store cannot be read), the redirect that ends an action, and the confirmation page
// of a destructive action. It writes the cookie of a session whose id is new before the answer.
type ui struct {
	log     *slog.Logger
	pages   map[string]*template.Template
	masters map[string]*template.Template // the same pages never executed, copied per time zone
	zoned   sync.Map                      // zone and page → that copy
	zonedN  atomic.Int64                  // copies made (kept up to maxZonedPages)
	sess    *sessions
}

// render writes a page: the session cookie first when it changed (a new session id), then the
// HTML, rendered into a buffer so that a template error never leaves half a page.
func (c *ui) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, v *view) {
	t, ok := c.pages[name]
	if !ok {
		c.log.Error("console page template missing", "page", name)
		http.Error(w, "the console could not show this page", http.StatusInternalServerError)
		return
	}
	if loc := zoneOf(r); loc != time.UTC {
		t = c.zonedPage(name, loc)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console page failed to render", "page", name, "error", err.Error())
		http.Error(w, "the console could not show this page", http.StatusInternalServerError)
		return
	}
	c.saveNewSession(w, r, s)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage shows an API refusal or a console error with its status.
func (c *ui) errorPage(w http.ResponseWriter, r *http.Request, s *session, v *view, p *problem) {
	if v == nil {
		v = &view{}
	}
	v.Title, v.Error, v.Data = "Error", p.Detail, p
	c.render(w, r, s, p.Status, "error", v)
}

// redirect ends an action with 303 See Other to a page, with a notice code (never a secret).
func (c *ui) redirect(w http.ResponseWriter, r *http.Request, s *session, to, done string) error {
	c.saveNewSession(w, r, s)
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

// unavailable answers when the session store cannot be read: the operator is not signed out (the
// session may well be live), the page just cannot be served now.
func (c *ui) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	c.log.Error("console session store failed", "path", redact.String(r.URL.Path), "error", redact.String(err.Error()))
	c.errorPage(w, r, nil, nil, &problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Detail: "the console cannot reach its database; try again in a moment (the server log has details)"})
}

// saveNewSession writes the cookie of a session whose id is new (a sign-in form's anonymous session);
// an existing session's cookie is left alone.
func (c *ui) saveNewSession(w http.ResponseWriter, r *http.Request, s *session) {
	if s != nil && s.dirty {
		c.sess.saveSession(w, r, s)
	}
}

// disconnectReasons explain the reasons a session ends (docs/presence.md), for the hover text.
var disconnectReasons = map[string]string{
	"client":          "the client's connection ended (DISCONNECT, keep-alive or network error)",
	"keepalive":       "the keep-alive timed out",
	"kicked_revoked":  "closed: key revoked or deleted, password rotated, or credential refused",
	"kicked_disabled": "closed: the agent was disabled or decommissioned",
	"kicked_expired":  "closed: the key or credential expired",
	"takeover":        "a new session with the same client id took over",
	"broker_shutdown": "the broker stopped cleanly",
	"broker_lost":     "the broker died or lost PostgreSQL beyond its timeout",
	"error":           "the end was lost during a database outage",
}

// zonedPage is a page whose time helpers show the operator's zone: a copy of the never-executed master
// (html/template copies only those) with the helpers replaced, made once per zone and page.
func (c *ui) zonedPage(name string, loc *time.Location) *template.Template {
	key := loc.String() + "\x00" + name
	if t, ok := c.zoned.Load(key); ok {
		return t.(*template.Template)
	}
	t, err := c.masters[name].Clone()
	if err != nil {
		c.log.Error("console could not copy a page for a time zone; showing UTC", "page", name, "error", err.Error())
		return c.pages[name]
	}
	t = t.Funcs(timeFuncs(loc))
	if c.zonedN.Add(1) > maxZonedPages {
		return t // beyond the bound, copies are not kept (each request makes its own)
	}
	got, _ := c.zoned.LoadOrStore(key, t)
	return got.(*template.Template)
}

// maxZonedPages bounds the kept per-zone copies of pages (a few zones in practice; every known zone
// times every page would hold thousands).
const maxZonedPages = 300
