// Package email owns the canonical form of an operator's email address and the rules that keep
// look-alike addresses out (docs/security.md, L1): an address is trimmed, NFKC-normalised and lower-cased, and it
// is refused when it holds an invisible character (a format character such as a zero-width space or a
// right-to-left override, a control character, a space, a default-ignorable filler) or mixes scripts
// that are known to be confusable (Latin with Cyrillic or Greek, for example), following the "Highly
// Restrictive" profile of Unicode TS #39. Creating a user and looking one up at login go through the
// same function, so that what is stored is what is found.
package email

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Length limits of an address, in bytes of its canonical form.
const (
	MinLen = 3
	MaxLen = 254
)

// Reasons an address is refused; Error.Reason holds one of them.
var (
	// ErrFormat: not name@domain, too short or too long, or not UTF-8.
	ErrFormat = errors.New("not an email address")
	// ErrInvisible: a character that shows as nothing or moves the text around it.
	ErrInvisible = errors.New("invisible or control character")
	// ErrMixedScript: letters of scripts that must not be mixed in one address.
	ErrMixedScript = errors.New("mixed scripts")
)

// Error is a refused address. Its message says what is wrong and what to do, and never repeats the
// address.
type Error struct {
	Reason error
	Detail string
}

// Error is the detail: what is wrong with the address and what to do.
func (e *Error) Error() string { return e.Detail }

// Unwrap makes errors.Is(err, ErrMixedScript) and the like work.
func (e *Error) Unwrap() error { return e.Reason }

// Canonical is the form addresses are stored and looked up in: surrounding white space trimmed, NFKC
// (so that full-width and other compatibility forms become their plain letters) and lower case. It does
// not check anything; Normalize does.
func Canonical(s string) string {
	return norm.NFKC.String(strings.ToLower(norm.NFKC.String(strings.TrimSpace(s))))
}

// Normalize returns the canonical form of s, or an *Error saying why s cannot be an operator's address.
func Normalize(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", &Error{ErrFormat, "the email address is not valid UTF-8"}
	}
	c := Canonical(s)
	for i, r := range c {
		if invisible(r) {
			return "", &Error{ErrInvisible, fmt.Sprintf("the email address holds the invisible or control character U+%04X at byte %d; type the address without it", r, i)}
		}
	}
	if len(c) < MinLen || len(c) > MaxLen {
		return "", &Error{ErrFormat, fmt.Sprintf("the email address must be %d to %d bytes long", MinLen, MaxLen)}
	}
	local, domain, ok := strings.Cut(c, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return "", &Error{ErrFormat, "the email address must look like name@example.com (one @ with text on both sides)"}
	}
	if scripts := scriptsOf(c); !allowedTogether(scripts) {
		return "", &Error{ErrMixedScript, fmt.Sprintf("the email address mixes letters of the %s scripts, which look alike; use one script (an internationalised domain may be given in its xn-- form)",
			strings.Join(scripts, " and "))}
	}
	return c, nil
}

// invisible reports characters no address may hold: control characters, format characters (Cf: zero
// width space and joiners, bidirectional marks and overrides, soft hyphen, BOM), white space and other
// separators, private-use, unassigned and surrogate code points, variation selectors and the other
// default-ignorable code points (Hangul fillers, combining grapheme joiner), the braille blank, and
// the replacement character that marks text broken on the way.
func invisible(r rune) bool {
	switch {
	case unicode.IsControl(r), unicode.IsSpace(r),
		unicode.In(r, unicode.Cf, unicode.Co, unicode.Cs, unicode.Z, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point):
		return true
	case r == 0x2800, r == utf8.RuneError:
		return true
	}
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) // unassigned
}

// scriptsOf lists, sorted, the scripts of the letters, marks and digits in s, leaving out Common and
// Inherited (punctuation, ASCII digits, combining marks that take the script of their base).
func scriptsOf(s string) []string {
	seen := map[string]bool{}
	for _, r := range s {
		if r < utf8.RuneSelf && !unicode.IsLetter(r) {
			continue
		}
		if unicode.Is(unicode.Common, r) || unicode.Is(unicode.Inherited, r) {
			continue
		}
		if r < utf8.RuneSelf || unicode.Is(unicode.Latin, r) {
			seen["Latin"] = true
			continue
		}
		for name, table := range unicode.Scripts {
			if name != "Common" && name != "Inherited" && unicode.Is(table, r) {
				seen[name] = true
				break
			}
		}
	}
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// highlyRestrictive are the script sets UTS #39 §5.2 allows together besides a single script: Latin
// with the scripts of Japanese, Chinese and Korean writing, whose letters do not pass for Latin ones.
var highlyRestrictive = []map[string]bool{
	{"Latin": true, "Han": true, "Hiragana": true, "Katakana": true},
	{"Latin": true, "Han": true, "Bopomofo": true},
	{"Latin": true, "Han": true, "Hangul": true},
}

func allowedTogether(scripts []string) bool {
	if len(scripts) <= 1 {
		return true
	}
	for _, set := range highlyRestrictive {
		ok := true
		for _, s := range scripts {
			ok = ok && set[s]
		}
		if ok {
			return true
		}
	}
	return false
}
