package users_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/users"
	"github.com/iotauth/iotauth/backend/store"
)

type fakeStore struct {
	fail   error
	audits []store.AuditEvent
	change store.UserChange
	email  string
}

func (f *fakeStore) CreateUser(_ context.Context, email, hash, role string, e store.AuditEvent) (store.User, error) {
	if f.fail != nil {
		return store.User{}, f.fail
	}
	f.audits, f.email = append(f.audits, e), email
	return store.User{ID: "u2", Email: email, Role: role}, nil
}
func (f *fakeStore) ListUsers(context.Context, store.Page) ([]store.User, bool, error) {
	return nil, false, f.fail
}
func (f *fakeStore) UpdateUser(_ context.Context, id string, ch store.UserChange, e store.AuditEvent) (store.User, error) {
	if f.fail != nil {
		return store.User{}, f.fail
	}
	f.audits, f.change = append(f.audits, e), ch
	return store.User{ID: id}, nil
}
func (f *fakeStore) UserByID(_ context.Context, id string) (store.User, error) {
	return store.User{ID: id}, f.fail
}
func (f *fakeStore) UserByEmail(_ context.Context, email string) (store.User, error) {
	f.email = email
	return store.User{Email: email}, f.fail
}

var admin = service.Actor{Name: "user:u1", UserID: "u1"}

func cheap(pw string) (string, error) { return "hash:" + pw, nil }

func ptr[T any](v T) *T { return &v }

func TestCreate(t *testing.T) {
	cases := []struct {
		name     string
		req      users.NewUser
		storeErr error
		kind     error
		field    string
		code     string
	}{
		{"ok", users.NewUser{Email: "Ops@Example.com", Password: "long enough", Role: "operator"}, nil, nil, "", ""},
		{"bad email", users.NewUser{Email: "nobody", Password: "long enough", Role: "operator"}, nil, service.ErrInvalid, "email", ""},
		{"bad role", users.NewUser{Email: "a@example.com", Password: "long enough", Role: "root"}, nil, service.ErrInvalid, "role", ""},
		{"short password", users.NewUser{Email: "a@example.com", Password: "short", Role: "viewer"}, nil, service.ErrInvalid, "password", ""},
		{"taken", users.NewUser{Email: "a@example.com", Password: "long enough", Role: "viewer"}, store.ErrConflict, service.ErrConflict, "", service.CodeEmailTaken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeStore{fail: c.storeErr}
			s := users.New(f, users.Config{Hash: func(pw string) (string, error) {
				if len(pw) < 8 {
					return "", passhash.ErrPasswordLength
				}
				return cheap(pw)
			}})
			_, err := s.Create(context.Background(), admin, c.req)
			if c.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if f.email != "ops@example.com" || len(f.audits) != 1 || f.audits[0].Action != "user_create" || f.audits[0].Detail["role"] != "operator" {
					t.Fatalf("stored %q with audits %+v", f.email, f.audits)
				}
				return
			}
			var se *service.Error
			if !errors.As(err, &se) || !errors.Is(err, c.kind) || se.Field != c.field || se.Code != c.code {
				t.Fatalf("got %v, want kind %v field %q code %q", err, c.kind, c.field, c.code)
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	cases := []struct {
		name     string
		ch       users.Change
		storeErr error
		kind     error
		code     string
		detail   map[string]any
	}{
		{"nothing", users.Change{}, nil, service.ErrInvalid, "", nil},
		{"bad role", users.Change{Role: ptr("root")}, nil, service.ErrInvalid, "", nil},
		{"role", users.Change{Role: ptr("viewer")}, nil, nil, "", map[string]any{"role": "viewer"}},
		{"disable and password", users.Change{Disabled: ptr(true), Password: ptr("new password")}, nil, nil, "",
			map[string]any{"disabled": true, "passwordChanged": true}},
		{"last admin", users.Change{Disabled: ptr(true)}, store.ErrLastAdmin, service.ErrConflict, service.CodeLastAdmin, nil},
		{"missing", users.Change{Disabled: ptr(true)}, store.ErrNotFound, service.ErrNotFound, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeStore{fail: c.storeErr}
			s := users.New(f, users.Config{Hash: cheap})
			_, err := s.Update(context.Background(), admin, "u2", c.ch)
			if c.kind != nil {
				var se *service.Error
				if !errors.As(err, &se) || !errors.Is(err, c.kind) || se.Code != c.code {
					t.Fatalf("got %v, want kind %v code %q", err, c.kind, c.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.audits) != 1 || f.audits[0].Action != "user_update" || len(f.audits[0].Detail) != len(c.detail) {
				t.Fatalf("audits %+v, want detail %v", f.audits, c.detail)
			}
			for k, v := range c.detail {
				if f.audits[0].Detail[k] != v {
					t.Errorf("detail %s = %v, want %v", k, f.audits[0].Detail[k], v)
				}
			}
			if c.ch.Password != nil && (f.change.PasswordHash == nil || !strings.HasPrefix(*f.change.PasswordHash, "hash:")) {
				t.Errorf("the password reached the store unhashed: %+v", f.change)
			}
		})
	}
}

func TestFind(t *testing.T) {
	f := &fakeStore{}
	s := users.New(f, users.Config{Hash: cheap})
	if _, err := s.Find(context.Background(), "Ops@Example.com"); err != nil || f.email != "ops@example.com" {
		t.Errorf("find by email: %v, looked up %q", err, f.email)
	}
	var se *service.Error
	if _, err := s.Find(context.Background(), "@"); !errors.As(err, &se) || !errors.Is(err, service.ErrNotFound) || se.Msg == "" {
		t.Errorf("a malformed email: %v, want not found saying why", err)
	}
	f.fail = store.ErrNotFound
	if _, err := s.Find(context.Background(), "u9"); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("a missing id: %v", err)
	}
}
