package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/license"
)

// syncEnv is a getenv whose values a test changes while the wiring runs.
type syncEnv struct {
	mu sync.Mutex
	m  map[string]string
}

func (e *syncEnv) get(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[k]
}

func (e *syncEnv) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[k] = v
}

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func devLicense(t *testing.T, issued, expires time.Time) (pubPEM []byte, token string) {
	t.Helper()
	privPEM, pubPEM, err := license.GenerateKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := license.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	token, err = license.Sign(priv, license.Terms{Customer: "Dev", IssuedAt: issued, ExpiresAt: expires, MaxDevices: 3, Features: []string{license.FeatureDataExport}})
	if err != nil {
		t.Fatal(err)
	}
	return pubPEM, token
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLicenseWiring: serve's license runs from the environment, is judged against its clock on every
// periodic tick (expiry while running → restricted license_expired without a reload), and re-reads
// the environment and files on each reload request (a renewed license lifts the restriction). While
// restricted it logs how to fix it; the token is never logged.
func TestLicenseWiring(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	pub, tok := devLicense(t, t0.Add(-time.Hour), t0.Add(time.Hour))
	env := &syncEnv{m: map[string]string{license.EnvPublicKey: string(pub), license.EnvKey: tok}}
	var clockMu sync.Mutex
	now := t0
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	setClock := func(t time.Time) { clockMu.Lock(); defer clockMu.Unlock(); now = t }
	logs := &lockedBuffer{}
	ticks, reload := make(chan time.Time), make(chan os.Signal)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := startLicensing(ctx, licenseWiring{Getenv: env.get, Logger: slog.New(slog.NewJSONHandler(logs, nil)), Now: clock, Ticks: ticks, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	if mgr.Restricted() {
		t.Fatalf("valid license restricted: %+v", mgr.Status())
	}

	setClock(t0.Add(2 * time.Hour))
	ticks <- now
	ticks <- now // received only once the first evaluation finished
	if st := mgr.Status(); !st.Restricted || st.Reason != license.CodeExpired {
		t.Fatalf("after expiry: %+v", st)
	}

	_, renewed := devLicense(t, t0, t0.Add(24*time.Hour))
	env.set(license.EnvKey, renewed) // signed by another key: still invalid after reload
	reload <- syscall.SIGHUP
	waitUntil(t, "reload to invalid", func() bool { return mgr.Status().Reason == license.CodeInvalid })
	pub2, renewed2 := devLicense(t, t0, t0.Add(24*time.Hour))
	env.set(license.EnvPublicKey, string(pub2))
	env.set(license.EnvKey, renewed2)
	reload <- syscall.SIGHUP
	waitUntil(t, "reload to valid", func() bool { return !mgr.Restricted() })

	l := logs.String()
	for _, want := range []string{"restricted mode", "iotauth license keygen", "SIGHUP: re-reading the license"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
	for _, s := range []string{tok, renewed, renewed2} {
		if strings.Contains(l, s) {
			t.Error("the license token was logged")
		}
	}
}

// TestLicenseWiringErrors: an unusable policy setting stops the start and names the variable, while a
// missing license does not (restricted mode instead).
func TestLicenseWiringErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(&lockedBuffer{}, nil))
	_, err := startLicensing(ctx, licenseWiring{Getenv: envMap(map[string]string{license.EnvGracePeriod: "soon"}), Logger: log})
	if err == nil || !strings.Contains(err.Error(), license.EnvGracePeriod) {
		t.Fatalf("bad grace period: %v", err)
	}
	mgr, err := startLicensing(ctx, licenseWiring{Getenv: envMap(nil), Logger: log})
	if err != nil || !mgr.Restricted() || mgr.Status().Reason != license.CodeMissing {
		t.Fatalf("no license: %v %+v", err, mgr)
	}
}

// TestLicensingClaimsSIGHUP: once serve's licensing is set up, SIGHUP reloads the license instead of
// killing the process (its default action). The signal goes to this test process itself: if the
// handler were missing, the test binary would die.
func TestLicensingClaimsSIGHUP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuffer{}
	if _, err := licensing(ctx, envMap(nil), slog.New(slog.NewJSONHandler(logs, nil))); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the SIGHUP reload", func() bool { return strings.Contains(logs.String(), `"trigger":"reload"`) })
}
