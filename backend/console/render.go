package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// funcs are the helpers the templates use.
var funcs = template.FuncMap{
	"when": func(t any) string {
		switch x := t.(type) {
		case *time.Time:
			if x == nil {
				return "never"
			}
			return x.UTC().Format("2006-01-02 15:04:05 UTC")
		case time.Time:
			if x.IsZero() {
				return "never"
			}
			return x.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	// short is a time without its seconds, still with its zone (lists; the title holds the full time).
	"short": func(t any) string {
		switch x := t.(type) {
		case *time.Time:
			if x == nil {
				return "never"
			}
			return x.UTC().Format("2006-01-02 15:04 UTC")
		case time.Time:
			if x.IsZero() {
				return "never"
			}
			return x.UTC().Format("2006-01-02 15:04 UTC")
		}
		return ""
	},
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

// render writes a page: the session cookie first when it changed (a refreshed token pair), then the
// HTML, rendered into a buffer so that a template error never leaves half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, v *view) {
	t, ok := c.pages[name]
	if !ok {
		c.log.Error("console page template missing", "page", name)
		http.Error(w, "the console could not show this page", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console page failed to render", "page", name, "error", err.Error())
		http.Error(w, "the console could not show this page", http.StatusInternalServerError)
		return
	}
	if s != nil && s.dirty {
		c.saveSession(w, r, s)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
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
