package legacyimport

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/iotauth/iotauth/backend/core/passhash"
)

// Hashes in the formats of the tools, made here (the integration tests use the real mosquitto_passwd).
var (
	mosq7 = func() string {
		salt := []byte("0123456789ab")
		sum, _ := pbkdf2.Key(sha512.New, "pw", salt, 101, 64)
		return "$7$101$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum)
	}()
	mosq6 = func() string {
		salt := []byte("0123456789ab")
		h := sha512.New()
		h.Write([]byte("pw"))
		h.Write(salt)
		return "$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(h.Sum(nil))
	}()
	goAuth = func() string {
		salt := []byte("0123456789abcdef")
		sum, _ := pbkdf2.Key(sha512.New, "pw", salt, 1000, 64)
		return "PBKDF2$sha512$1000$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum)
	}()
	goAuthUTF8 = func() string {
		sum, _ := pbkdf2.Key(sha512.New, "pw", []byte("plain-salt"), 1000, 64)
		return "PBKDF2$sha512$1000$plain-salt$" + base64.StdEncoding.EncodeToString(sum)
	}()
	bcryptHash = func() string {
		h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
		return string(h)
	}()
)

func TestCheckUsername(t *testing.T) {
	tests := []struct {
		name string
		u    string
		want error
	}{
		{"plain", "sensor-17", nil},
		{"unicode", "капибара.1", nil},
		{"colon and spaces inside", "a b:c", nil},
		{"256 bytes", strings.Repeat("x", 256), nil},
		{"empty", "", ErrEmptyUsername},
		{"257 bytes", strings.Repeat("x", 257), ErrUsernameTooLong},
		{"plus", "a+b", ErrUsernameChars},
		{"hash", "a#b", ErrUsernameChars},
		{"slash", "a/b", ErrUsernameChars},
		{"percent", "a%u", ErrUsernameChars},
		{"control", "a\x00b", ErrUsernameChars},
		{"tab", "a\tb", ErrUsernameChars},
		{"leading space", " a", ErrUsernameChars},
		{"invalid utf-8", "a\xffb", ErrUsernameChars},
		{"device key", "iotsk_live_abc", ErrUsernameSecret},
		{"mqtt password inside", "x-iotmp_abc", ErrUsernameSecret},
		{"renamed session", "iotauth-agent:1234", ErrUsernameReserved},
		{"app session", "iotauth-app:1", ErrUsernameReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckUsername(tt.u); !errors.Is(err, tt.want) {
				t.Fatalf("CheckUsername(%q) = %v, want %v", tt.u, err, tt.want)
			}
		})
	}
}

func TestParsePasswdLine(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		user, hash string
		skip       bool
		want       error
	}{
		{"$7$", "dev:" + mosq7, "dev", mosq7, false, nil},
		{"$6$", "dev:" + mosq6, "dev", mosq6, false, nil},
		{"CRLF", "dev:" + mosq7 + "\r\n", "dev", mosq7, false, nil},
		{"blank", "   ", "", "", true, nil},
		{"comment", "# dev:x", "", "", true, nil},
		{"no colon", "dev", "", "", false, ErrLineSyntax},
		{"extra colon", "dev:" + mosq7 + ":x", "", "", false, ErrLineSyntax},
		{"plaintext", "dev:secret", "", "", false, ErrPlaintext},
		{"bcrypt is not a password_file hash", "dev:" + bcryptHash, "", "", false, ErrHashScheme},
		{"truncated $7$", "dev:" + mosq7[:40], "", "", false, ErrHashScheme},
		{"bad username", "a/b:" + mosq7, "", "", false, ErrUsernameChars},
		{"empty username", ":" + mosq7, "", "", false, ErrEmptyUsername},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, h, skip, err := ParsePasswdLine(tt.line)
			if !errors.Is(err, tt.want) || skip != tt.skip {
				t.Fatalf("err = %v skip = %v, want %v %v", err, skip, tt.want, tt.skip)
			}
			if err == nil && !skip && (u != tt.user || h != tt.hash) {
				t.Fatalf("got %q %q", u, h)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		opts      Options
		wantUsers []string
		wantBad   []int // line numbers
		check     func(t *testing.T, as []Account)
	}{
		{
			name:      "password file with client id and topics",
			input:     "# fleet\ndev-1:" + mosq7 + "\n\ndev-2:" + mosq6 + "\n",
			opts:      Options{Format: Passwd, ClientID: "%u", Topics: []string{"devices/%u/#", "read cmd/%u"}},
			wantUsers: []string{"dev-1", "dev-2"},
			check: func(t *testing.T, as []Account) {
				a := as[0]
				if a.Line != 2 || a.ClientID != "dev-1" || len(a.Rules) != 2 ||
					a.Rules[0] != (Rule{"readwrite", "devices/dev-1/#"}) || a.Rules[1] != (Rule{"read", "cmd/dev-1"}) {
					t.Fatalf("account %+v", a)
				}
				if as[1].Line != 4 {
					t.Fatalf("dev-2 on line %d, want 4", as[1].Line)
				}
			},
		},
		{
			name:      "every bad line reported, good ones kept",
			input:     "a:" + mosq7 + "\nb/c:" + mosq7 + "\na:" + mosq6 + "\nd:plain\n" + strings.Repeat("e", 300) + ":" + mosq7 + "\nf:" + mosq7,
			opts:      Options{Format: Passwd},
			wantUsers: []string{"a", "f"},
			wantBad:   []int{2, 3, 4, 5},
		},
		{
			name: "go-auth export with header, bcrypt and utf-8 salt off",
			input: "id,username,password_hash,is_admin\n1,s1," + goAuth + ",f\n2,s2," + bcryptHash + ",t\n3,s3," + mosq7 +
				",f\n4,s4,\"" + goAuth + "\",f\n",
			opts:      Options{Format: GoAuth},
			wantUsers: []string{"s1", "s2", "s4"},
			wantBad:   []int{4},
		},
		{
			name:      "go-auth without header",
			input:     "s1," + goAuth + "\n",
			opts:      Options{Format: GoAuth, ClientID: "any"},
			wantUsers: []string{"s1"},
			check: func(t *testing.T, as []Account) {
				if as[0].ClientID != "" {
					t.Fatalf("client id %q for rule any", as[0].ClientID)
				}
			},
		},
		{
			name:      "go-auth utf-8 salt rewritten",
			input:     "username,password\ns1," + goAuthUTF8 + "\n",
			opts:      Options{Format: GoAuth, SaltEncoding: "utf-8"},
			wantUsers: []string{"s1"},
			check: func(t *testing.T, as []Account) {
				h, err := passhash.Parse(as[0].PasswordHash)
				if err != nil || !h.Verify([]byte("pw")) {
					t.Fatalf("rewritten hash %q does not verify: %v", as[0].PasswordHash, err)
				}
			},
		},
		{
			name:      "csv with acl columns",
			input:     "username,password_hash,acl\nu1," + bcryptHash + ",read up/%u,deny up/%u/secret\nu2," + passhash.SHA256Hex("x") + "\nu3,plain\nu4," + mosq7 + ",read $SYS/#\n",
			opts:      Options{Format: CSV, Topics: []string{"write t/%u"}},
			wantUsers: []string{"u1", "u2"},
			wantBad:   []int{4, 5},
			check: func(t *testing.T, as []Account) {
				want := []Rule{{"write", "t/u1"}, {"read", "up/u1"}, {"deny", "up/u1/secret"}}
				if fmt.Sprint(as[0].Rules) != fmt.Sprint(want) {
					t.Fatalf("rules %v, want %v", as[0].Rules, want)
				}
			},
		},
		{
			name:      "csv quoting error stops with a line",
			input:     "u1," + mosq7 + "\nu2,\"unterminated\n",
			opts:      Options{Format: CSV},
			wantBad:   []int{2},
			wantUsers: []string{"u1"},
		},
		{
			name:    "rule rejected by the checker",
			input:   "u1," + mosq7 + "\n",
			opts:    Options{Format: CSV, Topics: []string{"x/%u"}, CheckRule: func(string, string) error { return errors.New("no") }},
			wantBad: []int{1},
		},
		{
			name:    "client id that would be too long",
			input:   "u1:" + mosq7 + "\n",
			opts:    Options{Format: Passwd, ClientID: strings.Repeat("p", 255) + "%u"},
			wantBad: []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as, bad, err := Parse(strings.NewReader(tt.input), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var users []string
			for _, a := range as {
				users = append(users, a.Username)
			}
			var lines []int
			for _, b := range bad {
				lines = append(lines, b.Line)
			}
			if fmt.Sprint(users) != fmt.Sprint(tt.wantUsers) || fmt.Sprint(lines) != fmt.Sprint(tt.wantBad) {
				t.Fatalf("users %v bad lines %v (%v), want %v and %v", users, lines, bad, tt.wantUsers, tt.wantBad)
			}
			if tt.check != nil {
				tt.check(t, as)
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	for _, o := range []Options{
		{Format: "ldap"},
		{Format: Passwd, ClientID: "fixed-id"},
		{Format: GoAuth, SaltEncoding: "hex"},
		{Format: Passwd, Topics: []string{"  "}},
		{Format: Passwd, Topics: []string{"x/%c"}},
	} {
		if _, _, err := Parse(strings.NewReader(""), o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

// A rejected username that looks like a secret is not echoed in the report.
func TestLineErrorHidesSecrets(t *testing.T) {
	_, bad, err := Parse(strings.NewReader("iotsk_live_0123456789:"+mosq7+"\n"), Options{Format: Passwd})
	if err != nil || len(bad) != 1 {
		t.Fatalf("%v %v", bad, err)
	}
	if strings.Contains(bad[0].Error(), "0123456789") {
		t.Fatalf("report echoes a secret-like username: %v", bad[0])
	}
}

// FuzzParsePasswdLine: the line parser never panics, and whatever it accepts obeys the username rules
// and is a hash the plugin can verify.
func FuzzParsePasswdLine(f *testing.F) {
	for _, s := range []string{"dev:" + mosq7, "dev:" + mosq6, "dev", ":", "a:b:c", "#x", "a/b:" + mosq7, "dev:$7$101$$", "dev:$6$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		u, h, skip, err := ParsePasswdLine(line)
		if err != nil || skip {
			return
		}
		if CheckUsername(u) != nil {
			t.Fatalf("accepted username %q breaks the rules", u)
		}
		if _, perr := passhash.Parse(h); perr != nil {
			t.Fatalf("accepted hash %q does not parse: %v", h, perr)
		}
	})
}

// FuzzParse: no input makes Parse panic, and every account it returns is usable.
func FuzzParse(f *testing.F) {
	f.Add("username,password_hash\nu1,"+goAuth+",read a/%u\n", "csv")
	f.Add("id,username,password_hash\n1,s1,"+bcryptHash+"\n", "go-auth")
	f.Add("dev:"+mosq7+"\n", "passwd")
	f.Fuzz(func(t *testing.T, input, format string) {
		as, _, err := Parse(strings.NewReader(input), Options{Format: Format(format), ClientID: "%u", Topics: []string{"d/%u/#"}})
		if err != nil {
			return
		}
		for _, a := range as {
			if CheckUsername(a.Username) != nil || a.ClientID != a.Username {
				t.Fatalf("bad account %+v", a)
			}
			if _, err := passhash.Parse(a.PasswordHash); err != nil {
				t.Fatalf("account %q with unparsable hash", a.Username)
			}
		}
	})
}
