package uuid

import (
	"bytes"
	"strings"
	"testing"
)

const canonical = "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f"

var canonicalBytes = UUID{0x6f, 0x1c, 0x2a, 0x9e, 0x0d, 0x1b, 0x4c, 0x3e, 0x9f, 0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want UUID
		ok   bool
	}{
		{"canonical", canonical, canonicalBytes, true},
		{"nil uuid", "00000000-0000-0000-0000-000000000000", UUID{}, true},
		{"all ones", "ffffffff-ffff-ffff-ffff-ffffffffffff", UUID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true},
		{"empty", "", UUID{}, false},
		{"uppercase", strings.ToUpper(canonical), UUID{}, false},
		{"one uppercase digit", "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6F", UUID{}, false},
		{"no dashes", strings.ReplaceAll(canonical, "-", ""), UUID{}, false},
		{"no dashes, padded to length", strings.ReplaceAll(canonical, "-", "") + "0000", UUID{}, false},
		{"dash moved", "6f1c2a9-e0d1b-4c3e-9f00-1a2b3c4d5e6f", UUID{}, false},
		{"braces", "{" + canonical + "}", UUID{}, false},
		{"urn", "urn:uuid:" + canonical, UUID{}, false},
		{"too short", canonical[:35], UUID{}, false},
		{"too long", canonical + "0", UUID{}, false},
		{"not hex", "6f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6g", UUID{}, false},
		{"space", " f1c2a9e-0d1b-4c3e-9f00-1a2b3c4d5e6f", UUID{}, false},
		{"plus in place of a dash", "6f1c2a9e+0d1b-4c3e-9f00-1a2b3c4d5e6f", UUID{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Parse(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("Parse(%q) = %x, %v; want %x, %v", tt.in, got, ok, tt.want, tt.ok)
			}
			if v := Valid(tt.in); v != tt.ok {
				t.Fatalf("Valid(%q) = %v, want %v", tt.in, v, tt.ok)
			}
			if v := refValid(tt.in); v != tt.ok {
				t.Fatalf("reference validator says %v for %q; the table is wrong", v, tt.in)
			}
			if ok && Format(got) != tt.in {
				t.Fatalf("Format(Parse(%q)) = %q", tt.in, Format(got))
			}
		})
	}
}

func TestAppend(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		u      UUID
		want   string
	}{
		{"empty buffer", "", canonicalBytes, canonical},
		{"after a prefix", "iotauth-agent:", canonicalBytes, "iotauth-agent:" + canonical},
		{"nil uuid", "x", UUID{}, "x00000000-0000-0000-0000-000000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Append([]byte(tt.prefix), tt.u)); got != tt.want {
				t.Fatalf("Append = %q, want %q", got, tt.want)
			}
		})
	}
}

// The authorizer parses and appends uuids on every connect: neither may allocate, and Format only its
// result.
func TestAllocations(t *testing.T) {
	var buf [64]byte
	tests := []struct {
		name string
		f    func()
		want float64
	}{
		{"Parse", func() { Parse(canonical) }, 0},
		{"Valid", func() { Valid(canonical) }, 0},
		{"Append into a caller's buffer", func() { Append(buf[:0], canonicalBytes) }, 0},
		{"Format", func() { _ = Format(canonicalBytes) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.f); n != tt.want {
				t.Fatalf("%v allocations, want %v", n, tt.want)
			}
		})
	}
}

// FuzzRoundTrip checks both directions: any 16 bytes format to a string that parses back to them, and
// any string that parses formats back to itself (so no two spellings of one uuid are accepted). Valid
// agrees with Parse and with refValid, the validator the store used before this package. Seeds live in
// testdata/fuzz/FuzzRoundTrip; run with `go test -fuzz FuzzRoundTrip ./backend/uuid`.
func FuzzRoundTrip(f *testing.F) {
	f.Add(canonical, canonicalBytes[:])
	f.Add(strings.ToUpper(canonical), []byte{})
	f.Add("00000000-0000-0000-0000-000000000000", bytes.Repeat([]byte{0xff}, 16))
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		u, ok := Parse(s)
		if ok && Format(u) != s {
			t.Fatalf("Parse(%q) then Format gives %q", s, Format(u))
		}
		if Valid(s) != ok || refValid(s) != ok {
			t.Fatalf("%q: Parse ok %v, Valid %v, reference %v", s, ok, Valid(s), refValid(s))
		}
		var v UUID
		copy(v[:], raw)
		text := Format(v)
		back, ok := Parse(text)
		if !ok || back != v {
			t.Fatalf("Format(%x) = %q parses to %x, %v", v, text, back, ok)
		}
		if got := string(Append([]byte(s), v)); got != s+text {
			t.Fatalf("Append after %q = %q", s, got)
		}
	})
}

// refValid is the validator the store had before this package: 36 bytes, dashes at 8, 13, 18 and 23,
// lowercase hex elsewhere.
func refValid(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
