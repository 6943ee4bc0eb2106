package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/store"
)

// maxAppTopics bounds an application key's topic grants (the database checks it too).
const maxAppTopics = 100

type appKeyJSON struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Prefix     string           `json:"prefix"`
	Rights     []string         `json:"rights"`
	Topics     []store.AppTopic `json:"topics"`
	ExpiresAt  *time.Time       `json:"expiresAt"`
	RevokedAt  *time.Time       `json:"revokedAt"`
	LastUsedAt *time.Time       `json:"lastUsedAt"`
	CreatedAt  time.Time        `json:"createdAt"`
}

func appKeyView(k store.AppKey) appKeyJSON {
	return appKeyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Rights: k.Rights, Topics: k.Topics,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

type createAppKeyRequest struct {
	Name      string           `json:"name"`
	Rights    []string         `json:"rights"`
	Topics    []store.AppTopic `json:"topics"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

// AppKeyMQTT is the MQTT login of a new application key: the key as username, its own password.
type AppKeyMQTT struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// CreatedAppKey is the 201 answer of POST /api/v1/auth/app-keys (and the CLI's output): the only place
// the key and its MQTT password are ever shown.
type CreatedAppKey struct {
	ID        string           `json:"id"`
	Key       string           `json:"key"`
	Prefix    string           `json:"prefix"`
	Name      string           `json:"name"`
	Rights    []string         `json:"rights"`
	Topics    []store.AppTopic `json:"topics"`
	ExpiresAt *time.Time       `json:"expiresAt"`
	MQTT      AppKeyMQTT       `json:"mqtt"`
}

// ValidateAppKey checks a new application key's name, rights, topics and expiry, and returns the
// JSON field at fault with a message that says what to send instead. The CLI uses it too.
func ValidateAppKey(name string, rights []string, topics []store.AppTopic, expires *time.Time, now time.Time) (field, msg string) {
	if n := len([]rune(name)); n < 1 || n > 200 {
		return "name", "name is required (1 to 200 characters)"
	}
	all := store.AppRights()
	for i, r := range rights {
		if !slices.Contains(all, r) {
			return "rights", fmt.Sprintf("unknown right %q; rights are: %s", r, strings.Join(all, ", "))
		}
		if slices.Contains(rights[:i], r) {
			return "rights", fmt.Sprintf("right %q is listed twice", r)
		}
	}
	if len(topics) > maxAppTopics {
		return "topics", fmt.Sprintf("at most %d topics", maxAppTopics)
	}
	for i, tp := range topics {
		switch tp.Access {
		case "read", "write", "readwrite":
		default:
			return "topics", fmt.Sprintf("topics[%d].access must be read, write or readwrite", i)
		}
		if err := topicfilter.CheckGrant(tp.Pattern); err != nil {
			return "topics", fmt.Sprintf("topics[%d].pattern: %v", i, err)
		}
		if field, msg := presenceGrant(i, tp); field != "" {
			return field, msg
		}
	}
	if len(rights) == 0 && len(topics) == 0 {
		return "rights", "an application key needs at least one right or one topic"
	}
	if expires != nil && !expires.After(now) {
		return "expiresAt", "expiresAt must be in the future"
	}
	return "", ""
}

// createAppKey: POST /api/v1/auth/app-keys (admin access token only). The key and its MQTT password are
// in this answer only.
func (s *Server) createAppKey(w http.ResponseWriter, r *http.Request) error {
	var req createAppKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if field, msg := ValidateAppKey(req.Name, req.Rights, req.Topics, req.ExpiresAt, s.now()); field != "" {
		return invalidField(field, msg)
	}
	p := store.NewAppKeyParams{Name: req.Name, Kind: s.cfg.appKeyKind, Rights: req.Rights, Topics: req.Topics}
	if req.ExpiresAt != nil {
		p.Expires = *req.ExpiresAt
	}
	if u, ok := PrincipalFrom(r.Context()); ok {
		p.CreatedBy = u.UserID
	}
	k, key, pw, err := s.st.CreateAppKey(r.Context(), p, auditOf(r, "app_key_create", map[string]any{"name": req.Name}))
	if errors.Is(err, store.ErrInvalid) {
		return invalidField("topics", "the database refused the key's rights or topics; check them against the documentation")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/auth/app-keys/"+k.ID)
	writeJSON(w, http.StatusCreated, CreatedAppKey{
		ID: k.ID, Key: key.Reveal(), Prefix: k.Prefix, Name: k.Name, Rights: k.Rights, Topics: k.Topics,
		ExpiresAt: k.ExpiresAt, MQTT: AppKeyMQTT{Username: key.Reveal(), Password: pw.Reveal()},
	})
	return nil
}

// listAppKeys: GET /api/v1/auth/app-keys[?limit=&cursor=] (admin). Display prefixes only, never secrets.
func (s *Server) listAppKeys(w http.ResponseWriter, r *http.Request) error {
	kp, err := keysetPage(r.URL.Query())
	if err != nil {
		return err
	}
	keys, more, err := s.st.ListAppKeys(r.Context(), store.AppKeyPage{Limit: kp.Limit, AfterTime: kp.AfterTime, AfterID: kp.AfterID})
	if err != nil {
		return err
	}
	items := make([]appKeyJSON, 0, len(keys))
	for _, k := range keys {
		items = append(items, appKeyView(k))
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(k appKeyJSON) string { return FormatCursor(k.CreatedAt, k.ID) }))
	return nil
}

// revokeAppKey: DELETE /api/v1/auth/app-keys/{id} (admin). Its REST calls fail from now on; the
// database trigger tells every broker, which closes the key's MQTT sessions within a second.
func (s *Server) revokeAppKey(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.st.RevokeAppKey(r.Context(), r.PathValue("id"), auditOf(r, "app_key_revoke", nil)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
