package license

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings to the license parser. Verify must never panic, must always return a
// coded error, and must accept (as valid or expired) only the exact tokens signed below with the fixed key:
// any mutation that still verifies would be a signature bypass or a malleable encoding. Seeds live in
// testdata/fuzz/FuzzVerify; run with `go test -fuzz FuzzVerify ./backend/license`.
func FuzzVerify(f *testing.F) {
	priv := fixedEdKey()
	key, err := ParsePublicKey(pubPEMOf(f, priv.Public()))
	if err != nil {
		f.Fatal(err)
	}
	valid := sign(f, jwt.SigningMethodEdDSA, priv, goodClaims(), nil)
	expired := sign(f, jwt.SigningMethodEdDSA, priv, with(goodClaims(), "exp", t0.Add(-time.Hour).Unix()), nil)
	f.Add(valid)
	f.Add(expired)
	f.Fuzz(func(t *testing.T, token string) {
		lic, err := Verify(key, token, Policy{}, t0)
		switch {
		case err == nil || errors.Is(err, ErrExpired):
			if tok := strings.TrimSpace(token); tok != valid && tok != expired {
				t.Fatalf("accepted a token that was never signed: %q (err %v)", token, err)
			}
			if lic.Customer != "ACME Corp" {
				t.Fatalf("accepted token yields %+v", lic)
			}
		case CodeOf(err) == "":
			t.Fatalf("uncoded error %v", err)
		case lic.Customer != "" || lic.MaxDevices != 0 || len(lic.Features) != 0:
			t.Fatalf("refused token still yields license data %+v", lic)
		}
		_ = Evaluate(Material{PublicKeyPEM: pubPEMOf(t, priv.Public()), Token: token}, Policy{}, t0)
	})
}

// TestFuzzSeedsStayMeaningful guards the committed corpus: the "valid" seed must still verify with the
// fixed key (so the fuzzer starts from a real license), and every other seed must be refused.
func TestFuzzSeedsStayMeaningful(t *testing.T) {
	priv := fixedEdKey()
	key, err := ParsePublicKey(pubPEMOf(t, priv.Public()))
	if err != nil {
		t.Fatal(err)
	}
	dir := "testdata/fuzz/FuzzVerify"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 10 {
		t.Fatalf("only %d seeds in %s", len(entries), dir)
	}
	want := map[string]string{"valid": "", "whitespace_wrapped": "", "expired": CodeExpired, "empty": CodeMissing}
	for _, e := range entries {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") {
			t.Fatalf("%s is not a string seed", e.Name())
		}
		token, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		code, ok := want[e.Name()]
		if !ok {
			code = CodeInvalid
		}
		if _, err := Verify(key, token, Policy{}, t0); CodeOf(err) != code {
			t.Errorf("seed %s: %v, want code %q", e.Name(), err, code)
		}
	}
}
