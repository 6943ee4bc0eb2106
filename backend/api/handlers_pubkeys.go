package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
	"github.com/iotauth/iotauth/backend/store"
)

// Bounds of a publishable key (the database checks them too).
const (
	maxPKOrigins   = 20
	maxPKProviders = 32
)

type publishableKeyJSON struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Prefix     string           `json:"prefix"`
	Origins    []string         `json:"origins"`
	Topics     []store.AppTopic `json:"topics"`
	Providers  []string         `json:"providers"`
	ExpiresAt  *time.Time       `json:"expiresAt"`
	RevokedAt  *time.Time       `json:"revokedAt"`
	LastUsedAt *time.Time       `json:"lastUsedAt"`
	CreatedAt  time.Time        `json:"createdAt"`
}

func publishableKeyView(k store.PublishableKey) publishableKeyJSON {
	return publishableKeyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Origins: k.Origins, Topics: k.Topics, Providers: k.Providers,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt}
}

type createPublishableKeyRequest struct {
	Name      string           `json:"name"`
	Origins   []string         `json:"origins"`
	Topics    []store.AppTopic `json:"topics"`
	Providers []string         `json:"providers"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

// CreatedPublishableKey is the 201 answer of POST /api/v1/auth/publishable-keys (and the CLI's output):
// the only place the key is shown.
type CreatedPublishableKey struct {
	ID        string           `json:"id"`
	Key       string           `json:"key"`
	Prefix    string           `json:"prefix"`
	Name      string           `json:"name"`
	Origins   []string         `json:"origins"`
	Topics    []store.AppTopic `json:"topics"`
	Providers []string         `json:"providers"`
	ExpiresAt *time.Time       `json:"expiresAt"`
}

var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ValidatePublishableKey checks a new publishable key's fields and returns the JSON field at fault with
// a message that says what to send instead. The CLI uses it too.
func ValidatePublishableKey(name string, origins []string, topics []store.AppTopic, providers []string, expires *time.Time, now time.Time) (field, msg string) {
	if n := len([]rune(name)); n < 1 || n > 200 {
		return "name", "name is required (1 to 200 characters)"
	}
	if len(origins) < 1 || len(origins) > maxPKOrigins {
		return "origins", fmt.Sprintf("give 1 to %d origins, each an exact https://host[:port]", maxPKOrigins)
	}
	for i, o := range origins {
		if m := ValidOrigin(o); m != "" {
			return "origins", fmt.Sprintf("origins[%d] %s", i, m)
		}
		if slices.Contains(origins[:i], o) {
			return "origins", fmt.Sprintf("origin %q is listed twice", o)
		}
	}
	if len(topics) < 1 || len(topics) > maxAppTopics {
		return "topics", fmt.Sprintf("give 1 to %d topics: the most a credential exchanged with this key may hold", maxAppTopics)
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
	}
	if len(providers) < 1 || len(providers) > maxPKProviders {
		return "providers", fmt.Sprintf("give 1 to %d identity provider names (from OIDC_PROVIDERS_FILE)", maxPKProviders)
	}
	for i, p := range providers {
		if !providerNameRE.MatchString(p) || p == "iotauth" {
			return "providers", fmt.Sprintf("providers[%d] must be a configured identity provider's name (not iotauth)", i)
		}
		if slices.Contains(providers[:i], p) {
			return "providers", fmt.Sprintf("provider %q is listed twice", p)
		}
	}
	if expires != nil && !expires.After(now) {
		return "expiresAt", "expiresAt must be in the future"
	}
	return "", ""
}

// ValidOrigin checks an exact browser origin: https://host[:port] in lower case, no path, query,
// fragment or user; http only for localhost, 127.0.0.1 and [::1]; no default port (browsers omit it
// from Origin, so it would never match). It returns what is wrong, or "".
func ValidOrigin(o string) string {
	const want = "must be an exact origin like https://app.example.com or https://app.example.com:8443"
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return want + " (no path, query or fragment)"
	}
	if o != strings.ToLower(o) {
		return "must be in lower case, as browsers send it"
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return "must use https (http only for localhost)"
		}
	default:
		return want
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(p, "0") {
			return "has a port that is not 1 to 65535"
		}
		if (u.Scheme == "https" && n == 443) || (u.Scheme == "http" && n == 80) {
			return "must leave out the default port (browsers send the origin without it)"
		}
	}
	return ""
}

// createPublishableKey: POST /api/v1/auth/publishable-keys (admin access token only). The key is in this
// answer only.
func (s *Server) createPublishableKey(w http.ResponseWriter, r *http.Request) error {
	var req createPublishableKeyRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if field, msg := ValidatePublishableKey(req.Name, req.Origins, req.Topics, req.Providers, req.ExpiresAt, s.now()); field != "" {
		return invalidField(field, msg)
	}
	for _, p := range req.Providers {
		if set := s.cfg.Exchange.Providers; set == nil {
			return invalidField("providers", "no identity provider is configured: set OIDC_PROVIDERS_FILE first")
		} else if _, ok := set.Provider(p); !ok {
			return invalidField("providers", fmt.Sprintf("identity provider %q is not configured (OIDC_PROVIDERS_FILE)", p))
		}
	}
	p := store.NewPublishableKeyParams{Name: req.Name, Kind: secret.PublishableKindFor(s.cfg.KeyKind), Origins: req.Origins, Topics: req.Topics, Providers: req.Providers}
	if req.ExpiresAt != nil {
		p.Expires = *req.ExpiresAt
	}
	if u, ok := PrincipalFrom(r.Context()); ok {
		p.CreatedBy = u.UserID
	}
	k, key, err := s.st.CreatePublishableKey(r.Context(), p, auditOf(r, "publishable_key_create", map[string]any{"name": req.Name}))
	if errors.Is(err, store.ErrInvalid) {
		return invalidField("topics", "the database refused the key's origins, topics or providers; check them against the documentation")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/auth/publishable-keys/"+k.ID)
	writeJSON(w, http.StatusCreated, CreatedPublishableKey{ID: k.ID, Key: key.Reveal(), Prefix: k.Prefix, Name: k.Name,
		Origins: k.Origins, Topics: k.Topics, Providers: k.Providers, ExpiresAt: k.ExpiresAt})
	return nil
}

// listPublishableKeys: GET /api/v1/auth/publishable-keys[?limit=&cursor=] (admin). Prefixes only.
func (s *Server) listPublishableKeys(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p := store.AppKeyPage{}
	var err error
	if p.Limit, err = pageLimit(q); err != nil {
		return err
	}
	if p.AfterTime, p.AfterID, err = pageCursor(q); err != nil {
		return err
	}
	keys, more, err := s.st.ListPublishableKeys(r.Context(), p)
	if err != nil {
		return err
	}
	items := make([]publishableKeyJSON, 0, len(keys))
	for _, k := range keys {
		items = append(items, publishableKeyView(k))
	}
	out := map[string]any{"items": items}
	if more && len(keys) > 0 {
		last := keys[len(keys)-1]
		out["nextCursor"] = fmt.Sprintf("%d-%s", last.CreatedAt.UnixMicro(), last.ID)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokePublishableKey: DELETE /api/v1/auth/publishable-keys/{id} (admin). Exchanges with it fail from
// now on, and the credentials it led to are denied in the same transaction (their sessions close).
func (s *Server) revokePublishableKey(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.st.RevokePublishableKey(r.Context(), r.PathValue("id"), auditOf(r, "publishable_key_revoke", nil)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
