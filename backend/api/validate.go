package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/iotauth/iotauth/backend/redact"
)

// Limits of PostgreSQL's numeric type, which stores every number of a jsonb document: at most 131072
// digits before the decimal point and 16383 after it (a larger exponent is "value overflows numeric
// format", SQLSTATE 22003).
const (
	pgNumericMaxIntDigits  = 131072
	pgNumericMaxFracDigits = 16383
)

// checkJSONDocument refuses, anywhere in a syntactically valid JSON body, what PostgreSQL cannot store
// or what no client of this API means to send (docs/security.md, H1): text that is not UTF-8, the escape \u0000, a
// lone UTF-16 surrogate (\ud800 without its pair; encoding/json would silently turn it into U+FFFD), a
// number outside PostgreSQL's numeric range, and an object with the same member name twice at any depth
// (jsonb would silently keep the last one). It runs before any database work so that these are client
// errors (400) and never a 500 or an ERROR log line.
func checkJSONDocument(body []byte) *Problem {
	if !utf8.Valid(body) {
		return badRequest(CodeInvalidCharacter, "the body is not valid UTF-8; send JSON text encoded as UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*jsonFrame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.object && !f.haveKey {
				break
			}
			b.WriteByte('/')
			if f.object {
				b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(redactedName(f.key)))
			} else {
				b.WriteString(strconv.Itoa(f.index))
			}
		}
		if b.Len() == 0 {
			return "/"
		}
		return b.String()
	}
	top := func() string {
		if len(stack) > 0 && stack[0].object && stack[0].haveKey {
			return redactedName(stack[0].key)
		}
		return ""
	}
	fail := func(code, detail string) *Problem {
		p := badRequest(code, detail)
		p.Field = top()
		return p
	}
	prev := int64(0)
	for {
		tok, err := dec.Token()
		if err != nil {
			// Syntax errors are reported by the decoding that follows; io.EOF ends a valid document.
			return nil
		}
		off := dec.InputOffset()
		raw := body[prev:off]
		prev = off
		var cur *jsonFrame
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		isKey := cur != nil && cur.object && !cur.haveKey
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				stack[len(stack)-1].valueDone()
			}
			continue
		}
		switch v := tok.(type) {
		case string:
			if what := badEscape(raw); what != "" {
				if isKey {
					cur.key, cur.haveKey = v, true
				}
				return fail(CodeInvalidCharacter, fmt.Sprintf("the text at %s contains %s, which cannot be stored; remove it", path(), what))
			}
			if isKey {
				cur.key, cur.haveKey = v, true
				if cur.seen[v] {
					return fail(CodeInvalidJSON, fmt.Sprintf("the member %s appears twice in one object; send each member once", path()))
				}
				cur.seen[v] = true
				continue
			}
		case json.Number:
			if !numberFitsPostgres(string(v)) {
				return fail(CodeNumberOutOfRange, fmt.Sprintf("the number at %s is out of range (at most %d digits before the decimal point and %d after it)",
					path(), pgNumericMaxIntDigits, pgNumericMaxFracDigits))
			}
		case json.Delim:
			stack = append(stack, &jsonFrame{object: v == '{', seen: map[string]bool{}})
			continue
		}
		if cur != nil {
			cur.valueDone()
		}
	}
}

// redactedName is a member name as it may appear in an answer: cut to 64 bytes, invisible characters
// shown as U+FFFD, secret-shaped text redacted.
func redactedName(s string) string {
	s = strings.Map(func(r rune) rune {
		if unprintable(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(truncate(s, 64), ""))
	return redact.String(s)
}

// unprintable reports the characters a problem detail shows as U+FFFD: control characters and the
// bidirectional embeddings, overrides and isolates, which would reorder the text around them.
func unprintable(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// badEscape describes the first escape in a raw JSON string token that PostgreSQL cannot store (or
// that encoding/json would silently replace), or returns "".
func badEscape(raw []byte) string {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 >= len(raw) {
			continue
		}
		if raw[i+1] != 'u' || i+6 > len(raw) {
			i++
			continue
		}
		r, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
		if err != nil {
			return "a malformed \\u escape"
		}
		switch {
		case r == 0:
			return "the NUL character (\\u0000)"
		case r >= 0xD800 && r <= 0xDBFF:
			// A high surrogate must be followed at once by a low one.
			if i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
				if lo, err := strconv.ParseUint(string(raw[i+8:i+12]), 16, 32); err == nil && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 11
					continue
				}
			}
			return fmt.Sprintf("a lone UTF-16 surrogate (\\u%04x)", r)
		case r >= 0xDC00 && r <= 0xDFFF:
			return fmt.Sprintf("a lone UTF-16 surrogate (\\u%04x)", r)
		}
		i += 5
	}
	return ""
}

// numberFitsPostgres reports whether a JSON number (as its literal text) fits PostgreSQL's numeric.
func numberFitsPostgres(s string) bool {
	s = strings.TrimPrefix(s, "-")
	mant, expText, hasExp := strings.Cut(strings.ToLower(s), "e")
	exp := int64(0)
	if hasExp {
		e, err := strconv.ParseInt(expText, 10, 64)
		if err != nil || e > 1<<30 || e < -(1<<30) {
			return false
		}
		exp = e
	}
	intPart, fracPart, _ := strings.Cut(mant, ".")
	// Digits after the decimal point, as PostgreSQL keeps them (trailing zeros included).
	if int64(len(fracPart))-exp > pgNumericMaxFracDigits {
		return false
	}
	digits := intPart + fracPart
	first := strings.IndexFunc(digits, func(r rune) bool { return r != '0' })
	if first < 0 {
		return true // zero
	}
	// Decimal exponent of the most significant digit; it fixes the digits before the point.
	msd := int64(len(intPart)-1-first) + exp
	return msd+1 <= pgNumericMaxIntDigits
}

// jsonFrame is one open object or array of checkJSONDocument's walk.
type jsonFrame struct {
	object  bool
	seen    map[string]bool
	key     string // objects: the member whose value comes next
	haveKey bool   // objects: key is read and its value not yet
	index   int    // arrays: the element that comes next
}

// valueDone moves past a completed member or element.
func (f *jsonFrame) valueDone() {
	if f.object {
		f.haveKey = false
	} else {
		f.index++
	}
}
