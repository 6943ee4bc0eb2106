package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/secret"
)

// Channel is the NOTIFY channel the credential triggers announce changes on.
const Channel = "iotauth_credentials"

// AllAgents is the agent a change names when a whole table was emptied (TRUNCATE).
const AllAgents = "*"

// Change is one announced credential change.
type Change struct {
	Table string `json:"table"`
	Op    string `json:"op"`
	Agent string `json:"agent"`
	// DigestHex is the hex SHA-256 digest of the API key, for api_keys changes.
	DigestHex string `json:"digest"`
	// Subject and DeniedAt are set for subject_denials changes (schema 006): a subject whose short-lived
	// MQTT credentials issued at or before DeniedAt are dead.
	Subject  string    `json:"subject"`
	DeniedAt time.Time `json:"deniedAt"`
	// Live is set for changes of Table LegacyTable: whether the legacy username now admits.
	Live bool `json:"live"`
}

// LegacyTable is the Table of a change to the set of live legacy usernames (imported devices).
const LegacyTable = "legacy_usernames"

// Digest decodes DigestHex; ok is false when the change names no key.
func (c Change) Digest() (d secret.Digest, ok bool) {
	if len(c.DigestHex) != 2*len(d) {
		return d, false
	}
	if _, err := hex.Decode(d[:], []byte(c.DigestHex)); err != nil {
		return d, false
	}
	return d, true
}

// ListenHandler receives what the listener sees. Connected is called each time LISTEN is (re-)established:
// changes made while it was down were missed, so the receiver must re-check what it caches. Failed is
// called for each failed attempt (the receiver rate-limits any logging).
type ListenHandler struct {
	Changed   func(Change)
	Connected func(reconnect bool)
	Failed    func(err error)
}

// Listen holds a dedicated connection that LISTENs on Channel and calls h for each change, reconnecting
// with capped exponential backoff until ctx ends.
func (s *Store) Listen(ctx context.Context, h ListenHandler) {
	cfg := s.pool.Config().ConnConfig.Copy()
	backoff := 100 * time.Millisecond
	connectedBefore := false
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, h, &connectedBefore, &backoff)
		if ctx.Err() != nil {
			return
		}
		if h.Failed != nil && err != nil {
			h.Failed(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, h ListenHandler, connectedBefore *bool, backoff *time.Duration) error {
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.ConnectConfig(dialCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	*backoff = 100 * time.Millisecond
	if h.Connected != nil {
		h.Connected(*connectedBefore)
	}
	*connectedBefore = true
	for {
		// Wake up now and then to notice a connection that died silently (a paused server).
		waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if waitCtx.Err() != nil && !conn.IsClosed() {
				pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				perr := conn.Ping(pingCtx)
				cancel()
				if perr == nil {
					continue
				}
				return perr
			}
			return err
		}
		var c Change
		if json.Unmarshal([]byte(n.Payload), &c) != nil || (c.Agent == "" && c.Subject == "") {
			continue
		}
		if h.Changed != nil {
			h.Changed(c)
		}
	}
}
