package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/passhash"
	"github.com/iotauth/iotauth/backend/secret"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
)

const agentA = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"
const agentB = "0a0b0c0d-1111-2222-3333-444455556666"

// fakeStore is the authorizer's store in unit tests: a map, an error to return, and a query counter.
type fakeStore struct {
	rows    map[secret.Digest]store.Credential
	err     error
	queries int
	block   bool
}

func (f *fakeStore) LookupCredential(ctx context.Context, d secret.Digest) (store.Credential, error) {
	f.queries++
	if f.block {
		<-ctx.Done()
		return store.Credential{}, ctx.Err()
	}
	if f.err != nil {
		return store.Credential{}, f.err
	}
	c, ok := f.rows[d]
	if !ok {
		return store.Credential{}, store.ErrNotFound
	}
	return c, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type fixture struct {
	a     *Authorizer
	st    *fakeStore
	clk   *clock
	key   string
	pw    string
	other string
}

func newFixture(t *testing.T, mutate func(*store.Credential)) *fixture {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	other, _ := secret.Generate(secret.APIKey)
	c := store.Credential{
		Digest: secret.DigestOf(key.Reveal()), KeyID: "k1", AgentUUID: agentA, AgentStatus: "active",
		Rights: []string{"mqtt", "device_state"}, PasswordHash: passhash.SHA256Hex(pw.Reveal()),
	}
	if mutate != nil {
		mutate(&c)
	}
	st := &fakeStore{rows: map[secret.Digest]store.Credential{c.Digest: c}}
	ch, err := cache.New[secret.Digest, *Entry](cache.Options[*Entry]{
		Size: 100, TTL: time.Minute, NegativeTTL: 10 * time.Second, StaleGrace: 10 * time.Minute, Group: GroupOf, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := acl.ParseTemplates("readwrite agents/%u/#")
	a := New(Config{KeyKind: secret.APIKey, ClientID: "agent-%u", Rules: rules, DBTimeout: 50 * time.Millisecond, Now: clk.now}, st, ch)
	return &fixture{a: a, st: st, clk: clk, key: key.Reveal(), pw: pw.Reveal(), other: other.Reveal()}
}

func (f *fixture) creds() Credentials {
	return Credentials{Username: f.key, Password: []byte(f.pw), ClientID: "agent-" + agentA}
}

func TestAuthorize(t *testing.T) {
	past := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name        string
		mutate      func(*store.Credential)
		creds       func(f *fixture) Credentials
		want        error
		wantQueries int
	}{
		{"ok", nil, func(f *fixture) Credentials { return f.creds() }, nil, 1},
		{"wrong password", nil, func(f *fixture) Credentials { c := f.creds(); c.Password = []byte("iotmp_x"); return c }, ErrBadPassword, 1},
		{"empty password", nil, func(f *fixture) Credentials { c := f.creds(); c.Password = nil; return c }, ErrNoCredentials, 0},
		{"huge password", nil, func(f *fixture) Credentials { c := f.creds(); c.Password = make([]byte, 5000); return c }, ErrBadPassword, 0},
		{"no username", nil, func(f *fixture) Credentials { c := f.creds(); c.Username = ""; return c }, ErrNoCredentials, 0},
		{"unknown key", nil, func(f *fixture) Credentials { c := f.creds(); c.Username = f.other; return c }, ErrUnknownKey, 1},
		{"malformed", nil, func(f *fixture) Credentials { c := f.creds(); c.Username = f.key[:30]; return c }, ErrMalformed, 0},
		{"bad checksum", nil, func(f *fixture) Credentials {
			c := f.creds()
			b := []byte(f.key)
			b[12] ^= 1
			c.Username = string(b)
			return c
		}, ErrMalformed, 0},
		{"wildcard in username", nil, func(f *fixture) Credentials { c := f.creds(); c.Username = "a+b"; return c }, ErrBadIdentifier, 0},
		{"slash in client id", nil, func(f *fixture) Credentials { c := f.creds(); c.ClientID += "/x"; return c }, ErrBadIdentifier, 0},
		{"other agent's client id", nil, func(f *fixture) Credentials { c := f.creds(); c.ClientID = "agent-" + agentB; return c }, ErrClientID, 1},
		{"revoked", func(c *store.Credential) { c.KeyRevoked = true }, func(f *fixture) Credentials { return f.creds() }, ErrRevoked, 1},
		{"expired", func(c *store.Credential) { c.KeyExpiresAt = past }, func(f *fixture) Credentials { return f.creds() }, ErrExpired, 1},
		{"disabled agent", func(c *store.Credential) { c.AgentStatus = "disabled" }, func(f *fixture) Credentials { return f.creds() }, ErrAgentDisabled, 1},
		{"no mqtt right", func(c *store.Credential) { c.Rights = []string{"device_state"} }, func(f *fixture) Credentials { return f.creds() }, ErrNoMQTTRight, 1},
		{"malformed stored hash", func(c *store.Credential) { c.PasswordHash = "sha256$zz" }, func(f *fixture) Credentials { return f.creds() }, ErrCorrupt, 1},
		{"no mqtt password", func(c *store.Credential) { c.PasswordHash = "" }, func(f *fixture) Credentials { return f.creds() }, ErrNoMQTTPassword, 1},
		{"bad extra rule", func(c *store.Credential) { c.Rules = []store.Rule{{Access: "read", Pattern: "$SYS/#"}} }, func(f *fixture) Credentials { return f.creds() }, ErrCorrupt, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.mutate)
			s, err := f.a.Authorize(context.Background(), tt.creds(f))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Authorize = %v, want %v", err, tt.want)
			}
			if f.st.queries != tt.wantQueries {
				t.Fatalf("%d store queries, want %d", f.st.queries, tt.wantQueries)
			}
			if err == nil && (s.Agent != agentA || !s.ACL.Allows(acl.Write, "agents/"+agentA+"/x") || s.ACL.Allows(acl.Write, "agents/"+agentB+"/x")) {
				t.Fatalf("session %+v has the wrong identity or ACL", s)
			}
		})
	}
}

func TestStoreFailures(t *testing.T) {
	t.Run("error is not cached and fails closed", func(t *testing.T) {
		f := newFixture(t, nil)
		f.st.err = errors.New("connection refused")
		if _, err := f.a.Authorize(context.Background(), f.creds()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		// While the store is marked down, connects fail fast without a query.
		if _, err := f.a.Authorize(context.Background(), f.creds()); !errors.Is(err, ErrUnavailable) || f.st.queries != 1 {
			t.Fatalf("got %v after %d queries, want fail-fast ErrUnavailable after 1", err, f.st.queries)
		}
		f.st.err = nil
		f.clk.t = f.clk.t.Add(2 * time.Second)
		if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
			t.Fatalf("after the store recovered: %v (an error was cached?)", err)
		}
	})
	t.Run("timeout bounded by the deadline", func(t *testing.T) {
		f := newFixture(t, nil)
		f.st.block = true
		start := time.Now()
		if _, err := f.a.Authorize(context.Background(), f.creds()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("blocked %v despite a 50ms deadline", d)
		}
	})
	t.Run("stale positive served only while the store is down", func(t *testing.T) {
		f := newFixture(t, nil)
		if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
			t.Fatal(err)
		}
		f.clk.t = f.clk.t.Add(2 * time.Minute) // past TTL, within stale grace
		f.st.err = errors.New("down")
		if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
			t.Fatalf("stale entry not served while the store is down: %v", err)
		}
		c := f.creds()
		c.Password = []byte("iotmp_wrong")
		if _, err := f.a.Authorize(context.Background(), c); !errors.Is(err, ErrBadPassword) {
			t.Fatalf("stale entry with a wrong password: %v", err)
		}
		f.clk.t = f.clk.t.Add(20 * time.Minute) // past stale grace
		if _, err := f.a.Authorize(context.Background(), f.creds()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("beyond stale grace: %v, want ErrUnavailable", err)
		}
	})
	t.Run("stale entry not used when the store answers", func(t *testing.T) {
		f := newFixture(t, nil)
		f.a.Authorize(context.Background(), f.creds())
		f.clk.t = f.clk.t.Add(2 * time.Minute)
		for d, c := range f.st.rows {
			c.KeyRevoked = true
			f.st.rows[d] = c
		}
		if _, err := f.a.Authorize(context.Background(), f.creds()); !errors.Is(err, ErrRevoked) {
			t.Fatalf("got %v, want ErrRevoked from the fresh row", err)
		}
	})
}

func TestDeferUnknown(t *testing.T) {
	f := newFixture(t, nil)
	f.a.cfg.DeferUnknown = true
	for _, user := range []string{"", "alice", "prov_x"} {
		c := f.creds()
		c.Username = user
		if _, err := f.a.Authorize(context.Background(), c); !errors.Is(err, ErrDeferred) {
			t.Fatalf("%q: %v, want ErrDeferred", user, err)
		}
	}
	// A well-formed key with a bad checksum is ours, and denied, not deferred.
	b := []byte(f.key)
	b[12] ^= 1
	c := f.creds()
	c.Username = string(b)
	if _, err := f.a.Authorize(context.Background(), c); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad checksum with defer_unknown: %v, want ErrMalformed", err)
	}
}

func TestRecheck(t *testing.T) {
	f := newFixture(t, nil)
	s, err := f.a.Authorize(context.Background(), f.creds())
	if err != nil {
		t.Fatal(err)
	}
	row := f.st.rows[s.Digest]
	tests := []struct {
		name   string
		mutate func(c *store.Credential)
		found  bool
		want   error
	}{
		{"unchanged", func(*store.Credential) {}, true, nil},
		{"unrelated change", func(c *store.Credential) { c.Rights = append(c.Rights, "extra") }, true, nil},
		{"gone", func(*store.Credential) {}, false, ErrUnknownKey},
		{"revoked", func(c *store.Credential) { c.KeyRevoked = true }, true, ErrRevoked},
		{"disabled", func(c *store.Credential) { c.AgentStatus = "decommissioned" }, true, ErrAgentDisabled},
		{"password changed", func(c *store.Credential) { c.PasswordHash = passhash.SHA256Hex("iotmp_new") }, true, ErrCredsChanged},
		{"rules changed", func(c *store.Credential) { c.Rules = []store.Rule{{Access: "read", Pattern: "x/#"}} }, true, ErrCredsChanged},
		{"corrupt", func(c *store.Credential) { c.Corrupt = true }, true, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := row
			c.Rights = append([]string(nil), row.Rights...)
			tt.mutate(&c)
			if err := f.a.Recheck(s, c, tt.found); !errors.Is(err, tt.want) {
				t.Fatalf("Recheck = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClientIDTemplates(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		tmpl, cid string
		ok        bool
	}{
		{"agent-%u", "agent-" + agentA, true},
		{"agent-%u", "agent-" + agentA + "x", false},
		{"agent-%u", "xagent-" + agentA, false},
		{"%u", agentA, true},
		{"dev-%u-main", "dev-" + agentA + "-main", true},
		{"any", "whatever", true},
		{"any", "", false},
	}
	for _, tt := range tests {
		f.a.cfg.ClientID = tt.tmpl
		if got := f.a.clientIDAllowed(agentA, tt.cid); got != tt.ok {
			t.Errorf("template %q, client id %q: %v, want %v", tt.tmpl, tt.cid, got, tt.ok)
		}
	}
}
