// Package users is the service for operator accounts: create, list, change (role, disabled, password)
// and find. It vets emails (backend/email), roles and passwords, hashes passwords with argon2id under a
// semaphore shared with logins (so that account management cannot starve them), and audits every change
// in the store transaction that makes it. The store refuses a change that would leave no enabled admin.
package users

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/email"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/throttle"
)

// Store is what the service needs of the database (backend/store implements it).
type Store interface {
	CreateUser(ctx context.Context, email, passwordHash, role string, audit store.AuditEvent) (store.User, error)
	ListUsers(ctx context.Context, p store.Page) ([]store.User, bool, error)
	UpdateUser(ctx context.Context, id string, ch store.UserChange, audit store.AuditEvent) (store.User, error)
	UserByID(ctx context.Context, id string) (store.User, error)
	UserByEmail(ctx context.Context, email string) (store.User, error)
}

// Roles are the operator roles, from most to least powerful.
var Roles = []string{store.RoleAdmin, store.RoleOperator, store.RoleViewer}

// ValidRole reports whether role is one of admin, operator, viewer.
func ValidRole(role string) bool { return slices.Contains(Roles, role) }

// Config configures a Service.
type Config struct {
	// HashSem bounds concurrent password hashing; share it with the logins. Nil: unbounded (the CLI).
	HashSem throttle.Semaphore
	// Hash hashes a password (default passhash.HashPassword; tests make it cheap).
	Hash func(password string) (string, error)
}

// Service manages operator accounts.
type Service struct {
	st  Store
	cfg Config
}

// New builds a Service on st.
func New(st Store, c Config) *Service {
	if c.Hash == nil {
		c.Hash = passhash.HashPassword
	}
	return &Service{st: st, cfg: c}
}

// NewUser asks for an operator account.
type NewUser struct {
	Email    string
	Password string
	Role     string
}

// Create makes an operator account. A taken email is a conflict (email_taken).
func (s *Service) Create(ctx context.Context, a service.Actor, u NewUser) (store.User, error) {
	addr, err := email.Normalize(u.Email)
	if err != nil {
		return store.User{}, service.Invalid("email", err.Error())
	}
	if !ValidRole(u.Role) {
		return store.User{}, service.Invalid("role", "role must be admin, operator or viewer")
	}
	h, err := s.hash(ctx, u.Password)
	if err != nil {
		return store.User{}, err
	}
	created, err := s.st.CreateUser(ctx, addr, h, u.Role, a.Event("user_create", map[string]any{"role": u.Role}))
	if errors.Is(err, store.ErrConflict) {
		return store.User{}, service.Conflict(service.CodeEmailTaken, "a user with this email exists", err)
	}
	return created, err
}

// List returns a page of operators, oldest first.
func (s *Service) List(ctx context.Context, p store.Page) ([]store.User, bool, error) {
	return s.st.ListUsers(ctx, p)
}

// Change is what an update sets; nil members stay as they are.
type Change struct {
	Role     *string
	Disabled *bool
	Password *string
}

// Update changes an operator. Disabling them or changing their password revokes their refresh families
// and invalidates their access tokens (in the store). A change that would leave no enabled admin is a
// conflict (last_admin).
func (s *Service) Update(ctx context.Context, a service.Actor, id string, c Change) (store.User, error) {
	if c.Role == nil && c.Disabled == nil && c.Password == nil {
		return store.User{}, service.Invalid("", "send at least one of role, disabled, password")
	}
	var ch store.UserChange
	detail := map[string]any{}
	if c.Role != nil {
		if !ValidRole(*c.Role) {
			return store.User{}, service.Invalid("role", "role must be admin, operator or viewer")
		}
		ch.Role = c.Role
		detail["role"] = *c.Role
	}
	if c.Disabled != nil {
		ch.Disabled = c.Disabled
		detail["disabled"] = *c.Disabled
	}
	if c.Password != nil {
		h, err := s.hash(ctx, *c.Password)
		if err != nil {
			return store.User{}, err
		}
		ch.PasswordHash = &h
		detail["passwordChanged"] = true
	}
	u, err := s.st.UpdateUser(ctx, id, ch, a.Event("user_update", detail))
	if errors.Is(err, store.ErrLastAdmin) {
		return store.User{}, service.Conflict(service.CodeLastAdmin, "this change would leave no enabled admin; promote another user first", err)
	}
	return u, service.NotFoundIfMissing(err)
}

// Find returns the operator whose id or email (anything with an @) is who.
func (s *Service) Find(ctx context.Context, who string) (store.User, error) {
	if !strings.Contains(who, "@") {
		u, err := s.st.UserByID(ctx, who)
		return u, service.NotFoundIfMissing(err)
	}
	addr, err := email.Normalize(who)
	if err != nil {
		return store.User{}, service.NotFound("", err.Error(), nil)
	}
	u, err := s.st.UserByEmail(ctx, addr)
	return u, service.NotFoundIfMissing(err)
}

// CheckPassword refuses a password of the wrong length (8 to 128 characters) without hashing it.
func CheckPassword(pw string) error {
	if n := len([]rune(pw)); n < passhash.MinPasswordLen || n > passhash.MaxPasswordLen {
		return service.Invalid("password", passhash.ErrPasswordLength.Error())
	}
	return nil
}

// hash hashes a password under the semaphore; a password of the wrong length is refused.
func (s *Service) hash(ctx context.Context, pw string) (string, error) {
	if s.cfg.HashSem != nil {
		if err := s.cfg.HashSem.Acquire(ctx); err != nil {
			return "", err
		}
		defer s.cfg.HashSem.Release()
	}
	h, err := s.cfg.Hash(pw)
	if errors.Is(err, passhash.ErrPasswordLength) {
		return "", service.Invalid("password", err.Error())
	}
	return h, err
}
