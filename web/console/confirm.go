package console

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
)

// confirmation is the page a destructive action shows before it acts: it names the target and what
// will happen, and re-posts the same form with confirm=yes (plain HTML: the CSP allows no inline
// script, so there is no JavaScript confirm()). Cancel goes back without posting.
type confirmation struct {
	Title       string              // "Revoke device API key"
	Target      string              // the target by name, as the operator knows it
	TargetID    string              // the target's id (shown small, and in the title attribute)
	Consequence string              // what happens when confirmed
	Button      string              // the confirm button's label
	Action      string              // where the confirmed form posts (the same action)
	Fields      map[string]string   // the original form's other fields, posted again
	Lists       map[string][]string // repeated fields (the agents of a bulk action), posted again
	Back        string              // Cancel
}

// confirmed reports whether a destructive action's form was confirmed. If not, it shows the
// confirmation page (200, nothing changed) and the action must return without acting.
func (c *ui) confirmed(w http.ResponseWriter, r *http.Request, s *session, v *view, cf confirmation) bool {
	if r.PostFormValue("confirm") == "yes" {
		return true
	}
	if cf.Action == "" {
		cf.Action = r.URL.Path
	}
	v.Title, v.Data = cf.Title+"?", cf
	c.render(w, r, s, http.StatusOK, "confirm", v)
	return false
}

// namer names what the console shows by reference (an agent, a key, an audit event's actor and
// target): from the database's names of references, or an agent's from the API.
type namer struct {
	db interface {
		RefNames(ctx context.Context, refs []string) (map[string]string, error)
	}
	api *apiClient
	log *slog.Logger
}

// refName names a reference ("api-key:<id>", "app-key:<id>", "provisioning-key:<id>") for a
// confirmation page; "" when the database does not know it (the action itself then reports it).
func (c *namer) refName(r *http.Request, ref string) string {
	names, err := c.db.RefNames(r.Context(), []string{ref})
	if err != nil {
		return ""
	}
	return names[ref]
}

// agentName is an agent's name from the API (for a confirmation page); "" when it cannot be read.
func (c *namer) agentName(r *http.Request, s *session, id string) string {
	var a agent
	if err := c.api.get(r, s, "/api/v1/agents/"+url.PathEscape(id), &a); err != nil {
		return ""
	}
	return a.Name
}

// refused is the answer to an action the operator's role may not take (the API would refuse it too);
// it is given before a confirmation page, so that the page names nothing the role may not act on.
func refused(v *view) error {
	return &problem{Status: http.StatusForbidden, Code: "forbidden", Detail: "your role (" + v.Me.Role + ") may not do this"}
}

// orID is name, or a placeholder when the name is unknown.
func orID(name string) string {
	if name == "" {
		return "(unknown name)"
	}
	return name
}
