// Package pgstore adapts backend/store to what the plugin's engine and presence recorder declare they
// need (plugin/engine's Store and Feed, plugin/presence's Store): it converts between the engine's plain
// types and the store's, so that the engine never reaches pgx. It holds no logic of its own.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/plugin/denylist"
	"github.com/iotauth/iotauth/plugin/engine"
	"github.com/iotauth/iotauth/plugin/presence"
)

// Store is the engine's Store over a *store.Store.
type Store struct{ St *store.Store }

// LookupCredentials reads the credentials of the given keys.
func (s Store) LookupCredentials(ctx context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error) {
	return s.St.Credentials.LookupCredentials(ctx, ds)
}

// ActiveCredentials calls fn for every active credential.
func (s Store) ActiveCredentials(ctx context.Context, fn func(credential.Credential)) error {
	return s.St.Credentials.ActiveCredentials(ctx, fn)
}

// KeyDigests calls fn for the digest of every key.
func (s Store) KeyDigests(ctx context.Context, fn func(secret.Digest)) error {
	return s.St.Credentials.KeyDigests(ctx, fn)
}

// LegacyDigests reads the set of live legacy usernames.
func (s Store) LegacyDigests(ctx context.Context) (map[secret.Digest]struct{}, error) {
	return s.St.Credentials.LegacyDigests(ctx)
}

// Denials reads the subject denials made since since.
func (s Store) Denials(ctx context.Context, since time.Time) ([]denylist.Denial, error) {
	ds, err := s.St.Credentials.Denials(ctx, since)
	if err != nil {
		return nil, err
	}
	out := make([]denylist.Denial, len(ds))
	for i, d := range ds {
		out[i] = denylist.Denial{Subject: d.Subject, DeniedAt: d.DeniedAt}
	}
	return out, nil
}

func auditEvent(e engine.AuditEvent) store.AuditEvent {
	return store.AuditEvent{Actor: e.Actor, Action: e.Action, Target: e.Target, Outcome: e.Outcome, Detail: e.Detail}
}

// AuditMany writes audit events in one transaction.
func (s Store) AuditMany(ctx context.Context, es []engine.AuditEvent) error {
	out := make([]store.AuditEvent, len(es))
	for i, e := range es {
		out[i] = auditEvent(e)
	}
	return s.St.AuditTrail.AuditMany(ctx, out)
}

// RecordFastHashes records fast hashes of imported devices.
func (s Store) RecordFastHashes(ctx context.Context, hs []engine.FastHash, audit engine.AuditEvent) (int64, error) {
	out := make([]store.FastHash, len(hs))
	for i, h := range hs {
		out[i] = store.FastHash(h)
	}
	return s.St.Credentials.RecordFastHashes(ctx, out, auditEvent(audit))
}

// TouchKeys records the keys' use.
func (s Store) TouchKeys(ctx context.Context, ds []secret.Digest) error {
	return s.St.Credentials.TouchKeys(ctx, ds)
}

// Ping checks that PostgreSQL answers.
func (s Store) Ping(ctx context.Context) error { return s.St.Ping(ctx) }

// Feed is the engine's Feed: the change feed LISTENs through St and sends its probes through Probe, the
// store queries and writes go through (nil: St itself). See store.ListenOptions.
type Feed struct {
	St, Probe *store.Store
}

// Listen delivers the store's change notifications to h. A feed that does not receive the probes sent
// through Probe fails with engine.ErrFeedDeaf.
func (f Feed) Listen(ctx context.Context, h engine.ListenHandler) {
	f.St.Listen(ctx, store.ListenHandler{
		Changed: func(c store.Change) {
			d, ok := c.Digest()
			h.Changed(engine.Change{Table: c.Table, Op: c.Op, Agent: c.Agent, Key: d, HasKey: ok,
				Subject: c.Subject, DeniedAt: c.DeniedAt, Live: c.Live})
		},
		Connected: h.Connected,
		Failed: func(err error) {
			if errors.Is(err, store.ErrListenDeaf) {
				err = fmt.Errorf("%w: %w", engine.ErrFeedDeaf, err)
			}
			h.Failed(err)
		},
	}, store.ListenOptions{ProbeVia: f.Probe})
}

// Presence adapts the store to the presence recorder's Store. The recorder calls it from one writer at a
// time, so PresenceWrite reuses its rows between batches.
type Presence struct {
	St   *store.Store
	rows []store.PresenceRow
}

// PresenceStart registers this start of the broker.
func (p *Presence) PresenceStart(ctx context.Context, broker, incarnation string, timeout time.Duration) (int64, error) {
	return p.St.Presence.PresenceStart(ctx, broker, incarnation, timeout)
}

// PresenceWrite writes session starts and ends.
func (p *Presence) PresenceWrite(ctx context.Context, broker, incarnation string, rows []presence.Row) error {
	out := p.rows[:0]
	for _, r := range rows {
		out = append(out, store.PresenceRow(r))
	}
	err := p.St.Presence.PresenceWrite(ctx, broker, incarnation, out)
	clear(out) // keeps no session's strings alive
	p.rows = out[:0]
	return err
}

// PresenceHeartbeat renews the broker's presence.
func (p *Presence) PresenceHeartbeat(ctx context.Context, broker, incarnation string, timeout time.Duration) (bool, error) {
	return p.St.Presence.PresenceHeartbeat(ctx, broker, incarnation, timeout)
}

// PresenceReconcile makes PostgreSQL's open sessions of this broker the live ones.
func (p *Presence) PresenceReconcile(ctx context.Context, broker, incarnation string, live []presence.Row, batch int, at time.Time) (int64, error) {
	out := make([]store.PresenceRow, len(live))
	for i, r := range live {
		out[i] = store.PresenceRow(r)
	}
	return p.St.Presence.PresenceReconcile(ctx, broker, incarnation, out, batch, at)
}
