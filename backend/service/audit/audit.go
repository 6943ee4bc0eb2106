// Package audit is the service that reads the audit trail: its filters, checked the same way for the
// REST API, the console and the CLI, and its pages, newest first. Audit events never hold secrets.
package audit

import (
	"context"
	"regexp"
	"time"
	"unicode"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
)

// Store is what the service needs of the database (backend/store implements it).
type Store interface {
	ListAudit(ctx context.Context, p store.AuditPage) ([]store.AuditRecord, bool, error)
}

// Service reads the audit trail.
type Service struct{ st Store }

// New builds a Service on st.
func New(st Store) *Service { return &Service{st: st} }

// List returns a page of events, newest first.
func (s *Service) List(ctx context.Context, p store.AuditPage) ([]store.AuditRecord, bool, error) {
	return s.st.ListAudit(ctx, p)
}

// Filter is the audit trail's filters as text, as a query string or flags give them; empty means any.
type Filter struct {
	Action string // exact action name
	Actor  string // exact actor
	Agent  string // an agent's uuid: events whose target or actor is that agent
	Since  string // RFC 3339
	Until  string // RFC 3339, later than Since
}

// action is the shape of every audit action name (app_key_create, session_kick, …).
var action = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// Page checks f and returns it as a store query; a bad value is service.ErrInvalid naming the field.
func (f Filter) Page() (store.AuditPage, error) {
	var p store.AuditPage
	if v := f.Action; v != "" {
		if !action.MatchString(v) {
			return p, service.Invalid("action", "action must be an audit action name such as app_key_create (lower case, digits and _)")
		}
		p.Action = v
	}
	if v := f.Actor; v != "" {
		if len(v) > 300 || hasControl(v) {
			return p, service.Invalid("actor", "actor must be an audit actor such as user:<id>, cli:<name> or agent:<uuid> (at most 300 bytes)")
		}
		p.Actor = v
	}
	if v := f.Agent; v != "" {
		if !uuid.Valid(v) {
			return p, service.Invalid("agent", "agent must be an agent's uuid")
		}
		p.Agent = v
	}
	for _, t := range []struct {
		name, value string
		dst         *time.Time
	}{{"since", f.Since, &p.Since}, {"until", f.Until, &p.Until}} {
		if t.value != "" {
			v, err := time.Parse(time.RFC3339Nano, t.value)
			if err != nil {
				return p, service.Invalid(t.name, t.name+" must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*t.dst = v
		}
	}
	if !p.Since.IsZero() && !p.Until.IsZero() && !p.Since.Before(p.Until) {
		return p, service.Invalid("until", "until must be later than since")
	}
	return p, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
