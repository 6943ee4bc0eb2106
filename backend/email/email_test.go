package email

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{"plain", "admin@example.com", "admin@example.com", nil},
		{"trimmed and lower-cased", "  Admin@Example.COM\n", "admin@example.com", nil},
		{"full-width forms fold to ASCII", "ａｄｍｉｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "admin@example.com", nil},
		{"ligature folds", "ﬁnance@example.com", "finance@example.com", nil},
		{"composed and decomposed accents are one address", "rene\u0301@example.com", "ren\u00e9@example.com", nil},
		{"single script: Cyrillic", "иван@пример.рф", "иван@пример.рф", nil},
		{"single script: Greek", "Σοφία@παράδειγμα.ελ", "σοφία@παράδειγμα.ελ", nil},
		{"Latin with Japanese", "tanaka.たなか@example.jp", "tanaka.たなか@example.jp", nil},
		{"Latin with Han and Hangul", "kim김@example.kr", "kim김@example.kr", nil},
		{"digits and punctuation are neutral", "a.b+c_1-2@ex-ample.co.uk", "a.b+c_1-2@ex-ample.co.uk", nil},

		{"zero-width space", "admin\u200b@example.com", "", ErrInvisible},
		{"zero-width space at the end", "admin@example.com\u200b", "", ErrInvisible},
		{"zero-width joiner", "ad\u200dmin@example.com", "", ErrInvisible},
		{"right-to-left override", "\u202eadmin@example.com", "", ErrInvisible},
		{"left-to-right mark", "admin\u200e@example.com", "", ErrInvisible},
		{"soft hyphen", "ad\u00admin@example.com", "", ErrInvisible},
		{"byte order mark", "\ufeffadmin@example.com", "", ErrInvisible},
		{"word joiner", "admin@exa\u2060mple.com", "", ErrInvisible},
		{"Hangul filler", "admin\u3164@example.com", "", ErrInvisible},
		{"half-width Hangul filler", "admin\uffa0@example.com", "", ErrInvisible},
		{"combining grapheme joiner", "admin\u034f@example.com", "", ErrInvisible},
		{"variation selector", "admin\ufe0f@example.com", "", ErrInvisible},
		{"Mongolian vowel separator", "admin\u180e@example.com", "", ErrInvisible},
		{"braille blank", "admin\u2800@example.com", "", ErrInvisible},
		{"inner space", "ad min@example.com", "", ErrInvisible},
		{"no-break space inside", "admin\u00a0x@example.com", "", ErrInvisible},
		{"NUL", "admin\x00@example.com", "", ErrInvisible},
		{"tab", "admin\t@example.com", "", ErrInvisible},
		{"private use", "admin\ue000@example.com", "", ErrInvisible},
		{"replacement character", "admin\ufffd@example.com", "", ErrInvisible},
		{"unassigned", "admin\U000e0080@example.com", "", ErrInvisible},

		{"Cyrillic a in a Latin address", "\u0430dmin@example.com", "", ErrMixedScript},
		{"Cyrillic o in the domain", "admin@ex\u0430mple.c\u043em", "", ErrMixedScript},
		{"Greek omicron", "admin@examp\u03bfle.com", "", ErrMixedScript},
		{"Latin local part, Cyrillic domain", "ivan@пример.рф", "", ErrMixedScript},
		{"Cyrillic with Greek", "иван@παράδειγμα.ελ", "", ErrMixedScript},
		{"Latin with Armenian", "admin\u0585@example.com", "", ErrMixedScript},

		{"no @", "admin.example.com", "", ErrFormat},
		{"two @", "a@b@example.com", "", ErrFormat},
		{"empty local part", "@example.org", "", ErrFormat},
		{"empty domain", "admin@", "", ErrFormat},
		{"too short", "a@", "", ErrFormat},
		{"too long", strings.Repeat("a", 250) + "@example.com", "", ErrFormat},
		{"not UTF-8", "admin\xff@example.com", "", ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if tc.err == nil {
				if err != nil || got != tc.want {
					t.Fatalf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				if again, err := Normalize(got); err != nil || again != got {
					t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
				}
				return
			}
			var e *Error
			if !errors.Is(err, tc.err) || !errors.As(err, &e) || got != "" {
				t.Fatalf("Normalize(%q) = %q, %v; want %v", tc.in, got, err, tc.err)
			}
			if strings.Contains(e.Error(), tc.in) {
				t.Fatalf("the message repeats the address: %s", e.Error())
			}
		})
	}
}

// TestCanonicalMatchesNormalize: what a lookup computes (Canonical) is what creation stored.
func TestCanonicalMatchesNormalize(t *testing.T) {
	for _, s := range []string{"Admin@Example.com", " ＡＤＭＩＮ@example.com ", "rene\u0301@EXAMPLE.com", "Σοφία@παράδειγμα.ελ"} {
		n, err := Normalize(s)
		if err != nil || Canonical(s) != n {
			t.Errorf("%q: Canonical %q, Normalize %q %v", s, Canonical(s), n, err)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"admin@example.com", "\u0430dmin@example.com", "a\u200b@b", "ｘ@ｙ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("Normalize is not idempotent: %q -> %q -> %q, %v", s, n, again, err)
		}
		if Canonical(s) != n {
			t.Fatalf("Canonical(%q) = %q, Normalize %q", s, Canonical(s), n)
		}
	})
}
