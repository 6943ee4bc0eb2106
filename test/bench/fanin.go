package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// fanInFilter is what the application subscriber of the fan-in load reads: every agent's telemetry.
const fanInFilter = "agents/+/telemetry"

// fanInWindow bounds the messages published and not yet received by the subscriber, over all agents,
// so that the broker's outgoing queue stays small and the load measures delivery, not buffering.
const fanInWindow = 256

// appKeyFor creates the fan-in load's application key (read agents/+/telemetry) in the database at dsn
// and returns the subscriber's connect options for the plugin broker.
func (r *runner) appKeyFor(dsn string) (ConnectOptions, error) {
	st, err := store.Open(dsn, store.PoolOptions{MaxConns: 1, ConnectTimeout: 5 * time.Second, AppName: "iotauth-bench"})
	if err != nil {
		return ConnectOptions{}, err
	}
	defer st.Close()
	_, key, pw, err := st.Keys.CreateAppKey(r.ctx, store.NewAppKeyParams{
		Name: "bench consumer", Topics: []store.AppTopic{{Access: "read", Pattern: fanInFilter}},
	}, store.AuditEvent{Actor: "bench", Action: "app_key_create"})
	if err != nil {
		return ConnectOptions{}, fmt.Errorf("create the application key: %w", err)
	}
	return ConnectOptions{ClientID: "bench-consumer", Username: key.Reveal(), Password: pw.Reveal(), KeepAlive: 60,
		CleanSession: true, Timeout: 5 * time.Second}, nil
}

// fanIn is the application keys' load: 32 agents publish telemetry at QoS 0 and one application subscriber reads
// agents/+/telemetry, on the plugin broker (an application key with a clean session: its deliveries are
// answered by the shim's read mark, docs/decisions/0016-read-marks-for-admitted-subscriptions.md) and on the
// no-auth broker (an anonymous subscriber). The target is that of an agent's own publishes.
func (r *runner) fanIn(dsn string, agents []Agent, noauth, warm *harness.Broker) error {
	cfg := r.cfg
	app, err := r.appKeyFor(dsn)
	if err != nil {
		return err
	}
	anon := ConnectOptions{ClientID: "bench-consumer", KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second}
	res := map[*harness.Broker][]opResult{}
	for round := range cfg.Rounds {
		for _, b := range order([]*harness.Broker{noauth, warm}, round) {
			sub := anon
			if b == warm {
				sub = app
			}
			o, err := fanInLoad(b, agents, sub, cfg.PublishDur)
			if err != nil {
				return fmt.Errorf("fan-in on %s: %w", b.Addr(), err)
			}
			res[b] = append(res[b], o)
			time.Sleep(200 * time.Millisecond)
		}
	}
	n, w := res[noauth], res[warm]
	load := fmt.Sprintf("2c fan-in QoS 0, %d agents → 1 application subscriber (%s)", len(agents), fanInFilter)
	r.add(
		pair(load, "broker CPU per delivered msg", "dur", floats(w, opResult.cpuPerOp), floats(n, opResult.cpuPerOp), ratioAtMost(1.05)),
		pair(load, "delivered msgs/s", "/s", floats(w, opResult.rate), floats(n, opResult.rate), nil),
		pair(load, "end-to-end latency p99", "dur", floats(w, func(o opResult) float64 { return o.p(0.99) }), floats(n, func(o opResult) float64 { return o.p(0.99) }), nil),
	)
	return nil
}

// fanInLoad has agents publish QoS 0 telemetry (agents/<uuid>/telemetry, the send time as payload) for d
// while one subscriber, connected with sub, reads fanInFilter; ops are the messages it received.
func fanInLoad(b *harness.Broker, agents []Agent, sub ConnectOptions, d time.Duration) (opResult, error) {
	s, err := dialSubscriber(b, sub)
	if err != nil {
		return opResult{}, err
	}
	defer s.Close()
	if g, err := s.Subscribe(1, fanInFilter, 0, 5*time.Second); err != nil || g >= 0x80 {
		return opResult{}, fmt.Errorf("subscribe %s: granted %#x, %v", fanInFilter, g, err)
	}
	pubs := make([]*Conn, 0, len(agents))
	defer func() {
		for _, c := range pubs {
			_ = c.Disconnect()
			c.Close()
		}
	}()
	for _, a := range agents {
		c, err := Dial(b.Addr(), agentOptions(a))
		if err != nil {
			return opResult{}, fmt.Errorf("connect agent %s: %w", a.UUID, err)
		}
		pubs = append(pubs, c)
	}
	var sent, received atomic.Int64
	var lat []time.Duration
	readDone := make(chan error, 1)
	go func() {
		for {
			h, body, err := s.ReadPacket()
			if err != nil {
				readDone <- err
				return
			}
			if PacketType(h) != PacketPublish {
				continue
			}
			m, err := ParsePublish(h, body)
			if err != nil || len(m.Payload) < 8 {
				readDone <- errors.New("malformed delivery")
				return
			}
			lat = append(lat, time.Since(epoch)-time.Duration(binary.BigEndian.Uint64(m.Payload)))
			received.Add(1)
		}
	}()
	m, err := startMeter(b.Pid())
	if err != nil {
		return opResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range pubs {
		topic := "agents/" + agents[i].UUID + "/telemetry"
		wg.Add(1)
		go func() {
			defer wg.Done()
			var payload [8]byte
			for ctx.Err() == nil {
				if sent.Load()-received.Load() >= fanInWindow {
					time.Sleep(20 * time.Microsecond)
					continue
				}
				binary.BigEndian.PutUint64(payload[:], uint64(time.Since(epoch)))
				if c.Publish(topic, payload[:], 0, 0) != nil || c.Flush() != nil {
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	// Let what is in flight arrive, so that the broker CPU measured pays for what was delivered.
	for deadline := time.Now().Add(2 * time.Second); received.Load() < sent.Load() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	smp, err := m.stop()
	if err != nil {
		return opResult{}, err
	}
	s.Close()
	<-readDone
	if received.Load() == 0 {
		return opResult{}, errors.New("the subscriber received nothing")
	}
	sorted := mergeSorted([][]time.Duration{lat})
	return opResult{sample: smp, ops: len(sorted), lat: sorted}, nil
}

// dialSubscriber connects the fan-in subscriber. Its key was created a moment ago and is not cached,
// so this connect is the one cold lookup of the load; on a machine loaded enough for that lookup to pass
// plugin_opt_db_timeout the plugin refuses it as "unreachable", which is the plugin failing closed as it
// should, not a fault of the load: such a refusal is tried again, at most three times. Any other refusal
// fails the run with the broker's own word for it.
func dialSubscriber(b *harness.Broker, sub ConnectOptions) (*Conn, error) {
	var err error
	for range 3 {
		var c *Conn
		if c, err = Dial(b.Addr(), sub); err == nil {
			return c, nil
		}
		if !strings.Contains(b.Log(), "credential store unreachable") {
			break
		}
	}
	var said []string
	for _, line := range strings.Split(b.Log(), "\n") {
		if strings.Contains(line, "connect refused") {
			said = append(said, line)
		}
	}
	if len(said) > 3 {
		said = said[len(said)-3:]
	}
	return nil, fmt.Errorf("connect the subscriber: %w (broker: %s)", err, strings.Join(said, " / "))
}
