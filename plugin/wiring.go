package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/engine"
	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/metrics"
	"github.com/iotauth/iotauth/plugin/mqtttoken"
	"github.com/iotauth/iotauth/plugin/options"
	"github.com/iotauth/iotauth/plugin/pgstore"
	"github.com/iotauth/iotauth/plugin/presence"
)

// instance is the plugin: the engine (plugin/engine) wired to this broker, PostgreSQL and Prometheus.
type instance struct {
	cfg     options.Config
	eng     *engine.Engine
	logs    *logq.Queue
	closers []func() // the stores, closed last
	// metricsSrv serves the metrics on metricsLn; nil unless plugin_opt_metrics_listen is set.
	metricsSrv *http.Server
	metricsLn  net.Listener
}

func newInstance(kv [][2]string) (_ *instance, err error) {
	cfg, err := options.Parse(kv)
	if err != nil {
		return nil, err
	}
	levels := logq.Levels{Debug: levelDebug, Info: levelNotice, Warning: levelWarning, Error: levelErr}
	logs := logq.New()
	logs.OnPush(broker{}.RequestTick)
	log := logq.NewLogger(logs, logq.ParseLevel(cfg.LogLevel), levels)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	in := &instance{cfg: cfg, logs: logs}
	defer func() {
		if err != nil {
			in.closeStores()
		}
	}()
	open := func(option, dsn string, o store.PoolOptions) (*store.Store, error) {
		o.ConnectTimeout = cfg.DBTimeout + 2*time.Second
		st, err := store.Open(dsn, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", option, err)
		}
		in.closers = append(in.closers, st.Close)
		return st, nil
	}
	st, err := open("plugin_opt_dsn", cfg.DSN, store.PoolOptions{MaxConns: cfg.MaxConns, MinConns: 1, AppName: "mosquitto-iotauth"})
	if err != nil {
		return nil, err
	}
	// Lookups for connects run on the broker's thread: they get their own small pool of blocking sockets
	// (see store.PoolOptions.SocketTimeout), kept open by the pool's background health check.
	lookup, err := open("plugin_opt_dsn", cfg.DSN, store.PoolOptions{MaxConns: 2, MinConns: 1, AppName: "mosquitto-iotauth-lookup",
		SocketTimeout: cfg.DBTimeout})
	if err != nil {
		return nil, err
	}
	// The change feed needs a session of its own (LISTEN), which a transaction-pooling PgBouncer cannot
	// give: plugin_opt_listen_dsn points it at PostgreSQL directly. Its pool is never used for queries.
	feed := st
	if cfg.ListenDSN != "" {
		if feed, err = open("plugin_opt_listen_dsn", cfg.ListenDSN, store.PoolOptions{MaxConns: 1, AppName: "mosquitto-iotauth-listen"}); err != nil {
			return nil, err
		}
	}
	ec := engine.Config{Options: cfg, Broker: broker{}, Lookup: lookup.Credentials, Store: pgstore.Store{St: st}, Feed: pgstore.Feed{St: feed, Probe: st},
		Log: log, Logs: logs, Levels: levels, MaxMark: maxMark, BudgetNow: testClock(),
		// Subject denials matter for the longest credential lifetime, the verifier's clock skew and a margin.
		DenialKeep: mqttcred.MaxTTL + 2*time.Minute}
	if testHooks {
		ec.Hook = testHook
	}
	if cfg.MQTTTokenPublicKey != "" {
		tokens, err := mqtttoken.Open(cfg.MQTTTokenPublicKey, nil)
		if err != nil {
			return nil, err
		}
		ec.Tokens = tokens
		log.Info("short-lived MQTT credentials accepted", "public_keys", tokens.Keys(), "file", cfg.MQTTTokenPublicKey)
	}
	// Metrics read the engine's own counters when scraped (after it exists).
	var m *metrics.Metrics
	var e *engine.Engine
	if cfg.MetricsListen != "" {
		m = metrics.New(metrics.Sources{
			Cache: func() cache.Stats { return e.Cache() }, Auth: func() auth.Stats { return e.Auth().Stats() },
			Sessions: func() (int, int) { return e.Sessions().Len() }, KnownKeys: func() int { return e.KnownKeys() },
		})
		ec.Metrics, ec.Lookup = m.Engine(), m.Timed(lookup.Credentials)
		// Bound during init, so that an address in use stops the broker's start with a clear message.
		if in.metricsLn, err = metrics.Listen(cfg.MetricsListen); err != nil {
			return nil, err
		}
		in.metricsSrv = m.Server(slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	}
	if cfg.Presence {
		if ec.Presence, err = newPresence(cfg, st, m, log); err != nil {
			return nil, err
		}
	}
	setMaxTopic(acl.MaxTopicLen)
	if e, err = engine.New(ec); err != nil {
		return nil, err
	}
	in.eng = e
	if in.metricsSrv != nil {
		e.Go("metrics server", func(context.Context) {
			// Serve returns when close shuts the server down (ErrServerClosed), and is not restarted then.
			if err := in.metricsSrv.Serve(in.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("the metrics server stopped; /metrics is no longer served", "error", err)
			}
		})
	}
	e.Start()
	if in.metricsLn != nil {
		log.Info("serving Prometheus metrics", "url", "http://"+in.metricsLn.Addr().String()+"/metrics") // tests wait for it
	}
	return in, nil
}

// newPresence builds the presence recorder (docs/presence.md) with its metrics.
func newPresence(cfg options.Config, st *store.Store, m *metrics.Metrics, log *slog.Logger) (*presence.Recorder, error) {
	id := cfg.BrokerID
	if id == "" {
		id = presence.DefaultBrokerID()
	}
	rec, err := presence.New(presence.Config{
		Broker: id, Timeout: cfg.PresenceTimeout, Events: cfg.PresenceEvents, Store: &pgstore.Presence{St: st},
		MaxQueue: cfg.PresenceQueue, RequestTick: broker{}.RequestTick, Log: log, Lag: m.PresenceLag(),
	})
	if err == nil {
		m.PresenceDropped(rec.Stats)
	}
	return rec, err
}

func (in *instance) close() {
	if in.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := in.metricsSrv.Shutdown(ctx); err != nil {
			in.metricsSrv.Close()
		}
		cancel()
	}
	in.eng.Close()
	in.closeStores()
}

func (in *instance) closeStores() {
	for i := len(in.closers) - 1; i >= 0; i-- {
		in.closers[i]()
	}
	in.closers = nil
}
