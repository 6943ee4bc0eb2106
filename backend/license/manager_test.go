package license

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// envMap is a mutable environment for EnvSource.
type envMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (e *envMap) get(k string) string { e.mu.Lock(); defer e.mu.Unlock(); return e.m[k] }
func (e *envMap) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]string{}
	}
	e.m[k] = v
}

// newTestManager builds a Manager on env with a fake clock at t0, a manual tick channel and a captured log.
func newTestManager(t *testing.T, env *envMap, p Policy) (*Manager, *fakeClock, chan time.Time, *syncBuffer) {
	t.Helper()
	clock := &fakeClock{t: t0}
	ticks := make(chan time.Time)
	logger, buf := testLogger(t)
	m, err := NewManager(Options{Source: EnvSource(env.get), Policy: p, Now: clock.Now, Logger: logger, Ticks: ticks})
	if err != nil {
		t.Fatal(err)
	}
	return m, clock, ticks, buf
}

// runManager starts m.Run and returns a tick function that returns only after the tick was evaluated.
func runManager(t *testing.T, m *Manager, ticks chan time.Time) (tick func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() {
		t.Helper()
		// Run handles one tick at a time: the second send is received only after the first
		// re-evaluation has finished, so the state is settled when this returns.
		for range 2 {
			select {
			case ticks <- time.Time{}:
			case <-time.After(10 * time.Second):
				t.Fatal("Run is not receiving ticks")
			}
		}
	}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Errorf("%s: %v, want nil", what, err)
		}
		return
	}
	var le *Error
	if !errors.As(err, &le) || le.Code() != code {
		t.Errorf("%s: %v, want code %s", what, err, code)
		return
	}
	if le.Detail == "" || strings.Contains(le.Detail, "LICENSE_") || err.Error() != le.Detail {
		t.Errorf("%s: client detail %q is empty, names configuration, or is not the error text %q", what, le.Detail, err.Error())
	}
	// The REST layer finds the code through this method name (backend/api problemCoder).
	var pc interface{ ProblemCode() string }
	if !errors.As(err, &pc) || pc.ProblemCode() != code {
		t.Errorf("%s: %v has no ProblemCode %s", what, err, code)
	}
}

// The REST API's Licenser interface (backend/api), restated here so this package need not import it.
var _ interface {
	CheckRegistration(context.Context) error
	CheckFeature(string) error
	MaxDevices() (int, bool)
} = (*Manager)(nil)

func TestManagerFlipsToRestrictedWhenExpiryPasses(t *testing.T) {
	ed := edKeys()
	exp := t0.Add(20 * 24 * time.Hour)
	token := sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", exp.Unix()), nil)
	env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM), EnvKey: token}}
	m, clock, ticks, logs := newTestManager(t, env, Policy{})
	tick := runManager(t, m, ticks)

	steps := []struct {
		at       time.Time
		state    State
		register string // code expected from CheckRegistration
	}{
		{t0, StateValid, ""},
		{exp.Add(-13 * 24 * time.Hour), StateWarning, ""},
		{exp.Add(-time.Second), StateWarning, ""},
		{exp.Add(time.Second), StateRestricted, CodeExpired},
		{exp.Add(30 * 24 * time.Hour), StateRestricted, CodeExpired},
	}
	for _, s := range steps {
		clock.Set(s.at)
		tick()
		st := m.Status()
		if st.Status != s.state || !st.CheckedAt.Equal(s.at) {
			t.Fatalf("at %v: status %s checked %v, want %s", s.at, st.Status, st.CheckedAt, s.state)
		}
		wantCode(t, "CheckRegistration", m.CheckRegistration(context.Background()), s.register)
	}
	wantCode(t, "CheckFeature(data_export)", m.CheckFeature(FeatureDataExport), CodeExpired)
	if n, limited := m.MaxDevices(); n != 0 || !limited {
		t.Errorf("MaxDevices when restricted = %d, %v; want 0, true", n, limited)
	}
	if st := m.Status(); st.Customer != "ACME Corp" || st.ExpiresAt == nil || !st.ExpiresAt.Equal(exp) {
		t.Errorf("expired status lost the license's identity: %+v", st)
	}

	out := logs.String()
	for _, want := range []string{`"level":"INFO","msg":"license valid"`, `"level":"WARN","msg":"license expires soon"`, `"level":"ERROR","msg":"license restricted`, `"reason":"license_expired"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	// Transitions and the daily warning reminder only: valid, warning, warning again 13 days later,
	// restricted; the second restricted step is silent.
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d log lines, want 4:\n%s", n, out)
	}
	assertNoToken(t, out, token)
}

func TestManagerWarningReminderIsDaily(t *testing.T) {
	ed := edKeys()
	exp := t0.Add(10 * 24 * time.Hour)
	env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM), EnvKey: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", exp.Unix()), nil)}}
	m, clock, _, logs := newTestManager(t, env, Policy{})
	for _, d := range []time.Duration{time.Minute, time.Hour, 23 * time.Hour, 24 * time.Hour, 25 * time.Hour, 48 * time.Hour} {
		clock.Set(t0.Add(d))
		m.Reevaluate()
	}
	// Start, +24h and +48h.
	if n := strings.Count(logs.String(), "license expires soon"); n != 3 {
		t.Errorf("%d warning lines, want 3:\n%s", n, logs.String())
	}
}

func TestManagerGracePeriod(t *testing.T) {
	ed := edKeys()
	exp := t0.Add(time.Hour)
	env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM), EnvKey: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", exp.Unix()), nil)}}
	m, clock, ticks, _ := newTestManager(t, env, Policy{GracePeriod: 48 * time.Hour})
	tick := runManager(t, m, ticks)

	clock.Set(exp.Add(47 * time.Hour))
	tick()
	if st := m.Status(); st.Status != StateGrace || st.Restricted || st.GraceEndsAt == nil {
		t.Fatalf("in grace: %+v", st)
	}
	wantCode(t, "CheckRegistration in grace", m.CheckRegistration(context.Background()), "")
	wantCode(t, "CheckFeature in grace", m.CheckFeature(FeatureAI), "")

	clock.Set(exp.Add(48 * time.Hour))
	tick()
	wantCode(t, "CheckRegistration after grace", m.CheckRegistration(context.Background()), CodeExpired)
}

func TestManagerReloadPicksUpNewLicense(t *testing.T) {
	ed, ed2 := edKeys(), edKeys2()
	env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM)}}
	m, _, _, logs := newTestManager(t, env, Policy{})

	if st := m.Status(); st.Reason != CodeMissing {
		t.Fatalf("no LICENSE_KEY: %+v", st)
	}
	wantCode(t, "CheckRegistration without license", m.CheckRegistration(context.Background()), CodeMissing)
	wantCode(t, "CheckFeature without license", m.CheckFeature(FeatureAI), CodeMissing)

	first := sign(t, jwt.SigningMethodEdDSA, ed.priv, goodClaims(), nil)
	env.set(EnvKey, first)
	if st := m.Status(); st.Reason != CodeMissing {
		t.Fatal("the environment was re-read without Reload")
	}
	if st := m.Reload(); st.Status != StateValid {
		t.Fatalf("after Reload: %+v", st)
	}
	wantCode(t, "CheckRegistration after Reload", m.CheckRegistration(context.Background()), "")

	// Key rotation: a new public key makes the old license invalid until the new one arrives too.
	env.set(EnvPublicKey, string(ed2.pubPEM))
	if st := m.Reload(); st.Reason != CodeInvalid {
		t.Fatalf("old license under the new key: %+v", st)
	}
	wantCode(t, "CheckRegistration with a mismatched key", m.CheckRegistration(context.Background()), CodeInvalid)
	second := sign(t, jwt.SigningMethodEdDSA, ed2.priv, with(goodClaims(), "sub", "ACME Renewed", "maxDevices", 50), nil)
	env.set(EnvKey, second)
	st := m.Reload()
	if st.Status != StateValid || st.Customer != "ACME Renewed" {
		t.Fatalf("rotated license: %+v", st)
	}
	if n, limited := m.MaxDevices(); n != 50 || !limited {
		t.Errorf("MaxDevices after rotation = %d, %v", n, limited)
	}
	if n := strings.Count(logs.String(), `"trigger":"reload"`); n != 3 {
		t.Errorf("%d reload log lines, want 3:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"trigger":"start"`); n != 1 {
		t.Errorf("%d start log lines, want 1:\n%s", n, logs.String())
	}
	assertNoToken(t, logs.String(), first)
	assertNoToken(t, logs.String(), second)
}

func TestManagerReloadReadsFiles(t *testing.T) {
	ed := edKeys()
	dir := t.TempDir()
	keyFile, licFile := filepath.Join(dir, "pub.pem"), filepath.Join(dir, "license.jwt")
	writeFile(t, keyFile, string(ed.pubPEM))
	writeFile(t, licFile, sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", 3), nil)+"\n")
	env := &envMap{m: map[string]string{EnvPublicKey + "_FILE": keyFile, EnvKey + "_FILE": licFile}}
	m, _, _, _ := newTestManager(t, env, Policy{})
	if n, _ := m.MaxDevices(); n != 3 {
		t.Fatalf("first file: %+v", m.Status())
	}
	writeFile(t, licFile, sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", 7), nil))
	m.Reload()
	if n, _ := m.MaxDevices(); n != 7 {
		t.Fatalf("rewritten file: %+v", m.Status())
	}
	os.Remove(licFile)
	st := m.Reload()
	if st.Reason != CodeInvalid || !strings.Contains(st.Message, "LICENSE_KEY_FILE") {
		t.Fatalf("unreadable file: %+v", st)
	}
}

func TestManagerGates(t *testing.T) {
	ed := edKeys()
	tests := []struct {
		name     string
		claims   jwt.MapClaims
		feature  map[string]string // feature → expected code
		max      int
		limited  bool
		devices  map[int]string // registered count → expected CheckDeviceCount code
		register string
	}{
		{
			name:    "limited license with two features",
			claims:  with(goodClaims(), "features", []string{FeatureDataExport, "hologram", FeatureAI}),
			feature: map[string]string{FeatureDataExport: "", FeatureAI: "", FeatureAdvancedAnomaly: CodeFeatureNotLicensed, "hologram": CodeFeatureNotLicensed, "": CodeFeatureNotLicensed},
			max:     5, limited: true,
			devices: map[int]string{0: "", 4: "", 5: CodeDeviceLimitReached, 9: CodeDeviceLimitReached},
		},
		{
			name:    "unlimited license without features",
			claims:  with(goodClaims(), "maxDevices", nil, "features", nil),
			feature: map[string]string{FeatureDataExport: CodeFeatureNotLicensed},
			max:     0, limited: false,
			devices: map[int]string{0: "", 1_000_000: ""},
		},
		{
			name:    "invalid license blocks everything",
			claims:  with(goodClaims(), "typ", "access"),
			feature: map[string]string{FeatureDataExport: CodeInvalid, FeatureAI: CodeInvalid},
			max:     0, limited: true,
			devices:  map[int]string{0: CodeInvalid},
			register: CodeInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM), EnvKey: sign(t, jwt.SigningMethodEdDSA, ed.priv, tt.claims, nil)}}
			m, _, _, _ := newTestManager(t, env, Policy{})
			wantCode(t, "CheckRegistration", m.CheckRegistration(context.Background()), tt.register)
			for f, code := range tt.feature {
				wantCode(t, "CheckFeature("+f+")", m.CheckFeature(f), code)
			}
			if n, limited := m.MaxDevices(); n != tt.max || limited != tt.limited {
				t.Errorf("MaxDevices = %d, %v; want %d, %v", n, limited, tt.max, tt.limited)
			}
			for count, code := range tt.devices {
				err := m.CheckDeviceCount(count)
				wantCode(t, "CheckDeviceCount", err, code)
				if code == CodeDeviceLimitReached && !errors.Is(err, ErrDeviceLimitReached) {
					t.Errorf("errors.Is(%v, ErrDeviceLimitReached) = false", err)
				}
			}
		})
	}
}

func TestManagerSourceError(t *testing.T) {
	logger, logs := testLogger(t)
	m, err := NewManager(Options{
		Source: func() (Material, error) { return Material{}, errors.New("LICENSE_KEY_FILE: permission denied") },
		Logger: logger, Now: func() time.Time { return t0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if !st.Restricted || st.Reason != CodeInvalid || !strings.Contains(st.Message, "permission denied") {
		t.Fatalf("%+v", st)
	}
	if !strings.Contains(logs.String(), "permission denied") {
		t.Errorf("the cause is not logged: %s", logs.String())
	}
}

func TestNewManagerRefusesBadOptions(t *testing.T) {
	src := func() (Material, error) { return Material{}, nil }
	for name, o := range map[string]Options{
		"no source":         {},
		"leeway too large":  {Source: src, Policy: Policy{Leeway: 2 * time.Minute}},
		"negative grace":    {Source: src, Policy: Policy{GracePeriod: -time.Second}},
		"negative interval": {Source: src, Interval: -time.Second},
	} {
		if _, err := NewManager(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestManagerConcurrentReads runs the gates while reloads swap the state (meaningful under -race).
func TestManagerConcurrentReads(t *testing.T) {
	ed := edKeys()
	good := sign(t, jwt.SigningMethodEdDSA, ed.priv, goodClaims(), nil)
	env := &envMap{m: map[string]string{EnvPublicKey: string(ed.pubPEM), EnvKey: good}}
	m, _, _, _ := newTestManager(t, env, Policy{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				_ = m.CheckRegistration(context.Background())
				_ = m.CheckFeature(FeatureAI)
				_, _ = m.MaxDevices()
				st := m.Status()
				st.Features = append(st.Features[:0], "mutated")
			}
		}()
		if i%2 == 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 50 {
					if j%2 == 0 {
						env.set(EnvKey, "")
					} else {
						env.set(EnvKey, good)
					}
					m.Reload()
				}
			}()
		}
	}
	wg.Wait()
	env.set(EnvKey, good)
	if st := m.Reload(); st.Status != StateValid || st.Features[0] != FeatureDataExport {
		t.Fatalf("after concurrent use: %+v", st)
	}
}

func TestEnvSource(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "k")
	writeFile(t, f, "from-file\n")
	big := filepath.Join(dir, "big")
	writeFile(t, big, strings.Repeat("x", maxFileLen+1))
	tests := []struct {
		name    string
		env     map[string]string
		token   string
		wantErr string
	}{
		{name: "inline", env: map[string]string{EnvKey: " tok \n"}, token: "tok"},
		{name: "file", env: map[string]string{EnvKey + "_FILE": f}, token: "from-file"},
		{name: "unset", env: map[string]string{}, token: ""},
		{name: "both set", env: map[string]string{EnvKey: "a", EnvKey + "_FILE": f}, wantErr: "set only one"},
		{name: "missing file", env: map[string]string{EnvPublicKey + "_FILE": filepath.Join(dir, "nope")}, wantErr: "LICENSE_PUBLIC_KEY_FILE"},
		{name: "oversized file", env: map[string]string{EnvKey + "_FILE": big}, wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := EnvSource(func(k string) string { return tt.env[k] })()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || m.Token != tt.token {
				t.Fatalf("token %q err %v, want %q", m.Token, err, tt.token)
			}
		})
	}
}

func TestPolicyFromEnv(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    Policy
		wantErr bool
	}{
		{env: map[string]string{}, want: Policy{}},
		{env: map[string]string{EnvWarningWindow: "30d", EnvGracePeriod: "72h"}, want: Policy{WarningWindow: 30 * 24 * time.Hour, GracePeriod: 72 * time.Hour}},
		{env: map[string]string{EnvGracePeriod: "0"}, want: Policy{}},
		{env: map[string]string{EnvGracePeriod: "-1h"}, wantErr: true},
		{env: map[string]string{EnvWarningWindow: "two weeks"}, wantErr: true},
		{env: map[string]string{EnvWarningWindow: "-3d"}, wantErr: true},
	}
	for _, tt := range tests {
		p, err := PolicyFromEnv(func(k string) string { return tt.env[k] })
		if (err != nil) != tt.wantErr || (!tt.wantErr && p != tt.want) {
			t.Errorf("%v: got %+v, %v", tt.env, p, err)
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertNoToken fails if any part of the token's payload or signature shows up in out.
func assertNoToken(t *testing.T, out, token string) {
	t.Helper()
	parts := strings.Split(token, ".")
	for _, p := range append(parts[1:], token) {
		if len(p) > 16 && strings.Contains(out, p) {
			t.Errorf("log contains the license token (or part of it)")
		}
	}
}
