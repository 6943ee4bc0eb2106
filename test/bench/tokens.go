package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/test/harness"
)

// tokenKeyFile writes a fresh MQTT credential key pair's public half to a world-readable file (the
// broker started as root reads it as the mosquitto user) and returns an issuer and the file's folder.
func tokenKeyFile() (*mqttcred.Issuing, string, string, error) {
	privPEM, pubPEM, err := mqttcred.GenerateKey()
	if err != nil {
		return nil, "", "", err
	}
	priv, err := mqttcred.ParsePrivateKey(privPEM)
	if err != nil {
		return nil, "", "", err
	}
	dir, err := os.MkdirTemp("", "iotauth-bench-tok-")
	if err != nil {
		return nil, "", "", err
	}
	path := filepath.Join(dir, "mqtt-token.pub.pem")
	if err := errors.Join(os.Chmod(dir, 0o755), os.WriteFile(path, pubPEM, 0o644)); err != nil {
		os.RemoveAll(dir)
		return nil, "", "", err
	}
	return mqttcred.NewIssuing(priv, nil), path, dir, nil
}

// tokens is the load of short-lived credentials: TokenConnects connects, each with a credential of its own (so every one
// verifies a signature: the worst case, as after a broker restart), by TokenWorkers clients, against
// Mosquitto without auth making the same connects anonymously. Besides the broker's CPU per connect it
// counts every statement the database ran while the plugin broker took the connects (pg_stat_statements,
// everything but the counting query): a credential's connect asks PostgreSQL nothing.
func (r *runner) tokens() error {
	cfg := r.cfg
	if cfg.TokenWorkers < 1 || cfg.TokenConnects < cfg.TokenWorkers {
		return fmt.Errorf("%d credential connects by %d clients: at least one each", cfg.TokenConnects, cfg.TokenWorkers)
	}
	dsn, err := r.env.Postgres.CreateDatabase(r.ctx)
	if err != nil {
		return err
	}
	iss, keyPath, keyDir, err := tokenKeyFile()
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	noauth, err := r.launch(harness.BrokerConfig{})
	if err != nil {
		return err
	}
	plug, err := r.pluginBroker(dsn, [2]string{"mqtt_token_public_key", keyPath}, [2]string{"resync_interval", "1h"})
	if err != nil {
		return err
	}
	if !plug.WaitLog("subject deny list loaded", 15*time.Second) {
		return errors.New("the plugin did not load the subject deny list")
	}
	workers := cfg.TokenWorkers
	per := cfg.TokenConnects / workers
	t0 := time.Now()
	tokenParts := make([][]ConnectOptions, workers)
	anonParts := make([][]ConnectOptions, workers)
	for w := range workers {
		prefix := fmt.Sprintf("bench-%d-", w)
		for i := range per {
			c, err := iss.Issue(mqttcred.Grant{Subject: fmt.Sprintf("user:bench-%d", w), ClientIDPrefix: prefix,
				From: []string{"app:bench", fmt.Sprintf("user:bench-%d", w)}, TTL: time.Hour,
				Topics: []mqttcred.Topic{{Access: "read", Pattern: "agents/+/telemetry"}, {Access: "write", Pattern: "agents/+/cmd"}}})
			if err != nil {
				return err
			}
			id := fmt.Sprintf("%s%d", prefix, i)
			tokenParts[w] = append(tokenParts[w], ConnectOptions{ClientID: id, Username: c.Username, Password: c.Password,
				KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second})
			anonParts[w] = append(anonParts[w], ConnectOptions{ClientID: id, KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second})
		}
	}
	r.logf("issued %d credentials in %v", workers*per, time.Since(t0).Round(time.Millisecond))
	// Warm both brokers up with one pass.
	for _, b := range []*harness.Broker{noauth, plug} {
		parts := anonParts
		if b == plug {
			parts = tokenParts
		}
		if _, errs := connectLoop(b.Addr(), parts, nil, min(per, 50)); errs > 0 {
			return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
		}
	}
	res := map[*harness.Broker][]opResult{}
	var statements []float64
	for round := range cfg.Rounds {
		for _, b := range order([]*harness.Broker{noauth, plug}, round) {
			parts := anonParts
			if b == plug {
				parts = tokenParts
			}
			n0, err := allStatements(r.ctx, dsn)
			if err != nil {
				return err
			}
			m, err := startMeter(b.Pid())
			if err != nil {
				return err
			}
			lats, errs := connectLoop(b.Addr(), parts, nil, per)
			s, err := m.stop()
			if err != nil {
				return err
			}
			if errs > 0 {
				return fmt.Errorf("credential connects on %s: %d failed", b.Addr(), errs)
			}
			n1, err := allStatements(r.ctx, dsn)
			if err != nil {
				return err
			}
			if b == plug {
				statements = append(statements, float64(n1-n0))
			}
			o := opResult{sample: s, lat: mergeSorted(lats)}
			o.ops = len(o.lat)
			res[b] = append(res[b], o)
			time.Sleep(200 * time.Millisecond)
		}
	}
	n, p := res[noauth], res[plug]
	load := fmt.Sprintf("7 short-lived credentials: %d connects by %d clients, one credential each", workers*per, workers)
	r.add(
		pair(load, "broker CPU per connect", "dur", floats(p, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), ratioAtMost(1.2)),
		pair(load, "connects/s", "/s", floats(p, opResult.rate), floats(n, opResult.rate), nil),
		pair(load, "CONNACK latency p99", "dur", floats(p, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
		single(load, "database statements during the connects", "", statements, valueAtMost(0, "= 0")),
	)
	noauth.Stop()
	plug.Stop()
	return nil
}

// allStatements is how many statements the database at dsn has executed (pg_stat_statements), but for
// this counting query itself and presence's session records (written in batches off the connect path,
// docs/presence.md).
func allStatements(ctx context.Context, dsn string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'
  AND query NOT LIKE '%presence_%'`).Scan(&n)
	return n, err
}
