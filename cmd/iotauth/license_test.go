package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/license"
)

// runCmd runs a registered command in-process, as main would.
func runCmd(t *testing.T, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd, ok := commands[name]
	if !ok {
		t.Fatalf("command %q is not registered", name)
	}
	var out, errOut bytes.Buffer
	err = cmd.run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestLicenseCLIRoundTrip is keygen → issue → verify through the command functions, for both algorithms.
func TestLicenseCLIRoundTrip(t *testing.T) {
	for _, alg := range []string{"ed25519", "rs256"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			if _, stderr, err := runCmd(t, "license keygen", "--alg", alg, "--bits", "2048", "--out-dir", dir); err != nil {
				t.Fatalf("keygen: %v\n%s", err, stderr)
			}
			priv, pub := filepath.Join(dir, "license-private.pem"), filepath.Join(dir, "license-public.pem")
			fi, err := os.Stat(priv)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
			}
			pubPEM, err := os.ReadFile(pub)
			if err != nil || !strings.HasPrefix(string(pubPEM), "-----BEGIN PUBLIC KEY-----") {
				t.Fatalf("public key: %v %q", err, pubPEM)
			}
			if _, _, err := runCmd(t, "license keygen", "--alg", alg, "--out-dir", dir); err == nil || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("second keygen into the same dir: %v", err)
			}

			expires := time.Now().AddDate(1, 0, 0).UTC().Format(time.DateOnly)
			token, stderr, err := runCmd(t, "license issue", "--private-key", priv, "--customer", "ACME Corp", "--max-devices", "25",
				"--features", "data_export, ai", "--expires", expires, "--not-before", "2020-01-01")
			if err != nil {
				t.Fatalf("issue: %v\n%s", err, stderr)
			}
			if strings.Count(strings.TrimSpace(token), ".") != 2 {
				t.Fatalf("issue printed %q, not a JWT", token)
			}
			licFile := filepath.Join(dir, "license.jwt")
			if err := os.WriteFile(licFile, []byte(token), 0o600); err != nil {
				t.Fatal(err)
			}

			out, stderr, err := runCmd(t, "license verify", "--public-key", pub, "--license", licFile)
			if err != nil {
				t.Fatalf("verify: %v\n%s%s", err, out, stderr)
			}
			var st license.Status
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("verify output %q: %v", out, err)
			}
			if st.Status != license.StateValid || st.Customer != "ACME Corp" || st.MaxDevices == nil || *st.MaxDevices != 25 ||
				!slices.Equal(st.Features, []string{license.FeatureDataExport, license.FeatureAI}) ||
				st.ExpiresAt == nil || st.ExpiresAt.Format(time.DateOnly) != expires {
				t.Fatalf("verified status %+v", st)
			}

			// The same license through the package, as serve will load it.
			direct := license.Evaluate(license.Material{PublicKeyPEM: pubPEM, Token: token}, license.Policy{}, time.Now())
			if direct.Status != license.StateValid {
				t.Fatalf("Evaluate: %+v", direct)
			}

			// A license checked against another vendor key is refused, and verify says so with exit 1.
			other := t.TempDir()
			if _, _, err := runCmd(t, "license keygen", "--out-dir", other); err != nil {
				t.Fatal(err)
			}
			out, _, err = runCmd(t, "license verify", "--public-key", filepath.Join(other, "license-public.pem"), "--license", licFile)
			if err == nil || !strings.Contains(err.Error(), license.CodeInvalid) || !strings.Contains(out, `"restricted": true`) {
				t.Errorf("verify with another key: %v\n%s", err, out)
			}
		})
	}
}

func TestLicenseIssueRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCmd(t, "license keygen", "--out-dir", dir); err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "license-private.pem")
	pub := filepath.Join(dir, "license-public.pem")
	future := time.Now().AddDate(1, 0, 0).Format(time.DateOnly)
	tests := []struct {
		name string
		args []string
		want string // substring of the error; "usage" for errUsage
	}{
		{"missing flags", []string{"--customer", "c"}, "usage"},
		{"unknown feature", []string{"--private-key", priv, "--customer", "c", "--max-devices", "1", "--expires", future, "--features", "data_exprot"}, `unknown feature "data_exprot"`},
		{"past expiry", []string{"--private-key", priv, "--customer", "c", "--max-devices", "1", "--expires", "2020-01-01"}, "in the past"},
		{"bad date", []string{"--private-key", priv, "--customer", "c", "--max-devices", "1", "--expires", "01/01/2027"}, "YYYY-MM-DD"},
		{"no device limit given", []string{"--private-key", priv, "--customer", "c", "--expires", future}, "-max-devices"},
		{"limit and unlimited", []string{"--private-key", priv, "--customer", "c", "--max-devices", "3", "--unlimited-devices", "--expires", future}, "not both"},
		{"public key as private key", []string{"--private-key", pub, "--customer", "c", "--max-devices", "1", "--expires", future}, "not an unencrypted private key"},
		{"missing key file", []string{"--private-key", filepath.Join(dir, "nope.pem"), "--customer", "c", "--max-devices", "1", "--expires", future}, "no such file"},
		{"stray argument", []string{"--private-key", priv, "extra"}, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, "license issue", tt.args...)
			if err == nil {
				t.Fatalf("accepted; printed %q", out)
			}
			if tt.want == "usage" {
				if err != errUsage {
					t.Fatalf("err %v, want usage error", err)
				}
				return
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %q does not mention %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("printed %q on failure", out)
			}
		})
	}

	// Unlimited devices: no maxDevices claim, so MaxDevices is null in the status.
	token, _, err := runCmd(t, "license issue", "--private-key", priv, "--customer", "c", "--unlimited-devices", "--expires", future)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	if st := license.Evaluate(license.Material{PublicKeyPEM: pubPEM, Token: token}, license.Policy{}, time.Now()); st.Status != license.StateValid || st.MaxDevices != nil {
		t.Errorf("unlimited license: %+v", st)
	}
}

func TestLicenseKeygenRefusesWeakRSA(t *testing.T) {
	_, _, err := runCmd(t, "license keygen", "--alg", "rs256", "--bits", "1024", "--out-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "2048") {
		t.Fatalf("1024-bit keygen: %v", err)
	}
	if _, _, err := runCmd(t, "license keygen", "--alg", "hs256", "--out-dir", t.TempDir()); err == nil {
		t.Fatal("hs256 keygen accepted")
	}
}
