package license

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenLen bounds LICENSE_KEY: a license is a few hundred bytes, so anything this long is a
// configuration mistake, refused before any parsing.
const MaxTokenLen = 8 << 10

// Policy is what a deployment decides about licenses: who must have issued them, for which product, and
// how the time windows around expiry behave. Zero fields take the defaults.
type Policy struct {
	// Issuer is the required iss claim (DefaultIssuer).
	Issuer string
	// Audience is the required aud claim (DefaultAudience).
	Audience string
	// WarningWindow is how long before exp the status is warning (DefaultWarningWindow).
	WarningWindow time.Duration
	// GracePeriod is how long after exp the product stays unrestricted, in status grace (default 0: none).
	GracePeriod time.Duration
	// Leeway is the clock skew tolerated for iat and nbf, at most MaxLeeway (DefaultLeeway).
	Leeway time.Duration
}

// Validate reports a policy that cannot be applied, naming the setting and the accepted values.
func (p Policy) Validate() error {
	switch {
	case p.WarningWindow < 0:
		return fmt.Errorf("license warning window %v is negative; use a duration such as 336h (14 days)", p.WarningWindow)
	case p.GracePeriod < 0:
		return fmt.Errorf("license grace period %v is negative; use 0 (no grace) or a duration such as 72h", p.GracePeriod)
	case p.Leeway < 0 || p.Leeway > MaxLeeway:
		return fmt.Errorf("license clock leeway %v is outside 0..%v; keep it small (default %v) and fix clocks with NTP instead", p.Leeway, MaxLeeway, DefaultLeeway)
	}
	return nil
}

func (p Policy) withDefaults() Policy {
	if p.Issuer == "" {
		p.Issuer = DefaultIssuer
	}
	if p.Audience == "" {
		p.Audience = DefaultAudience
	}
	if p.WarningWindow == 0 {
		p.WarningWindow = DefaultWarningWindow
	}
	if p.Leeway == 0 {
		p.Leeway = DefaultLeeway
	}
	p.Leeway = min(p.Leeway, MaxLeeway)
	return p
}

// claims is the license's JWT payload. Its Validate runs inside the library's claim validation, after the
// signature verified.
type claims struct {
	jwt.RegisteredClaims
	Type       string   `json:"typ"`
	MaxDevices *int     `json:"maxDevices,omitempty"`
	Features   []string `json:"features,omitempty"`
}

// Validate checks the license-specific claims; the library checks iss, aud, exp, nbf and iat.
func (c claims) Validate() error {
	var errs []error
	if c.Type != TokenType {
		errs = append(errs, fmt.Errorf("its typ claim is %q, not %q: this JWT is not a license (an access token or another product's token?)", c.Type, TokenType))
	}
	if c.Subject == "" {
		errs = append(errs, errors.New("it names no customer (sub claim)"))
	}
	if c.IssuedAt == nil {
		errs = append(errs, errors.New("it has no iat claim"))
	}
	if c.MaxDevices != nil && *c.MaxDevices < 1 {
		errs = append(errs, fmt.Errorf("its maxDevices claim is %d; a limit must be at least 1 (omit the claim for no limit)", *c.MaxDevices))
	}
	return errors.Join(errs...)
}

// Terms are what the vendor grants in a license, the input of Sign. Zero Issuer/Audience take the
// defaults; zero IssuedAt means now; zero NotBefore omits nbf; MaxDevices 0 omits the limit.
type Terms struct {
	Issuer, Audience string
	Customer         string
	IssuedAt         time.Time
	NotBefore        time.Time
	ExpiresAt        time.Time
	MaxDevices       int
	Features         []string
}

// Sign makes a license token from terms with the vendor's private key (Ed25519 → EdDSA, RSA → RS256).
// Features are written as given, so tests can issue features this version does not know.
func Sign(key crypto.Signer, t Terms) (string, error) {
	method, err := signingMethod(key)
	if err != nil {
		return "", err
	}
	if t.Issuer == "" {
		t.Issuer = DefaultIssuer
	}
	if t.Audience == "" {
		t.Audience = DefaultAudience
	}
	if t.IssuedAt.IsZero() {
		t.IssuedAt = time.Now()
	}
	switch {
	case strings.TrimSpace(t.Customer) == "":
		return "", errors.New("a license needs a customer (sub claim)")
	case t.ExpiresAt.IsZero():
		return "", errors.New("a license needs an expiry (exp claim)")
	case !t.ExpiresAt.After(t.IssuedAt):
		return "", fmt.Errorf("the expiry %s is not after the issue time %s", t.ExpiresAt.UTC().Format(time.RFC3339), t.IssuedAt.UTC().Format(time.RFC3339))
	case !t.NotBefore.IsZero() && !t.ExpiresAt.After(t.NotBefore):
		return "", fmt.Errorf("the expiry %s is not after not-before %s", t.ExpiresAt.UTC().Format(time.RFC3339), t.NotBefore.UTC().Format(time.RFC3339))
	case t.MaxDevices < 0:
		return "", fmt.Errorf("max devices %d is negative; use a limit ≥1, or 0 for no limit", t.MaxDevices)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        hex.EncodeToString(id[:]),
			Issuer:    t.Issuer,
			Subject:   t.Customer,
			Audience:  jwt.ClaimStrings{t.Audience},
			IssuedAt:  jwt.NewNumericDate(t.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(t.ExpiresAt),
		},
		Type:     TokenType,
		Features: t.Features,
	}
	if !t.NotBefore.IsZero() {
		c.NotBefore = jwt.NewNumericDate(t.NotBefore)
	}
	if t.MaxDevices > 0 {
		c.MaxDevices = &t.MaxDevices
	}
	return jwt.NewWithClaims(method, c).SignedString(key)
}

// Verify checks token against key and policy p at time now and returns what it grants. It verifies the
// signature with the key's one algorithm before anything else is trusted, then the claims: typ, iss, aud,
// a required iat not in the future, nbf, and a required exp.
//
// Expiry is reported, not hidden: when the token is sound except that now is past exp, Verify returns the
// License together with an *Error coded license_expired, so the caller can apply a grace period and show
// who the expired license belonged to. Every other problem returns an *Error coded license_invalid (or
// license_missing for an empty token) and a zero License; its Detail is client-safe, and the error's
// operator-facing explanation is available through Explain.
func Verify(key *PublicKey, token string, p Policy, now time.Time) (License, error) {
	p = p.withDefaults()
	token = strings.TrimSpace(token)
	if token == "" {
		return License{}, missing()
	}
	if key == nil {
		return License{}, invalid("LICENSE_KEY is set but LICENSE_PUBLIC_KEY is not; set it to the vendor's license public key (PEM), then restart (or use the _FILE variables and send SIGHUP)")
	}
	if len(token) > MaxTokenLen {
		return License{}, invalid(fmt.Sprintf("LICENSE_KEY is %d bytes, longer than any license (max %d); it should hold only the JWT printed by `iotauth license issue`", len(token), MaxTokenLen))
	}
	if i := strings.IndexFunc(token, notJWSChar); i >= 0 {
		return License{}, invalid(fmt.Sprintf("LICENSE_KEY has a character at offset %d that cannot appear in a JWT; it should hold only the JWT printed by `iotauth license issue`, without quotes or spaces", i))
	}

	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{key.method.Alg()}),
		jwt.WithIssuer(p.Issuer),
		jwt.WithAudience(p.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(p.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	var c claims
	// The key function returns the configured key whatever the header says: kid, jku, x5u and jwk are
	// never consulted, and the algorithm was pinned above.
	tok, err := parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return key.key, nil })
	// golang-jwt validates claims only after the signature verified, so ErrTokenInvalidClaims (without
	// ErrTokenSignatureInvalid) means "signed by our key, claims unacceptable". The tests "expired license
	// with broken signature is invalid, not expired" pin this ordering.
	signed := err == nil || (errors.Is(err, jwt.ErrTokenInvalidClaims) && !errors.Is(err, jwt.ErrTokenSignatureInvalid))
	if !signed {
		return License{}, invalid(explainParseError(err, tok, key))
	}
	if _, crit := tok.Header["crit"]; crit {
		return License{}, invalid("LICENSE_KEY's header has a crit member naming extensions this product does not implement; ask the vendor for a standard license")
	}
	if err != nil && !onlyExpired(err) {
		return License{}, invalid(explainClaimsError(err, c, p, now))
	}
	lic := License{
		ID:        c.ID,
		Issuer:    c.Issuer,
		Customer:  c.Subject,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
		Features:  normalizeFeatures(c.Features),
	}
	if c.NotBefore != nil {
		lic.NotBefore = c.NotBefore.Time
	}
	if c.MaxDevices != nil {
		lic.MaxDevices = *c.MaxDevices
	}
	if err != nil {
		return lic, &verifyError{&Error{CodeExpired, clientDetail(CodeExpired, "licensed operations are blocked")},
			fmt.Sprintf("the license for %q expired at %s", lic.Customer, lic.ExpiresAt.UTC().Format(time.RFC3339))}
	}
	return lic, nil
}

// verifyError is an *Error with the operator-facing explanation attached.
type verifyError struct {
	err     *Error
	explain string
}

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// Explain returns the operator-facing explanation of a Verify error (what is wrong and how to fix it),
// or err's text for other errors. It never contains the token.
func Explain(err error) string {
	var ve *verifyError
	if errors.As(err, &ve) {
		return ve.explain
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

func missing() error {
	return &verifyError{&Error{CodeMissing, clientDetail(CodeMissing, "licensed operations are blocked")},
		"no license installed: set LICENSE_KEY (or LICENSE_KEY_FILE) to the license JWT from the vendor and LICENSE_PUBLIC_KEY to the vendor's public key; with the _FILE variables send SIGHUP, otherwise restart"}
}

func invalid(explain string) error {
	return &verifyError{&Error{CodeInvalid, clientDetail(CodeInvalid, "licensed operations are blocked")}, explain}
}

// notJWSChar reports characters outside base64url and the dot. Refusing them up front keeps the accepted
// encoding of a license unique (base64 decoders skip newlines, which would let a signature be "edited"
// without changing what it decodes to).
func notJWSChar(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}

// onlyExpired reports whether the claims validation failed for exp alone. Any other failure, including
// ones a future library version adds, counts as invalid.
func onlyExpired(err error) bool {
	expired := false
	for _, e := range leaves(err) {
		switch {
		case errors.Is(e, jwt.ErrTokenExpired):
			expired = true
		case !errors.Is(e, jwt.ErrTokenInvalidClaims):
			return false
		}
	}
	return expired
}

// leaves flattens an error tree into the errors that wrap nothing.
func leaves(err error) []error {
	switch u := err.(type) {
	case nil:
		return nil
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			return leaves(inner)
		}
	}
	return []error{err}
}

// explainParseError says why a license failed before its claims were looked at. tok is what the parser
// made of the header, if anything: a token whose alg is not the key's was refused for its algorithm.
func explainParseError(err error, tok *jwt.Token, key *PublicKey) string {
	wrongAlg := tok != nil && tok.Method != nil && tok.Method.Alg() != key.method.Alg()
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Sprintf("LICENSE_KEY is not a well-formed JWT (%v); it should hold only the JWT printed by `iotauth license issue`", err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Sprintf("LICENSE_KEY names a signing algorithm this product does not accept (%v); licenses are signed %s or %s", err, AlgEdDSA, AlgRS256)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && wrongAlg:
		return fmt.Sprintf("LICENSE_KEY is not signed %s, the only algorithm LICENSE_PUBLIC_KEY (%s) verifies (%v); install the license and public key the vendor issued together", key.Algorithm(), keyKind(key), err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "LICENSE_KEY's signature does not verify with LICENSE_PUBLIC_KEY: the license was signed by another key or edited after signing; install the license and public key the vendor issued together"
	}
	return fmt.Sprintf("LICENSE_KEY cannot be verified (%v)", err)
}

func explainClaimsError(err error, c claims, p Policy, now time.Time) string {
	var why []string
	if errors.Is(err, jwt.ErrTokenUsedBeforeIssued) {
		why = append(why, fmt.Sprintf("it was issued at %s, after this server's clock (%s): check the system clock (NTP)", c.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	if errors.Is(err, jwt.ErrTokenNotValidYet) {
		why = append(why, fmt.Sprintf("it is not valid before %s (nbf): install it then, or ask the vendor for one valid now", c.NotBefore.UTC().Format(time.RFC3339)))
	}
	if errors.Is(err, jwt.ErrTokenInvalidIssuer) {
		why = append(why, fmt.Sprintf("its issuer is %q, not %q", c.Issuer, p.Issuer))
	}
	if errors.Is(err, jwt.ErrTokenInvalidAudience) {
		why = append(why, fmt.Sprintf("it is for %q, not %q", []string(c.Audience), p.Audience))
	}
	if errors.Is(err, jwt.ErrTokenRequiredClaimMissing) {
		why = append(why, fmt.Sprintf("a required claim is missing (%v)", err))
	}
	for _, e := range leaves(err) {
		if !isLibrarySentinel(e) {
			why = append(why, e.Error()) // from claims.Validate: typ, sub, iat, maxDevices
		}
	}
	if len(why) == 0 {
		why = append(why, err.Error())
	}
	tail := "; ask the vendor for a corrected license"
	if onlyTiming(err) {
		tail = ""
	}
	return "LICENSE_KEY is signed by the configured key but is not a usable license: " + strings.Join(why, "; ") + tail
}

// onlyTiming reports whether every claims failure is about the clock (iat or nbf in the future), which the
// operator fixes by waiting or by correcting the clock, not by asking for a new license.
func onlyTiming(err error) bool {
	for _, e := range leaves(err) {
		if !isAny(e, jwt.ErrTokenInvalidClaims, jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenNotValidYet) {
			return false
		}
	}
	return true
}

func isLibrarySentinel(e error) bool {
	return isAny(e, jwt.ErrTokenInvalidClaims, jwt.ErrTokenExpired, jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenNotValidYet,
		jwt.ErrTokenInvalidIssuer, jwt.ErrTokenInvalidAudience, jwt.ErrTokenRequiredClaimMissing)
}

// isAny reports whether errors.Is(e, t) for any of targets.
func isAny(e error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(e, t) {
			return true
		}
	}
	return false
}

func keyKind(k *PublicKey) string {
	if k.Algorithm() == AlgEdDSA {
		return "Ed25519"
	}
	return "RSA"
}
