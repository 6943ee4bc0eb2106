// Package passhash verifies and creates the password hashes iotauth stores: `sha256$<hex>` for generated
// MQTT passwords (high-entropy machine secrets, where a fast hash is right and a slow KDF would stall the
// broker's single thread), and the slow formats that legacy imports may carry: argon2id (PHC string),
// bcrypt, Mosquitto's own `$7$` PBKDF2-SHA512 and `$6$` salted SHA-512, and mosquitto-go-auth's
// `PBKDF2$sha512$<iterations>$<base64 salt>$<base64 hash>`. Operator passwords are hashed with argon2id
// using OWASP's parameters.
package passhash

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// ErrMalformed means a stored hash could not be parsed: the row is corrupt or of an unknown format.
var ErrMalformed = errors.New("stored password hash is malformed or of an unknown format")

// Cost ceilings for imported slow hashes. MQTT passwords are verified on the broker's only thread, so a
// hash costlier than these (or a hostile row) is treated as malformed rather than allowed to stall the
// broker or allocate gigabytes. They sit above what mosquitto_passwd and OWASP's parameters produce.
const (
	MaxBcryptCost       = 12
	MaxArgon2Memory     = 64 * 1024 // KiB
	MaxArgon2Time       = 5
	MaxPBKDF2Iterations = 210_000
)

// Scheme names a hash format.
type Scheme uint8

// The schemes Parse understands.
const (
	SHA256 Scheme = iota + 1
	Argon2id
	Bcrypt
	PBKDF2SHA512 // mosquitto_passwd's $7$
	SaltedSHA512 // mosquitto_passwd's older $6$
	GoAuthPBKDF2 // mosquitto-go-auth's PBKDF2$sha512$… or PBKDF2$sha256$… (base64 salt encoding)
)

// Hash is a parsed stored hash, ready to verify candidates. The zero value verifies nothing.
type Hash struct {
	scheme Scheme
	sum    [32]byte // SHA256 only
	raw    string   // slow schemes keep their encoded form
}

// Scheme reports the parsed scheme.
func (h Hash) Scheme() Scheme { return h.scheme }

// Slow reports whether verifying costs a deliberate KDF (milliseconds or more).
func (h Hash) Slow() bool {
	return h.scheme != 0 && h.scheme != SHA256 && h.scheme != SaltedSHA512
}

// Encoded returns the stored form a slow scheme was parsed from ("" for SHA256: see SHA256Sum).
func (h Hash) Encoded() string { return h.raw }

// SHA256Hex returns the stored form of a fast SHA-256 hash of password.
func SHA256Hex(password string) string {
	sum := sha256.Sum256([]byte(password))
	return "sha256$" + hex.EncodeToString(sum[:])
}

// SHA256HexOfSum is SHA256Hex for a password whose SHA-256 digest is sum: the stored form, from the
// digest alone (the plugin records it after an imported hash's first success without keeping the
// password).
func SHA256HexOfSum(sum [32]byte) string { return "sha256$" + hex.EncodeToString(sum[:]) }

// SHA256Sum returns the SHA-256 digest a SHA256 hash compares against; ok is false for other schemes.
// With FromSHA256Sum it lets a cache keep the common hash as 32 bytes instead of a Hash.
func (h Hash) SHA256Sum() (sum [32]byte, ok bool) {
	return h.sum, h.scheme == SHA256
}

// FromSHA256Sum is the SHA256 Hash that verifies passwords whose SHA-256 digest is sum.
func FromSHA256Sum(sum [32]byte) Hash { return Hash{scheme: SHA256, sum: sum} }

// decodeHex decodes len(dst)*2 hex digits (either case) from src without allocating.
func decodeHex(dst []byte, src string) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHex(src[2*i])
		lo, ok2 := fromHex(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Parse parses a stored hash. It never panics on any input.
func Parse(stored string) (Hash, error) {
	switch {
	case strings.HasPrefix(stored, "sha256$"):
		hx := stored[len("sha256$"):]
		if len(hx) != 64 {
			return Hash{}, ErrMalformed
		}
		var h Hash
		if !decodeHex(h.sum[:], hx) {
			return Hash{}, ErrMalformed
		}
		h.scheme = SHA256
		return h, nil
	case strings.HasPrefix(stored, "$argon2id$"):
		if _, _, _, err := parseArgon2id(stored); err != nil {
			return Hash{}, err
		}
		return Hash{scheme: Argon2id, raw: stored}, nil
	case strings.HasPrefix(stored, "$2a$"), strings.HasPrefix(stored, "$2b$"), strings.HasPrefix(stored, "$2y$"):
		if cost, err := bcrypt.Cost([]byte(stored)); err != nil || cost > MaxBcryptCost {
			return Hash{}, ErrMalformed
		}
		return Hash{scheme: Bcrypt, raw: stored}, nil
	case strings.HasPrefix(stored, "$7$"):
		if _, _, _, err := parsePBKDF2(stored); err != nil {
			return Hash{}, err
		}
		return Hash{scheme: PBKDF2SHA512, raw: stored}, nil
	case strings.HasPrefix(stored, GoAuthPrefix):
		if _, _, _, _, err := parseGoAuth(stored); err != nil {
			return Hash{}, err
		}
		return Hash{scheme: GoAuthPBKDF2, raw: stored}, nil
	case strings.HasPrefix(stored, "$6$"):
		if _, _, err := parseSalted(stored); err != nil {
			return Hash{}, err
		}
		return Hash{scheme: SaltedSHA512, raw: stored}, nil
	}
	return Hash{}, ErrMalformed
}

// Verify reports whether password matches. Comparisons are constant-time.
func (h Hash) Verify(password []byte) bool {
	switch h.scheme {
	case SHA256:
		sum := sha256.Sum256(password)
		return subtle.ConstantTimeCompare(sum[:], h.sum[:]) == 1
	case Argon2id:
		p, salt, want, err := parseArgon2id(h.raw)
		if err != nil {
			return false
		}
		got := argon2.IDKey(password, salt, p.t, p.m, p.p, uint32(len(want)))
		return subtle.ConstantTimeCompare(got, want) == 1
	case Bcrypt:
		if len(password) > 72 {
			// bcrypt ignores bytes past 72; refuse rather than accept a different password.
			return false
		}
		return bcrypt.CompareHashAndPassword([]byte(h.raw), password) == nil
	case PBKDF2SHA512:
		iter, salt, want, err := parsePBKDF2(h.raw)
		if err != nil {
			return false
		}
		got, err := pbkdf2.Key(sha512.New, string(password), salt, iter, len(want))
		if err != nil {
			return false
		}
		return subtle.ConstantTimeCompare(got, want) == 1
	case GoAuthPBKDF2:
		newHash, iter, salt, want, err := parseGoAuth(h.raw)
		if err != nil {
			return false
		}
		got, err := pbkdf2.Key(newHash, string(password), salt, iter, len(want))
		if err != nil {
			return false
		}
		return subtle.ConstantTimeCompare(got, want) == 1
	case SaltedSHA512:
		salt, want, err := parseSalted(h.raw)
		if err != nil {
			return false
		}
		hh := sha512.New()
		hh.Write(password)
		hh.Write(salt)
		return subtle.ConstantTimeCompare(hh.Sum(nil), want) == 1
	}
	return false
}

type argonParams struct {
	m, t uint32
	p    uint8
}

// OWASP's recommended argon2id parameters (Password Storage Cheat Sheet): 19 MiB, 2 passes, 1 lane.
var owasp = argonParams{m: 19 * 1024, t: 2, p: 1}

func parseArgon2id(s string) (argonParams, []byte, []byte, error) {
	// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
		return argonParams{}, nil, nil, ErrMalformed
	}
	var p argonParams
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return argonParams{}, nil, nil, ErrMalformed
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return argonParams{}, nil, nil, ErrMalformed
		}
		switch k {
		case "m":
			p.m = uint32(n)
		case "t":
			p.t = uint32(n)
		case "p":
			if n > 255 {
				return argonParams{}, nil, nil, ErrMalformed
			}
			p.p = uint8(n)
		default:
			return argonParams{}, nil, nil, ErrMalformed
		}
	}
	// Bound the cost so a hostile row cannot make verification take minutes or gigabytes.
	if p.m == 0 || p.t == 0 || p.p == 0 || p.m > MaxArgon2Memory || p.t > MaxArgon2Time {
		return argonParams{}, nil, nil, ErrMalformed
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return argonParams{}, nil, nil, ErrMalformed
	}
	sum, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(sum) < 16 || len(sum) > 64 {
		return argonParams{}, nil, nil, ErrMalformed
	}
	return p, salt, sum, nil
}

func parsePBKDF2(s string) (int, []byte, []byte, error) {
	// $7$<iterations>$<base64 salt>$<base64 hash>
	parts := strings.Split(s, "$")
	if len(parts) != 5 || parts[1] != "7" {
		return 0, nil, nil, ErrMalformed
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 || iter > MaxPBKDF2Iterations {
		return 0, nil, nil, ErrMalformed
	}
	salt, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(salt) == 0 {
		return 0, nil, nil, ErrMalformed
	}
	sum, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(sum) != sha512.Size {
		return 0, nil, nil, ErrMalformed
	}
	return iter, salt, sum, nil
}

// GoAuthPrefix starts mosquitto-go-auth's PBKDF2 hashes.
const GoAuthPrefix = "PBKDF2$"

// parseGoAuth reads PBKDF2$<sha512|sha256>$<iterations>$<salt>$<hash> as mosquitto-go-auth writes it with
// its default salt encoding (base64): the salt field is the standard base64 of the salt bytes and the
// hash field the standard base64 of the derived key, whose length is the key length. (go-auth's other
// salt encoding, utf-8, uses the salt field's text itself as the salt; the importer rewrites such hashes
// into this form, see GoAuthFromUTF8Salt.)
func parseGoAuth(s string) (func() hash.Hash, int, []byte, []byte, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 5 || parts[0] != "PBKDF2" {
		return nil, 0, nil, nil, ErrMalformed
	}
	var newHash func() hash.Hash
	switch parts[1] {
	case "sha512":
		newHash = sha512.New
	case "sha256":
		newHash = sha256.New
	default:
		return nil, 0, nil, nil, ErrMalformed
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 || iter > MaxPBKDF2Iterations {
		return nil, 0, nil, nil, ErrMalformed
	}
	salt, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(salt) == 0 {
		return nil, 0, nil, nil, ErrMalformed
	}
	sum, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(sum) < 16 || len(sum) > 128 {
		return nil, 0, nil, nil, ErrMalformed
	}
	return newHash, iter, salt, sum, nil
}

// GoAuthFromUTF8Salt rewrites a mosquitto-go-auth PBKDF2 hash made with auth_opt_hasher_salt_encoding
// utf-8 (the salt field's text is the salt) into the base64 form Parse reads: the same salt bytes,
// base64-encoded. The derived key is unchanged, so the same password verifies.
func GoAuthFromUTF8Salt(stored string) (string, error) {
	parts := strings.Split(stored, "$")
	if len(parts) != 5 || parts[0] != "PBKDF2" || parts[3] == "" {
		return "", ErrMalformed
	}
	parts[3] = base64.StdEncoding.EncodeToString([]byte(parts[3]))
	out := strings.Join(parts, "$")
	if _, err := Parse(out); err != nil {
		return "", err
	}
	return out, nil
}

func parseSalted(s string) ([]byte, []byte, error) {
	// $6$<base64 salt>$<base64 sha512(password+salt)>
	parts := strings.Split(s, "$")
	if len(parts) != 4 || parts[1] != "6" {
		return nil, nil, ErrMalformed
	}
	salt, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(salt) == 0 {
		return nil, nil, ErrMalformed
	}
	sum, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(sum) != sha512.Size {
		return nil, nil, ErrMalformed
	}
	return salt, sum, nil
}

// Operator password length bounds (docs/security.md, L4): accepted whole, never truncated.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 128
)

// ErrPasswordLength means an operator password is outside 8–128 characters.
var ErrPasswordLength = fmt.Errorf("password must be %d to %d characters long", MinPasswordLen, MaxPasswordLen)

// HashPassword hashes an operator password with argon2id (OWASP parameters) and returns the PHC string.
func HashPassword(password string) (string, error) {
	if n := len([]rune(password)); n < MinPasswordLen || n > MaxPasswordLen {
		return "", ErrPasswordLength
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	sum := argon2.IDKey([]byte(password), salt, owasp.t, owasp.m, owasp.p, 32)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", owasp.m, owasp.t, owasp.p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(sum)), nil
}
