package license

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestEvaluate is the license rule matrix: every token shape against a fixed clock and policy.
func TestEvaluate(t *testing.T) {
	ed, ed2, rs := edKeys(), edKeys2(), rsaKeys()
	day := 24 * time.Hour
	edGood := sign(t, jwt.SigningMethodEdDSA, ed.priv, goodClaims(), nil)
	rsGood := sign(t, jwt.SigningMethodRS256, rs.priv, goodClaims(), nil)
	expired := with(goodClaims(), "iat", t0.Add(-400*day).Unix(), "nbf", nil, "exp", t0.Add(-10*day).Unix())
	edExpired := sign(t, jwt.SigningMethodEdDSA, ed.priv, expired, nil)
	none := func(alg string) string {
		return rawJWT(t, map[string]any{"alg": alg, "typ": "JWT"}, goodClaims(), nil)
	}

	tests := []struct {
		name   string
		pub    []byte
		token  string
		policy Policy
		now    time.Time
		want   State
		reason string
		msg    string // substring of Status.Message
	}{
		{name: "valid Ed25519", pub: ed.pubPEM, token: edGood, want: StateValid},
		{name: "valid RS256", pub: rs.pubPEM, token: rsGood, want: StateValid},
		{name: "valid with surrounding whitespace", pub: ed.pubPEM, token: "\n " + edGood + "\n", want: StateValid},
		{name: "public key PEM with literal \\n escapes", pub: []byte(strings.ReplaceAll(strings.TrimSpace(string(ed.pubPEM)), "\n", `\n`)), token: edGood, want: StateValid},
		{name: "no nbf claim", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "nbf", nil), nil), want: StateValid},
		{name: "no device limit", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", nil), nil), want: StateValid},
		{name: "aud as a list containing the product", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "aud", []string{"other", DefaultAudience}), nil), want: StateValid},

		// Edited after signing: the old signature must not carry the new claims.
		{name: "tampered maxDevices Ed25519", pub: ed.pubPEM, token: replaceClaims(t, edGood, with(goodClaims(), "maxDevices", 100000)), want: StateRestricted, reason: CodeInvalid, msg: "edited after signing"},
		{name: "tampered maxDevices RS256", pub: rs.pubPEM, token: replaceClaims(t, rsGood, with(goodClaims(), "maxDevices", 100000)), want: StateRestricted, reason: CodeInvalid},
		{name: "tampered features", pub: ed.pubPEM, token: replaceClaims(t, edGood, with(goodClaims(), "features", []string{FeatureAdvancedAnomaly, FeatureDataExport, FeatureAI})), want: StateRestricted, reason: CodeInvalid},
		{name: "tampered customer", pub: rs.pubPEM, token: replaceClaims(t, rsGood, with(goodClaims(), "sub", "Evil Inc")), want: StateRestricted, reason: CodeInvalid},
		{name: "tampered exp on expired license is invalid, not expired", pub: ed.pubPEM, token: replaceClaims(t, edExpired, with(expired, "exp", t0.Add(1000*day).Unix())), want: StateRestricted, reason: CodeInvalid},
		{name: "expired license with broken signature is invalid, not expired", pub: ed.pubPEM, token: replaceClaims(t, edGood, expired), want: StateRestricted, reason: CodeInvalid},

		// Keys and algorithms.
		{name: "signed by another Ed25519 key", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed2.priv, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "RS256 license against Ed25519 key", pub: ed.pubPEM, token: rsGood, want: StateRestricted, reason: CodeInvalid, msg: "only algorithm"},
		{name: "EdDSA license against RSA key", pub: rs.pubPEM, token: edGood, want: StateRestricted, reason: CodeInvalid},
		{name: "RS384 with the right RSA key", pub: rs.pubPEM, token: sign(t, jwt.SigningMethodRS384, rs.priv, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "PS256 with the right RSA key", pub: rs.pubPEM, token: sign(t, jwt.SigningMethodPS256, rs.priv, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "HS256 keyed with the RSA public key PEM", pub: rs.pubPEM, token: sign(t, jwt.SigningMethodHS256, rs.pubPEM, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "HS256 keyed with the Ed25519 public key PEM", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodHS256, ed.pubPEM, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "HS256 keyed with the trimmed public key PEM", pub: rs.pubPEM, token: sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(rs.pubPEM))), goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "alg none", pub: ed.pubPEM, token: none("none"), want: StateRestricted, reason: CodeInvalid},
		{name: "alg None", pub: ed.pubPEM, token: none("None"), want: StateRestricted, reason: CodeInvalid},
		{name: "alg NONE", pub: rs.pubPEM, token: none("NONE"), want: StateRestricted, reason: CodeInvalid},
		{name: "alg nOnE", pub: rs.pubPEM, token: none("nOnE"), want: StateRestricted, reason: CodeInvalid},
		{name: "alg none from the library", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, goodClaims(), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "alg none with a real signature attached", pub: ed.pubPEM, token: rawJWT(t, map[string]any{"alg": "none"}, goodClaims(), []byte(strings.Split(edGood, ".")[2])), want: StateRestricted, reason: CodeInvalid},
		{name: "no alg header", pub: ed.pubPEM, token: rawJWT(t, map[string]any{"typ": "JWT"}, goodClaims(), []byte("x")), want: StateRestricted, reason: CodeInvalid},
		{name: "jku/kid/jwk headers select nothing: another key's token stays invalid", pub: ed.pubPEM,
			token: sign(t, jwt.SigningMethodEdDSA, ed2.priv, goodClaims(), map[string]any{"kid": "attacker", "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert.pem", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519"}}),
			want:  StateRestricted, reason: CodeInvalid},
		{name: "kid header on a genuine license is irrelevant", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, goodClaims(), map[string]any{"kid": "whatever"}), want: StateValid},
		{name: "crit header", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, goodClaims(), map[string]any{"crit": []string{"exp"}}), want: StateRestricted, reason: CodeInvalid},
		{name: "public key of 1024-bit RSA", pub: rsaPubPEM(t, 1024), token: rsGood, want: StateRestricted, reason: CodeInvalid, msg: "RSA key of 1024 bits"},
		{name: "license but no public key", pub: nil, token: edGood, want: StateRestricted, reason: CodeInvalid, msg: "LICENSE_PUBLIC_KEY is not"},

		// Token kinds: typ keeps access/refresh tokens and licenses apart, even under the same key.
		{name: "access token shape signed by the license key", pub: ed.pubPEM,
			token: sign(t, jwt.SigningMethodEdDSA, ed.priv, jwt.MapClaims{"typ": "access", "sub": "user-1", "role": "admin", "iss": DefaultIssuer, "aud": DefaultAudience, "iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(), "jti": "x"}, nil),
			want:  StateRestricted, reason: CodeInvalid, msg: "not a license"},
		{name: "typ refresh", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "typ", "refresh"), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "no typ claim", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "typ", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "typ License (case differs)", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "typ", "License"), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "access token from another key", pub: ed.pubPEM,
			token: sign(t, jwt.SigningMethodEdDSA, ed2.priv, jwt.MapClaims{"typ": "access", "sub": "u", "iss": "iotauth", "aud": "iotauth", "iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix()}, nil),
			want:  StateRestricted, reason: CodeInvalid},
		{name: "expired access token signed by the license key is invalid, not expired", pub: ed.pubPEM,
			token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(expired, "typ", "access"), nil), want: StateRestricted, reason: CodeInvalid},

		// Claims.
		{name: "wrong issuer", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iss", "someone-else"), nil), want: StateRestricted, reason: CodeInvalid, msg: "issuer"},
		{name: "no issuer", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iss", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "wrong audience", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "aud", "other-product"), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "no audience", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "aud", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "custom issuer and audience policy", pub: ed.pubPEM, policy: Policy{Issuer: "vendor-x", Audience: "product-y"}, token: edGood, want: StateRestricted, reason: CodeInvalid},
		{name: "no customer", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "sub", nil), nil), want: StateRestricted, reason: CodeInvalid, msg: "customer"},
		{name: "no exp", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "no iat", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iat", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "maxDevices 0", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", 0), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "maxDevices negative", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", -3), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "maxDevices not a number", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "maxDevices", "5"), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "features not a list", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "features", "ai"), nil), want: StateRestricted, reason: CodeInvalid},

		// The clock.
		{name: "clock before iat", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iat", t0.Add(time.Hour).Unix(), "nbf", nil), nil), want: StateRestricted, reason: CodeInvalid, msg: "system clock"},
		{name: "clock before iat beyond the leeway", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iat", t0.Add(DefaultLeeway+2*time.Second).Unix(), "nbf", nil), nil), want: StateRestricted, reason: CodeInvalid},
		{name: "iat slightly ahead, within the leeway", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "iat", t0.Add(10*time.Second).Unix(), "nbf", nil), nil), want: StateValid},
		{name: "nbf in the future", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "nbf", t0.Add(day).Unix()), nil), want: StateRestricted, reason: CodeInvalid, msg: "not valid before"},
		{name: "expired", pub: ed.pubPEM, token: edExpired, want: StateRestricted, reason: CodeExpired, msg: "expired"},
		{name: "expired RS256", pub: rs.pubPEM, token: sign(t, jwt.SigningMethodRS256, rs.priv, expired, nil), want: StateRestricted, reason: CodeExpired},
		{name: "exactly at exp is expired", pub: ed.pubPEM, token: edGood, now: time.Unix(goodClaims()["exp"].(int64), 0), want: StateRestricted, reason: CodeExpired},
		{name: "one second before exp is warning", pub: ed.pubPEM, token: edGood, now: time.Unix(goodClaims()["exp"].(int64)-1, 0), want: StateWarning},
		{name: "within the default warning window", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", t0.Add(10*day).Unix()), nil), want: StateWarning, msg: "in 10 days"},
		{name: "outside the default warning window", pub: ed.pubPEM, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", t0.Add(15*day).Unix()), nil), want: StateValid},
		{name: "within a custom warning window", pub: ed.pubPEM, policy: Policy{WarningWindow: 30 * day}, token: sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", t0.Add(20*day).Unix()), nil), want: StateWarning},
		{name: "grace period running", pub: ed.pubPEM, policy: Policy{GracePeriod: 14 * day}, token: edExpired, want: StateGrace, msg: "grace period ends"},
		{name: "grace period over", pub: ed.pubPEM, policy: Policy{GracePeriod: 3 * day}, token: edExpired, want: StateRestricted, reason: CodeExpired},
		{name: "grace period does not rescue a forged license", pub: ed.pubPEM, policy: Policy{GracePeriod: 1000 * day}, token: replaceClaims(t, edExpired, with(expired, "maxDevices", 999)), want: StateRestricted, reason: CodeInvalid},

		// Missing and malformed.
		{name: "missing", pub: ed.pubPEM, token: "", want: StateRestricted, reason: CodeMissing, msg: "LICENSE_KEY"},
		{name: "blank", pub: ed.pubPEM, token: " \n\t", want: StateRestricted, reason: CodeMissing},
		{name: "missing license and key", token: "", want: StateRestricted, reason: CodeMissing},
		{name: "missing license, broken key", pub: []byte("junk"), token: "", want: StateRestricted, reason: CodeMissing},
		{name: "garbage", pub: ed.pubPEM, token: "not-a-jwt", want: StateRestricted, reason: CodeInvalid},
		{name: "two segments", pub: ed.pubPEM, token: strings.Join(strings.Split(edGood, ".")[:2], "."), want: StateRestricted, reason: CodeInvalid},
		{name: "four segments", pub: ed.pubPEM, token: edGood + ".x", want: StateRestricted, reason: CodeInvalid},
		{name: "quoted", pub: ed.pubPEM, token: `"` + edGood + `"`, want: StateRestricted, reason: CodeInvalid, msg: "without quotes"},
		{name: "newline inside the signature", pub: ed.pubPEM, token: edGood[:len(edGood)-10] + "\n" + edGood[len(edGood)-10:], want: StateRestricted, reason: CodeInvalid},
		{name: "padded base64", pub: ed.pubPEM, token: edGood + "==", want: StateRestricted, reason: CodeInvalid},
		{name: "Bearer prefix", pub: ed.pubPEM, token: "Bearer " + edGood, want: StateRestricted, reason: CodeInvalid},
		{name: "oversized", pub: ed.pubPEM, token: strings.Repeat("a", MaxTokenLen+1), want: StateRestricted, reason: CodeInvalid},
		{name: "header not JSON", pub: ed.pubPEM, token: "bm90IGpzb24." + strings.SplitN(edGood, ".", 2)[1], want: StateRestricted, reason: CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			st := Evaluate(Material{PublicKeyPEM: tt.pub, Token: tt.token}, tt.policy, now)
			t.Logf("%s %s: %s", st.Status, st.Reason, st.Message)
			if st.Status != tt.want || st.Reason != tt.reason || st.Restricted != (tt.want == StateRestricted) {
				t.Fatalf("got status=%s reason=%q restricted=%v (%s); want status=%s reason=%q", st.Status, st.Reason, st.Restricted, st.Message, tt.want, tt.reason)
			}
			if tt.msg != "" && !strings.Contains(st.Message, tt.msg) {
				t.Errorf("message %q does not mention %q", st.Message, tt.msg)
			}
			if !st.CheckedAt.Equal(now) {
				t.Errorf("checkedAt = %v, want %v", st.CheckedAt, now)
			}
			if st.Warning != (tt.want == StateWarning || tt.want == StateGrace) {
				t.Errorf("warning = %v in state %s", st.Warning, st.Status)
			}
			if tt.reason == CodeInvalid || tt.reason == CodeMissing {
				// Nothing from an unverified or absent token may be shown.
				if st.Customer != "" || st.MaxDevices != nil || len(st.Features) != 0 || st.ExpiresAt != nil || st.IssuedAt != nil {
					t.Errorf("restricted %s status carries license data: %+v", tt.reason, st)
				}
			}
			if tok := strings.TrimSpace(tt.token); tok != "" && strings.Contains(st.Message, tok) {
				t.Errorf("message contains the token")
			}
		})
	}
}

func TestVerifyReturnsLicense(t *testing.T) {
	for _, kp := range []struct {
		name   string
		keys   keyPair
		method jwt.SigningMethod
		alg    string
	}{
		{"Ed25519", edKeys(), jwt.SigningMethodEdDSA, AlgEdDSA},
		{"RSA", rsaKeys(), jwt.SigningMethodRS256, AlgRS256},
	} {
		t.Run(kp.name, func(t *testing.T) {
			key, err := ParsePublicKey(kp.keys.pubPEM)
			if err != nil {
				t.Fatal(err)
			}
			if key.Algorithm() != kp.alg {
				t.Fatalf("algorithm %s, want %s", key.Algorithm(), kp.alg)
			}
			c := with(goodClaims(), "jti", "lic-42", "features", []string{"ai", "quantum_teleport", FeatureAdvancedAnomaly, "ai", ""})
			lic, err := Verify(key, sign(t, kp.method, kp.keys.priv, c, nil), Policy{}, t0)
			if err != nil {
				t.Fatal(err)
			}
			want := License{
				ID: "lic-42", Issuer: DefaultIssuer, Customer: "ACME Corp",
				IssuedAt: t0.Add(-24 * time.Hour), NotBefore: t0.Add(-24 * time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
				MaxDevices: 5, Features: []string{FeatureAdvancedAnomaly, FeatureAI},
			}
			if !lic.IssuedAt.Equal(want.IssuedAt) || !lic.NotBefore.Equal(want.NotBefore) || !lic.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("times: got %v %v %v", lic.IssuedAt, lic.NotBefore, lic.ExpiresAt)
			}
			lic.IssuedAt, lic.NotBefore, lic.ExpiresAt = want.IssuedAt, want.NotBefore, want.ExpiresAt
			if lic.ID != want.ID || lic.Issuer != want.Issuer || lic.Customer != want.Customer || lic.MaxDevices != want.MaxDevices || !slices.Equal(lic.Features, want.Features) {
				t.Errorf("got %+v, want %+v", lic, want)
			}
		})
	}
}

func TestVerifyErrorsAreCoded(t *testing.T) {
	ed := edKeys()
	key, err := ParsePublicKey(ed.pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(key, "", Policy{}, t0)
	if !errors.Is(err, ErrMissing) || CodeOf(err) != CodeMissing {
		t.Errorf("empty token: %v", err)
	}
	_, err = Verify(key, "x.y.z", Policy{}, t0)
	if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) {
		t.Errorf("garbage: %v", err)
	}
	if strings.Contains(err.Error(), "LICENSE_") {
		t.Errorf("client-facing text names configuration: %q", err.Error())
	}
	if !strings.Contains(Explain(err), "LICENSE_KEY") {
		t.Errorf("operator explanation does not say what to fix: %q", Explain(err))
	}
	exp := sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", t0.Add(-time.Hour).Unix()), nil)
	lic, err := Verify(key, exp, Policy{}, t0)
	if !errors.Is(err, ErrExpired) || lic.Customer != "ACME Corp" {
		t.Errorf("expired: lic=%+v err=%v", lic, err)
	}
	var le *Error
	if !errors.As(err, &le) || le.Code() != CodeExpired || le.Detail == "" {
		t.Errorf("expired error not an *Error with a detail: %#v", err)
	}
}

func TestParsePublicKey(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := rsaKeys().priv.(*rsa.PrivateKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	privDER, err := x509.MarshalPKCS8PrivateKey(edKeys().priv)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})

	tests := []struct {
		name    string
		pem     []byte
		alg     string
		wantErr []string // substrings the error must contain
	}{
		{name: "Ed25519", pem: edKeys().pubPEM, alg: AlgEdDSA},
		{name: "RSA 2048", pem: rsaKeys().pubPEM, alg: AlgRS256},
		{name: "RSA 2048 PKCS#1", pem: pkcs1, alg: AlgRS256},
		{name: "RSA 1024 refused", pem: rsaPubPEM(t, 1024), wantErr: []string{"RSA key of 1024 bits", "≥2048", "iotauth license keygen --alg ed25519"}},
		{name: "RSA 2047 refused", pem: rsaPubPEM(t, 2047), wantErr: []string{"2047 bits"}},
		{name: "ECDSA refused", pem: pubPEMOf(t, &ecKey.PublicKey), wantErr: []string{"Ed25519 or RSA"}},
		{name: "private key refused", pem: privPEM, wantErr: []string{"private key", "public half"}},
		{name: "certificate block refused", pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), wantErr: []string{"CERTIFICATE"}},
		{name: "not PEM", pem: []byte("hello"), wantErr: []string{"not a PEM block"}},
		{name: "empty", pem: nil, wantErr: []string{"not a PEM block"}},
		{name: "two blocks", pem: append(append([]byte{}, edKeys().pubPEM...), edKeys2().pubPEM...), wantErr: []string{"more than one"}},
		{name: "corrupt DER", pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{0x30, 0x01, 0x00}}), wantErr: []string{"cannot be parsed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePublicKey(tt.pem)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if k.Algorithm() != tt.alg {
					t.Fatalf("alg %s, want %s", k.Algorithm(), tt.alg)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error mentioning %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestGenerateSignRoundTrip(t *testing.T) {
	for _, alg := range []string{"ed25519", "rs256"} {
		t.Run(alg, func(t *testing.T) {
			bits := 0
			if alg == "rs256" {
				bits = 2048
			}
			privPEM, pubPEM, err := GenerateKey(alg, bits)
			if err != nil {
				t.Fatal(err)
			}
			priv, err := ParsePrivateKey(privPEM)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := Sign(priv, Terms{Customer: "Globex", IssuedAt: t0, ExpiresAt: t0.Add(90 * 24 * time.Hour), MaxDevices: 3, Features: []string{FeatureAI}})
			if err != nil {
				t.Fatal(err)
			}
			st := Evaluate(Material{PublicKeyPEM: pubPEM, Token: tok}, Policy{}, t0.Add(time.Hour))
			if st.Status != StateValid || st.Customer != "Globex" || st.MaxDevices == nil || *st.MaxDevices != 3 || !slices.Equal(st.Features, []string{FeatureAI}) {
				t.Fatalf("status %+v", st)
			}
		})
	}
	if _, _, err := GenerateKey("rs256", 1024); err == nil || !strings.Contains(err.Error(), "2048") {
		t.Errorf("1024-bit RSA keygen: %v", err)
	}
	if _, _, err := GenerateKey("hs256", 0); err == nil {
		t.Error("hs256 keygen accepted")
	}
}

func TestSignRefusesBadTerms(t *testing.T) {
	priv := edKeys().priv
	for name, terms := range map[string]Terms{
		"no customer":         {IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		"no expiry":           {Customer: "c", IssuedAt: t0},
		"expiry before issue": {Customer: "c", IssuedAt: t0, ExpiresAt: t0.Add(-time.Hour)},
		"expiry before nbf":   {Customer: "c", IssuedAt: t0, NotBefore: t0.Add(2 * time.Hour), ExpiresAt: t0.Add(time.Hour)},
		"negative devices":    {Customer: "c", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), MaxDevices: -1},
	} {
		if _, err := Sign(priv, terms); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	ed := edKeys()
	tok := sign(t, jwt.SigningMethodEdDSA, ed.priv, with(goodClaims(), "exp", t0.Add(3*24*time.Hour).Unix()), nil)
	st := Evaluate(Material{PublicKeyPEM: ed.pubPEM, Token: tok}, Policy{}, t0)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"status", "restricted", "warning", "message", "customer", "maxDevices", "features", "issuedAt", "notBefore", "expiresAt", "checkedAt"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if got["status"] != "warning" || got["maxDevices"] != float64(5) || got["expiresAt"] != "2026-06-04T12:00:00Z" {
		t.Errorf("JSON values: %s", b)
	}
	if strings.Contains(string(b), tok) || strings.Contains(string(b), strings.Split(tok, ".")[2]) {
		t.Error("status JSON carries the token")
	}

	// Restricted: features is an empty list, not null; reason is present.
	b, err = json.Marshal(Evaluate(Material{}, Policy{}, t0))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"features":[]`) || !strings.Contains(string(b), `"reason":"license_missing"`) || !strings.Contains(string(b), `"maxDevices":null`) {
		t.Errorf("restricted JSON: %s", b)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tt := range []struct {
		p  Policy
		ok bool
	}{
		{Policy{}, true},
		{Policy{Leeway: MaxLeeway}, true},
		{Policy{Leeway: MaxLeeway + time.Second}, false},
		{Policy{Leeway: -time.Second}, false},
		{Policy{GracePeriod: -time.Hour}, false},
		{Policy{WarningWindow: -time.Hour}, false},
	} {
		if err := tt.p.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: err=%v, want ok=%v", tt.p, err, tt.ok)
		}
	}
}
