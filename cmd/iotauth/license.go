package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/license"
)

func init() {
	register("license keygen", "make a license signing key pair (vendor/development use; the private key never goes on a server)", licenseKeygen)
	register("license issue", "sign a license JWT with the vendor private key and print it", licenseIssue)
	register("license verify", "check a license against the public key and print its status as JSON", licenseVerify)
}

func licenseKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("license keygen", stderr)
	alg := fs.String("alg", "ed25519", "signing algorithm: ed25519 (EdDSA) or rs256")
	bits := fs.Int("bits", license.DefaultRSABits, "RSA modulus size for rs256 (≥2048)")
	dir := fs.String("out-dir", ".", "directory for the key files")
	name := fs.String("name", "license", "file name prefix: writes <name>-private.pem and <name>-public.pem")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	privPEM, pubPEM, err := license.GenerateKey(*alg, *bits)
	if err != nil {
		return err
	}
	privPath := filepath.Join(*dir, *name+"-private.pem")
	pubPath := filepath.Join(*dir, *name+"-public.pem")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; keygen never overwrites a key: move it away or pick another -out-dir or -name", p)
		}
	}
	if err := writeNew(privPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	fmt.Fprintf(stdout, "private key: %s (keep it with the vendor; never deploy it)\npublic key:  %s (deploy as LICENSE_PUBLIC_KEY or LICENSE_PUBLIC_KEY_FILE)\n", privPath, pubPath)
	fmt.Fprintf(stdout, "next: iotauth license issue -private-key %s -customer NAME -max-devices N -features %s -expires YYYY-MM-DD\n",
		privPath, strings.Join(license.KnownFeatures(), ","))
	return nil
}

// writeNew creates path with mode, failing if it exists (no clobbering, no following a planted symlink).
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func licenseIssue(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("license issue", stderr)
	keyPath := fs.String("private-key", "", "vendor private key PEM from 'license keygen' (required)")
	customer := fs.String("customer", "", "customer name, the sub claim (required)")
	maxDevices := fs.Int("max-devices", -1, "device limit, ≥1 (required unless -unlimited-devices)")
	unlimited := fs.Bool("unlimited-devices", false, "issue a license without a device limit")
	features := fs.String("features", "", "comma-separated premium features: "+strings.Join(license.KnownFeatures(), ", "))
	expires := fs.String("expires", "", "expiry, YYYY-MM-DD (00:00 UTC) or RFC 3339 (required)")
	notBefore := fs.String("not-before", "", "start of validity, YYYY-MM-DD or RFC 3339 (default: none)")
	issuer := fs.String("issuer", license.DefaultIssuer, "iss claim; must match the product's expected issuer")
	audience := fs.String("audience", license.DefaultAudience, "aud claim; must match the product")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"-private-key", *keyPath}, {"-customer", *customer}, {"-expires", *expires}} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "missing required flags: %s\n", strings.Join(missing, ", "))
		fs.Usage()
		return errUsage
	}
	switch {
	case *unlimited && *maxDevices != -1:
		return errors.New("give either -max-devices N or -unlimited-devices, not both")
	case !*unlimited && *maxDevices < 1:
		return errors.New("-max-devices must be at least 1 (or use -unlimited-devices for no limit)")
	}
	terms := license.Terms{Issuer: *issuer, Audience: *audience, Customer: *customer, IssuedAt: time.Now()}
	if !*unlimited {
		terms.MaxDevices = *maxDevices
	}
	var err error
	if terms.ExpiresAt, err = parseDate("-expires", *expires); err != nil {
		return err
	}
	if !terms.ExpiresAt.After(terms.IssuedAt) {
		return fmt.Errorf("-expires %s is in the past", *expires)
	}
	if *notBefore != "" {
		if terms.NotBefore, err = parseDate("-not-before", *notBefore); err != nil {
			return err
		}
	}
	if terms.Features, err = parseFeatures(*features); err != nil {
		return err
	}
	pemData, err := os.ReadFile(*keyPath)
	if err != nil {
		return fmt.Errorf("read the private key: %w", err)
	}
	key, err := license.ParsePrivateKey(pemData)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyPath, err)
	}
	token, err := license.Sign(key, terms)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

func parseDate(flagName, s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q is not a date: use YYYY-MM-DD (e.g. 2027-01-01) or RFC 3339 (2027-01-01T00:00:00Z)", flagName, s)
}

// parseFeatures splits a comma list and refuses unknown names: the product would silently ignore a typo.
func parseFeatures(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !license.IsKnownFeature(f) {
			return nil, fmt.Errorf("unknown feature %q: use any of %s", f, strings.Join(license.KnownFeatures(), ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

func licenseVerify(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("license verify", stderr)
	pubPath := fs.String("public-key", "", "public key PEM file (default $LICENSE_PUBLIC_KEY or $LICENSE_PUBLIC_KEY_FILE)")
	tokPath := fs.String("license", "", "file holding the license JWT (default $LICENSE_KEY or $LICENSE_KEY_FILE)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	getenv := func(name string) string {
		switch {
		case name == license.EnvPublicKey && *pubPath != "", name == license.EnvKey && *tokPath != "":
			return ""
		case name == license.EnvPublicKey+"_FILE" && *pubPath != "":
			return *pubPath
		case name == license.EnvKey+"_FILE" && *tokPath != "":
			return *tokPath
		}
		return os.Getenv(name)
	}
	policy, err := license.PolicyFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	m, err := license.EnvSource(getenv)()
	if err != nil {
		return err
	}
	st := license.Evaluate(m, policy, time.Now())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		return err
	}
	if st.Restricted {
		return fmt.Errorf("restricted (%s): %s", st.Reason, st.Message)
	}
	return nil
}
