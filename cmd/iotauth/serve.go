package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/token"
	"github.com/iotauth/iotauth/web/console"
	"github.com/iotauth/iotauth/web/live"
)

func init() {
	register("serve", "run the REST API (configured by environment variables or the matching flags)", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return serve(ctx, args, os.Getenv, stderr)
	})
}

// serveConfig is everything `iotauth serve` is configured with.
type serveConfig struct {
	DatabaseURL   string
	Listen        string
	Migrate       bool
	JWT           token.Config
	RefreshFamily time.Duration
	MQTTHost      string
	MQTTPort      int
	// MQTTWSURL is the broker's MQTT-over-WebSockets URL as browsers reach it (MQTT_WS_URL); set, it
	// turns on the /live page.
	MQTTWSURL     string
	KeyEnv        string
	CORSOrigins   []string
	LoginWindow   time.Duration
	LoginFailures int
	// LoginAddrFailures is the per-address budget (LOGIN_MAX_FAILURES_PER_ADDR).
	LoginAddrFailures int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is believed (TRUSTED_PROXIES).
	TrustedProxies []netip.Prefix
	// MetricsAddr is where /metrics is served, apart from the API ("" disables it); metricsDefault is
	// set when it is the default, whose address being taken is a warning, not a reason to stop.
	MetricsAddr    string
	metricsDefault bool
	LogFormat      string
	LogLevel       slog.Level
	// MQTTTokenKey signs short-lived MQTT credentials (MQTT_TOKEN_PRIVATE_KEY[_FILE], Ed25519 PEM);
	// OIDCProvidersFile names the identity providers of the token exchange (OIDC_PROVIDERS_FILE).
	MQTTTokenKey      []byte
	OIDCProvidersFile string
	// Publish configures the REST publish bridge (PUBLISH_*).
	Publish *publishConfig
	// Durable is what security changes wait for before they are acknowledged (DURABLE_COMMIT,
	// DURABLE_COMMIT_TIMEOUT; docs/operations.md, "High availability").
	Durable store.Durability
	// jwtUnread is set when a JWT key source could not be read: the key's strength is then not judged,
	// so that one mistake is not reported twice.
	jwtUnread bool
}

// envDefaults reads a flag's default from its environment variable, remembering errors; a bad value
// leaves the default in place, so that it is reported once and not again by the checks that follow.
type envDefaults struct {
	getenv func(string) string
	errs   []error
}

func (e *envDefaults) str(name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

func (e *envDefaults) seconds(name string, def time.Duration) time.Duration {
	v := e.getenv(name)
	if v == "" {
		return def
	}
	d, err := parseSeconds(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: %v", name, v, err))
		return def
	}
	return d
}

func (e *envDefaults) integer(name string, def int) int {
	v := e.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want a whole number", name, v))
		return def
	}
	return n
}

func (e *envDefaults) boolean(name string) bool {
	v := e.getenv(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want true or false", name, v))
	}
	return b
}

// parseSeconds accepts a number of seconds ("3600") or a Go duration ("1h", "15m").
func parseSeconds(v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, errors.New("must be positive")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errors.New("want seconds (3600) or a duration (1h, 15m)")
	}
	return d, nil
}

// secondsFlag is a flag.Value for durations given as seconds or Go durations.
type secondsFlag struct{ d *time.Duration }

func (f secondsFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f secondsFlag) Set(v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// intFlag is a flag.Value for whole numbers whose error says what is accepted.
type intFlag struct{ n *int }

func (f intFlag) String() string {
	if f.n == nil {
		return ""
	}
	return strconv.Itoa(*f.n)
}

func (f intFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("want a whole number")
	}
	*f.n = n
	return nil
}

// boolFlag is a flag.Value for booleans (-migrate, -migrate=false) whose error says what is accepted.
type boolFlag struct{ b *bool }

func (f boolFlag) IsBoolFlag() bool { return true }

func (f boolFlag) String() string {
	if f.b == nil {
		return "false"
	}
	return strconv.FormatBool(*f.b)
}

func (f boolFlag) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("want true or false")
	}
	*f.b = b
	return nil
}

// lenientFlag records a bad value of the flag.Value it wraps, naming the flag, and lets parsing go on,
// so that every bad flag is reported together with the bad environment variables.
type lenientFlag struct {
	flag.Value
	name string
	errs *[]error
}

func (f lenientFlag) String() string {
	if f.Value == nil {
		return ""
	}
	return f.Value.String()
}

func (f lenientFlag) Set(v string) error {
	if err := f.Value.Set(v); err != nil {
		*f.errs = append(*f.errs, fmt.Errorf("-%s %q: %v", f.name, v, err))
	}
	return nil
}

func (f lenientFlag) IsBoolFlag() bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// loadServeConfig reads flags over environment variables over defaults and reports every bad setting
// at once (errors.Join); only a malformed command line (an unknown flag) stops it early, as errUsage.
// Secrets (JWT_SECRET and the private key) come from the environment or from files named by flags,
// never from flag values, which other users of the machine could read in the process list.
func loadServeConfig(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	env := &envDefaults{getenv: getenv}
	var c serveConfig
	fs := newFlags("serve", stderr)
	lenient := func(v flag.Value, name, usage string) { fs.Var(lenientFlag{v, name, &env.errs}, name, usage) }
	db := addDBFlags(fs)
	fs.StringVar(&c.Listen, "listen", env.str("LISTEN_ADDR", "127.0.0.1:8080"), "address to listen on ($LISTEN_ADDR)")
	c.Migrate = env.boolean("IOTAUTH_MIGRATE")
	lenient(boolFlag{&c.Migrate}, "migrate", "apply database migrations at start ($IOTAUTH_MIGRATE)")
	secretFile := fs.String("jwt-secret-file", env.str("JWT_SECRET_FILE", ""), "file holding the HS256 secret ($JWT_SECRET_FILE; or set $JWT_SECRET)")
	privFile := fs.String("jwt-private-key-file", env.str("JWT_PRIVATE_KEY_FILE", ""), "PEM file of the RS256/EdDSA private key ($JWT_PRIVATE_KEY_FILE; or set $JWT_PRIVATE_KEY)")
	pubFile := fs.String("jwt-public-key-file", env.str("JWT_PUBLIC_KEY_FILE", ""), "PEM file of the matching public key ($JWT_PUBLIC_KEY_FILE; or set $JWT_PUBLIC_KEY)")
	fs.StringVar(&c.JWT.Issuer, "jwt-issuer", env.str("JWT_ISSUER", "iotauth"), "iss of issued and accepted tokens ($JWT_ISSUER)")
	fs.StringVar(&c.JWT.Audience, "jwt-audience", env.str("JWT_AUDIENCE", "iotauth-api"), "aud of issued and accepted tokens ($JWT_AUDIENCE)")
	c.JWT.AccessTTL = env.seconds("ACCESS_TOKEN_TTL", time.Hour)
	lenient(secondsFlag{&c.JWT.AccessTTL}, "access-token-ttl", "access token lifetime, seconds or duration ($ACCESS_TOKEN_TTL, default 3600)")
	c.JWT.RefreshTTL = env.seconds("REFRESH_TOKEN_TTL", 7*24*time.Hour)
	lenient(secondsFlag{&c.JWT.RefreshTTL}, "refresh-token-ttl", "refresh token lifetime ($REFRESH_TOKEN_TTL, default 604800)")
	c.RefreshFamily = env.seconds("REFRESH_FAMILY_TTL", 30*24*time.Hour)
	lenient(secondsFlag{&c.RefreshFamily}, "refresh-family-ttl", "absolute lifetime of a login's refresh tokens ($REFRESH_FAMILY_TTL, default 30 days)")
	fs.StringVar(&c.MQTTHost, "mqtt-public-host", env.str("MQTT_PUBLIC_HOST", "localhost"), "broker host told to provisioned agents ($MQTT_PUBLIC_HOST)")
	c.MQTTPort = env.integer("MQTT_PUBLIC_PORT", 1883)
	lenient(intFlag{&c.MQTTPort}, "mqtt-public-port", "broker `port` told to provisioned agents ($MQTT_PUBLIC_PORT)")
	fs.StringVar(&c.MQTTWSURL, "mqtt-ws-url", env.str("MQTT_WS_URL", ""), "the broker's MQTT/WebSockets URL as browsers reach it (ws://127.0.0.1:9001/); set, /live serves the live page ($MQTT_WS_URL)")
	fs.StringVar(&c.KeyEnv, "key-env", env.str("IOTAUTH_KEY_ENV", "live"), "device key environment issued and accepted: live or test ($IOTAUTH_KEY_ENV)")
	cors := fs.String("cors-origins", env.str("CORS_ALLOWED_ORIGINS", ""), "comma-separated exact origins allowed by CORS; empty disables CORS ($CORS_ALLOWED_ORIGINS)")
	c.LoginWindow = env.seconds("LOGIN_THROTTLE_WINDOW", 15*time.Minute)
	lenient(secondsFlag{&c.LoginWindow}, "login-throttle-window", "how long failed logins count and lockouts last ($LOGIN_THROTTLE_WINDOW, default 15m)")
	c.LoginFailures = env.integer("LOGIN_MAX_FAILURES", 5)
	lenient(intFlag{&c.LoginFailures}, "login-max-failures", "`number` of failed logins per account per window ($LOGIN_MAX_FAILURES)")
	c.LoginAddrFailures = env.integer("LOGIN_MAX_FAILURES_PER_ADDR", 20)
	lenient(intFlag{&c.LoginAddrFailures}, "login-max-failures-per-addr", "`number` of failed logins per client address per window before failures answer 429 ($LOGIN_MAX_FAILURES_PER_ADDR)")
	proxies := fs.String("trusted-proxies", env.str("TRUSTED_PROXIES", ""), "comma-separated CIDRs or addresses of reverse proxies whose X-Forwarded-For is believed; empty trusts none ($TRUSTED_PROXIES)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env.str("METRICS_ADDR", defaultMetricsAddr), "address serving Prometheus /metrics, apart from the API; off disables it ($METRICS_ADDR)")
	fs.StringVar(&c.LogFormat, "log-format", env.str("LOG_FORMAT", "json"), "json or text ($LOG_FORMAT)")
	level := fs.String("log-level", env.str("LOG_LEVEL", "info"), "debug, info, warn or error ($LOG_LEVEL)")
	mqttKeyFile := fs.String("mqtt-token-private-key-file", env.str("MQTT_TOKEN_PRIVATE_KEY_FILE", ""), "Ed25519 PEM signing short-lived MQTT credentials, from `iotauth mqtt-token keygen` ($MQTT_TOKEN_PRIVATE_KEY_FILE; or set $MQTT_TOKEN_PRIVATE_KEY); without it the token exchange answers 503")
	fs.StringVar(&c.OIDCProvidersFile, "oidc-providers-file", env.str("OIDC_PROVIDERS_FILE", ""), "JSON file of the token exchange's identity providers, re-read on SIGHUP ($OIDC_PROVIDERS_FILE)")
	durable := fs.String("durable-commit", env.str("DURABLE_COMMIT", store.DurableRemoteApply), "what a security change (revoke, disable, rotate, deny) waits for before it is acknowledged, when PostgreSQL has a synchronous standby: remote_apply, on, remote_write or off ($DURABLE_COMMIT)")
	c.Durable.Timeout = env.seconds("DURABLE_COMMIT_TIMEOUT", store.DefaultDurableTimeout)
	lenient(secondsFlag{&c.Durable.Timeout}, "durable-commit-timeout", "how long a security change waits for a synchronous standby before it is answered 503 commit_not_confirmed ($DURABLE_COMMIT_TIMEOUT, default 5s)")
	var checkPublish func() []error
	c.Publish, checkPublish = addPublishFlags(fs, env, lenient)
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	errs := append(env.errs, checkPublish()...)
	var err error
	if c.DatabaseURL, err = db.resolve(getenv, stderr); err != nil {
		errs = append(errs, err)
	}
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: use debug, info, warn or error", *level))
	}
	if c.Durable.Level, err = store.ParseDurableLevel(*durable); err != nil {
		errs = append(errs, fmt.Errorf("DURABLE_COMMIT: %w", err))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("-log-format %q: use json or text", c.LogFormat))
	}
	if c.MQTTPort < 1 || c.MQTTPort > 65535 {
		errs = append(errs, fmt.Errorf("MQTT_PUBLIC_PORT %d is not a TCP port: use 1 to 65535", c.MQTTPort))
	}
	if _, err := secret.APIKeyKind(c.KeyEnv); err != nil {
		errs = append(errs, err)
	}
	if c.MQTTWSURL != "" {
		if _, err := live.ParseWebSocketURL(c.MQTTWSURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.LoginFailures < 1 {
		errs = append(errs, errors.New("LOGIN_MAX_FAILURES must be at least 1"))
	}
	if c.LoginAddrFailures < 1 {
		errs = append(errs, errors.New("LOGIN_MAX_FAILURES_PER_ADDR must be at least 1"))
	}
	if *cors != "" {
		c.CORSOrigins = strings.Split(*cors, ",")
	}
	if c.TrustedProxies, err = api.ParseTrustedProxies(*proxies); err != nil {
		errs = append(errs, err)
	}
	c.metricsDefault = c.MetricsAddr == defaultMetricsAddr
	switch strings.ToLower(strings.TrimSpace(c.MetricsAddr)) {
	case "", "off", "none":
		c.MetricsAddr = ""
	default:
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("METRICS_ADDR %q is not host:port: use something like 127.0.0.1:9180, or off to disable metrics", c.MetricsAddr))
		}
	}
	// Key material: environment values or files, one signing method.
	for _, k := range []struct {
		name string
		file string
		pem  bool
		dst  *[]byte
	}{
		{"JWT_SECRET", *secretFile, false, &c.JWT.Secret},
		{"JWT_PRIVATE_KEY", *privFile, true, &c.JWT.PrivateKeyPEM},
		{"JWT_PUBLIC_KEY", *pubFile, true, &c.JWT.PublicKeyPEM},
		{"MQTT_TOKEN_PRIVATE_KEY", *mqttKeyFile, true, &c.MQTTTokenKey},
	} {
		v, err := secretSource(k.name, getenv, k.file, k.pem)
		if err != nil {
			errs = append(errs, err)
			c.jwtUnread = c.jwtUnread || strings.HasPrefix(k.name, "JWT_")
			continue
		}
		*k.dst = v
	}
	return c, errors.Join(errs...)
}

// defaultMetricsAddr is loopback: only the host's own scraper (or a sidecar) reaches the metrics. Not
// 9100, which node_exporter holds on many hosts.
const defaultMetricsAddr = "127.0.0.1:9180"

// loginKey derives the key that signs device cookies and keys the login throttle from the JWT signing
// key, which every replica already shares; rotating the JWT key therefore forgets known devices (they
// fall back to the account's budget until their next login) and restarts the budgets.
func loginKey(c token.Config) []byte {
	material := c.Secret
	if len(c.PrivateKeyPEM) > 0 {
		if b, _ := pem.Decode(c.PrivateKeyPEM); b != nil {
			material = b.Bytes
		} else {
			material = c.PrivateKeyPEM
		}
	}
	m := hmac.New(sha256.New, material)
	m.Write([]byte("iotauth login key v1"))
	return m.Sum(nil)
}

// serveSettings is loadServeConfig followed by the checks of the signing key (token.New) and of the
// license policy (LICENSE_WARNING_WINDOW, LICENSE_GRACE_PERIOD), all of whose problems it reports
// together.
func serveSettings(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, *token.Manager, error) {
	c, err := loadServeConfig(args, getenv, stderr)
	if errors.Is(err, errUsage) {
		return c, nil, err
	}
	errs := []error{err}
	var tokens *token.Manager
	if !c.jwtUnread {
		var terr error
		tokens, terr = token.New(c.JWT)
		errs = append(errs, terr)
	}
	if _, err := license.PolicyFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if _, err := loadExchange(c); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return c, nil, err
	}
	return c, tokens, nil
}

// secretSource reads a value from an environment variable or, when a file is named, from that file.
func secretSource(name string, getenv func(string) string, file string, pem bool) ([]byte, error) {
	v := getenv(name)
	if file != "" {
		if v != "" {
			return nil, fmt.Errorf("both $%s and a file for it are given: use one", name)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", name, file, err)
		}
		v = string(b)
		if !pem {
			v = strings.TrimRight(v, "\r\n")
		}
	}
	if v == "" {
		return nil, nil
	}
	if pem {
		return token.NormalizePEM(v), nil
	}
	return []byte(v), nil
}

// serve runs the REST API until ctx ends (SIGINT/SIGTERM), then shuts down gracefully.
func serve(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, tokens, err := serveSettings(args, getenv, stderr)
	if err != nil {
		return err
	}
	var h slog.Handler
	opts := redact.Options(&slog.HandlerOptions{Level: c.LogLevel})
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(stderr, opts)
	} else {
		h = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(h)
	// The license comes first so that SIGHUP is claimed (reload, never kill) before the slow start-up work.
	lic, err := licensing(ctx, getenv, logger)
	if err != nil {
		return err
	}
	if c.Migrate {
		if err := migrate(ctx, c.DatabaseURL, io.Discard); err != nil {
			return err
		}
		logger.Info("database schema is up to date")
	}
	if err := checkSchema(ctx, c.DatabaseURL, logger); err != nil {
		return err
	}
	st, err := openStore(ctx, c.DatabaseURL, c.Durable)
	if err != nil {
		return err
	}
	defer st.Close()
	logDurability(ctx, st, c.Durable, logger)
	if err := startPresencePrune(ctx, st, getenv, logger); err != nil {
		return err
	}
	kind, _ := secret.APIKeyKind(c.KeyEnv)
	pages, err := livePages(c, logger)
	if err != nil {
		return err
	}
	xs, err := loadExchange(c)
	if err != nil {
		return err
	}
	reloadProviders(ctx, xs, st, logger)
	acfg := api.Config{
		Pages:    pages,
		Exchange: api.ExchangeConfig{Signer: xs.signer, Providers: xs.providers},
		Store:    st, Tokens: tokens, Logger: logger, Licenser: lic,
		MQTTHost: c.MQTTHost, MQTTPort: c.MQTTPort, KeyKind: kind,
		RefreshFamilyTTL: c.RefreshFamily, LoginWindow: c.LoginWindow, LoginMaxFailures: c.LoginFailures,
		LoginMaxFailuresPerAddr: c.LoginAddrFailures,
		CORSOrigins:             c.CORSOrigins, TrustedProxies: c.TrustedProxies, LoginKey: loginKey(c.JWT),
	}
	c.Publish.apiConfig(&acfg)
	pub, err := startBridge(ctx, c.Publish, st, kind, logger)
	if err != nil {
		return err
	}
	if pub != nil {
		// Closed after the HTTP server has drained (defers run last first): its key is revoked then.
		defer pub.Close()
		acfg.Publisher = pub
	}
	srv, err := api.New(acfg)
	if err != nil {
		return err
	}
	// The operator console (docs/console.md) at /console/, on the API's own listener; its session key is
	// derived from the signing key, like the login key, so that replicas share sessions.
	con, err := console.New(console.Config{API: srv, Key: loginKey(c.JWT), Logger: logger, MQTTWebSocketURL: c.MQTTWSURL})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (set LISTEN_ADDR or -listen to a free address): %w", c.Listen, err)
	}
	hs := &http.Server{
		Handler:           console.Mount(con, srv),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          log.New(redactWriter{logger}, "", 0),
	}
	ms, err := metricsServer(c, srv, logger)
	if err != nil {
		ln.Close()
		return err
	}
	logger.Info("iotauth REST API listening", "addr", ln.Addr().String(), "console", "/console/", "jwtAlgorithm", tokens.Algorithm(), "keyEnv", c.KeyEnv,
		"trustedProxies", len(c.TrustedProxies), "tokenExchange", xs.signer != nil, "oidcProviders", xs.providerCount())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if ms != nil {
		go func() {
			if err := ms.srv.Serve(ms.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("the metrics listener stopped; /metrics is no longer served (the API goes on)", "error", err.Error())
			}
		}()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests (up to 20 s)")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ms != nil {
		_ = ms.srv.Shutdown(sctx)
	}
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// livePages is the /live page when MQTT_WS_URL is set (docs/live.md), nothing otherwise.
func livePages(c serveConfig, logger *slog.Logger) ([]api.Page, error) {
	if c.MQTTWSURL == "" {
		return nil, nil
	}
	lp, err := live.Pages(live.Config{MQTTWebSocketURL: c.MQTTWSURL})
	if err != nil {
		return nil, err
	}
	pages := make([]api.Page, 0, len(lp))
	for _, p := range lp {
		pages = append(pages, api.Page{Pattern: p.Pattern, Handler: p.Handler})
	}
	if live.BundleBuilt() {
		logger.Info("live page at /live", "mqttWsUrl", c.MQTTWSURL)
	} else {
		logger.Warn("live page at /live, but this binary was built without MQTT.js (go build instead of make build): the page cannot connect; build with make build, which runs npm ci")
	}
	return pages, nil
}

// redactWriter sends net/http's own error log lines through the scrubbing logger.
type redactWriter struct{ log *slog.Logger }

func (w redactWriter) Write(b []byte) (int, error) {
	w.log.Warn("http server", "message", strings.TrimSpace(string(b)))
	return len(b), nil
}

// metricsListener is the separate listener that serves /metrics.
type metricsListener struct {
	ln  net.Listener
	srv *http.Server
}

// metricsServer listens on METRICS_ADDR for /metrics only (docs/security.md, O2): the API's own listener
// does not serve it. A taken default address is a warning (another iotauth on the host, or a
// coincidence), a taken address the operator chose is an error.
func metricsServer(c serveConfig, srv *api.Server, logger *slog.Logger) (*metricsListener, error) {
	if c.MetricsAddr == "" {
		logger.Info("metrics disabled (METRICS_ADDR=off)")
		return nil, nil
	}
	ln, err := net.Listen("tcp", c.MetricsAddr)
	if err != nil {
		if c.metricsDefault {
			logger.Warn("metrics not served: the default metrics address is taken; set METRICS_ADDR to a free address, or to off",
				"addr", c.MetricsAddr, "error", err.Error())
			return nil, nil
		}
		return nil, fmt.Errorf("listen for metrics on %s (set METRICS_ADDR or -metrics-addr to a free address, or off): %w", c.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", srv.MetricsHandler())
	ms := &metricsListener{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(redactWriter{logger}, "", 0),
	}}
	logger.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return ms, nil
}

// logDurability says at start what an acknowledged security change survives.
func logDurability(ctx context.Context, st *store.Store, d store.Durability, logger *slog.Logger) {
	if d.Level == store.DurableOff {
		logger.Warn("durable commits are off (DURABLE_COMMIT=off): with a replicated PostgreSQL, a failover may lose revocations the API acknowledged")
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names, err := st.SynchronousStandbys(qctx)
	switch {
	case err != nil:
		logger.Warn("could not read synchronous_standby_names", "error", err)
	case names == "":
		logger.Info("durable commits: PostgreSQL has no synchronous standby (synchronous_standby_names is empty), so security changes are acknowledged once the primary has them",
			"durableCommit", d.Level)
	default:
		logger.Info("durable commits: security changes are acknowledged only once a synchronous standby confirms them",
			"durableCommit", d.Level, "timeout", d.Timeout.String(), "synchronousStandbyNames", names)
	}
}
