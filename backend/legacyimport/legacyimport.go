// Package legacyimport reads the account lists of existing Mosquitto fleets for `iotauth import`: a
// Mosquitto password_file (as mosquitto_passwd writes it: `user:$7$…` PBKDF2-SHA512 or `user:$6$…`
// salted SHA-512), a CSV export of mosquitto-go-auth's user table (`PBKDF2$sha512$…` or bcrypt), and a
// plain CSV of `username,password_hash[,acl...]`. It checks every line (username rules, hash format,
// duplicates, topics) and reports each bad line with its number; it touches no database.
package legacyimport

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// Format names an input format.
type Format string

// The formats Parse reads.
const (
	// Passwd is a Mosquitto password_file: `username:hash` lines; blank lines and `#` comments skipped.
	Passwd Format = "passwd"
	// GoAuth is a CSV export of mosquitto-go-auth's user table: a header row naming the `username` and
	// `password_hash` (or `password`) columns, or those two columns first without a header.
	GoAuth Format = "go-auth"
	// CSV is `username,password_hash[,acl...]` rows; each acl field is `[read|write|readwrite|deny ]pattern`
	// with %u standing for the username. A first row starting with `username` is a header.
	CSV Format = "csv"
)

// MaxUsernameLen bounds a username (the plugin refuses longer ones).
const MaxUsernameLen = 256

// ReservedPrefix starts the names the plugin gives its own sessions (iotauth-agent:…, iotauth-app:…):
// no imported username may start with it.
const ReservedPrefix = "iotauth-"

// Username errors; a LineError wraps one of these or a hash or topic error.
var (
	ErrEmptyUsername    = errors.New("username is empty")
	ErrUsernameTooLong  = fmt.Errorf("username is longer than %d bytes", MaxUsernameLen)
	ErrUsernameChars    = errors.New("username contains '+', '#', '/' or '%', a control character, or leading or trailing spaces, or is not UTF-8")
	ErrUsernameSecret   = errors.New("username looks like an iotauth secret (iotsk_, iotmp_, …); such names are never accepted as usernames")
	ErrUsernameReserved = errors.New("username starts with iotauth-, which the plugin reserves for its own session names")
	ErrDuplicate        = errors.New("username appears more than once")
	ErrHashScheme       = errors.New("password hash is not of a format this import reads")
	ErrPlaintext        = errors.New("password is not hashed; hash the file first (mosquitto_passwd -U FILE)")
	ErrLineSyntax       = errors.New("line is not `username:hash`")
	ErrClientID         = errors.New("client id made from the username is not usable (longer than 256 bytes, '+', '#' or '/', or looks like a secret)")
	ErrTopic            = errors.New("topic rule is not usable")
)

// LineError is one bad line.
type LineError struct {
	Line     int
	Username string // "" when the line has none
	Err      error
}

// Error names the line, the username (not a secret: a device's name) and what is wrong.
func (e *LineError) Error() string {
	if e.Username == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d (%q): %v", e.Line, e.Username, e.Err)
}

// Unwrap returns the reason.
func (e *LineError) Unwrap() error { return e.Err }

// Rule is one topic rule of an account.
type Rule struct {
	Access  string
	Pattern string
}

// Account is one device to import.
type Account struct {
	Line         int
	Username     string
	PasswordHash string
	ClientID     string // exact client id; "" for any
	Rules        []Rule
}

// Options tune Parse.
type Options struct {
	Format Format
	// ClientID is the client id rule: "any", or a template whose %u is the username (e.g. "%u").
	ClientID string
	// Topics are rules every account gets: `[access ]pattern`, %u standing for the username.
	Topics []string
	// SaltEncoding is go-auth's auth_opt_hasher_salt_encoding: "base64" (its default) or "utf-8".
	SaltEncoding string
	// CheckRule, when set, validates a rule after %u is filled in (the CLI passes the plugin's ACL parser).
	CheckRule func(access, pattern string) error
}

// CheckUsername applies the username rules: 1–256 bytes of UTF-8 without control characters, '+', '#',
// '/' or '%' (it is substituted into topic and client id templates) or surrounding spaces; not shaped
// like an iotauth secret; not in the plugin's reserved namespace.
func CheckUsername(u string) error {
	switch {
	case u == "":
		return ErrEmptyUsername
	case len(u) > MaxUsernameLen:
		return ErrUsernameTooLong
	case !utf8.ValidString(u) || strings.ContainsAny(u, "+#/%") || strings.TrimSpace(u) != u ||
		strings.IndexFunc(u, unicode.IsControl) >= 0:
		return ErrUsernameChars
	case secret.LooksLikeAny(u):
		return ErrUsernameSecret
	case strings.HasPrefix(u, ReservedPrefix):
		return ErrUsernameReserved
	}
	return nil
}

// ParsePasswdLine reads one line of a Mosquitto password_file. skip is true for blank and comment lines.
func ParsePasswdLine(line string) (username, hash string, skip bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
		return "", "", true, nil
	}
	u, h, ok := strings.Cut(line, ":")
	if !ok || strings.Contains(h, ":") {
		return u, "", false, ErrLineSyntax
	}
	if err := CheckUsername(u); err != nil {
		return u, "", false, err
	}
	if !strings.HasPrefix(h, "$6$") && !strings.HasPrefix(h, "$7$") {
		if strings.HasPrefix(h, "$") {
			return u, "", false, ErrHashScheme
		}
		return u, "", false, ErrPlaintext
	}
	if _, err := passhash.Parse(h); err != nil {
		return u, "", false, fmt.Errorf("%w: %v", ErrHashScheme, err)
	}
	return u, h, false, nil
}

// maxLine bounds one line of an import file.
const maxLine = 64 * 1024

// Parse reads every account of r. It returns the accounts of the good lines and one LineError per bad
// line; err is for an unreadable input or bad options.
func Parse(r io.Reader, o Options) (accounts []Account, bad []*LineError, err error) {
	if o.ClientID == "" {
		o.ClientID = "any"
	}
	if o.ClientID != "any" && !strings.Contains(o.ClientID, "%u") {
		return nil, nil, fmt.Errorf("client id rule %q: use \"any\" or a template with %%u (the legacy username), e.g. %%u", o.ClientID)
	}
	if o.SaltEncoding == "" {
		o.SaltEncoding = "base64"
	}
	if o.SaltEncoding != "base64" && o.SaltEncoding != "utf-8" {
		return nil, nil, fmt.Errorf("salt encoding %q: use base64 (go-auth's default) or utf-8", o.SaltEncoding)
	}
	for _, t := range o.Topics {
		if _, _, err := splitRule(t); err != nil {
			return nil, nil, fmt.Errorf("topic %q: %w", t, err)
		}
	}
	var rows []row
	switch o.Format {
	case Passwd:
		rows, err = passwdRows(r)
	case GoAuth, CSV:
		rows, err = csvRows(r, o.Format)
	default:
		return nil, nil, fmt.Errorf("format %q: use passwd, go-auth or csv", o.Format)
	}
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]int{}
	for _, rw := range rows {
		if rw.err != nil {
			bad = append(bad, &LineError{Line: rw.line, Username: printable(rw.user), Err: rw.err})
			continue
		}
		a, err := account(rw, o)
		if err != nil {
			bad = append(bad, &LineError{Line: rw.line, Username: printable(rw.user), Err: err})
			continue
		}
		if first, dup := seen[a.Username]; dup {
			bad = append(bad, &LineError{Line: rw.line, Username: a.Username, Err: fmt.Errorf("%w (first on line %d)", ErrDuplicate, first)})
			continue
		}
		seen[a.Username] = rw.line
		accounts = append(accounts, a)
	}
	return accounts, bad, nil
}

// printable is what a report may show of a rejected username: nothing that looks like a secret, no
// control characters, bounded.
func printable(u string) string {
	if secret.LooksLikeAny(u) {
		return "(hidden: looks like a secret)"
	}
	u = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(u, "?"))
	if len(u) > 80 {
		u = u[:80] + "…"
	}
	return u
}

type row struct {
	line       int
	user, hash string
	acl        []string
	err        error
}

func passwdRows(r io.Reader) ([]row, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var rows []row
	for n := 1; sc.Scan(); n++ {
		u, h, skip, err := ParsePasswdLine(sc.Text())
		if skip {
			continue
		}
		rows = append(rows, row{line: n, user: u, hash: h, err: err})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	return rows, nil
}

func csvRows(r io.Reader, f Format) ([]row, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	userCol, hashCol := 0, 1
	var rows []row
	first := true
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			rows = append(rows, row{line: pe.Line, err: fmt.Errorf("%w: %v", ErrLineSyntax, pe.Err)})
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				continue
			}
			return rows, nil // the CSV reader cannot resynchronise after a quoting error
		}
		if err != nil {
			return nil, fmt.Errorf("read CSV: %w", err)
		}
		if first {
			first = false
			if u, h, header := csvHeader(rec, f); header {
				if u < 0 || h < 0 {
					return nil, errors.New("the CSV header names no username and password_hash (or password) columns")
				}
				userCol, hashCol = u, h
				continue
			}
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) <= max(userCol, hashCol) {
			rows = append(rows, row{line: line, user: rec[0], err: fmt.Errorf("%w: expected username and password hash columns", ErrLineSyntax)})
			continue
		}
		rw := row{line: line, user: rec[userCol], hash: rec[hashCol]}
		if f == CSV {
			rw.acl = rec[2:]
		}
		rows = append(rows, rw)
	}
	return rows, nil
}

// csvHeader recognises a header row: for CSV a first field "username"; for go-auth's table export any
// field "username" (its columns are then found by name: username, and password_hash or password).
func csvHeader(rec []string, f Format) (userCol, hashCol int, header bool) {
	name := func(i int) string { return strings.ToLower(strings.TrimSpace(strings.TrimPrefix(rec[i], "\ufeff"))) }
	if f == CSV {
		return 0, 1, name(0) == "username"
	}
	userCol, hashCol = -1, -1
	for i := range rec {
		switch name(i) {
		case "username":
			userCol, header = i, true
		case "password_hash", "password":
			hashCol = i
		}
	}
	return userCol, hashCol, header
}

// account turns a syntactically good row into an Account, applying the format's hash rules and the
// options' client id and topics.
func account(rw row, o Options) (Account, error) {
	if err := CheckUsername(rw.user); err != nil {
		return Account{}, err
	}
	h := rw.hash
	switch o.Format {
	case GoAuth:
		switch {
		case strings.HasPrefix(h, passhash.GoAuthPrefix) && o.SaltEncoding == "utf-8":
			converted, err := passhash.GoAuthFromUTF8Salt(h)
			if err != nil {
				return Account{}, fmt.Errorf("%w: %v", ErrHashScheme, err)
			}
			h = converted
		case strings.HasPrefix(h, passhash.GoAuthPrefix), strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"),
			strings.HasPrefix(h, "$2y$"), strings.HasPrefix(h, "$argon2id$"):
		default:
			return Account{}, ErrHashScheme
		}
	case CSV:
		if h == "" || !strings.Contains(h, "$") {
			return Account{}, ErrPlaintext
		}
	}
	if _, err := passhash.Parse(h); err != nil {
		return Account{}, fmt.Errorf("%w: %v", ErrHashScheme, err)
	}
	a := Account{Line: rw.line, Username: rw.user, PasswordHash: h}
	if o.ClientID != "any" {
		a.ClientID = strings.ReplaceAll(o.ClientID, "%u", rw.user)
		if len(a.ClientID) > MaxUsernameLen || strings.ContainsAny(a.ClientID, "+#/") || secret.LooksLikeAny(a.ClientID) {
			return Account{}, ErrClientID
		}
	}
	for _, t := range append(append([]string(nil), o.Topics...), rw.acl...) {
		if strings.TrimSpace(t) == "" {
			continue
		}
		access, pattern, err := splitRule(t)
		if err != nil {
			return Account{}, fmt.Errorf("%w: %q: %v", ErrTopic, t, err)
		}
		pattern = strings.ReplaceAll(pattern, "%u", rw.user)
		if err := topicfilter.Check(pattern); err != nil {
			return Account{}, fmt.Errorf("%w: %q: %v", ErrTopic, t, err)
		}
		if o.CheckRule != nil {
			if err := o.CheckRule(access, pattern); err != nil {
				return Account{}, fmt.Errorf("%w: %q: %v", ErrTopic, t, err)
			}
		}
		a.Rules = append(a.Rules, Rule{Access: access, Pattern: pattern})
	}
	return a, nil
}

// splitRule reads `[read|write|readwrite|deny ]pattern`; a bare pattern is readwrite.
func splitRule(t string) (access, pattern string, err error) {
	t = strings.TrimSpace(t)
	access, pattern = "readwrite", t
	if a, p, ok := strings.Cut(t, " "); ok {
		switch a {
		case "read", "write", "readwrite", "deny":
			access, pattern = a, strings.TrimSpace(p)
		}
	}
	if pattern == "" {
		return "", "", errors.New("empty pattern")
	}
	if strings.Contains(pattern, "%c") {
		return "", "", errors.New("%c is not supported in imported topics; use %u (the legacy username)")
	}
	return access, pattern, nil
}
