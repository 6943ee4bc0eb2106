package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/uuid"
)

const credentialColumns = `
SELECT k.digest, k.id::text, k.agent_uuid::text, a.status, k.revoked_at IS NOT NULL, extract(epoch FROM k.expires_at)::float8, k.rights,
       c.password_hash,
       (SELECT array_agg(r.access || ' ' || r.pattern ORDER BY r.id) FROM acl_rules r WHERE r.agent_uuid = k.agent_uuid),
       false, k.legacy_username IS NOT NULL, k.legacy_client_id
  FROM api_keys k
  JOIN agents a ON a.uuid = k.agent_uuid
  LEFT JOIN mqtt_credentials c ON c.agent_uuid = k.agent_uuid`

// appCredentialColumns reads an application key in the shape of a device credential: the key's own id
// stands in for the agent (it is the group its sessions are invalidated, re-checked and kicked by), it
// is always "active" (an application key has no agent to disable), and its topics are its rules.
const appCredentialColumns = `
SELECT k.digest, k.id::text, k.id::text, 'active', k.revoked_at IS NOT NULL, extract(epoch FROM k.expires_at)::float8, k.rights,
       k.mqtt_password_hash,
       (SELECT array_agg((t ->> 'access') || ' ' || (t ->> 'pattern') ORDER BY o) FROM jsonb_array_elements(k.topics) WITH ORDINALITY AS x (t, o)),
       true, false, NULL::text
  FROM app_keys k`

// LookupCredential returns the credential for a key digest, ErrNotFound, or ErrCorrupt (with the
// digest and whatever identified the agent filled in) for a row that cannot be trusted.
//
// On a store with SocketTimeout the connection is acquired under ctx, and ctx's deadline is then set on
// the socket instead of being watched: a query under a cancellable context would start a goroutine to
// watch it and hand the caller's thread to the scheduler, which is what those stores exist to avoid.
func (s Credentials) LookupCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	return s.lookupOne(ctx, credentialColumns+` WHERE k.digest = $1`, d)
}

// LookupAppCredential is LookupCredential for an application key (its digest is looked up in app_keys
// only, so a device key's connect costs what it did before application keys existed).
func (s Credentials) LookupAppCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	return s.lookupOne(ctx, appCredentialColumns+` WHERE k.digest = $1`, d)
}

func (s Credentials) lookupOne(ctx context.Context, query string, d secret.Digest) (credential.Credential, error) {
	c, err := s.lookupOnce(ctx, query, d)
	if err != nil && connBroken(err) && ctx.Err() == nil {
		// A pooled connection that died (a failover, a restart): a read is safe to repeat, on a fresh one.
		s.pool.Reset()
		c, err = s.lookupOnce(ctx, query, d)
	}
	return c, err
}

func (s Credentials) lookupOnce(ctx context.Context, query string, d secret.Digest) (credential.Credential, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return credential.Credential{}, fmt.Errorf("look up key: %w", err)
	}
	defer conn.Release()
	qctx := ctx
	if s.blocking {
		qctx = context.WithoutCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			// What is left of ctx's deadline bounds the whole query, however many reads and writes it
			// takes (two round trips on a connection's first query: prepare, then execute).
			if time.Until(dl) <= 0 {
				return credential.Credential{}, fmt.Errorf("look up key: %w", context.DeadlineExceeded)
			}
			nc := conn.Conn().PgConn().Conn()
			if err := nc.SetDeadline(dl); err != nil {
				return credential.Credential{}, fmt.Errorf("look up key: %w", err)
			}
			defer nc.SetDeadline(time.Time{})
		}
	}
	rows, err := conn.Query(qctx, query, d[:])
	if err != nil {
		return credential.Credential{}, fmt.Errorf("look up key: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return credential.Credential{}, fmt.Errorf("look up key: %w", err)
		}
		return credential.Credential{}, ErrNotFound
	}
	c, err := scanCredential(rows)
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	return c, err
}

// LookupCredentials returns the credentials for many digests at once (for re-checking live sessions).
// Digests without a row are absent from the map; rows that cannot be trusted are present with Corrupt set.
func (s Credentials) LookupCredentials(ctx context.Context, ds []secret.Digest) (map[secret.Digest]credential.Credential, error) {
	raw := make([][]byte, len(ds))
	for i := range ds {
		raw[i] = ds[i][:]
	}
	rows, err := s.idem().Query(ctx, credentialColumns+` WHERE k.digest = ANY($1)
UNION ALL`+appCredentialColumns+` WHERE k.digest = ANY($1)`, raw)
	if err != nil {
		return nil, fmt.Errorf("look up keys: %w", err)
	}
	defer rows.Close()
	out := make(map[secret.Digest]credential.Credential, len(ds))
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			c.Corrupt = true
		}
		out[c.Digest] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up keys: %w", err)
	}
	return out, nil
}

// ActiveCredentials streams every usable credential (key not revoked or expired, agent active) to fn,
// for preloading a broker's cache. Corrupt rows are skipped and counted in the returned error.
func (s Credentials) ActiveCredentials(ctx context.Context, fn func(credential.Credential)) error {
	rows, err := s.idem().Query(ctx, credentialColumns+`
 WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) AND a.status = 'active'
UNION ALL`+appCredentialColumns+`
 WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())`)
	if err != nil {
		return fmt.Errorf("load active keys: %w", err)
	}
	defer rows.Close()
	corrupt := 0
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			corrupt++
			continue
		}
		fn(c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load active keys: %w", err)
	}
	if corrupt > 0 {
		return fmt.Errorf("%d credential rows skipped: %w", corrupt, ErrCorrupt)
	}
	return nil
}

// KeyDigests streams the digest of every device key, legacy username and application key that is not
// revoked (whatever its expiry or its agent's status, which can change back), for the plugin's set of
// known keys.
func (s Credentials) KeyDigests(ctx context.Context, fn func(secret.Digest)) error {
	rows, err := s.pool.Query(ctx, `SELECT digest FROM api_keys WHERE revoked_at IS NULL
UNION ALL SELECT digest FROM app_keys WHERE revoked_at IS NULL`)
	if err != nil {
		return fmt.Errorf("load key digests: %w", err)
	}
	defer rows.Close()
	var raw []byte
	var d secret.Digest
	for rows.Next() {
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("load key digests: %w", err)
		}
		if len(raw) == len(d) {
			copy(d[:], raw)
			fn(d)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load key digests: %w", err)
	}
	return nil
}

// scanCredential reads one row into a Credential, turning NULLs and malformed values into ErrCorrupt
// instead of scan errors, so that one bad row denies one agent and nothing else.
func scanCredential(rows pgx.Rows) (credential.Credential, error) {
	var (
		digest                      []byte
		keyID, agentUUID, status, h *string
		revoked                     *bool
		expires                     *float64 // epoch seconds: 'infinity' is a legal timestamptz, not a time.Time
		rights, rules               []*string
		app, legacy                 bool
		legacyClientID              *string
	)
	if err := rows.Scan(&digest, &keyID, &agentUUID, &status, &revoked, &expires, &rights, &h, &rules, &app, &legacy, &legacyClientID); err != nil {
		return credential.Credential{}, fmt.Errorf("scan key row: %v: %w", err, ErrCorrupt)
	}
	c := credential.Credential{App: app, Legacy: legacy}
	if legacyClientID != nil {
		c.LegacyClientID = *legacyClientID
	}
	if len(digest) != len(c.Digest) {
		return c, fmt.Errorf("key row has a digest of %d bytes: %w", len(digest), ErrCorrupt)
	}
	copy(c.Digest[:], digest)
	if agentUUID != nil && uuid.Valid(*agentUUID) {
		c.AgentUUID = *agentUUID // so the caller can say which agent is denied
	}
	if keyID == nil || agentUUID == nil || status == nil || revoked == nil {
		return c, fmt.Errorf("key row has NULLs in required columns: %w", ErrCorrupt)
	}
	if !uuid.Valid(*agentUUID) || !uuid.Valid(*keyID) {
		return c, fmt.Errorf("key row has a malformed uuid: %w", ErrCorrupt)
	}
	c.KeyID, c.AgentUUID, c.AgentStatus, c.KeyRevoked = *keyID, *agentUUID, *status, *revoked
	if expires != nil {
		switch e := *expires; {
		case math.IsInf(e, 1) || math.IsNaN(e):
			// 'infinity': never expires.
		case math.IsInf(e, -1):
			c.KeyExpiresAt = time.Unix(0, 1) // '-infinity': expired long ago
		default:
			sec, frac := math.Modf(e)
			c.KeyExpiresAt = time.Unix(int64(sec), int64(frac*1e9))
		}
	}
	if h != nil {
		c.PasswordHash = *h
	}
	for _, r := range rights {
		if r == nil {
			return c, fmt.Errorf("key row has a NULL right: %w", ErrCorrupt)
		}
		c.Rights = append(c.Rights, *r)
	}
	for _, r := range rules {
		if r == nil {
			return c, fmt.Errorf("acl rule row has NULLs: %w", ErrCorrupt)
		}
		// "access pattern": the pattern is everything after the first space (MQTT topics may hold spaces;
		// cutting at the next one would grant a different topic).
		access, pattern, ok := strings.Cut(*r, " ")
		if !ok || access == "" || pattern == "" {
			return c, fmt.Errorf("acl rule is malformed: %w", ErrCorrupt)
		}
		rule := credential.Rule{Access: access, Pattern: pattern}
		c.Rules = append(c.Rules, rule)
	}
	return c, nil
}

// TouchKeys records that keys were used (api_keys.last_used_at, app_keys.last_used_at), in one statement
// for a batch. The
// brokers call it every few seconds with the keys that connected, never on the connect path.
func (s Credentials) TouchKeys(ctx context.Context, ds []secret.Digest) error {
	raw := make([][]byte, len(ds))
	for i := range ds {
		raw[i] = ds[i][:]
	}
	_, err := s.idem().Exec(ctx, `WITH a AS (UPDATE api_keys SET last_used_at = now() WHERE digest = ANY($1))
UPDATE app_keys SET last_used_at = now() WHERE digest = ANY($1)`, raw)
	if err != nil {
		return fmt.Errorf("record key use: %w", err)
	}
	return nil
}
