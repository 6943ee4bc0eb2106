package console

import (
	"html/template"
	"net/http"
	"strings"
	"time"
	_ "time/tzdata" // zone names resolve on hosts without a zoneinfo database (containers)
)

// ZoneCookie keeps the time zone the operator chose for the console's times (an IANA name such as
// Europe/Paris; not a secret). Without it, times are UTC.
const ZoneCookie = "iotauth_console_tz"

// zoneOf is the operator's time zone: the cookie's, when it names a known zone, else UTC.
func zoneOf(r *http.Request) *time.Location {
	ck, err := r.Cookie(ZoneCookie)
	if err != nil || ck.Value == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(ck.Value)
	if err != nil {
		return time.UTC
	}
	return loc
}

// timeFuncs are the templates' time helpers in a zone: every time is shown with its zone's
// abbreviation (or offset), so a reader never has to guess the zone.
func timeFuncs(loc *time.Location) template.FuncMap {
	format := func(layout string) func(t any) string {
		return func(t any) string {
			switch x := t.(type) {
			case *time.Time:
				if x == nil || x.IsZero() {
					return "never"
				}
				return x.In(loc).Format(layout)
			case time.Time:
				if x.IsZero() {
					return "never"
				}
				return x.In(loc).Format(layout)
			}
			return ""
		}
	}
	return template.FuncMap{
		"when":  format("2006-01-02 15:04:05 MST"),
		"short": format("2006-01-02 15:04 MST"),
		"zone":  func() string { return zoneName(loc) },
	}
}

// zoneName is the zone as the settings form shows it.
func zoneName(loc *time.Location) string { return loc.String() }

// setTimezone: POST /console/timezone with tz (an IANA zone name, or UTC): remembers it in a cookie
// for a year and goes back to the page the form was on.
func (c *loginScreen) setTimezone(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	name := strings.TrimSpace(r.PostFormValue("tz"))
	if name == "" {
		name = "UTC"
	}
	if _, err := time.LoadLocation(name); err != nil || len(name) > 64 || name == "Local" {
		return &problem{Status: http.StatusBadRequest, Code: "invalid_timezone",
			Detail: "unknown time zone; use an IANA name such as UTC, Europe/Paris or America/New_York"}
	}
	http.SetCookie(w, c.sess.cookie(r, ZoneCookie, name, Prefix, 365*24*3600))
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, Prefix) || strings.HasPrefix(back, "//") || strings.ContainsAny(back, "\\\r\n") {
		back = Prefix
	}
	return c.ui.redirect(w, r, s, back, "")
}
