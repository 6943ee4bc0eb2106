package console

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/iotauth/iotauth/backend/store"
	apiview "github.com/iotauth/iotauth/backend/view"
)

// appKey is an application key as GET /api/v1/auth/app-keys lists it: the API's own JSON form.
type appKey = apiview.AppKey

// appRights are the rights an application key may hold, in the documentation's order (the API validates
// them again).
var appRights = store.AppRights()

// publishableKey is a publishable key as GET /api/v1/auth/publishable-keys lists it: the API's own JSON
// form.
type publishableKey = apiview.PublishableKey

// keysScreen lists, creates and revokes the keys of every kind: device API keys, application keys,
// publishable keys (listed) and provisioning keys (with their QR code).
type keysScreen struct {
	api *apiClient
	db  interface {
		CountAPIKeys(ctx context.Context, agentUUID string) (int64, error)
		CountAppKeys(ctx context.Context) (int64, error)
		CountPublishableKeys(ctx context.Context) (int64, error)
		CountProvisioningKeys(ctx context.Context) (int64, error)
	}
	ui    *ui
	names *namer
}

// keysPageSize is the page of each list on the Keys screen.
const keysPageSize = 25

// listOf reads one page of an API list with its pager: the list pages with the query parameter name,
// and total counts it whole.
func listOf[T any](api *apiClient, r *http.Request, s *session, path, id, name string, size int, total func() (int64, error)) ([]T, pager, error) {
	cursor, from := listCursor(r, name)
	var list struct {
		Items      []T    `json:"items"`
		NextCursor string `json:"nextCursor"`
	}
	if err := api.get(r, s, apiPath(path, map[string]string{"limit": strconv.Itoa(size), "cursor": cursor}), &list); err != nil {
		return nil, pager{}, err
	}
	n, err := total()
	if err != nil {
		return nil, pager{}, err
	}
	return list.Items, newPager(r, id, name, from, len(list.Items), list.NextCursor, n), nil
}

// keysPage: device API keys (every agent's, newest first as the API lists them), application keys and
// publishable keys, each paged on its own with its total.
func (c *keysScreen) keysPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["keyList"] && !v.Can["appKeyList"] && !v.Can["pubKeyList"] {
		return &problem{Status: http.StatusForbidden, Detail: "your role (" + v.Me.Role + ") may not see keys"}
	}
	ctx := r.Context()
	data := map[string]any{"Rights": appRights}
	if v.Can["keyList"] {
		keys, p, err := listOf[deviceKey](c.api, r, s, "/api/v1/auth/api-keys", "device-keys", "dk", keysPageSize,
			func() (int64, error) { return c.db.CountAPIKeys(ctx, "") })
		if err != nil {
			return err
		}
		data["DeviceKeys"], data["DevicePager"] = keys, p
	}
	if v.Can["appKeyList"] {
		keys, p, err := listOf[appKey](c.api, r, s, "/api/v1/auth/app-keys", "app-keys", "ak", keysPageSize,
			func() (int64, error) { return c.db.CountAppKeys(ctx) })
		if err != nil {
			return err
		}
		data["AppKeys"], data["AppPager"] = keys, p
	}
	if v.Can["pubKeyList"] {
		keys, p, err := listOf[publishableKey](c.api, r, s, "/api/v1/auth/publishable-keys", "pub-keys", "pk", keysPageSize,
			func() (int64, error) { return c.db.CountPublishableKeys(ctx) })
		if err != nil {
			return err
		}
		data["PubKeys"], data["PubPager"] = keys, p
	}
	v.Title, v.Nav, v.Notice = "Keys", "keys", notice(r)
	v.Data = data
	c.ui.render(w, r, s, http.StatusOK, "keys", v)
	return nil
}

// createDeviceKey: POST /api/v1/auth/api-keys for the agent in the path or the form; the key is shown
// on this answer only, with a copy button.
func (c *keysScreen) createDeviceKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	agentID := r.PathValue("uuid")
	if agentID == "" {
		agentID = strings.TrimSpace(r.PostFormValue("agentUuid"))
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	res, err := c.api.call(r, s, http.MethodPost, "/api/v1/auth/api-keys", map[string]string{"name": name, "agentUuid": agentID}, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	var out struct {
		APIKey string `json:"apiKey"`
		Prefix string `json:"prefix"`
	}
	if err := res.decode(&out); err != nil {
		return err
	}
	v.Title, v.Nav = "New device API key", "keys"
	v.Data = secretShown{What: "device API key", Secret: out.APIKey, Back: Prefix + "agents/" + url.PathEscape(agentID),
		Note: "The agent uses it as its MQTT username and in X-Device-API-Key, with its existing MQTT password."}
	c.ui.render(w, r, s, http.StatusCreated, "secret", v)
	return nil
}

// createAppKey: POST /api/v1/auth/app-keys with rights from checkboxes and topics one per line as
// "access pattern" (read, write or readwrite); the key and its MQTT password are shown once.
func (c *keysScreen) createAppKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	topics := []map[string]string{}
	for _, l := range formLines(r.PostFormValue("topics")) {
		access, pattern, ok := strings.Cut(l, " ")
		if !ok {
			return &problem{Status: http.StatusBadRequest, Detail: "write each topic as: access pattern (for example: read sensors/#)"}
		}
		topics = append(topics, map[string]string{"access": strings.TrimSpace(access), "pattern": strings.TrimSpace(pattern)})
	}
	body := map[string]any{"name": strings.TrimSpace(r.PostFormValue("name")), "rights": nonNil(checked(r, "rights", appRights)), "topics": topics}
	res, err := c.api.call(r, s, http.MethodPost, "/api/v1/auth/app-keys", body, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	var out struct {
		Key  string `json:"key"`
		MQTT struct {
			Password string `json:"password"`
		} `json:"mqtt"`
	}
	if err := res.decode(&out); err != nil {
		return err
	}
	v.Title, v.Nav = "New application key", "keys"
	v.Data = secretShown{What: "application key", Secret: out.Key, Password: out.MQTT.Password, Back: Prefix + "keys",
		Note: "Use the key as Authorization: Bearer on the REST API, and as the MQTT username with this MQTT password."}
	c.ui.render(w, r, s, http.StatusCreated, "secret", v)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// removal is one key kind's confirmed removal: the right the page needs, the reference kind its name is
// looked up by, the confirmation's words, the API's DELETE path (the id appended), where to go after
// and the notice shown there.
type removal struct {
	right, ref, title, consequence, button, path, back, notice string
	// fromAgent: the form may name the agent whose page it was sent from, which is where to go back.
	fromAgent bool
}

var (
	// revokeDeviceKey: brokers close the agent's sessions that used the key.
	revokeDeviceKey = removal{right: "keyRevoke", ref: "api-key:", title: "Revoke device API key",
		consequence: "Brokers close the agent's sessions that used this key within a second, and the key is refused from then on. This cannot be undone.",
		button:      "Revoke the key", path: "/api/v1/auth/api-keys/", back: Prefix + "keys", notice: "revoked", fromAgent: true}
	revokeAppKey = removal{right: "appKeyRevoke", ref: "app-key:", title: "Revoke application key",
		consequence: "Brokers close the key's MQTT sessions, and its REST calls and token exchanges are refused from then on. This cannot be undone.",
		button:      "Revoke the key", path: "/api/v1/auth/app-keys/", back: Prefix + "keys", notice: "app-revoked"}
	deleteProvisioningKey = removal{right: "provisionDelete", ref: "provisioning-key:", title: "Delete provisioning key",
		consequence: "Devices can no longer register with this key. This cannot be undone.",
		button:      "Delete the key", path: "/api/v1/provision/keys/", back: Prefix + "provisioning", notice: "deleted"}
)

// remove asks for confirmation, then removes the key {id} through the API (DELETE k.path+id).
func (c *keysScreen) remove(k removal) func(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	return func(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
		if !v.Can[k.right] {
			return refused(v)
		}
		id := r.PathValue("id")
		back := k.back
		var fields map[string]string
		if a := r.PostFormValue("agent"); k.fromAgent && a != "" {
			back = Prefix + "agents/" + url.PathEscape(a)
			fields = map[string]string{"agent": a}
		}
		if !c.ui.confirmed(w, r, s, v, confirmation{Title: k.title, Target: orID(c.names.refName(r, k.ref+id)), TargetID: id,
			Consequence: k.consequence, Button: k.button, Fields: fields, Back: back}) {
			return nil
		}
		if err := c.api.do(r, s, http.MethodDelete, k.path+url.PathEscape(id), nil); err != nil {
			return err
		}
		return c.ui.redirect(w, r, s, back, k.notice)
	}
}
