package passhash

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func mosquittoPBKDF2(t *testing.T, pw string) string {
	t.Helper()
	salt := make([]byte, 12)
	rand.Read(salt)
	sum, err := pbkdf2.Key(sha512.New, pw, salt, 1000, 64)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("$7$1000$%s$%s", base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(sum))
}

func TestVerify(t *testing.T) {
	argon, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("correct horse battery"), 4)
	salt := []byte("saltsalt")
	h := sha512.New()
	h.Write([]byte("correct horse battery"))
	h.Write(salt)
	six := "$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(h.Sum(nil))
	stored := map[string]string{
		"sha256":   SHA256Hex("correct horse battery"),
		"argon2id": argon,
		"bcrypt":   string(bc),
		"pbkdf2":   mosquittoPBKDF2(t, "correct horse battery"),
		"sha512":   six,
	}
	for name, s := range stored {
		t.Run(name, func(t *testing.T) {
			h, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !h.Verify([]byte("correct horse battery")) {
				t.Fatal("right password refused")
			}
			for _, wrong := range []string{"", "correct horse batter", "correct horse battery ", "Correct horse battery"} {
				if h.Verify([]byte(wrong)) {
					t.Fatalf("wrong password %q accepted", wrong)
				}
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	for _, s := range []string{
		"", "sha256$", "sha256$zz", "sha256$" + strings.Repeat("g", 64), "md5$abc", "plain",
		"$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024$", "$2b$99$xx", "$7$abc$x$y", "$7$1000$!!$x", "$6$x",
	} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted a malformed hash", s)
		}
	}
	var zero Hash
	if zero.Verify([]byte("")) {
		t.Fatal("zero Hash verified")
	}
}

func TestHashPasswordLength(t *testing.T) {
	if _, err := HashPassword("short"); err == nil {
		t.Fatal("7-char password accepted")
	}
	if _, err := HashPassword(strings.Repeat("x", 129)); err == nil {
		t.Fatal("129-char password accepted")
	}
	long := strings.Repeat("x", 100) + "A"
	s, err := HashPassword(long)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := Parse(s)
	if h.Verify([]byte(strings.Repeat("x", 100) + "B")) {
		t.Fatal("password differing after byte 72 accepted: truncation")
	}
	if !h.Verify([]byte(long)) {
		t.Fatal("long password refused")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(SHA256Hex("x"))
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$7$1000$c2FsdA==$aGFzaA==")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err == nil && h.Slow() {
			return // do not run slow KDFs with fuzzed parameters
		}
		h.Verify([]byte("x"))
	})
}

func TestSHA256Compact(t *testing.T) {
	lower := SHA256Hex("correct horse battery")
	tests := []struct {
		name, stored string
		wantOK       bool
	}{
		{"lowercase hex", lower, true},
		{"uppercase hex", "sha256$" + strings.ToUpper(lower[len("sha256$"):]), true},
		{"argon2id", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.stored)
			if err != nil {
				t.Fatal(err)
			}
			sum, ok := h.SHA256Sum()
			if ok != tt.wantOK {
				t.Fatalf("SHA256Sum ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			back := FromSHA256Sum(sum)
			if back != h || !back.Verify([]byte("correct horse battery")) || back.Verify([]byte("wrong")) {
				t.Fatal("FromSHA256Sum does not rebuild the parsed hash")
			}
		})
	}
	if _, ok := (Hash{}).SHA256Sum(); ok {
		t.Fatal("zero Hash reported a SHA-256 digest")
	}
}

func TestParseSHA256DoesNotAllocate(t *testing.T) {
	stored := SHA256Hex("correct horse battery")
	if n := testing.AllocsPerRun(100, func() { Parse(stored) }); n != 0 {
		t.Fatalf("Parse of a sha256 hash made %v allocations, want 0", n)
	}
}

func TestCostCeilings(t *testing.T) {
	hi, _ := bcrypt.GenerateFromPassword([]byte("x"), MaxBcryptCost+1)
	for _, s := range []string{
		string(hi),
		"$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=19456,t=6,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$7$210001$c2FsdA==$" + base64.StdEncoding.EncodeToString(make([]byte, 64)),
	} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse accepted a hash above the cost ceiling: %.30s…", s)
		}
	}
}

// mosquitto-go-auth's PBKDF2 format: known-answer vectors published in go-auth's own tests (password
// "testpw", salt field "os24lcPr9cJt2QDVWssblQ==", sha512, 100000 iterations), once with its default
// base64 salt encoding and once with utf-8 (the salt field's text is the salt), which the importer
// rewrites with GoAuthFromUTF8Salt.
func TestGoAuthPBKDF2(t *testing.T) {
	const (
		base64Salt = "PBKDF2$sha512$100000$os24lcPr9cJt2QDVWssblQ==$BK1BQ2wbwU1zNxv3Ml3wLuu5//hPop3/LvaPYjjCwdBvnpwusnukJPpcXQzyyjOlZdieXTx6sXAcX4WnZRZZnw=="
		utf8Salt   = "PBKDF2$sha512$100000$os24lcPr9cJt2QDVWssblQ==$dEOwgFUoMNt+Q8FHWXl03pZTg/RY47JdSTAx/KjhYKpbugOYg1WWG0tW0V2aqBnSCDLYJdRrkNf3p/PUoKLvkA=="
	)
	h, err := Parse(base64Salt)
	if err != nil || h.Scheme() != GoAuthPBKDF2 || !h.Slow() || h.Encoded() != base64Salt {
		t.Fatalf("Parse: %v %+v", err, h)
	}
	if !h.Verify([]byte("testpw")) || h.Verify([]byte("testpx")) {
		t.Fatal("base64-salt vector does not verify exactly testpw")
	}
	// Read as base64, the utf-8 vector is a different salt: it must not verify until rewritten.
	if u, err := Parse(utf8Salt); err != nil || u.Verify([]byte("testpw")) {
		t.Fatalf("utf-8-salt vector verified without the rewrite (%v)", err)
	}
	rewritten, err := GoAuthFromUTF8Salt(utf8Salt)
	if err != nil {
		t.Fatal(err)
	}
	u, err := Parse(rewritten)
	if err != nil || !u.Verify([]byte("testpw")) || u.Verify([]byte("testpw ")) {
		t.Fatalf("rewritten utf-8 vector %q: %v", rewritten, err)
	}
	for _, bad := range []string{
		"PBKDF2$md5$100000$os24lcPr9cJt2QDVWssblQ==$BK1BQ2wbwU1zNxv3Ml3wLuu5//hPop3/LvaPYjjCwdBvnpwusnukJPpcXQzyyjOlZdieXTx6sXAcX4WnZRZZnw==",
		"PBKDF2$sha512$999999999$os24lcPr9cJt2QDVWssblQ==$BK1BQ2wbwU1zNxv3Ml3wLuu5//hPop3/LvaPYjjCwdBvnpwusnukJPpcXQzyyjOlZdieXTx6sXAcX4WnZRZZnw==",
		"PBKDF2$sha512$0$os24lcPr9cJt2QDVWssblQ==$BK1BQ2wbwU1zNxv3Ml3wLuu5//hPop3/LvaPYjjCwdBvnpwusnukJPpcXQzyyjOlZdieXTx6sXAcX4WnZRZZnw==",
		"PBKDF2$sha512$100000$$BK1BQ2wbwU1zNxv3Ml3wLuu5//hPop3/LvaPYjjCwdBvnpwusnukJPpcXQzyyjOlZdieXTx6sXAcX4WnZRZZnw==",
		"PBKDF2$sha512$100000$os24lcPr9cJt2QDVWssblQ==$c2hvcnQ=",
		"PBKDF2$sha512$100000$os24lcPr9cJt2QDVWssblQ==",
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.40s…) = %v, want ErrMalformed", bad, err)
		}
	}
	if SHA256HexOfSum(sha256.Sum256([]byte("x"))) != SHA256Hex("x") {
		t.Error("SHA256HexOfSum differs from SHA256Hex")
	}
}

// go-auth's hasher_algorithm sha256 and a non-default key length verify too.
func TestGoAuthPBKDF2SHA256(t *testing.T) {
	salt := []byte("sixteen byte slt")
	key, err := pbkdf2.Key(sha256.New, "pw", salt, 1000, 32)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Parse("PBKDF2$sha256$1000$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(key))
	if err != nil || !h.Verify([]byte("pw")) || h.Verify([]byte("px")) {
		t.Fatalf("sha256 go-auth hash: %v", err)
	}
}
