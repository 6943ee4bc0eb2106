package console

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// appKey is an application key as GET /api/v1/auth/app-keys lists it.
type appKey struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Prefix string   `json:"prefix"`
	Rights []string `json:"rights"`
	Topics []struct {
		Access  string `json:"access"`
		Pattern string `json:"pattern"`
	} `json:"topics"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	CreatedAt  time.Time  `json:"createdAt"`
}

// appRights are the rights an application key may hold (the API validates them again).
var appRights = []string{"agents:read", "agents:write", "keys:write", "provision:write", "audit:read", "license:read", "publish", "token:exchange"}

// keysPage: device API keys (every agent's, newest first as the API lists them) and application keys.
func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["keyList"] && !v.Can["appKeyList"] {
		return &problem{Status: http.StatusForbidden, Detail: "your role (" + v.Me.Role + ") may not see keys"}
	}
	var dev struct {
		Items []deviceKey `json:"items"`
	}
	var app struct {
		Items []appKey `json:"items"`
	}
	if v.Can["keyList"] {
		if err := c.get(r, s, "/api/v1/auth/api-keys", &dev); err != nil {
			return err
		}
	}
	if v.Can["appKeyList"] {
		if err := c.get(r, s, "/api/v1/auth/app-keys", &app); err != nil {
			return err
		}
	}
	v.Title, v.Nav, v.Notice = "Keys", "keys", notice(r)
	v.Data = map[string]any{"DeviceKeys": dev.Items, "AppKeys": app.Items, "Rights": appRights}
	c.render(w, r, s, http.StatusOK, "keys", v)
	return nil
}

// createDeviceKey: POST /api/v1/auth/api-keys for the agent in the path or the form; the key is shown
// on this answer only, with a copy button.
func (c *Console) createDeviceKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	agentID := r.PathValue("uuid")
	if agentID == "" {
		agentID = strings.TrimSpace(r.PostFormValue("agentUuid"))
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	res, err := c.call(r, s, http.MethodPost, "/api/v1/auth/api-keys", map[string]string{"name": name, "agentUuid": agentID}, nil)
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
	c.render(w, r, s, http.StatusCreated, "secret", v)
	return nil
}

// revokeDeviceKey: DELETE /api/v1/auth/api-keys/{id}; brokers close the agent's sessions that used it.
func (c *Console) revokeDeviceKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	res, err := c.call(r, s, http.MethodDelete, "/api/v1/auth/api-keys/"+url.PathEscape(r.PathValue("id")), nil, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	back := Prefix + "keys"
	if a := r.PostFormValue("agent"); a != "" {
		back = Prefix + "agents/" + url.PathEscape(a)
	}
	return c.redirect(w, r, s, back, "revoked")
}

// createAppKey: POST /api/v1/auth/app-keys with rights from checkboxes and topics one per line as
// "access pattern" (read, write or readwrite); the key and its MQTT password are shown once.
func (c *Console) createAppKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	topics := []map[string]string{}
	for _, l := range formLines(r.PostFormValue("topics")) {
		access, pattern, ok := strings.Cut(l, " ")
		if !ok {
			return &problem{Status: http.StatusBadRequest, Detail: "write each topic as: access pattern (for example: read sensors/#)"}
		}
		topics = append(topics, map[string]string{"access": strings.TrimSpace(access), "pattern": strings.TrimSpace(pattern)})
	}
	body := map[string]any{"name": strings.TrimSpace(r.PostFormValue("name")), "rights": nonNil(checked(r, "rights", appRights)), "topics": topics}
	res, err := c.call(r, s, http.MethodPost, "/api/v1/auth/app-keys", body, nil)
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
	c.render(w, r, s, http.StatusCreated, "secret", v)
	return nil
}

// revokeAppKey: DELETE /api/v1/auth/app-keys/{id}.
func (c *Console) revokeAppKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	res, err := c.call(r, s, http.MethodDelete, "/api/v1/auth/app-keys/"+url.PathEscape(r.PathValue("id")), nil, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	return c.redirect(w, r, s, Prefix+"keys", "app-revoked")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
