package api_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/license"
)

// vendor is a license signing key pair as the vendor holds it: the private half signs, the public PEM
// is what a deployment configures as LICENSE_PUBLIC_KEY.
type vendor struct {
	priv   crypto.Signer
	pubPEM []byte
}

// Vendor keys are made once per test binary (RSA generation is slow on a shared machine).
var (
	edVendor    = sync.OnceValue(func() vendor { return newVendor("ed25519", 0) })
	otherVendor = sync.OnceValue(func() vendor { return newVendor("ed25519", 0) })
	rsaVendor   = sync.OnceValue(func() vendor { return newVendor("rs256", 2048) })
)

func newVendor(alg string, bits int) vendor {
	privPEM, pubPEM, err := license.GenerateKey(alg, bits)
	if err != nil {
		panic(err)
	}
	priv, err := license.ParsePrivateKey(privPEM)
	if err != nil {
		panic(err)
	}
	return vendor{priv: priv, pubPEM: pubPEM}
}

// issue signs a license with the vendor's key.
func (v vendor) issue(t *testing.T, terms license.Terms) string {
	t.Helper()
	if terms.Customer == "" {
		terms.Customer = "ACME Test Corp"
	}
	tok, err := license.Sign(v.priv, terms)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// licensed is a test server's license, wired exactly as `iotauth serve` wires it (a license.Manager as
// the api.Licenser) but with the clock, the ticks and the material in the test's hands. Changing the
// material and calling reload is what writing LICENSE_KEY_FILE and sending SIGHUP does in production.
type licensed struct {
	t     *testing.T
	e     *env
	t0    time.Time // the start of the test's timeline; the clock starts here
	clock *testClock
	ticks chan time.Time
	mgr   *license.Manager

	mu       sync.Mutex
	material license.Material
}

// newLicensed prepares a license whose clock starts at now (whole seconds) with the given material;
// pass its option to newEnv, which builds the Manager with the server's logger.
func newLicensed(t *testing.T, pubPEM []byte, token string) *licensed {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	return &licensed{t: t, t0: now, clock: &testClock{now: now}, ticks: make(chan time.Time),
		material: license.Material{PublicKeyPEM: pubPEM, Token: token}}
}

// option plugs the Manager into the server config; the Manager logs through the server's logger, so
// the secret scan after the test covers it (the license token must never be logged).
func (l *licensed) option() func(*envOptions) {
	return withConfig(func(c *api.Config) {
		mgr, err := license.NewManager(license.Options{
			Source: l.source, Now: l.clock.Now, Ticks: l.ticks, Logger: c.Logger,
		})
		if err != nil {
			l.t.Fatal(err)
		}
		l.mgr = mgr
		c.Licenser = mgr
	})
}

// attach remembers the env (for the secret scan) and runs the Manager's periodic loop, driven by tick.
func (l *licensed) attach(e *env) {
	l.e = e
	e.remember(l.material.Token)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.mgr.Run(ctx); close(done) }()
	l.t.Cleanup(func() { cancel(); <-done })
}

func (l *licensed) source() (license.Material, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.material, nil
}

// install replaces the material and reloads, as SIGHUP does; it returns the new status.
func (l *licensed) install(pubPEM []byte, token string) license.Status {
	l.t.Helper()
	l.mu.Lock()
	l.material = license.Material{PublicKeyPEM: pubPEM, Token: token}
	l.mu.Unlock()
	if l.e != nil {
		l.e.remember(token)
	}
	return l.mgr.Reload()
}

// tick drives one periodic re-evaluation and returns after it finished: the second send can only be
// received once Run is back in its loop, i.e. after the first evaluation completed.
func (l *licensed) tick() {
	l.ticks <- l.clock.Now()
	l.ticks <- l.clock.Now()
}

// validTerms is a sound license for the test's timeline: issued an hour before t0, valid for a year.
func (l *licensed) validTerms(maxDevices int, features ...string) license.Terms {
	return license.Terms{IssuedAt: l.t0.Add(-time.Hour), ExpiresAt: l.t0.Add(365 * 24 * time.Hour), MaxDevices: maxDevices, Features: features}
}

// newLicensedEnv is a test server with a valid Ed25519-signed license (maxDevices 0 = unlimited, the
// given features) and the Manager loop running; extra options (withBroker) are applied too.
func newLicensedEnv(t *testing.T, maxDevices int, features []string, opts ...func(*envOptions)) (*env, *licensed) {
	t.Helper()
	l := newLicensed(t, edVendor().pubPEM, "")
	l.material.Token = edVendor().issue(t, l.validTerms(maxDevices, features...))
	e := newEnv(t, append(opts, l.option())...)
	l.attach(e)
	if st := l.mgr.Status(); st.Restricted {
		t.Fatalf("the test license is restricted: %s", st.Message)
	}
	return e, l
}

// tamper re-encodes a license's payload with edit applied and keeps the original signature: what a
// customer who edits maxDevices or features by hand produces.
func tamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	out, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(out) + "." + parts[2]
}

// devLicenseEnv writes a development key pair's public half and a valid license (no device limit,
// every feature) into files and returns the environment that makes `iotauth serve` use them.
func devLicenseEnv(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	tok := edVendor().issue(t, license.Terms{IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(30 * 24 * time.Hour), Features: license.KnownFeatures()})
	return licenseFiles(t, dir, edVendor().pubPEM, tok)
}

// licenseFiles writes the public key and the token to dir and returns LICENSE_PUBLIC_KEY_FILE and
// LICENSE_KEY_FILE entries naming them.
func licenseFiles(t *testing.T, dir string, pubPEM []byte, token string) []string {
	t.Helper()
	pub, key := filepath.Join(dir, "license-public.pem"), filepath.Join(dir, "license.jwt")
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, key, token+"\n")
	return []string{"LICENSE_PUBLIC_KEY_FILE=" + pub, "LICENSE_KEY_FILE=" + key}
}

// writeFileAtomic replaces path's content in one rename, as an operator's deploy tool would, so a
// reload never reads half a file.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
