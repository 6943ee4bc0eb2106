package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestGenerateFormat(t *testing.T) {
	for _, k := range []Kind{APIKey, TestAPIKey, MQTTPassword, ProvisioningKey, AppKey, TestAppKey, PublishableKey, TestPublishableKey} {
		re := regexp.MustCompile("^" + regexp.QuoteMeta(k.Prefix()) + "[0-9A-Za-z]{38}$")
		seen := map[string]bool{}
		for i := 0; i < 200; i++ {
			s, err := Generate(k)
			if err != nil {
				t.Fatal(err)
			}
			if !re.MatchString(s.Reveal()) {
				t.Fatalf("%s: %q does not match %s", k.Name(), s.Reveal(), re)
			}
			if err := Check(k, s.Reveal()); err != nil {
				t.Fatalf("%s: fresh secret rejected: %v", k.Name(), err)
			}
			if seen[s.Reveal()] {
				t.Fatalf("%s: duplicate secret generated", k.Name())
			}
			seen[s.Reveal()] = true
		}
	}
}

func TestCheckRejects(t *testing.T) {
	good, err := Generate(APIKey)
	if err != nil {
		t.Fatal(err)
	}
	g := good.Reveal()
	flip := func(i int) string {
		b := []byte(g)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	prov, _ := Generate(ProvisioningKey)
	testKey, _ := Generate(TestAPIKey)
	app, _ := Generate(AppKey)
	testApp, _ := Generate(TestAppKey)
	tests := []struct {
		name string
		kind Kind
		in   string
		want error
	}{
		{"empty", APIKey, "", ErrWrongKind},
		{"flipped random char", APIKey, flip(len(APIKey.Prefix()) + 3), ErrBadChecksum},
		{"flipped checksum char", APIKey, flip(len(g) - 1), ErrBadChecksum},
		{"truncated", APIKey, g[:len(g)-1], ErrMalformed},
		{"extended", APIKey, g + "A", ErrMalformed},
		{"bad charset", APIKey, g[:20] + "-" + g[21:], ErrMalformed},
		{"provisioning key as api key", APIKey, prov.Reveal(), ErrWrongKind},
		{"api key as provisioning key", ProvisioningKey, g, ErrWrongKind},
		{"test key on live", APIKey, testKey.Reveal(), ErrWrongKind},
		{"live key on test", TestAPIKey, g, ErrWrongKind},
		{"app key as api key", APIKey, app.Reveal(), ErrWrongKind},
		{"api key as app key", AppKey, g, ErrWrongKind},
		{"test app key on live", AppKey, testApp.Reveal(), ErrWrongKind},
		{"live app key on test", TestAppKey, app.Reveal(), ErrWrongKind},
		{"uppercase prefix", APIKey, strings.ToUpper(g[:11]) + g[11:], ErrWrongKind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check(tt.kind, tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEveryFlipRejected(t *testing.T) {
	s, _ := Generate(MQTTPassword)
	g := s.Reveal()
	for i := len(MQTTPassword.Prefix()); i < len(g); i++ {
		for _, c := range []byte(alphabet) {
			if c == g[i] {
				continue
			}
			b := []byte(g)
			b[i] = c
			if Check(MQTTPassword, string(b)) == nil {
				t.Fatalf("single change at %d to %q accepted", i, c)
			}
		}
	}
}

func TestRedaction(t *testing.T) {
	s, _ := Generate(APIKey)
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "key", s)
	out := sb.String() + fmt.Sprint(s) + fmt.Sprintf("%v %s %#v", s, s, s)
	if strings.Contains(out, s.Reveal()[11:]) {
		t.Fatalf("secret leaked: %s", out)
	}
	if !strings.Contains(out, "iotsk_live_[redacted]") {
		t.Fatalf("redacted form missing: %s", out)
	}
}

func TestDisplayPrefix(t *testing.T) {
	s, _ := Generate(APIKey)
	p := DisplayPrefix(APIKey, s.Reveal())
	if len(p) != len("iotsk_live_")+DisplayLen || !strings.HasPrefix(s.Reveal(), p) {
		t.Fatalf("bad display prefix %q", p)
	}
}

func FuzzCheck(f *testing.F) {
	s, _ := Generate(APIKey)
	f.Add(s.Reveal())
	f.Add("iotsk_live_")
	f.Add("iotsk_live_0000000000000000000000000000000000000")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		err := Check(APIKey, in)
		if err == nil {
			if len(in) != APIKey.Len() || !strings.HasPrefix(in, APIKey.Prefix()) {
				t.Fatalf("accepted malformed %q", in)
			}
			// Re-deriving the checksum must give the same string.
			if got := string(appendChecksum([]byte(in[:len(in)-checksumLen]))); got != in {
				t.Fatalf("accepted %q with checksum for %q", in, got)
			}
		}
	})
}

// BenchmarkCheck checks distinct keys in turn, as a connect storm does (one key repeated would let the
// branch predictor learn its characters).
func BenchmarkCheck(b *testing.B) {
	keys := make([]string, 4096)
	for i := range keys {
		s, err := Generate(APIKey)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = s.Reveal()
	}
	i := 0
	for b.Loop() {
		if err := Check(APIKey, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Every byte value is tried in every position of the random part: only the base62 alphabet passes the
// charset check (a wrong character in a well-formed key must fail as malformed, not on its checksum).
func TestCheckCharsetIsExactlyBase62(t *testing.T) {
	s, err := Generate(APIKey)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte(s.Reveal())
	for c := 0; c < 256; c++ {
		for _, pos := range []int{len(APIKey.prefix), len(key) - checksumLen - 1, len(key) - 1} {
			k := append([]byte(nil), key...)
			k[pos] = byte(c)
			err := Check(APIKey, string(k))
			if base62 := strings.IndexByte(alphabet, byte(c)) >= 0; base62 == errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %#x at %d: %v", c, pos, err)
			}
		}
	}
}

func TestAppKeyKind(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want Kind
	}{{"", AppKey}, {"live", AppKey}, {"test", TestAppKey}} {
		if got, err := AppKeyKind(tt.env); err != nil || got != tt.want {
			t.Errorf("AppKeyKind(%q) = %v, %v; want %v", tt.env, got.Name(), err, tt.want.Name())
		}
	}
	if _, err := AppKeyKind("prod"); err == nil {
		t.Error("AppKeyKind(prod) accepted an unknown environment")
	}
	if AppKindFor(APIKey) != AppKey || AppKindFor(TestAPIKey) != TestAppKey {
		t.Error("AppKindFor does not follow the device key's environment")
	}
	s, _ := Generate(AppKey)
	if got := s.String(); got != "iotak_live_[redacted]" || !LooksLikeAny("x"+s.Reveal()) {
		t.Errorf("application key not redacted or not recognised: %q", got)
	}
}

// LooksLikeAny's one pass answers as one search per kind does, on random strings built from the kinds'
// prefixes, their pieces and other bytes.
func TestLooksLikeAnyMatchesSearchPerKind(t *testing.T) {
	ref := func(s string) bool {
		for _, k := range kinds {
			if strings.Contains(s, k.prefix) {
				return true
			}
		}
		return false
	}
	var pieces []string
	for _, k := range kinds {
		p := k.prefix
		pieces = append(pieces, p, p[:len(p)-1], p[1:], p[:len(p)/2])
	}
	pieces = append(pieces, "agent-", "0d9f3f2e-8a61", "i", "p", "_", "x", "\x00", "\xff", "iot", "prov")
	r := rand.New(rand.NewPCG(1, 2))
	found := 0
	for range 200000 {
		var b strings.Builder
		for range r.IntN(6) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		s := b.String()
		want := ref(s)
		if got := LooksLikeAny(s); got != want {
			t.Fatalf("LooksLikeAny(%q) = %v, want %v", s, got, want)
		}
		if want {
			found++
		}
	}
	if found < 1000 {
		t.Fatalf("only %d random strings held a prefix: the test does not exercise both answers", found)
	}
}
