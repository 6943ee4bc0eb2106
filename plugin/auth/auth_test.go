package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
)

const agentA = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"
const agentB = "0a0b0c0d-1111-2222-3333-444455556666"

// fakeStore is the authorizer's store in unit tests: a map, an error to return, and a query counter.
type fakeStore struct {
	rows    map[secret.Digest]credential.Credential
	err     error
	queries int
	block   bool
}

func (f *fakeStore) LookupCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	f.queries++
	if f.block {
		<-ctx.Done()
		return credential.Credential{}, ctx.Err()
	}
	if f.err != nil {
		return credential.Credential{}, f.err
	}
	c, ok := f.rows[d]
	if !ok {
		return credential.Credential{}, credential.ErrNotFound
	}
	return c, nil
}

// LookupAppCredential answers application keys from the same map, as rows flagged App.
func (f *fakeStore) LookupAppCredential(ctx context.Context, d secret.Digest) (credential.Credential, error) {
	c, err := f.LookupCredential(ctx, d)
	if err == nil && !c.App {
		return credential.Credential{}, credential.ErrNotFound
	}
	return c, err
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

func newFixture(t testing.TB, mutate func(*credential.Credential)) *fixture {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	other, _ := secret.Generate(secret.APIKey)
	c := credential.Credential{
		Digest: secret.DigestOf(key.Reveal()), KeyID: "k1", AgentUUID: agentA, AgentStatus: "active",
		Rights: []string{"mqtt", "device_state"}, PasswordHash: passhash.SHA256Hex(pw.Reveal()),
	}
	if mutate != nil {
		mutate(&c)
	}
	st := &fakeStore{rows: map[secret.Digest]credential.Credential{c.Digest: c}}
	ch, err := NewCache(cache.Options[Entry, Group]{
		Size: 100, TTL: time.Minute, NegativeTTL: 10 * time.Second, StaleGrace: 10 * time.Minute, Group: GroupOf, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := acl.ParseTemplates("readwrite agents/%u/#")
	a := New(Config{
		KeyKind: secret.APIKey, ClientID: "agent-%u", Rules: rules, DBTimeout: 50 * time.Millisecond, Now: clk.now,
		NamePrefix: "plain:", CustomNamePrefix: "custom:",
	}, st, ch)
	return &fixture{a: a, st: st, clk: clk, key: key.Reveal(), pw: pw.Reveal(), other: other.Reveal()}
}

func (f *fixture) creds() Credentials {
	return Credentials{Username: f.key, Password: []byte(f.pw), ClientID: "agent-" + agentA}
}

func TestAuthorize(t *testing.T) {
	past := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name        string
		mutate      func(*credential.Credential)
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
		{"revoked", func(c *credential.Credential) { c.KeyRevoked = true }, func(f *fixture) Credentials { return f.creds() }, ErrRevoked, 1},
		{"expired", func(c *credential.Credential) { c.KeyExpiresAt = past }, func(f *fixture) Credentials { return f.creds() }, ErrExpired, 1},
		{"disabled agent", func(c *credential.Credential) { c.AgentStatus = "disabled" }, func(f *fixture) Credentials { return f.creds() }, ErrAgentDisabled, 1},
		{"no mqtt right", func(c *credential.Credential) { c.Rights = []string{"device_state"} }, func(f *fixture) Credentials { return f.creds() }, ErrNoMQTTRight, 1},
		{"malformed stored hash", func(c *credential.Credential) { c.PasswordHash = "sha256$zz" }, func(f *fixture) Credentials { return f.creds() }, ErrCorrupt, 1},
		{"no mqtt password", func(c *credential.Credential) { c.PasswordHash = "" }, func(f *fixture) Credentials { return f.creds() }, ErrNoMQTTPassword, 1},
		{"bad extra rule", func(c *credential.Credential) { c.Rules = []credential.Rule{{Access: "read", Pattern: "$SYS/#"}} }, func(f *fixture) Credentials { return f.creds() }, ErrCorrupt, 1},
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
			if err == nil && (s.Agent != agentA || !s.ACL().Allows(acl.Write, "agents/"+agentA+"/x") || s.ACL().Allows(acl.Write, "agents/"+agentB+"/x")) {
				t.Fatalf("session of agent %q has the wrong identity or ACL", s.Agent)
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
		mutate func(c *credential.Credential)
		found  bool
		want   error
	}{
		{"unchanged", func(*credential.Credential) {}, true, nil},
		{"unrelated change", func(c *credential.Credential) { c.Rights = append(c.Rights, "extra") }, true, nil},
		{"gone", func(*credential.Credential) {}, false, ErrUnknownKey},
		{"revoked", func(c *credential.Credential) { c.KeyRevoked = true }, true, ErrRevoked},
		{"disabled", func(c *credential.Credential) { c.AgentStatus = "decommissioned" }, true, ErrAgentDisabled},
		{"password changed", func(c *credential.Credential) { c.PasswordHash = passhash.SHA256Hex("iotmp_new") }, true, ErrCredsChanged},
		{"rules changed", func(c *credential.Credential) { c.Rules = []credential.Rule{{Access: "read", Pattern: "x/#"}} }, true, ErrCredsChanged},
		{"corrupt", func(c *credential.Credential) { c.Corrupt = true }, true, ErrCorrupt},
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

// refFingerprint is the fingerprint as defined before entries were compacted: SHA-256 of the stored hash
// and the well-formed rules.
func refFingerprint(c credential.Credential) [32]byte {
	h := sha256.New()
	h.Write([]byte(c.PasswordHash))
	for _, r := range c.Rules {
		if _, err := acl.ParseTemplate(r.Access, r.Pattern); err == nil {
			fmt.Fprintf(h, "\x00%s %s", r.Access, r.Pattern)
		}
	}
	var fp [32]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

func TestNewEntryCompact(t *testing.T) {
	const pw = "iotmp_correct"
	argon, err := passhash.HashPassword("operator password")
	if err != nil {
		t.Fatal(err)
	}
	sha := passhash.SHA256Hex(pw)
	base := credential.Credential{
		KeyID: agentB, AgentUUID: agentA, AgentStatus: "active", Rights: []string{"mqtt"}, PasswordHash: sha,
	}
	tests := []struct {
		name        string
		mutate      func(*credential.Credential)
		compact     bool // no extension allocated
		corrupt     bool
		verifies    string
		wantNoMQTTP bool
	}{
		{"common", nil, true, false, pw, false},
		{"no password hash", func(c *credential.Credential) { c.PasswordHash = "" }, true, false, "", true},
		{"uppercase sha256 hex", func(c *credential.Credential) { c.PasswordHash = "sha256$" + strings.ToUpper(sha[7:]) }, false, false, pw, false},
		{"argon2id", func(c *credential.Credential) { c.PasswordHash = argon }, false, false, "operator password", false},
		{"extra rules", func(c *credential.Credential) { c.Rules = []credential.Rule{{Access: "read", Pattern: "x/%u/#"}} }, false, false, pw, false},
		{"bad rule", func(c *credential.Credential) { c.Rules = []credential.Rule{{Access: "read", Pattern: "$SYS/#"}} }, false, true, pw, false},
		{"malformed hash", func(c *credential.Credential) { c.PasswordHash = "sha256$zz" }, false, true, "", true},
		{"uppercase agent uuid", func(c *credential.Credential) { c.AgentUUID = strings.ToUpper(agentA) }, false, false, pw, false},
		{"key id not a uuid", func(c *credential.Credential) { c.KeyID = "k1" }, false, false, pw, false},
		{"empty agent", func(c *credential.Credential) { c.AgentUUID = "" }, false, false, pw, false},
		{"nil uuid agent", func(c *credential.Credential) { c.AgentUUID = "00000000-0000-0000-0000-000000000000" }, true, false, pw, false},
		{"uuid without dashes", func(c *credential.Credential) { c.AgentUUID = strings.ReplaceAll(agentA, "-", "") + "xxxx" }, false, false, pw, false},
		{"row marked corrupt", func(c *credential.Credential) { c.Corrupt = true }, true, true, pw, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			e := NewEntry(c)
			if got := e.Agent(); got != c.AgentUUID {
				t.Errorf("Agent() = %q, want %q", got, c.AgentUUID)
			}
			if got := e.KeyID(); got != c.KeyID {
				t.Errorf("KeyID() = %q, want %q", got, c.KeyID)
			}
			if (e.x == nil) != tt.compact {
				t.Errorf("extension allocated: %v, want %v", e.x != nil, !tt.compact)
			}
			if e.Corrupt() != tt.corrupt {
				t.Errorf("Corrupt() = %v, want %v", e.Corrupt(), tt.corrupt)
			}
			if e.fingerprint() != refFingerprint(c) {
				t.Error("fingerprint differs from SHA-256 of the stored hash and rules")
			}
			h := e.hash()
			if tt.verifies != "" && !h.Verify([]byte(tt.verifies)) {
				t.Error("the right password does not verify")
			}
			if h.Verify([]byte("iotmp_wrong")) {
				t.Error("a wrong password verifies")
			}
			if (h.Scheme() == 0) != tt.wantNoMQTTP {
				t.Errorf("scheme %v", h.Scheme())
			}
			if g := GroupOf(e); g != GroupFor(c.AgentUUID) {
				t.Errorf("GroupOf = %+v, GroupFor(agent) = %+v", g, GroupFor(c.AgentUUID))
			}
		})
	}
}

func TestGroupFor(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{agentA, agentA, true},
		{agentA, agentB, false},
		{agentA, strings.ToUpper(agentA), false}, // groups are the agent strings, compared exactly
		{"", "00000000-0000-0000-0000-000000000000", false},
		{"x", "x", true},
	}
	for _, tt := range tests {
		if got := GroupFor(tt.a) == GroupFor(tt.b); got != tt.same {
			t.Errorf("GroupFor(%q) == GroupFor(%q): %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}

// TestCommonEntryAllocatesNothing: a credential with a sha256$ hash and no rules is cached with no
// allocation of its own — no uuid strings, no raw hash string, no fingerprint, no list element.
func TestCommonEntryAllocatesNothing(t *testing.T) {
	c := credential.Credential{
		KeyID: agentB, AgentUUID: agentA, AgentStatus: "active", Rights: []string{"mqtt"},
		PasswordHash: passhash.SHA256Hex("iotmp_pw"),
	}
	if n := testing.AllocsPerRun(1000, func() { NewEntry(c) }); n != 0 {
		t.Fatalf("NewEntry made %v allocations, want 0", n)
	}
	ch, err := NewCache(cache.Options[Entry, Group]{Size: 100_000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var d secret.Digest
	i := 0
	// Every run caches a new key; the slab chunk and map growth are amortised over a thousand entries.
	if n := testing.AllocsPerRun(5000, func() {
		i++
		d[0], d[1], d[2] = byte(i), byte(i>>8), byte(i>>16)
		ch.Add(d, NewEntry(c), now)
	}); n != 0 {
		t.Fatalf("NewEntry+Add made %v allocations per entry, want 0", n)
	}
	if got, r := ch.Get(d); r != cache.Hit || got.x != nil || got.Agent() != agentA {
		t.Fatalf("Get = %v, %v", got.Agent(), r)
	}
}

func TestInvalidateAgent(t *testing.T) {
	for _, agent := range []string{agentA, strings.ToUpper(agentA)} {
		t.Run(agent, func(t *testing.T) {
			f := newFixture(t, func(c *credential.Credential) { c.AgentUUID = agent })
			c := f.creds()
			c.ClientID = "agent-" + agent
			if _, err := f.a.Authorize(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			f.a.Cache().InvalidateGroup(agentB, f.clk.t)
			if _, err := f.a.Authorize(context.Background(), c); err != nil || f.st.queries != 1 {
				t.Fatalf("after invalidating another agent: %v, %d queries, want 1", err, f.st.queries)
			}
			f.a.Cache().InvalidateGroup(agent, f.clk.t)
			f.clk.t = f.clk.t.Add(time.Millisecond)
			s, err := f.a.Authorize(context.Background(), c)
			if err != nil || f.st.queries != 2 {
				t.Fatalf("after invalidating the agent: %v, %d queries, want 2", err, f.st.queries)
			}
			if s.Agent != agent || s.KeyID() != "k1" {
				t.Fatalf("session agent %q key %q", s.Agent, s.KeyID())
			}
		})
	}
}

func BenchmarkAuthorizeCached(b *testing.B) {
	f := newFixture(b, nil)
	c := f.creds()
	if _, err := f.a.Authorize(context.Background(), c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Authorize(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
}

// A slow imported hash runs its KDF only until the first success; afterwards right and wrong passwords
// are answered by comparing SHA-256 digests.
func TestSlowHashRememberedAfterSuccess(t *testing.T) {
	var pw string
	f := newFixture(t, nil)
	pw = f.pw
	bc, err := bcrypt.GenerateFromPassword([]byte(pw), 4)
	if err != nil {
		t.Fatal(err)
	}
	f = newFixture(t, func(c *credential.Credential) { c.PasswordHash = string(bc) })
	f.pw = pw
	e, err := f.a.entry(context.Background(), secret.DigestOf(f.key), false)
	if err != nil {
		t.Fatal(err)
	}
	if e.x == nil || e.x.verified.Load() != nil {
		t.Fatal("slow entry should start without a remembered digest")
	}
	wrong := f.creds()
	wrong.Password = []byte("iotmp_wrong")
	if _, err := f.a.Authorize(context.Background(), wrong); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password before any success: %v", err)
	}
	if e.x.verified.Load() != nil {
		t.Fatal("a failed check must not remember anything")
	}
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if e.x.verified.Load() == nil {
		t.Fatal("success with a slow hash was not remembered")
	}
	if _, err := f.a.Authorize(context.Background(), wrong); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password after a success: %v", err)
	}
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatalf("right password again: %v", err)
	}
}

// A session's Name is the prefix for its kind followed by the agent id, which Agent holds alone; the key
// id is the key's, whether the ids are canonical uuids (kept as 16 bytes) or not.
func TestSessionNames(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mutate   func(*credential.Credential)
		agent    string
		wantName string
		wantKey  string
	}{
		{"plain", nil, agentA, "plain:" + agentA, "k1"},
		{"extra rules", func(c *credential.Credential) { c.Rules = []credential.Rule{{Access: "read", Pattern: "broadcast/#"}} }, agentA, "custom:" + agentA, "k1"},
		{"non-canonical ids", func(c *credential.Credential) { c.AgentUUID, c.KeyID = "Dev-1", "key one" }, "Dev-1", "plain:Dev-1", "key one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.mutate)
			c := f.creds()
			c.ClientID = "agent-" + tc.agent
			s, err := f.a.Authorize(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != tc.wantName || s.Agent != tc.agent || s.KeyID() != tc.wantKey || s.Custom() != strings.HasPrefix(tc.wantName, "custom:") {
				t.Fatalf("name %q agent %q key %q custom %v", s.Name, s.Agent, s.KeyID(), s.Custom())
			}
		})
	}
}

// A cached connect runs on the broker thread for every client: the only allocation it may make is the
// session's name (which holds the agent id too).
func TestAuthorizeCachedAllocatesOnlyTheName(t *testing.T) {
	f := newFixture(t, nil)
	c := f.creds()
	ctx := context.Background()
	if _, err := f.a.Authorize(ctx, c); err != nil {
		t.Fatal(err)
	}
	var failed error
	n := testing.AllocsPerRun(200, func() {
		if _, err := f.a.Authorize(ctx, c); err != nil {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if n > 1 {
		t.Fatalf("%.1f allocations per cached Authorize, want 1", n)
	}
}

// fixedBudget allows a fixed number of lookups and counts what it was asked.
type fixedBudget struct{ left, asked int }

func (b *fixedBudget) Allow(secret.Digest) bool {
	b.asked++
	if b.left > 0 {
		b.left--
		return true
	}
	return false
}

// The lookup budget is asked only for keys the cache has no entry for; a refusal costs no query and is
// not remembered as "no such key".
func TestLookupBudget(t *testing.T) {
	f := newFixture(t, nil)
	b := &fixedBudget{left: 1}
	f.a.cfg.Budget = b
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatalf("the first lookup is within the budget: %v", err)
	}
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil || b.asked != 1 {
		t.Fatalf("a cached key: %v, budget asked %d times, want once", err, b.asked)
	}
	unknown := f.creds()
	unknown.Username = f.other
	queries := f.st.queries
	if _, err := f.a.Authorize(context.Background(), unknown); !errors.Is(err, ErrLookupBudget) {
		t.Fatalf("an unknown key over budget: %v, want ErrLookupBudget", err)
	}
	if f.st.queries != queries {
		t.Fatal("a lookup over budget reached the store")
	}
	b.left = 1
	if _, err := f.a.Authorize(context.Background(), unknown); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("the same key with budget left: %v, want ErrUnknownKey from the store", err)
	}
	// A stale entry is refreshed without spending the budget (its key is known to exist).
	f.clk.t = f.clk.t.Add(2 * time.Minute)
	asked := b.asked
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil || b.asked != asked {
		t.Fatalf("a stale entry: %v, budget asked %d more times", err, b.asked-asked)
	}
	// Nor is an entry aged out of the stale grace, or dropped by its agent's invalidation: the key existed.
	f.clk.t = f.clk.t.Add(time.Hour)
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil || b.asked != asked {
		t.Fatalf("an entry past the stale grace: %v, budget asked %d more times", err, b.asked-asked)
	}
	f.a.Cache().InvalidateGroup(agentA, f.clk.t.Add(time.Millisecond))
	f.clk.t = f.clk.t.Add(time.Second)
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil || b.asked != asked {
		t.Fatalf("an invalidated entry: %v, budget asked %d more times", err, b.asked-asked)
	}
}

const appID = "9e9e9e9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"

// appFixture adds an application key with two topics to a device fixture's store.
func appFixture(t *testing.T, mutate func(*credential.Credential)) (f *fixture, key, pw string) {
	t.Helper()
	f = newFixture(t, nil)
	k, _ := secret.Generate(secret.AppKey)
	p, _ := secret.Generate(secret.MQTTPassword)
	c := credential.Credential{
		Digest: secret.DigestOf(k.Reveal()), KeyID: appID, AgentUUID: appID, AgentStatus: "active", App: true,
		PasswordHash: passhash.SHA256Hex(p.Reveal()),
		Rules:        []credential.Rule{{Access: "read", Pattern: "agents/+/telemetry"}, {Access: "write", Pattern: "agents/+/cmd"}},
	}
	if mutate != nil {
		mutate(&c)
	}
	f.st.rows[c.Digest] = c
	return f, k.Reveal(), p.Reveal()
}

// TestAuthorizeAppKey covers application keys on the connect path (docs/security.md, A2, A3).
func TestAuthorizeAppKey(t *testing.T) {
	past := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name     string
		mutate   func(*credential.Credential)
		clientID string
		password func(pw string) string
		key      func(key string) string
		want     error
	}{
		{name: "ok", clientID: "consumer-1"},
		{name: "any client id", clientID: "svc.telemetry-reader_42"},
		{name: "agent- client id", clientID: "agent-" + agentA, want: ErrAgentClientID},
		{name: "agent- prefix alone", clientID: "agent-x", want: ErrAgentClientID},
		{name: "empty client id", clientID: "", want: ErrAgentClientID},
		{name: "wrong password", clientID: "c", password: func(string) string { return "iotmp_wrong" }, want: ErrBadPassword},
		{name: "revoked", clientID: "c", mutate: func(c *credential.Credential) { c.KeyRevoked = true }, want: ErrRevoked},
		{name: "expired", clientID: "c", mutate: func(c *credential.Credential) { c.KeyExpiresAt = past }, want: ErrExpired},
		{name: "test key on a live deployment", clientID: "c", key: func(k string) string {
			return secret.TestAppKey.Prefix() + k[len(secret.AppKey.Prefix()):]
		}, want: ErrMalformed},
		{name: "bad checksum", clientID: "c", key: func(k string) string {
			b := []byte(k)
			b[15] ^= 1
			return string(b)
		}, want: ErrMalformed},
		{name: "device row under an app key digest", clientID: "c", mutate: func(c *credential.Credential) { c.App = false }, want: ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, key, pw := appFixture(t, tt.mutate)
			if tt.password != nil {
				pw = tt.password(pw)
			}
			if tt.key != nil {
				key = tt.key(key)
			}
			s, err := f.a.Authorize(context.Background(), Credentials{Username: key, Password: []byte(pw), ClientID: tt.clientID})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Authorize = %v, want %v", err, tt.want)
			}
			var refused *AppKeyRefused
			if err != nil && errors.As(err, &refused) != (tt.want != ErrMalformed && tt.want != ErrUnknownKey) {
				t.Errorf("refusal %v names the key: %v; want it named exactly when the key exists", err, refused != nil)
			}
			if refused != nil && refused.KeyID != appID {
				t.Errorf("refusal names key %q, want %q", refused.KeyID, appID)
			}
			if err != nil {
				return
			}
			if !s.App() || s.Agent != appID || s.Name != "app:"+appID || s.Custom() == false {
				t.Fatalf("session = %+v (app %v), want an app session named app:%s", s, s.App(), appID)
			}
			set := s.ACL()
			for _, c := range []struct {
				access acl.Access
				topic  string
				want   bool
			}{
				{acl.Subscribe, "agents/+/telemetry", true},
				{acl.Subscribe, "$share/g/agents/+/telemetry", true},
				{acl.Subscribe, "agents/#", false},
				{acl.Write, "agents/" + agentA + "/cmd", true},
				{acl.Write, "agents/" + agentA + "/telemetry", false},
				// The configured agent template (readwrite agents/%u/#) is not an app key's.
				{acl.Write, "agents/" + appID + "/x", false},
			} {
				if got := set.Allows(c.access, c.topic); got != c.want {
					t.Errorf("Allows(%d, %q) = %v, want %v", c.access, c.topic, got, c.want)
				}
			}
		})
	}
}

// TestAgentClientIDsAreTheAgents: whatever the template, an application key may not use a client id that
// the template gives an agent (with it, and a session the broker keeps, it could hold the id against the
// agent), and an agent admitted on its template's id owns it (no other principal's session keeps it out).
func TestAgentClientIDsAreTheAgents(t *testing.T) {
	upper := strings.ToUpper(agentA)
	tests := []struct {
		tmpl, clientID string
		appRefused     bool
	}{
		{"%u", agentA, true},
		{"%u", agentB, true},
		{"%u", upper, true},
		{"%u", agentA + "x", false},
		{"%u", "x" + agentA, false},
		{"%u", "dashboard", false},
		{"%u-dev", agentA + "-dev", true},
		{"%u-dev", upper + "-dev", true},
		{"%u-dev", agentA, false},
		{"%u-dev", "dashboard-dev", false},
		{"dev-%u", "dev-" + agentA, true},
		{"dev-%u", "dev-anything", true},
		{"dev-%u", agentA, false},
		{"agent-%u", "agent-" + agentA, true},
		{"any", agentA, false},
		{"any", "dashboard", false},
		{"any", "agent-" + agentA, true}, // agent- ids are never an application key's
	}
	for _, tt := range tests {
		t.Run(tt.tmpl+" "+tt.clientID, func(t *testing.T) {
			f, key, pw := appFixture(t, nil)
			f.a.cfg.ClientID = tt.tmpl
			_, err := f.a.Authorize(context.Background(), Credentials{Username: key, Password: []byte(pw), ClientID: tt.clientID})
			if refused := errors.Is(err, ErrAgentClientID); refused != tt.appRefused {
				t.Fatalf("application key with client id %q under template %q: %v; want refused %v", tt.clientID, tt.tmpl, err, tt.appRefused)
			}
		})
	}
	for _, tmpl := range []string{"%u", "%u-dev", "dev-%u", "agent-%u", "any"} {
		t.Run("agent owns its id under "+tmpl, func(t *testing.T) {
			f := newFixture(t, nil)
			f.a.cfg.ClientID = tmpl
			c := f.creds()
			c.ClientID = strings.Replace(tmpl, "%u", agentA, 1)
			if tmpl == "any" {
				c.ClientID = "gateway-1"
			}
			s, err := f.a.Authorize(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if want := tmpl != "any"; s.OwnsClientID != want {
				t.Fatalf("OwnsClientID %v, want %v (only a template gives an agent an id of its own)", s.OwnsClientID, want)
			}
		})
	}
}

// TestAppKeyRecheck: a re-check refuses an application session once its key is revoked, and an
// unchanged key keeps it.
func TestAppKeyRecheck(t *testing.T) {
	f, key, pw := appFixture(t, nil)
	s, err := f.a.Authorize(context.Background(), Credentials{Username: key, Password: []byte(pw), ClientID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	c := f.st.rows[s.Digest]
	if err := f.a.Recheck(s, c, true); err != nil {
		t.Fatalf("unchanged key: %v", err)
	}
	c.KeyRevoked = true
	if err := f.a.Recheck(s, c, true); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked key: %v, want ErrRevoked", err)
	}
	c.KeyRevoked = false
	c.Rules = c.Rules[:1]
	if err := f.a.Recheck(s, c, true); !errors.Is(err, ErrCredsChanged) {
		t.Fatalf("changed topics: %v, want ErrCredsChanged", err)
	}
}

// Stats count lookup failures, the fail-fast windows they open and the stale entries served meanwhile.
func TestStats(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatal(err)
	}
	f.clk.t = f.clk.t.Add(2 * time.Minute) // past TTL, within stale grace
	f.st.err = errors.New("down")
	for range 3 { // one lookup fails and opens a window; the others are served stale without a lookup
		if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := f.a.Stats(), (Stats{StoreFailures: 1, FailFastWindows: 1, StaleServed: 3, StoreDown: true}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	f.clk.t = f.clk.t.Add(2 * time.Second) // the window ended; the next lookup fails again: a second window
	if _, err := f.a.Authorize(context.Background(), f.creds()); err != nil {
		t.Fatal(err)
	}
	if got := f.a.Stats(); got.StoreFailures != 2 || got.FailFastWindows != 2 || got.StaleServed != 4 {
		t.Fatalf("stats %+v after a second failure", got)
	}
	f.a.MarkStoreUp()
	if f.a.Stats().StoreDown {
		t.Fatal("still down after MarkStoreUp")
	}
}

// CheckIdentifier refuses a '+', '#' or '/' anywhere and more than MaxIdentifierLen bytes, nothing else.
func TestCheckIdentifier(t *testing.T) {
	long := strings.Repeat("a", MaxIdentifierLen)
	for s, want := range map[string]error{
		"": nil, "agent-0d9f3f2e": nil, long: nil, "é-ü\x00": nil,
		long + "a": ErrBadIdentifier, "+": ErrBadIdentifier, "a#": ErrBadIdentifier, "/a": ErrBadIdentifier,
		"agent-+x": ErrBadIdentifier, "x" + long[:100] + "#": ErrBadIdentifier,
	} {
		if got := CheckIdentifier(s); got != want {
			t.Errorf("CheckIdentifier(%.20q…) = %v, want %v", s, got, want)
		}
	}
}

// CheckIdentifier agrees with a byte-by-byte reading of its rule on random identifiers of every length.
func TestCheckIdentifierMatchesByteRule(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := "ab-_0Z+#/\x00\xff"
	for range 20000 {
		b := make([]byte, r.IntN(MaxIdentifierLen+3))
		for i := range b {
			if r.IntN(40) == 0 {
				b[i] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[i] = alphabet[r.IntN(5)]
			}
		}
		var want error
		if len(b) > MaxIdentifierLen {
			want = ErrBadIdentifier
		}
		for _, c := range b {
			if c == '+' || c == '#' || c == '/' {
				want = ErrBadIdentifier
			}
		}
		if got := CheckIdentifier(string(b)); got != want {
			t.Fatalf("CheckIdentifier(%q) = %v, want %v", b, got, want)
		}
	}
}
