package api

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/email"
	"github.com/iotauth/iotauth/backend/store"
)

type userJSON struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func userView(u store.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// ValidEmail reports whether s is acceptable as an operator's email (package email: 3–254 bytes, one @
// with something on both sides, no invisible or control characters, no mixed scripts).
func ValidEmail(s string) bool {
	_, err := email.Normalize(s)
	return err == nil
}

// normalizeEmail vets an address from a request and returns its canonical form, or the 400 that says
// what is wrong with it.
func normalizeEmail(field, s string) (string, error) {
	addr, err := email.Normalize(s)
	if err != nil {
		return "", invalidField(field, err.Error())
	}
	return addr, nil
}

// ValidRole reports whether role is one of admin, operator, viewer.
func ValidRole(role string) bool { return slices.Contains(anyRole, role) }

type createUserRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

// hashPassword hashes under the semaphore so that user management cannot starve logins either.
func (s *Server) hashPassword(r *http.Request, field, pw string) (string, error) {
	if err := s.hashSem.Acquire(r.Context()); err != nil {
		return "", err
	}
	defer s.hashSem.Release()
	h, err := passhash.HashPassword(pw)
	if errors.Is(err, passhash.ErrPasswordLength) {
		return "", invalidField(field, err.Error())
	}
	return h, err
}

// createUser: POST /api/v1/users (admin).
func (s *Server) createUser(w http.ResponseWriter, r *http.Request) error {
	var req createUserRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	addr, err := normalizeEmail("email", req.Email)
	if err != nil {
		return err
	}
	if !ValidRole(req.Role) {
		return invalidField("role", "role must be admin, operator or viewer")
	}
	h, err := s.hashPassword(r, "password", req.Password)
	if err != nil {
		return err
	}
	u, err := s.st.CreateUser(r.Context(), addr, h, req.Role, auditOf(r, "user_create", map[string]any{"role": req.Role}))
	if errors.Is(err, store.ErrConflict) {
		return problem(http.StatusConflict, CodeEmailTaken, "a user with this email exists")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/users/"+u.ID)
	writeJSON(w, http.StatusCreated, userView(u))
	return nil
}

// listUsers: GET /api/v1/users[?limit=&cursor=] (admin). Oldest first, keyset pagination.
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	p, err := keysetPage(r.URL.Query())
	if err != nil {
		return err
	}
	us, more, err := s.st.ListUsers(r.Context(), p)
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
func (s *Server) patchUser(w http.ResponseWriter, r *http.Request) error {
	var req patchUserRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if req.Role == nil && req.Disabled == nil && req.Password == nil {
		return badRequest(CodeValidation, "send at least one of role, disabled, password")
	}
	var ch store.UserChange
	detail := map[string]any{}
	if req.Role != nil {
		if !ValidRole(*req.Role) {
			return invalidField("role", "role must be admin, operator or viewer")
		}
		ch.Role = req.Role
		detail["role"] = *req.Role
	}
	if req.Disabled != nil {
		ch.Disabled = req.Disabled
		detail["disabled"] = *req.Disabled
	}
	if req.Password != nil {
		h, err := s.hashPassword(r, "password", *req.Password)
		if err != nil {
			return err
		}
		ch.PasswordHash = &h
		detail["passwordChanged"] = true
	}
	u, err := s.st.UpdateUser(r.Context(), r.PathValue("id"), ch, auditOf(r, "user_update", detail))
	if errors.Is(err, store.ErrLastAdmin) {
		return problem(http.StatusConflict, CodeLastAdmin, "this change would leave no enabled admin; promote another user first")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userView(u))
	return nil
}
