package license

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// The two signing algorithms a license may use; each key type verifies exactly one of them.
const (
	AlgEdDSA = "EdDSA"
	AlgRS256 = "RS256"
)

// MinRSABits is the smallest RSA modulus accepted for a license key (RFC 7518 §3.3; NIST SP 800-57).
const MinRSABits = 2048

// DefaultRSABits is the modulus size `license keygen --alg rs256` uses.
const DefaultRSABits = 3072

const keygenHint = "iotauth license keygen --alg ed25519"

// PublicKey is a parsed LICENSE_PUBLIC_KEY together with the single algorithm it may verify. Binding the
// algorithm to the key, not to the token header, is what defeats algorithm confusion (an HS256 token
// "signed" with the public key's PEM bytes, or alg none).
type PublicKey struct {
	key    crypto.PublicKey
	method jwt.SigningMethod
}

// Algorithm is the JWS alg this key verifies: EdDSA for Ed25519, RS256 for RSA.
func (k *PublicKey) Algorithm() string { return k.method.Alg() }

// ParsePublicKey reads a PEM public key (PKIX "PUBLIC KEY", or PKCS#1 "RSA PUBLIC KEY") that is Ed25519 or
// RSA of at least MinRSABits. Because deployments often pass PEM through environment files with literal
// "\n" sequences, a value without real newlines has those sequences expanded first. Errors say what was
// found and how to make a good key.
func ParsePublicKey(data []byte) (*PublicKey, error) {
	data = unescapeNewlines(data)
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("LICENSE_PUBLIC_KEY is not a PEM block (it should start with -----BEGIN PUBLIC KEY-----); use the public key file the vendor sent, or make a development pair with " + keygenHint)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("LICENSE_PUBLIC_KEY holds more than one PEM block; give exactly the vendor's license public key")
	}
	var (
		parsed any
		err    error
	)
	switch block.Type {
	case "PUBLIC KEY":
		parsed, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		parsed, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("LICENSE_PUBLIC_KEY holds a private key; configure the public half (e.g. license-public.pem) and keep the vendor's private key off every server")
	default:
		return nil, fmt.Errorf("LICENSE_PUBLIC_KEY is a PEM %q block, not a public key; use a \"PUBLIC KEY\" PEM (Ed25519 or RSA ≥%d bits), e.g. from %s", block.Type, MinRSABits, keygenHint)
	}
	if err != nil {
		return nil, fmt.Errorf("LICENSE_PUBLIC_KEY cannot be parsed (%v); use a \"PUBLIC KEY\" PEM (Ed25519 or RSA ≥%d bits), e.g. from %s", err, MinRSABits, keygenHint)
	}
	switch k := parsed.(type) {
	case ed25519.PublicKey:
		return &PublicKey{key: k, method: jwt.SigningMethodEdDSA}, nil
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("LICENSE_PUBLIC_KEY is an RSA key of %d bits; use ≥%d bits or Ed25519: %s", bits, MinRSABits, keygenHint)
		}
		return &PublicKey{key: k, method: jwt.SigningMethodRS256}, nil
	default:
		return nil, fmt.Errorf("LICENSE_PUBLIC_KEY is a %T key; licenses are verified with Ed25519 or RSA ≥%d bits: %s", parsed, MinRSABits, keygenHint)
	}
}

// ParsePrivateKey reads the vendor's PEM private key (PKCS#8 "PRIVATE KEY", or PKCS#1 "RSA PRIVATE KEY")
// for signing licenses. Only the CLI calls it: the product itself never holds a license private key.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(unescapeNewlines(data))
	if block == nil {
		return nil, errors.New("the private key is not PEM (it should start with -----BEGIN PRIVATE KEY-----); make one with " + keygenHint)
	}
	var (
		parsed any
		err    error
	)
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("the private key file holds a PEM %q block, not an unencrypted private key; make one with %s", block.Type, keygenHint)
	}
	if err != nil {
		return nil, fmt.Errorf("the private key cannot be parsed (%v); make one with %s", err, keygenHint)
	}
	switch k := parsed.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("the private key is an RSA key of %d bits; use ≥%d bits or Ed25519: %s", bits, MinRSABits, keygenHint)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("the private key is a %T key; licenses are signed with Ed25519 or RSA ≥%d bits: %s", parsed, MinRSABits, keygenHint)
	}
}

// GenerateKey makes a license signing key pair and returns the private key as PKCS#8 PEM and the public
// key as PKIX PEM. alg is "ed25519" (or "EdDSA") or "rs256"; rsaBits (0 means DefaultRSABits) applies to
// RS256 only and must be at least MinRSABits.
func GenerateKey(alg string, rsaBits int) (privatePEM, publicPEM []byte, err error) {
	var (
		priv crypto.Signer
		pub  crypto.PublicKey
	)
	switch strings.ToLower(alg) {
	case "ed25519", "eddsa":
		p, k, gerr := ed25519.GenerateKey(rand.Reader)
		pub, priv, err = p, k, gerr
	case "rs256", "rsa":
		if rsaBits == 0 {
			rsaBits = DefaultRSABits
		}
		if rsaBits < MinRSABits {
			return nil, nil, fmt.Errorf("an RSA license key needs ≥%d bits (got %d); or use --alg ed25519", MinRSABits, rsaBits)
		}
		k, gerr := rsa.GenerateKey(rand.Reader, rsaBits)
		if gerr == nil {
			pub, priv = &k.PublicKey, k
		}
		err = gerr
	default:
		return nil, nil, fmt.Errorf("unknown algorithm %q: use ed25519 or rs256", alg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// signingMethod picks the one algorithm a private key signs with.
func signingMethod(key crypto.Signer) (jwt.SigningMethod, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA, nil
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; use ≥%d bits or Ed25519: %s", bits, MinRSABits, keygenHint)
		}
		return jwt.SigningMethodRS256, nil
	}
	return nil, fmt.Errorf("unsupported signing key %T: use Ed25519 or RSA ≥%d bits", key, MinRSABits)
}

// unescapeNewlines turns literal "\n" sequences into newlines when data has no real newline, the usual
// shape of a PEM squeezed into one environment variable line.
func unescapeNewlines(data []byte) []byte {
	data = bytes.TrimSpace(data)
	if !bytes.Contains(data, []byte("\n")) && bytes.Contains(data, []byte(`\n`)) {
		data = bytes.ReplaceAll(data, []byte(`\n`), []byte("\n"))
	}
	return data
}
