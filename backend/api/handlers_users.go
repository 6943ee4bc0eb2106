package api

import (
	"net/http"

	"github.com/iotauth/iotauth/backend/email"
	"github.com/iotauth/iotauth/backend/service/users"
	"github.com/iotauth/iotauth/backend/view"
)

// usersAPI serves operator accounts (backend/service/users).
type usersAPI struct {
	svc *users.Service
}

type userJSON = view.User

var userView = view.UserOf

// ValidEmail reports whether s is acceptable as an operator's email (package email: 3–254 bytes, one @
// with something on both sides, no invisible or control characters, no mixed scripts).
func ValidEmail(s string) bool {
	_, err := email.Normalize(s)
	return err == nil
}

// ValidRole reports whether role is one of admin, operator, viewer.
func ValidRole(role string) bool { return users.ValidRole(role) }

type createUserRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

// createUser: POST /api/v1/users (admin).
func (h usersAPI) createUser(w http.ResponseWriter, r *http.Request) error {
	var req createUserRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	u, err := h.svc.Create(r.Context(), actorOf(r), users.NewUser{Email: req.Email, Password: req.Password, Role: req.Role})
	if err != nil {
		return err
	}
	writeCreated(w, "/api/v1/users/"+u.ID, userView(u))
	return nil
}

// listUsers: GET /api/v1/users[?limit=&cursor=] (admin). Oldest first, keyset pagination.
func (h usersAPI) listUsers(w http.ResponseWriter, r *http.Request) error {
	p, err := keysetPage(r.URL.Query())
	if err != nil {
		return err
	}
	us, more, err := h.svc.List(r.Context(), p)
	if err != nil {
		return err
	}
	items := make([]userJSON, 0, len(us))
	for _, u := range us {
		items = append(items, userView(u))
	}
	writeJSON(w, http.StatusOK, listBody(items, more, func(u userJSON) string { return FormatCursor(u.CreatedAt, u.ID) }))
	return nil
}

type patchUserRequest struct {
	Role     *string `json:"role"`
	Disabled *bool   `json:"disabled"`
	Password *string `json:"password"`
}

// patchUser: PATCH /api/v1/users/{id} (admin). Disabling a user or changing their password revokes
// all their refresh families and invalidates their access tokens.
func (h usersAPI) patchUser(w http.ResponseWriter, r *http.Request) error {
	var req patchUserRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	u, err := h.svc.Update(r.Context(), actorOf(r), r.PathValue("id"), users.Change{Role: req.Role, Disabled: req.Disabled, Password: req.Password})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userView(u))
	return nil
}
