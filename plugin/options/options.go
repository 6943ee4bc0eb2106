// Package options turns the plugin_opt_* lines of mosquitto.conf into a validated Config. Every error
// names the option, what was wrong and what is accepted, because Mosquitto refuses to start on it and the
// operator reads it in the broker's log.
package options

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/plugin/acl"
)

// Config is the plugin's configuration with its defaults filled in.
type Config struct {
	DSN string
	// ListenDSN, when set, is where the change feed (LISTEN) connects: a direct connection to PostgreSQL
	// when DSN goes through a transaction-pooling PgBouncer, which cannot hold a LISTEN.
	ListenDSN      string
	CacheSize      int
	CacheTTL       time.Duration
	NegativeTTL    time.Duration
	StaleGrace     time.Duration
	DBTimeout      time.Duration
	ClientID       string
	ACL            []acl.Template
	ACLSpec        string
	Preload        bool
	PreloadWait    time.Duration
	KickOnRevoke   bool
	DeferUnknown   bool
	KeyKind        secret.Kind
	ResyncInterval time.Duration
	LogLevel       string
	MaxConns       int32
	// UnknownKeyLookups bounds the store lookups a second of keys the cache has no entry for (forged
	// keys among them); 0 means no bound.
	UnknownKeyLookups int
	// MetricsListen, when set, is the host:port where the plugin serves Prometheus metrics at /metrics
	// (plugin_opt_metrics_listen); empty serves none.
	MetricsListen string
	// SlowHashBudget bounds the broker-thread time spent a second in slow KDFs of imported password
	// hashes (docs/import.md) before their fast hash is recorded; beyond it such connects are refused.
	SlowHashBudget time.Duration
	// MQTTTokenPublicKey is the path of a PEM file with the Ed25519 public keys that verify short-lived
	// MQTT credentials (iotmq_ usernames); empty refuses them.
	MQTTTokenPublicKey string
	// MQTT5SessionHold is how long an ended MQTT 5 session that did not start clean is presumed kept by the
	// broker (a plugin cannot read its session expiry interval): meanwhile its client id is refused to other
	// principals, except to the agent the client id template gives it to. 0: never.
	MQTT5SessionHold time.Duration
	// Presence records sessions in PostgreSQL (docs/presence.md); BrokerID names this broker there ("":
	// host name and first listener port), PresenceTimeout is how long after its last heartbeat its
	// sessions read offline, PresenceEvents publishes agents' lifecycle events over MQTT.
	Presence        bool
	BrokerID        string
	PresenceTimeout time.Duration
	PresenceEvents  bool
	// PresenceQueue bounds the session records waiting for PostgreSQL; beyond it they are dropped and
	// reconciled once PostgreSQL answers.
	PresenceQueue int
	// Warnings are about options that are accepted but do nothing any more; the plugin logs them.
	Warnings []string
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		CacheSize: 100000, CacheTTL: 5 * time.Minute, NegativeTTL: 10 * time.Second,
		StaleGrace: 15 * time.Minute, DBTimeout: 250 * time.Millisecond, ClientID: "agent-%u",
		ACLSpec: "readwrite agents/%u/#", Preload: true, PreloadWait: 5 * time.Second, KickOnRevoke: true, KeyKind: secret.APIKey,
		ResyncInterval: time.Minute, LogLevel: "info", MaxConns: 4, UnknownKeyLookups: 200,
		SlowHashBudget: 250 * time.Millisecond, MQTT5SessionHold: time.Hour,
		Presence: true, PresenceTimeout: 30 * time.Second, PresenceEvents: true, PresenceQueue: 100000,
	}
}

type setter func(c *Config, v string) error

// alternatives pairs the options that set the same value: only one of each pair may be given.
var alternatives = map[string]string{"dsn": "dsn_file", "dsn_file": "dsn", "listen_dsn": "listen_dsn_file", "listen_dsn_file": "listen_dsn"}

// retired options are accepted, so that an upgrade does not stop the broker, and logged as ignored.
var retired = map[string]string{
	"connect_memo": "the connect memo was removed (docs/decisions/0013-retire-the-connect-memo.md); delete the line",
}

var known = map[string]setter{
	"dsn": func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("is empty: give a PostgreSQL connection string, e.g. postgres://iotauth:secret@127.0.0.1:5432/iotauth")
		}
		c.DSN = v
		return nil
	},
	// dsn_file and listen_dsn_file keep the connection string (and its password) out of mosquitto.conf:
	// a file such as a container secret (/run/secrets/database_url), read once at start, trailing
	// newline ignored. Errors name the file, never its content.
	"dsn_file":        fileOpt(func(c *Config) *string { return &c.DSN }),
	"listen_dsn_file": fileOpt(func(c *Config) *string { return &c.ListenDSN }),
	"listen_dsn": func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("is empty: give a direct PostgreSQL connection string for LISTEN, or leave the line out to use plugin_opt_dsn")
		}
		c.ListenDSN = v
		return nil
	},
	"mqtt_token_public_key": func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("is empty: give the path of the PEM file with iotauth's MQTT credential public key(s), or leave the line out to refuse short-lived credentials")
		}
		c.MQTTTokenPublicKey = v
		return nil
	},
	"cache_size":          intOpt(func(c *Config) *int { return &c.CacheSize }, 0, 50_000_000),
	"unknown_key_lookups": intOpt(func(c *Config) *int { return &c.UnknownKeyLookups }, 0, 1_000_000),
	"cache_ttl":           durOpt(func(c *Config) *time.Duration { return &c.CacheTTL }, 0, 24*time.Hour),
	"negative_ttl":        durOpt(func(c *Config) *time.Duration { return &c.NegativeTTL }, 0, time.Hour),
	"stale_grace":         durOpt(func(c *Config) *time.Duration { return &c.StaleGrace }, 0, 7*24*time.Hour),
	"db_timeout":          durOpt(func(c *Config) *time.Duration { return &c.DBTimeout }, time.Millisecond, 5*time.Second),
	"resync_interval":     durOpt(func(c *Config) *time.Duration { return &c.ResyncInterval }, time.Second, 24*time.Hour),
	"slow_hash_budget":    durOpt(func(c *Config) *time.Duration { return &c.SlowHashBudget }, time.Millisecond, time.Second),
	"mqtt5_session_hold":  durOpt(func(c *Config) *time.Duration { return &c.MQTT5SessionHold }, 0, 365*24*time.Hour),
	"preload":             boolOpt(func(c *Config) *bool { return &c.Preload }),
	"preload_wait":        durOpt(func(c *Config) *time.Duration { return &c.PreloadWait }, 0, 5*time.Minute),
	"presence":            boolOpt(func(c *Config) *bool { return &c.Presence }),
	"presence_events":     boolOpt(func(c *Config) *bool { return &c.PresenceEvents }),
	"presence_queue":      intOpt(func(c *Config) *int { return &c.PresenceQueue }, 1, 10_000_000),
	"presence_timeout":    durOpt(func(c *Config) *time.Duration { return &c.PresenceTimeout }, time.Second, time.Hour),
	"broker_id": func(c *Config, v string) error {
		v = strings.TrimSpace(v)
		if v == "" || len(v) > 200 {
			return fmt.Errorf("%q: give a name of 1 to 200 characters that tells this broker apart, e.g. mqtt-1, or leave the line out for host name and port", v)
		}
		c.BrokerID = v
		return nil
	},
	"kick_on_revoke": boolOpt(func(c *Config) *bool { return &c.KickOnRevoke }),
	"defer_unknown":  boolOpt(func(c *Config) *bool { return &c.DeferUnknown }),
	"clientid": func(c *Config, v string) error {
		if v != "any" && (strings.Count(v, "%u") != 1 || strings.ContainsAny(v, "+#/")) {
			return fmt.Errorf("%q: use a template with exactly one %%u (like agent-%%u) and no '+', '#' or '/', or \"any\"", v)
		}
		c.ClientID = v
		return nil
	},
	"acl": func(c *Config, v string) error {
		c.ACLSpec = v
		return nil
	},
	"key_env": func(c *Config, v string) error {
		k, err := secret.APIKeyKind(v)
		if err != nil {
			return err
		}
		c.KeyKind = k
		return nil
	},
	"metrics_listen": func(c *Config, v string) error {
		addr, err := metricsAddr(v)
		if err != nil {
			return err
		}
		c.MetricsListen = addr
		return nil
	},
	"log_level": func(c *Config, v string) error {
		switch v {
		case "debug", "info", "warning", "error":
			c.LogLevel = v
			return nil
		}
		return fmt.Errorf("%q: use debug, info, warning or error", v)
	},
	"max_conns": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return fmt.Errorf("%q: use a whole number from 1 to 100", v)
		}
		c.MaxConns = int32(n)
		return nil
	},
}

// maxDSNFile bounds what a dsn file may hold: a connection string, not a stray large file.
const maxDSNFile = 4096

func fileOpt(f func(*Config) *string) setter {
	return func(c *Config, v string) error {
		path := strings.TrimSpace(v)
		if path == "" {
			return fmt.Errorf("is empty: give the path of a file holding the PostgreSQL connection string")
		}
		fh, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("%q: cannot read it (%v): the broker's user must be able to read the file", path, errors.Unwrap(err))
		}
		defer fh.Close()
		b, err := io.ReadAll(io.LimitReader(fh, maxDSNFile+1))
		if err != nil {
			return fmt.Errorf("%q: cannot read it (%v)", path, err)
		}
		if len(b) > maxDSNFile {
			return fmt.Errorf("%q is larger than %d bytes: it must hold one PostgreSQL connection string", path, maxDSNFile)
		}
		dsn := strings.TrimRight(string(b), "\r\n")
		if strings.TrimSpace(dsn) == "" || strings.ContainsAny(dsn, "\r\n") {
			return fmt.Errorf("%q must hold one PostgreSQL connection string on one line", path)
		}
		*f(c) = dsn
		return nil
	}
}

// metricsAddr checks a plugin_opt_metrics_listen value: host:port with a port from 1 to 65535 (the host
// may be empty for every interface), or off/empty for none.
func metricsAddr(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "off" {
		return "", nil
	}
	// Split by hand: package net would make this decision package depend on cgo (its resolver).
	host, port, ok := "", "", false
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		host, port, ok = v[:i], v[i+1:], true
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1] // an IPv6 address
	} else if strings.ContainsAny(host, ":[]") {
		ok = false // an IPv6 address needs brackets
	}
	n, err := strconv.Atoi(port)
	if !ok || err != nil || n < 1 || n > 65535 || strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("%q: use host:port with a port from 1 to 65535, like 127.0.0.1:9234 (loopback: only local scrapers), or off", v)
	}
	return v, nil
}

func intOpt(f func(*Config) *int, lo, hi int) setter {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%q: use a whole number from %d to %d", v, lo, hi)
		}
		*f(c) = n
		return nil
	}
}

func durOpt(f func(*Config) *time.Duration, lo, hi time.Duration) setter {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < lo || d > hi {
			return fmt.Errorf("%q: use a duration like 250ms, 10s or 5m, from %v to %v", v, lo, hi)
		}
		*f(c) = d
		return nil
	}
}

func boolOpt(f func(*Config) *bool) setter {
	return func(c *Config, v string) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "yes", "on", "1":
			*f(c) = true
		case "false", "no", "off", "0":
			*f(c) = false
		default:
			return fmt.Errorf("%q: use true or false", v)
		}
		return nil
	}
}

// Names lists the accepted option names, sorted.
func Names() []string {
	var out []string
	for k := range known {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Parse builds a Config from option key/value pairs, in order. Keys are given without the plugin_opt_
// prefix, as Mosquitto passes them. It reports every problem at once, joined with errors.Join, so that an
// operator fixes mosquitto.conf in one pass rather than one restart per bad line.
func Parse(kv [][2]string) (Config, error) {
	c := Defaults()
	var errs []error
	seen := map[string]bool{}
	bad := map[string]bool{}
	for _, p := range kv {
		k, v := p[0], p[1]
		if why, ok := retired[k]; ok {
			c.Warnings = append(c.Warnings, fmt.Sprintf("plugin_opt_%s is ignored: %s", k, why))
			continue
		}
		set, ok := known[k]
		if !ok {
			errs = append(errs, fmt.Errorf("unknown option plugin_opt_%s: accepted options are plugin_opt_%s", k, strings.Join(Names(), ", plugin_opt_")))
			continue
		}
		if seen[k] {
			errs = append(errs, fmt.Errorf("plugin_opt_%s is given twice: keep one", k))
			continue
		}
		if other, ok := alternatives[k]; ok && seen[other] {
			errs = append(errs, fmt.Errorf("plugin_opt_%s and plugin_opt_%s are both given: keep one", other, k))
			bad[strings.TrimSuffix(k, "_file")] = true
			continue
		}
		seen[k] = true
		if err := set(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("plugin_opt_%s %w", k, err))
			bad[k] = true
		}
	}
	errs = append(errs, c.validate(bad)...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Validate checks the combination of values and reports every problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.validate(nil)...)
}

// validate is Validate without the options in reported, whose values were already refused (an empty
// plugin_opt_dsn is not also "required").
func (c *Config) validate(reported map[string]bool) []error {
	var errs []error
	if c.DSN == "" && !reported["dsn"] && !reported["dsn_file"] {
		errs = append(errs, fmt.Errorf("plugin_opt_dsn is required: add a line like \"plugin_opt_dsn postgres://iotauth:secret@127.0.0.1:5432/iotauth\" to mosquitto.conf, or keep the password out of it with \"plugin_opt_dsn_file /run/secrets/database_url\" (a file holding that string)"))
	}
	if !reported["acl"] {
		rules, err := acl.ParseTemplates(c.ACLSpec)
		if err != nil {
			errs = append(errs, fmt.Errorf("plugin_opt_acl %w", err))
		} else {
			c.ACL = rules
		}
	}
	return errs
}
