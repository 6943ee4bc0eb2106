// Package oidc verifies identity providers' tokens for the token exchange (docs/token-exchange.md;
// docs/security.md, T1, T2) and maps their claims to MQTT topic grants. Providers come from a JSON file (OIDC_PROVIDERS_FILE):
// issuer and audience are matched exactly, the signature algorithm comes from an allow-list (RS256,
// ES256, EdDSA; never none or HS*), exp, nbf and iat are checked with a bounded skew, and the signing
// keys come from a JWKS that only the configuration names (a URL or a file). Verification is go-jose's;
// this package owns the key set (cached by kid, fetched time-bounded and size-capped, refreshed at most
// once per interval for an unknown kid) and the mapping rules.
package oidc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// ReservedName is the provider name of iotauth's own operators (the dashboard's exchange); no
// configured provider may take it.
const ReservedName = "iotauth"

// MaxClockSkew bounds a provider's clock skew setting.
const MaxClockSkew = 5 * time.Minute

// Limits of a providers file.
const (
	maxProviders = 32
	maxRules     = 32
	maxTemplates = 32
)

// Algorithms a provider may allow (docs/security.md, T1): asymmetric only.
var allowedAlgs = []string{"RS256", "ES256", "EdDSA"}

// Provider is one identity provider's configuration.
type Provider struct {
	// Name identifies the provider in exchange requests ("provider": "<name>") and in the credentials'
	// subjects ("oidc:<name>:<sub>", "provider:<name>"): 1 to 40 of a-z, 0-9 and '-'.
	Name string `json:"name"`
	// Issuer and Audience must equal the token's iss and one of its aud exactly.
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	// JWKSURL (https, or http on loopback) or JWKSFile names the provider's signing keys; exactly one.
	JWKSURL  string `json:"jwks_url,omitempty"`
	JWKSFile string `json:"jwks_file,omitempty"`
	// Algs are the accepted signature algorithms: RS256, ES256 and/or EdDSA (default: RS256).
	Algs []string `json:"algs,omitempty"`
	// ClockSkewSeconds is the leeway for exp, nbf and iat (default 60, at most 300).
	ClockSkewSeconds *int `json:"clock_skew_seconds,omitempty"`
	// Rules map the token's claims to topics; a token that no rule grants anything gets nothing.
	Rules []Rule `json:"rules"`
	// CredentialMayOutliveToken lets an exchanged MQTT credential live for the ttl asked (up to 24 h)
	// even past the provider token's exp. By default (false) a credential expires no later than the
	// token it was exchanged for, so that the provider's session length bounds MQTT access too.
	CredentialMayOutliveToken bool `json:"credential_may_outlive_token,omitempty"`
}

// Rule maps one claim to topics. With Equals, the claim (a string or a list of strings) must hold that
// value and Topics may use {sub}. Without Equals, every value of the claim must be a UUID (an agent's),
// and Topics, which must use {value}, are granted once per value.
type Rule struct {
	Claim  string     `json:"claim"`
	Equals string     `json:"equals,omitempty"`
	Topics []Template `json:"topics"`
}

// Template is a topic grant whose pattern may hold {sub} (the token's subject) and {value} (a claim
// value); both are validated before substitution (no + # / and never empty).
type Template struct {
	Access  string `json:"access"`
	Pattern string `json:"pattern"`
}

// Config is a providers file.
type Config struct {
	Providers []Provider `json:"providers"`
}

// ErrConfig wraps every problem of a providers file.
var ErrConfig = errors.New("OIDC providers configuration is not valid")

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// LoadFile reads and validates a providers file (JSON; unknown fields are errors).
func LoadFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: read %s: %w", ErrConfig, path, err)
	}
	return Parse(b)
}

// Parse reads and validates a providers document.
func Parse(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%w: %v (write JSON: {\"providers\": [{\"name\", \"issuer\", \"audience\", \"jwks_url\" or \"jwks_file\", \"algs\", \"clock_skew_seconds\", \"rules\", \"credential_may_outlive_token\"}]})", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every provider and reports all problems together.
func (c Config) Validate() error {
	var errs []error
	if len(c.Providers) > maxProviders {
		errs = append(errs, fmt.Errorf("at most %d providers", maxProviders))
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		where := fmt.Sprintf("providers[%d] (%s)", i, p.Name)
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("%s: the name is used twice", where))
		}
		seen[p.Name] = true
		for _, err := range p.validate() {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

func (p Provider) validate() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !nameRE.MatchString(p.Name) || p.Name == ReservedName {
		add("name must be 1 to 40 of a-z, 0-9 and '-' and not %q", ReservedName)
	}
	if p.Issuer == "" {
		add("issuer is required (the exact iss of the provider's tokens)")
	}
	if p.Audience == "" {
		add("audience is required (the exact aud your application is given by the provider)")
	}
	switch {
	case (p.JWKSURL == "") == (p.JWKSFile == ""):
		add("give exactly one of jwks_url and jwks_file")
	case p.JWKSURL != "":
		if err := checkJWKSURL(p.JWKSURL); err != nil {
			add("jwks_url: %v", err)
		}
	}
	for _, a := range p.algs() {
		if !contains(allowedAlgs, a) {
			add("algs: %q is not accepted; use %s (symmetric HS* and none are never accepted)", a, strings.Join(allowedAlgs, ", "))
		}
	}
	if s := p.ClockSkewSeconds; s != nil && (*s < 0 || time.Duration(*s)*time.Second > MaxClockSkew) {
		add("clock_skew_seconds must be 0 to %d", int(MaxClockSkew/time.Second))
	}
	if len(p.Rules) == 0 || len(p.Rules) > maxRules {
		add("rules: give 1 to %d mapping rules", maxRules)
	}
	for i, r := range p.Rules {
		if r.Claim == "" {
			add("rules[%d].claim is required", i)
		}
		if len(r.Topics) == 0 || len(r.Topics) > maxTemplates {
			add("rules[%d].topics: give 1 to %d topics", i, maxTemplates)
		}
		for j, t := range r.Topics {
			if err := checkTemplate(t, r.Equals == ""); err != nil {
				add("rules[%d].topics[%d]: %v", i, j, err)
			}
		}
	}
	return errs
}

func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("must be an absolute https URL without credentials or fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return errors.New("must use https (http only for localhost)")
		}
	default:
		return errors.New("must use https")
	}
	return nil
}

// checkTemplate checks a template's access and pattern with sample values substituted.
func checkTemplate(t Template, needsValue bool) error {
	switch t.Access {
	case "read", "write", "readwrite":
	default:
		return fmt.Errorf("access %q: use read, write or readwrite", t.Access)
	}
	hasValue := strings.Contains(t.Pattern, "{value}")
	if needsValue && !hasValue {
		return errors.New("a rule without equals grants per claim value: its patterns must use {value}")
	}
	if !needsValue && hasValue {
		return errors.New("{value} is only for rules without equals")
	}
	sample := strings.NewReplacer("{sub}", "s", "{value}", "v").Replace(t.Pattern)
	if strings.ContainsAny(sample, "{}") {
		return fmt.Errorf("pattern %q: only {sub} and {value} may be substituted", t.Pattern)
	}
	if err := topicfilter.Check(sample); err != nil {
		return fmt.Errorf("pattern %q: %w", t.Pattern, err)
	}
	return nil
}

func (p Provider) algs() []string {
	if len(p.Algs) == 0 {
		return []string{"RS256"}
	}
	return p.Algs
}

func (p Provider) skew() time.Duration {
	if p.ClockSkewSeconds == nil {
		return time.Minute
	}
	return time.Duration(*p.ClockSkewSeconds) * time.Second
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
