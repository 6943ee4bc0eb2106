package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
)

// names is a LegacyNames for tests.
type names map[secret.Digest]bool

func (n names) Len() int                 { return len(n) }
func (n names) Has(d secret.Digest) bool { return n[d] }

// mosq7 is a $7$ hash (mosquitto_passwd's PBKDF2-SHA512) of password with 101 iterations.
func mosq7(password string) string {
	salt := []byte("0123456789ab")
	sum, _ := pbkdf2.Key(sha512.New, password, salt, 101, sha512.Size)
	return fmt.Sprintf("$7$101$%s$%s", base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(sum))
}

type recorded struct {
	agent, stored string
	sum           [32]byte
}

type legacyFixture struct {
	a        *Authorizer
	st       *fakeStore
	set      names
	recorded []recorded
	budget   *TimeBudget
	clk      *clock
}

const legacyUser = "sensor-17"

func newLegacyFixture(t *testing.T, clientID string, deferUnknown bool) *legacyFixture {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	d := secret.DigestOf(legacyUser)
	c := credential.Credential{
		Digest: d, KeyID: "6f1c2a9e-0d1b-4c3e-9f00-000000000001", AgentUUID: agentA, AgentStatus: "active",
		Rights: []string{"mqtt"}, PasswordHash: mosq7("old-pw"), Legacy: true, LegacyClientID: clientID,
		Rules: []credential.Rule{{Access: "readwrite", Pattern: "devices/" + legacyUser + "/#"}},
	}
	f := &legacyFixture{st: &fakeStore{rows: map[secret.Digest]credential.Credential{d: c}}, set: names{d: true}, clk: clk}
	ch, err := NewCache(cache.Options[Entry, Group]{Size: 100, TTL: time.Minute, NegativeTTL: 10 * time.Second, Group: GroupOf, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := acl.ParseTemplates("readwrite agents/%u/#")
	f.budget = NewTimeBudget(100*time.Millisecond, time.Second, clk.now)
	f.a = New(Config{
		KeyKind: secret.APIKey, ClientID: "agent-%u", Rules: rules, DBTimeout: 50 * time.Millisecond, Now: clk.now,
		NamePrefix: "plain:", CustomNamePrefix: "custom:", DeferUnknown: deferUnknown, Legacy: f.set, SlowBudget: f.budget,
		RecordFastHash: func(agent, stored string, sum [32]byte) {
			f.recorded = append(f.recorded, recorded{agent, stored, sum})
		},
	}, f.st, ch)
	return f
}

func TestAuthorizeLegacy(t *testing.T) {
	tests := []struct {
		name         string
		clientIDRule string // "" = any
		defer_       bool
		user, pw, id string
		want         error
		wantQueries  int
	}{
		{"exact client id", legacyUser, false, legacyUser, "old-pw", legacyUser, nil, 1},
		{"any client id", "", false, legacyUser, "old-pw", "gateway-3", nil, 1},
		{"wrong password", legacyUser, false, legacyUser, "bad", legacyUser, ErrBadPassword, 1},
		{"other client id", legacyUser, false, legacyUser, "old-pw", "sensor-18", ErrClientID, 1},
		{"any: never an agent's client id", "", false, legacyUser, "old-pw", "agent-" + agentB, ErrClientID, 1},
		{"unknown name: no query", legacyUser, false, "sensor-18", "old-pw", "sensor-18", ErrMalformed, 0},
		{"unknown name deferred: no query", legacyUser, true, "sensor-18", "old-pw", "sensor-18", ErrDeferred, 0},
		{"known name with defer_unknown still ours", legacyUser, true, legacyUser, "old-pw", legacyUser, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newLegacyFixture(t, tt.clientIDRule, tt.defer_)
			s, err := f.a.Authorize(context.Background(), Credentials{Username: tt.user, Password: []byte(tt.pw), ClientID: tt.id})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if f.st.queries != tt.wantQueries {
				t.Errorf("queries = %d, want %d", f.st.queries, tt.wantQueries)
			}
			if tt.want != nil {
				// The fast hash is recorded once the password verified, whatever refused the connect
				// after that; never for a wrong password or an unknown name.
				if verified := tt.pw == "old-pw" && tt.wantQueries > 0; (len(f.recorded) == 1) != verified {
					t.Errorf("fast hashes recorded: %d (password verified: %v)", len(f.recorded), verified)
				}
				return
			}
			if s.Name != "custom:"+agentA || s.Agent != agentA {
				t.Errorf("session %q for agent %q: the legacy username must be renamed after the agent uuid", s.Name, s.Agent)
			}
			set := s.ACL()
			if !set.Allows(acl.Write, "devices/"+legacyUser+"/t") || set.Allows(acl.Write, "devices/sensor-18/t") {
				t.Errorf("imported topics not applied as the session's rules")
			}
			sum := sha256.Sum256([]byte(tt.pw))
			if len(f.recorded) != 1 || f.recorded[0].agent != agentA || f.recorded[0].sum != sum || f.recorded[0].stored != mosq7("old-pw") {
				t.Fatalf("fast hash recorded %+v, want one for agent %s", f.recorded, agentA)
			}
		})
	}
}

// After the first success the slow hash is not run again (right or wrong password), and only the
// first success asks for the fast hash to be recorded.
func TestLegacyFastAfterFirstSuccess(t *testing.T) {
	f := newLegacyFixture(t, "", false)
	ok := Credentials{Username: legacyUser, Password: []byte("old-pw"), ClientID: "c1"}
	if _, err := f.a.Authorize(context.Background(), ok); err != nil {
		t.Fatal(err)
	}
	spent := f.budget.left
	for range 3 {
		if _, err := f.a.Authorize(context.Background(), ok); err != nil {
			t.Fatal(err)
		}
		bad := ok
		bad.Password = []byte("wrong")
		if _, err := f.a.Authorize(context.Background(), bad); !errors.Is(err, ErrBadPassword) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	if f.budget.left != spent {
		t.Errorf("the slow hash ran again after the first success (budget %v → %v)", spent, f.budget.left)
	}
	if len(f.recorded) != 1 {
		t.Errorf("fast hash recorded %d times, want once", len(f.recorded))
	}
}

// An exhausted slow-hash budget refuses before any KDF; it refills with time.
func TestSlowHashBudget(t *testing.T) {
	f := newLegacyFixture(t, "", false)
	f.budget.Spend(2 * time.Second) // overdrawn
	c := Credentials{Username: legacyUser, Password: []byte("old-pw"), ClientID: "c1"}
	if _, err := f.a.Authorize(context.Background(), c); !errors.Is(err, ErrSlowHashBudget) {
		t.Fatalf("err = %v, want ErrSlowHashBudget", err)
	}
	f.clk.t = f.clk.t.Add(30 * time.Second) // 100 ms/s refills 3 s: back to the 1 s burst
	if _, err := f.a.Authorize(context.Background(), c); err != nil {
		t.Fatalf("after the budget refilled: %v", err)
	}
}

func TestTimeBudget(t *testing.T) {
	clk := &clock{t: time.Unix(0, 0)}
	b := NewTimeBudget(250*time.Millisecond, time.Second, clk.now)
	steps := []struct {
		advance time.Duration
		spend   time.Duration
		allow   bool
	}{
		{0, 0, true},
		{0, 900 * time.Millisecond, true},  // 100 ms left
		{0, 200 * time.Millisecond, true},  // allowed while anything is left; now -100 ms
		{0, 0, false},                      // overdrawn
		{200 * time.Millisecond, 0, false}, // -50 ms
		{400 * time.Millisecond, 0, true},  // +50 ms
		{time.Hour, 0, true},               // capped at the burst
		{0, 1000 * time.Millisecond, true}, // spends the whole burst: 0 left
		{0, 0, false},                      // nothing left
	}
	for i, s := range steps {
		clk.t = clk.t.Add(s.advance)
		if got := b.Allow(); got != s.allow {
			t.Fatalf("step %d: Allow = %v, want %v (left %v)", i, got, s.allow, b.left)
		}
		b.Spend(s.spend)
	}
}

// The fast hash replacing the slow one (same password) does not make Recheck refuse the live session;
// any other change does.
func TestRecheckToleratesRecordedFastHash(t *testing.T) {
	f := newLegacyFixture(t, legacyUser, false)
	s, err := f.a.Authorize(context.Background(), Credentials{Username: legacyUser, Password: []byte("old-pw"), ClientID: legacyUser})
	if err != nil {
		t.Fatal(err)
	}
	base := f.st.rows[secret.DigestOf(legacyUser)]
	tests := []struct {
		name   string
		mutate func(*credential.Credential)
		want   error
	}{
		{"unchanged", func(*credential.Credential) {}, nil},
		{"fast hash of the same password", func(c *credential.Credential) { c.PasswordHash = passhash.SHA256Hex("old-pw") }, nil},
		{"fast hash of another password", func(c *credential.Credential) { c.PasswordHash = passhash.SHA256Hex("new-pw") }, ErrCredsChanged},
		{"new slow hash", func(c *credential.Credential) { c.PasswordHash = mosq7("new-pw") }, ErrCredsChanged},
		{"fast hash and new topics", func(c *credential.Credential) {
			c.PasswordHash = passhash.SHA256Hex("old-pw")
			c.Rules = []credential.Rule{{Access: "readwrite", Pattern: "other/#"}}
		}, ErrCredsChanged},
		{"fast hash and a new client id rule", func(c *credential.Credential) {
			c.PasswordHash = passhash.SHA256Hex("old-pw")
			c.LegacyClientID = ""
		}, ErrCredsChanged},
		{"revoked", func(c *credential.Credential) { c.KeyRevoked = true }, ErrRevoked},
		{"no longer legacy", func(c *credential.Credential) { c.Legacy = false }, ErrCredsChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.Rules = append([]credential.Rule(nil), base.Rules...)
			tt.mutate(&c)
			if err := f.a.Recheck(s, c, true); !errors.Is(err, tt.want) {
				t.Fatalf("Recheck = %v, want %v", err, tt.want)
			}
		})
	}
}

// BenchmarkLegacyCached is an imported device's connect once its slow hash was verified: one SHA-256.
func BenchmarkLegacyCached(b *testing.B) {
	f := newLegacyFixture(&testing.T{}, "", false)
	c := Credentials{Username: legacyUser, Password: []byte("old-pw"), ClientID: "c1"}
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

// BenchmarkUnknownName is the refusal of a name that is neither a key nor a known legacy username, with
// 10,000 legacy names known: from memory, no query.
func BenchmarkUnknownName(b *testing.B) {
	f := newLegacyFixture(&testing.T{}, "", false)
	for i := range 10000 {
		f.set[secret.DigestOf(fmt.Sprintf("sensor-%d", i))] = true
	}
	c := Credentials{Username: "not-imported-device", Password: []byte("pw"), ClientID: "c1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Authorize(context.Background(), c); !errors.Is(err, ErrMalformed) {
			b.Fatal(err)
		}
	}
	if f.st.queries != 0 {
		b.Fatalf("%d queries", f.st.queries)
	}
}
