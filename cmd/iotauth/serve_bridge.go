package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/iotauth/iotauth/backend/api"
	"github.com/iotauth/iotauth/backend/bridge"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/store"
)

// publishConfig configures the REST publish bridge (docs/publish-bridge.md): PUBLISH_* variables and the matching
// flags.
type publishConfig struct {
	BrokerURL   string
	CAFile      string
	MaxPayload  int
	Rate        float64
	Burst       int
	Timeout     time.Duration
	MaxInFlight int
	KeyTTL      time.Duration
}

// floatFlag is a flag.Value for positive numbers.
type floatFlag struct{ f *float64 }

func (f floatFlag) String() string {
	if f.f == nil {
		return ""
	}
	return strconv.FormatFloat(*f.f, 'g', -1, 64)
}

func (f floatFlag) Set(v string) error {
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return errors.New("want a number, e.g. 10 or 0.5")
	}
	*f.f = n
	return nil
}

// addPublishFlags registers the publish bridge's flags, with defaults from the environment; check
// validates them after parsing.
func addPublishFlags(fs *flag.FlagSet, env *envDefaults, lenient func(flag.Value, string, string)) (pc *publishConfig, check func() []error) {
	pc = &publishConfig{}
	fs.StringVar(&pc.BrokerURL, "publish-broker-url", env.str("PUBLISH_BROKER_URL", ""), "broker the REST publish bridge publishes to, e.g. tcp://127.0.0.1:1883 or mqtts://broker:8883; empty: POST /api/v1/publish answers 503 ($PUBLISH_BROKER_URL)")
	fs.StringVar(&pc.CAFile, "publish-broker-ca-file", env.str("PUBLISH_BROKER_CA_FILE", ""), "PEM file of the CA that signed the broker's TLS certificate (default: the system's roots) ($PUBLISH_BROKER_CA_FILE)")
	pc.MaxPayload = env.integer("PUBLISH_MAX_PAYLOAD", api.DefaultPublishMaxPayload)
	lenient(intFlag{&pc.MaxPayload}, "publish-max-payload", "largest payload in `bytes` the publish bridge accepts ($PUBLISH_MAX_PAYLOAD, default 262144)")
	pc.Rate = api.DefaultPublishRate
	if v := env.getenv("PUBLISH_RATE"); v != "" {
		if err := (floatFlag{&pc.Rate}).Set(v); err != nil {
			env.errs = append(env.errs, fmt.Errorf("PUBLISH_RATE=%q: %v", v, err))
		}
	}
	lenient(floatFlag{&pc.Rate}, "publish-rate", "publishes a second per application key ($PUBLISH_RATE, default 10)")
	pc.Burst = env.integer("PUBLISH_BURST", api.DefaultPublishBurst)
	lenient(intFlag{&pc.Burst}, "publish-burst", "publishes an application key may send at once ($PUBLISH_BURST, default 20)")
	pc.Timeout = env.seconds("PUBLISH_TIMEOUT", api.DefaultPublishTimeout)
	lenient(secondsFlag{&pc.Timeout}, "publish-timeout", "how long one publish may wait for a slot and its PUBACK, at most 10s ($PUBLISH_TIMEOUT, default 5s)")
	pc.MaxInFlight = env.integer("PUBLISH_MAX_INFLIGHT", 100)
	lenient(intFlag{&pc.MaxInFlight}, "publish-max-inflight", "publishes in flight at once on the bridge ($PUBLISH_MAX_INFLIGHT, default 100)")
	pc.KeyTTL = env.seconds("PUBLISH_KEY_TTL", 24*time.Hour)
	lenient(secondsFlag{&pc.KeyTTL}, "publish-key-ttl", "lifetime of the bridge's own application key, renewed before it ends ($PUBLISH_KEY_TTL, default 24h)")
	return pc, func() []error {
		var errs []error
		if pc.BrokerURL != "" {
			if _, err := bridge.ParseBrokerURL(pc.BrokerURL); err != nil {
				errs = append(errs, fmt.Errorf("PUBLISH_BROKER_URL: %w", err))
			}
		}
		if pc.MaxPayload < 1 || pc.MaxPayload > 64<<20 {
			errs = append(errs, errors.New("PUBLISH_MAX_PAYLOAD must be 1 to 67108864 bytes"))
		}
		if !(pc.Rate > 0) {
			errs = append(errs, errors.New("PUBLISH_RATE must be a positive number of publishes a second"))
		}
		if pc.Burst < 1 {
			errs = append(errs, errors.New("PUBLISH_BURST must be at least 1"))
		}
		if pc.Timeout > 10*time.Second {
			errs = append(errs, errors.New("PUBLISH_TIMEOUT must be at most 10s: a publish must end well within the request's own deadline"))
		}
		if pc.MaxInFlight < 1 {
			errs = append(errs, errors.New("PUBLISH_MAX_INFLIGHT must be at least 1"))
		}
		if pc.KeyTTL < time.Minute {
			errs = append(errs, errors.New("PUBLISH_KEY_TTL must be at least a minute (default 24h)"))
		}
		return errs
	}
}

// apiConfig puts the bridge's limits into the API's configuration.
func (pc *publishConfig) apiConfig(c *api.Config) {
	c.PublishMaxPayload, c.PublishRate, c.PublishBurst, c.PublishTimeout = pc.MaxPayload, pc.Rate, pc.Burst, pc.Timeout
}

// startBridge starts the publish bridge when PUBLISH_BROKER_URL is set (nil otherwise). Its key is
// issued now; the broker may still be down (publishes answer 503 until it is up).
func startBridge(ctx context.Context, pc *publishConfig, st *store.Store, kind secret.Kind, logger *slog.Logger) (*bridge.Bridge, error) {
	if pc.BrokerURL == "" {
		logger.Info("publish bridge off: POST /api/v1/publish answers 503 (set PUBLISH_BROKER_URL to enable it)")
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if pc.CAFile != "" {
		pem, err := os.ReadFile(pc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read PUBLISH_BROKER_CA_FILE: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("PUBLISH_BROKER_CA_FILE %s holds no PEM certificate", pc.CAFile)
		}
	}
	b, err := bridge.New(bridge.Config{
		BrokerURL: pc.BrokerURL, TLS: tc, KeyTTL: pc.KeyTTL, MaxInFlight: pc.MaxInFlight, Logger: logger,
		Issuer: bridge.StoreIssuer{Store: st, Kind: secret.AppKindFor(kind)},
	})
	if err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		return nil, err
	}
	logger.Info("publish bridge started", "broker", pc.BrokerURL, "appKey", b.AppKeyID(), "maxPayload", pc.MaxPayload, "rate", pc.Rate, "burst", pc.Burst)
	return b, nil
}
