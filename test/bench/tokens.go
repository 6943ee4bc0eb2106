package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
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

// tokens is the load of short-lived credentials: TokenConnects connects, each with a credential of its own
// never presented before (so every one verifies a signature: the worst case, as after a broker restart),
// by TokenWorkers clients, then the same connects again (each credential already verified on this
// broker: a client reconnecting), against Mosquitto without auth making the same connects anonymously.
// Besides the broker's CPU per connect it reports one signature verification's cost measured in the load
// tool, and counts every statement the database ran while the plugin broker took the connects
// (pg_stat_statements, everything but the counting query): a credential's connect asks PostgreSQL nothing.
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
	anonParts := make([][]ConnectOptions, workers)
	for w := range workers {
		for i := range per {
			anonParts[w] = append(anonParts[w], ConnectOptions{ClientID: fmt.Sprintf("bench-%d-%d", w, i), KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second})
		}
	}
	// issue gives every connect a credential of its own, never presented before (not timed).
	issue := func() ([][]ConnectOptions, error) {
		t0 := time.Now()
		parts := make([][]ConnectOptions, workers)
		for w := range workers {
			prefix := fmt.Sprintf("bench-%d-", w)
			for i := range per {
				c, err := iss.Issue(mqttcred.Grant{Subject: fmt.Sprintf("user:bench-%d", w), ClientIDPrefix: prefix,
					From: []string{"app:bench", fmt.Sprintf("user:bench-%d", w)}, TTL: time.Hour,
					Topics: []mqttcred.Topic{{Access: "read", Pattern: "agents/+/telemetry"}, {Access: "write", Pattern: "agents/+/cmd"}}})
				if err != nil {
					return nil, err
				}
				parts[w] = append(parts[w], ConnectOptions{ClientID: fmt.Sprintf("%s%d", prefix, i), Username: c.Username, Password: c.Password,
					KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second})
			}
		}
		r.logf("issued %d credentials in %v", workers*per, time.Since(t0).Round(time.Millisecond))
		return parts, nil
	}
	warm, err := issue()
	if err != nil {
		return err
	}
	// Warm both brokers up with one pass.
	for _, b := range []*harness.Broker{noauth, plug} {
		parts := anonParts
		if b == plug {
			parts = warm
		}
		if _, errs := connectLoop(b.Addr(), parts, nil, min(per, 50)); errs > 0 {
			return fmt.Errorf("warm-up on %s: %d connects failed", b.Addr(), errs)
		}
	}
	// measure makes every connect of parts once on b.
	measure := func(b *harness.Broker, parts [][]ConnectOptions) (opResult, error) {
		m, err := startMeter(b.Pid())
		if err != nil {
			return opResult{}, err
		}
		lats, errs := connectLoop(b.Addr(), parts, nil, per)
		s, err := m.stop()
		if err != nil {
			return opResult{}, err
		}
		if errs > 0 {
			return opResult{}, fmt.Errorf("credential connects on %s: %d failed", b.Addr(), errs)
		}
		o := opResult{sample: s, lat: mergeSorted(lats)}
		o.ops = len(o.lat)
		return o, nil
	}
	// The plugin broker takes two passes a round: every credential fresh, then the same credentials
	// again (reconnects with a credential this broker already verified).
	var fresh, again, base []opResult
	var statements, verify []float64
	for round := range cfg.Rounds {
		for _, b := range order([]*harness.Broker{noauth, plug}, round) {
			if b == noauth {
				o, err := measure(b, anonParts)
				if err != nil {
					return err
				}
				base = append(base, o)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			parts, err := issue()
			if err != nil {
				return err
			}
			n0, err := allStatements(r.ctx, dsn)
			if err != nil {
				return err
			}
			for _, into := range []*[]opResult{&fresh, &again} {
				o, err := measure(b, parts)
				if err != nil {
					return err
				}
				*into = append(*into, o)
				time.Sleep(200 * time.Millisecond)
			}
			n1, err := allStatements(r.ctx, dsn)
			if err != nil {
				return err
			}
			statements = append(statements, float64(n1-n0))
			verify = append(verify, verifyCost(iss, parts))
		}
	}
	load := fmt.Sprintf("7 short-lived credentials: %d connects by %d clients, one credential each", workers*per, workers)
	extra := make([]float64, len(fresh))
	for i := range fresh {
		extra[i] = fresh[i].cpuPerOp() - base[i].cpuPerOp()
	}
	r.add(
		pair(load, "broker CPU per connect", "dur", floats(fresh, opResult.cpuPerOp), floats(base, opResult.cpuPerOp), ratioAtMost(1.2)),
		pair(load, "connects/s", "/s", floats(fresh, opResult.rate), floats(base, opResult.rate), nil),
		pair(load, "CONNACK latency p99", "dur", floats(fresh, func(o opResult) float64 { return o.p(0.99) }), floats(base, func(o opResult) float64 { return o.p(0.99) }), nil),
		single(load, "broker CPU per connect above no-auth", "dur", extra, nil),
		single(load, "one signature verification (mqttcred.Verify in the load tool)", "dur", verify, nil),
		single(load, "database statements during the connects", "", statements, valueAtMost(0, "= 0")),
	)
	load = fmt.Sprintf("7r short-lived credentials: the same %d connects again, each credential already verified", workers*per)
	r.add(
		pair(load, "broker CPU per connect", "dur", floats(again, opResult.cpuPerOp), floats(base, opResult.cpuPerOp), ratioAtMost(1.2)),
		pair(load, "connects/s", "/s", floats(again, opResult.rate), floats(base, opResult.rate), nil),
		pair(load, "CONNACK latency p99", "dur", floats(again, func(o opResult) float64 { return o.p(0.99) }), floats(base, func(o opResult) float64 { return o.p(0.99) }), nil),
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

// verifyCost is the CPU time one signature verification of parts' credentials takes in this process (what
// the plugin does for a credential it has not verified before), per credential. Nothing else of the load
// tool runs meanwhile.
func verifyCost(iss *mqttcred.Issuing, parts [][]ConnectOptions) float64 {
	v := mqttcred.NewVerifying([]ed25519.PublicKey{iss.PublicKey()}, nil)
	n := 0
	t0 := SelfCPU()
	for _, part := range parts {
		for _, o := range part[:min(len(part), 50)] {
			if _, err := v.Verify(o.Username, []byte(o.Password)); err != nil {
				return math.NaN()
			}
			n++
		}
	}
	return float64(SelfCPU()-t0) / float64(max(n, 1))
}
