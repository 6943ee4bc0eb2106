package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/oidc"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

func init() {
	register("mqtt-token keygen", "make the Ed25519 key pair of short-lived MQTT credentials (mqtt-token.key for serve, mqtt-token.pub for the broker's plugin)", mqttTokenKeygen)
	register("publishable-key create", "create a publishable key for browsers: token exchange only, from its origins (key printed once, as JSON)", pkCreate)
	register("publishable-key list", "list publishable keys (display prefixes only)", pkList)
	register("publishable-key revoke", "revoke a publishable key by id: its exchanges fail and the MQTT sessions it led to close", pkRevoke)
}

func mqttTokenKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("mqtt-token keygen", stderr)
	dir := fs.String("out", ".", "directory for mqtt-token.key (0600) and mqtt-token.pub")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	privPEM, pubPEM, err := mqttcred.GenerateKey()
	if err != nil {
		return err
	}
	privPath, pubPath := filepath.Join(*dir, "mqtt-token.key"), filepath.Join(*dir, "mqtt-token.pub")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; keygen never overwrites a key: move it away or pick another -out", p)
		}
	}
	if err := writeNew(privPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	fmt.Fprintf(stdout, "private key: %s (give it to iotauth serve as MQTT_TOKEN_PRIVATE_KEY_FILE; never to the broker)\n"+
		"public key:  %s (give it to the broker: plugin_opt_mqtt_token_public_key %s)\n", privPath, pubPath, pubPath)
	return nil
}

// exchangeSetup is what serve needs for the token exchange, read from the settings.
type exchangeSetup struct {
	signer    *mqttcred.Issuing
	providers *oidc.Set
	file      string // OIDC_PROVIDERS_FILE, re-read on SIGHUP
}

func (x exchangeSetup) providerCount() int {
	if x.providers == nil {
		return 0
	}
	return len(x.providers.Names())
}

// loadExchange reads MQTT_TOKEN_PRIVATE_KEY[_FILE] and OIDC_PROVIDERS_FILE. Neither is required: without
// a key the exchange answers 503, without providers only operators' own exchange works.
func loadExchange(c serveConfig) (exchangeSetup, error) {
	var x exchangeSetup
	var errs []error
	if len(c.MQTTTokenKey) > 0 {
		k, err := mqttcred.ParsePrivateKey(c.MQTTTokenKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("MQTT_TOKEN_PRIVATE_KEY: %w", err))
		} else {
			x.signer = mqttcred.NewIssuing(k, nil)
		}
	}
	if c.OIDCProvidersFile != "" {
		x.file = c.OIDCProvidersFile
		cfg, err := oidc.LoadFile(c.OIDCProvidersFile)
		if err == nil {
			x.providers, err = oidc.NewSet(cfg, oidc.Options{})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("OIDC_PROVIDERS_FILE %s: %w", c.OIDCProvidersFile, err))
		}
	}
	return x, errors.Join(errs...)
}

// reloadProviders re-reads OIDC_PROVIDERS_FILE on every SIGHUP until ctx ends. A file that does not
// validate keeps the running configuration (and says why); a provider the new file drops is denied
// ("provider:<name>"), which closes every MQTT session exchanged through it (docs/security.md, A4).
func reloadProviders(ctx context.Context, x exchangeSetup, st *store.Store, log *slog.Logger) {
	if x.providers == nil {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			cfg, err := oidc.LoadFile(x.file)
			if err != nil {
				log.Error("SIGHUP: OIDC providers not reloaded; the previous configuration stays", "file", x.file, "error", err.Error())
				continue
			}
			removed := x.providers.Replace(cfg)
			log.Info("SIGHUP: OIDC providers reloaded", "providers", len(cfg.Providers), "removed", len(removed))
			for _, name := range removed {
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := st.Credentials.DenySubject(dctx, "provider:"+name, "identity provider removed from the configuration"); err != nil {
					log.Error("could not deny a removed identity provider; its MQTT sessions stay until they expire: run SELECT iotauth_deny('provider:<name>', 'removed') in the database",
						"provider", name, "error", err.Error())
				}
				cancel()
			}
		}
	}()
}

func pkCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("publishable-key create", stderr)
	name := fs.String("name", "", "key name (required)")
	var origins, topics, providers repeated
	fs.Var(&origins, "origin", "an exact origin the key works from, repeatable, e.g. https://app.example.com")
	fs.Var(&topics, "topic", "an MQTT topic grant ACCESS:PATTERN, repeatable: the most an exchanged credential may hold")
	fs.Var(&providers, "provider", "an identity provider of OIDC_PROVIDERS_FILE the key may use, repeatable")
	expiresAt := fs.String("expires-at", "", "expiry, RFC 3339 (default: never expires)")
	env := fs.String("key-env", "live", "key environment: live or test (as the deployment's device keys)")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: iotauth publishable-key create --name NAME --origin ORIGIN... --topic ACCESS:PATTERN... --provider NAME... [--expires-at TIME]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req := keys.PublishableKeyRequest{Name: *name, Origins: []string(origins), Providers: []string(providers)}
	var err error
	if req.Topics, req.ExpiresAt, err = topicsAndExpiry(topics, *expiresAt); err != nil {
		return err
	}
	flags := map[string]string{"name": "--name", "origins": "--origin", "topics": "--topic", "providers": "--provider", "expiresAt": "--expires-at"}
	if err := checkKey(publishableKeys, req, flags); err != nil {
		return err
	}
	return createKey(ctx, db, *env, stdout, stderr, publishableKeys, req, flags, func(c keys.Created[store.PublishableKey]) any {
		return view.CreatedPublishableKeyOf(c.Key, c.Secret)
	})
}

func publishableKeys(s *keys.Service) keys.Kind[store.PublishableKey, keys.PublishableKeyRequest] {
	return s.Publishable
}

func pkList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("publishable-key list", stderr)
	lf := addListFlags(fs)
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return listKeys(ctx, db, lf, stdout, stderr, publishableKeys, keys.Filter{}, "ID\tPREFIX\tNAME\tORIGINS\tPROVIDERS\tTOPICS\tEXPIRES\tSTATE",
		func(k store.PublishableKey) (time.Time, string) { return k.CreatedAt, k.ID },
		func(k store.PublishableKey) any { return view.PublishableKeyOf(k) },
		func(k store.PublishableKey) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", k.ID, k.Prefix, k.Name, strings.Join(k.Origins, ","),
				strings.Join(k.Providers, ","), topicList(k.Topics), timeOr(k.ExpiresAt, "never"), keyState(k.ExpiresAt, k.RevokedAt))
		})
}

func pkRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return revokeKey(ctx, "publishable-key revoke", args, stdout, stderr, publishableKeys,
		func(id string) error {
			return fmt.Errorf("no publishable key %q: find its id with 'iotauth publishable-key list'", id)
		},
		func(id string, _ store.PublishableKey) string {
			return fmt.Sprintf("publishable key %s revoked; the MQTT sessions it led to are closing", id)
		})
}
