// Package uuid reads and writes UUIDs in the one text form iotauth uses: the canonical 36-character
// lowercase form that PostgreSQL's uuid::text prints (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx). Any other
// spelling (uppercase, braces, no dashes) is refused rather than normalised, so that Format gives back
// exactly the string Parse was given and ids compare equal as strings wherever they travel. Nothing here
// allocates except Format's result.
package uuid

import "encoding/hex"

// UUID is the 16 bytes of a uuid, kept instead of its 36-character text where memory counts.
type UUID [16]byte

// textLen is the length of the canonical text form.
const textLen = 36

// dash reports whether position i of the text form holds a dash.
func dash(i int) bool { return i == 8 || i == 13 || i == 18 || i == 23 }

// Parse reads the canonical lowercase form; for anything else it returns the zero UUID and false. It
// reports with a bool rather than an error because its callers fall back to keeping the string, which is
// not a failure.
func Parse(s string) (UUID, bool) {
	var u UUID
	if len(s) != textLen {
		return UUID{}, false
	}
	j := 0
	for i := 0; i < textLen; {
		if dash(i) {
			if s[i] != '-' {
				return UUID{}, false
			}
			i++
			continue
		}
		hi, ok1 := lowerHex(s[i])
		lo, ok2 := lowerHex(s[i+1])
		if !ok1 || !ok2 {
			return UUID{}, false
		}
		u[j] = hi<<4 | lo
		i += 2
		j++
	}
	return u, true
}

// Valid reports whether s is in the canonical lowercase form. Callers use it to answer "not found" or
// "invalid" for a malformed id without a query.
func Valid(s string) bool {
	_, ok := Parse(s)
	return ok
}

// Format returns u in the canonical form.
func Format(u UUID) string {
	var b [textLen]byte
	return string(Append(b[:0], u))
}

// Append appends u in the canonical form to dst, so that a caller can build a longer string around it
// in a buffer of its own with no allocation but the final one.
func Append(dst []byte, u UUID) []byte {
	dst = hex.AppendEncode(dst, u[0:4])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[4:6])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[6:8])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[8:10])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, u[10:])
}

// lowerHex decodes one lowercase hex digit.
func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
