// Package secret owns the formats of iotauth's machine secrets: device API keys, MQTT passwords and
// provisioning keys. Each is a per-kind prefix, 32 random base62 characters and a 6-character base62 CRC32
// checksum, so that malformed or random strings are rejected without touching the database and leaked
// keys are easy for secret scanners to find. Secrets are stored only as SHA-256 digests.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"unsafe"
)

const (
	alphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomLen   = 32
	checksumLen = 6
	// DisplayLen is how many characters after the kind prefix a listing may show.
	DisplayLen = 8
)

// Kind is one family of secret, told apart by its prefix.
type Kind struct {
	name   string
	prefix string
}

// The kinds iotauth issues. APIKey is the live device key; TestAPIKey exists for test deployments and is
// never accepted where APIKey is expected.
var (
	APIKey          = Kind{name: "device API key", prefix: "iotsk_live_"}
	TestAPIKey      = Kind{name: "test device API key", prefix: "iotsk_test_"}
	MQTTPassword    = Kind{name: "MQTT password", prefix: "iotmp_"}
	ProvisioningKey = Kind{name: "provisioning key", prefix: "prov_"}
	// AppKey is an application key: a service's credential for the REST API (by rights) and the broker
	// (by topics), never tied to an agent. TestAppKey is its test-deployment twin.
	AppKey     = Kind{name: "application key", prefix: "iotak_live_"}
	TestAppKey = Kind{name: "test application key", prefix: "iotak_test_"}
	// PublishableKey is a browser's key: public by design, it can only start a token exchange from the
	// origins it lists (docs/security.md, T4). It is still stored as a digest and redacted from logs.
	PublishableKey     = Kind{name: "publishable key", prefix: "iotpk_live_"}
	TestPublishableKey = Kind{name: "test publishable key", prefix: "iotpk_test_"}
)

// kinds lists every kind, for redaction and for spotting secrets where none belong.
var kinds = []Kind{APIKey, TestAPIKey, MQTTPassword, ProvisioningKey, AppKey, TestAppKey, PublishableKey, TestPublishableKey}

// Name is the human name of the kind, for error messages.
func (k Kind) Name() string { return k.name }

// Prefix is the literal prefix every secret of this kind starts with.
func (k Kind) Prefix() string { return k.prefix }

// Len is the exact length of a well-formed secret of this kind.
func (k Kind) Len() int { return len(k.prefix) + randomLen + checksumLen }

// APIKeyKind returns the device key kind for an environment label ("live" or "test").
func APIKeyKind(env string) (Kind, error) {
	switch env {
	case "live", "":
		return APIKey, nil
	case "test":
		return TestAPIKey, nil
	}
	return Kind{}, fmt.Errorf("unknown key environment %q: use \"live\" or \"test\"", env)
}

// AppKeyKind returns the application key kind for an environment label ("live" or "test"), the same
// label that selects the device key kind.
func AppKeyKind(env string) (Kind, error) {
	switch env {
	case "live", "":
		return AppKey, nil
	case "test":
		return TestAppKey, nil
	}
	return Kind{}, fmt.Errorf("unknown key environment %q: use \"live\" or \"test\"", env)
}

// AppKindFor returns the application key kind of the deployment whose device keys are of kind k.
func AppKindFor(k Kind) Kind {
	if k == TestAPIKey {
		return TestAppKey
	}
	return AppKey
}

// PublishableKindFor returns the publishable key kind of the deployment whose device keys are of kind k.
func PublishableKindFor(k Kind) Kind {
	if k == TestAPIKey {
		return TestPublishableKey
	}
	return PublishableKey
}

// Errors returned by Check. Callers branch on them with errors.Is.
var (
	ErrWrongKind   = errors.New("secret has the wrong prefix for its kind")
	ErrMalformed   = errors.New("secret is malformed")
	ErrBadChecksum = errors.New("secret checksum does not match")
)

// Secret is a plaintext secret. Its String and LogValue methods redact it, so that printing or logging
// one by accident shows only its kind prefix.
type Secret string

// String returns a redacted form; use Reveal to get the plaintext.
func (s Secret) String() string { return redact(string(s)) }

// LogValue keeps the plaintext out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redact(string(s))) }

// GoString keeps the plaintext out of %#v.
func (s Secret) GoString() string { return redact(string(s)) }

// Reveal returns the plaintext. Call it only where the secret must leave the process: a response body
// shown once, or a client's credential.
func (s Secret) Reveal() string { return string(s) }

func redact(s string) string {
	if i := strings.IndexByte(s, '_'); i >= 0 && i < 12 {
		// Keep the kind prefix (up to the last underscore of a known prefix) so logs stay useful.
		for _, k := range kinds {
			if strings.HasPrefix(s, k.prefix) {
				return k.prefix + "[redacted]"
			}
		}
	}
	return "[redacted]"
}

// Generate returns a new secret of kind k from crypto/rand.
func Generate(k Kind) (Secret, error) {
	buf := make([]byte, 0, k.Len())
	buf = append(buf, k.prefix...)
	var rnd [randomLen]byte
	for filled := 0; filled < randomLen; {
		var raw [64]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		for _, b := range raw {
			// Rejection sampling keeps the distribution uniform: 248 = 4*62.
			if b >= 248 {
				continue
			}
			rnd[filled] = alphabet[b%62]
			filled++
			if filled == randomLen {
				break
			}
		}
	}
	buf = append(buf, rnd[:]...)
	buf = appendChecksum(buf)
	return Secret(buf), nil
}

func appendChecksum(body []byte) []byte {
	sum := crc32.ChecksumIEEE(body)
	var enc [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		enc[i] = alphabet[sum%62]
		sum /= 62
	}
	return append(body, enc[:]...)
}

// Check reports whether s is a well-formed secret of kind k: exact prefix, length, base62 charset and a
// matching checksum. It touches no database and does not allocate.
func Check(k Kind, s string) error {
	if !strings.HasPrefix(s, k.prefix) {
		return ErrWrongKind
	}
	if len(s) != k.Len() {
		return ErrMalformed
	}
	for i := len(k.prefix); i < len(s); i++ {
		if c := s[i]; c >= 128 || base62Mask[c>>6]>>(c&63)&1 == 0 {
			return ErrMalformed
		}
	}
	body := s[:len(s)-checksumLen]
	sum := crc32.ChecksumIEEE(view(body))
	var want [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		want[i] = alphabet[sum%62]
		sum /= 62
	}
	if subtle.ConstantTimeCompare(want[:], view(s[len(body):])) != 1 {
		return ErrBadChecksum
	}
	return nil
}

// base62Mask has bit c%64 of word c/64 set for each base62 character c. Check runs on the broker thread
// for every connect, and with three range tests per character random keys mispredicted about every
// other branch: BenchmarkCheck (distinct keys) went from 258 to 78 ns with the mask.
var base62Mask = func() (m [2]uint64) {
	for _, c := range []byte(alphabet) {
		m[c>>6] |= 1 << (c & 63)
	}
	return m
}()

// Digest is the SHA-256 digest under which a secret is stored and cached.
type Digest [sha256.Size]byte

// DigestOf returns the SHA-256 digest of s.
func DigestOf(s string) Digest { return sha256.Sum256(view(s)) }

// view is s as a byte slice without a copy, for callees that only read their argument and keep no
// reference to it (the checksum, the comparison and SHA-256 above). Check and DigestOf run for every
// connect on the broker thread, and []byte(s) made each of them allocate there.
func view(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Equal compares two digests in constant time.
func (d Digest) Equal(o Digest) bool { return subtle.ConstantTimeCompare(d[:], o[:]) == 1 }

// DisplayPrefix is the part of a secret a listing may show: the kind prefix and the first DisplayLen
// random characters. It carries about 48 bits, far too few to guess the remaining 142.
func DisplayPrefix(k Kind, s string) string {
	n := len(k.prefix) + DisplayLen
	if len(s) < n {
		return k.prefix
	}
	return s[:n]
}

// LooksLikeAny reports whether s starts with the prefix of any iotauth secret kind. The REST layer uses
// it to reject secrets placed in URLs.
//
// It runs on every MQTT connect (on the client id), so it makes one pass over s and compares prefixes only
// where a byte could start one, instead of one search of s per kind.
func LooksLikeAny(s string) bool {
	for i := 0; i < len(s); i++ {
		if !prefixStart[s[i]] {
			continue
		}
		for _, k := range kinds {
			if strings.HasPrefix(s[i:], k.prefix) {
				return true
			}
		}
	}
	return false
}

// prefixStart marks the bytes that begin a kind's prefix.
var prefixStart = func() (m [256]bool) {
	for _, k := range kinds {
		m[k.prefix[0]] = true
	}
	return m
}()
