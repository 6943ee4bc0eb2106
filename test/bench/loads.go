package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/test/harness"
)

// epoch is the origin of the timestamps carried in payloads (monotonic within the process).
var epoch = time.Now()

// opResult is one measured interval of one load on one broker.
type opResult struct {
	sample
	ops, errs int
	firstErr  error           // the first failure's, when errs > 0
	lat       []time.Duration // sorted
}

func (r opResult) rate() float64     { return float64(r.ops) / r.wall.Seconds() }
func (r opResult) cpuPerOp() float64 { return float64(r.cpu) / float64(max(r.ops, 1)) }
func (r opResult) selfShare() float64 {
	return r.self.Seconds() / r.wall.Seconds()
}
func (r opResult) p(q float64) float64 { return quantile(r.lat, q) }

func mergeSorted(parts [][]time.Duration) []time.Duration {
	var all []time.Duration
	for _, p := range parts {
		all = append(all, p...)
	}
	slices.Sort(all)
	return all
}

func agentOptions(a Agent) ConnectOptions {
	return ConnectOptions{ClientID: a.ClientID(), Username: a.Key, Password: a.Password, KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second}
}

// connectLoop has each of len(parts) workers connect, wait for CONNACK and disconnect with its own
// agents in turn until stop is closed (or maxOps connects each). It returns per-worker CONNACK latencies
// (dial to CONNACK) and the number of failed connects.
func connectLoop(addr string, parts [][]ConnectOptions, stop <-chan struct{}, maxOps int) ([][]time.Duration, int) {
	lats, errs, _ := connectLoopFirstErr(addr, parts, stop, maxOps)
	return lats, errs
}

// connectLoopFirstErr is connectLoop that also returns the first failure's error.
func connectLoopFirstErr(addr string, parts [][]ConnectOptions, stop <-chan struct{}, maxOps int) ([][]time.Duration, int, error) {
	lats := make([][]time.Duration, len(parts))
	var errs atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := parts[w]
			for k := 0; k < maxOps; k++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				c, err := Dial(addr, part[k%len(part)])
				if err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, &err)
					time.Sleep(time.Millisecond)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
				c.Disconnect()
			}
		}()
	}
	wg.Wait()
	var err error
	if p := first.Load(); p != nil {
		err = *p
	}
	return lats, int(errs.Load()), err
}

// partition splits agents among workers so that no two workers ever use the same agent (a second
// connection with the same client id would take the first one over).
func partition(agents []Agent, workers int) [][]ConnectOptions {
	parts := make([][]ConnectOptions, workers)
	for w := range parts {
		for _, a := range agents[w*len(agents)/workers : (w+1)*len(agents)/workers] {
			parts[w] = append(parts[w], agentOptions(a))
		}
	}
	return parts
}

// connectStorm runs connect → CONNACK → DISCONNECT with workers clients for d against b.
func connectStorm(b *harness.Broker, agents []Agent, workers int, d time.Duration) (opResult, error) {
	parts := partition(agents, workers)
	m, err := startMeter(b.Pid())
	if err != nil {
		return opResult{}, err
	}
	stop := make(chan struct{})
	t := time.AfterFunc(d, func() { close(stop) })
	defer t.Stop()
	lats, errs, firstErr := connectLoopFirstErr(b.Addr(), parts, stop, 10_000_000)
	s, err := m.stop()
	if err != nil {
		return opResult{}, err
	}
	r := opResult{sample: s, errs: errs, firstErr: firstErr, lat: mergeSorted(lats)}
	r.ops = len(r.lat)
	if r.ops == 0 {
		return r, fmt.Errorf("no connect succeeded on %s (%d failed)", b.Addr(), errs)
	}
	return r, nil
}

// pubConn is one agent connection of the publish load: it publishes to its own namespace and receives
// its own messages through its subscription, so every message passes a WRITE and a READ ACL check.
type pubConn struct {
	c      *Conn
	topic  string
	qos    byte
	wmu    sync.Mutex    // serialises writes: the reader sends PUBACKs
	window chan struct{} // messages published but not yet received back
	lat    []time.Duration
	done   chan struct{}
}

func dialPublisher(addr string, a Agent, qos byte, window int) (*pubConn, error) {
	c, err := Dial(addr, agentOptions(a))
	if err != nil {
		return nil, err
	}
	g, err := c.Subscribe(1, a.Filter(), qos, 5*time.Second)
	if err != nil || g != qos {
		c.Close()
		return nil, fmt.Errorf("subscribe %s: granted %#x, %v", a.Filter(), g, err)
	}
	p := &pubConn{c: c, topic: a.Topic(), qos: qos, window: make(chan struct{}, window), done: make(chan struct{})}
	go p.read()
	return p, nil
}

func (p *pubConn) read() {
	defer close(p.done)
	for {
		h, body, err := p.c.ReadPacket()
		if err != nil {
			return
		}
		if PacketType(h) != PacketPublish {
			continue // PUBACKs of our own publishes
		}
		m, err := ParsePublish(h, body)
		if err != nil || len(m.Payload) < 8 {
			return
		}
		sent := time.Duration(binary.BigEndian.Uint64(m.Payload))
		p.lat = append(p.lat, time.Since(epoch)-sent)
		if m.QoS > 0 {
			p.wmu.Lock()
			_ = p.c.Puback(m.ID)
			if p.c.r.Buffered() == 0 {
				_ = p.c.Flush()
			}
			p.wmu.Unlock()
		}
		select {
		case <-p.window:
		default:
		}
	}
}

// write publishes until stop, keeping at most cap(window) messages in flight and flushing whenever the
// window is full; pace > 0 waits that long between messages instead (a latency probe).
func (p *pubConn) write(stop <-chan struct{}, pace time.Duration) {
	var payload [64]byte
	id := uint16(0)
	for {
		select {
		case p.window <- struct{}{}:
		case <-stop:
			return
		}
		id++
		if id == 0 {
			id = 1
		}
		binary.BigEndian.PutUint64(payload[:], uint64(time.Since(epoch)))
		p.wmu.Lock()
		err := p.c.Publish(p.topic, payload[:], p.qos, id)
		if err == nil && (pace > 0 || len(p.window) == cap(p.window)) {
			err = p.c.Flush()
		}
		p.wmu.Unlock()
		if err != nil {
			return
		}
		if pace > 0 {
			select {
			case <-time.After(pace):
			case <-stop:
				return
			}
		}
	}
}

func (p *pubConn) inFlight() int { return len(p.window) }

func (p *pubConn) close() {
	p.c.Disconnect()
	<-p.done
}

// publishLoad connects agents (each subscribed to its own namespace) and has them publish at qos with
// a window of in-flight messages for d; ops are delivered messages.
func publishLoad(b *harness.Broker, agents []Agent, qos byte, window int, d time.Duration) (opResult, error) {
	conns := make([]*pubConn, 0, len(agents))
	defer func() {
		for _, p := range conns {
			p.close()
		}
	}()
	for _, a := range agents {
		p, err := dialPublisher(b.Addr(), a, qos, window)
		if err != nil {
			return opResult{}, err
		}
		conns = append(conns, p)
	}
	m, err := startMeter(b.Pid())
	if err != nil {
		return opResult{}, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); p.write(stop, 0) }()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	// Let the messages in flight arrive, so that the broker CPU measured pays for what was delivered.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n := 0
		for _, p := range conns {
			n += p.inFlight()
		}
		if n == 0 {
			break
		}
	}
	s, err := m.stop()
	if err != nil {
		return opResult{}, err
	}
	for _, p := range conns {
		p.c.Close()
		<-p.done
	}
	parts := make([][]time.Duration, len(conns))
	for i, p := range conns {
		parts[i] = p.lat
	}
	conns = nil
	r := opResult{sample: s, lat: mergeSorted(parts)}
	r.ops = len(r.lat)
	if r.ops == 0 {
		return r, errors.New("no message was delivered")
	}
	return r, nil
}

// probeRTT measures one connected agent's QoS 1 publish round trip (publish to its own namespace, receive
// it back through its subscription) every pace for d, while load runs alongside.
func probeRTT(b *harness.Broker, a Agent, d, pace time.Duration, load func(stop <-chan struct{})) ([]time.Duration, error) {
	p, err := dialPublisher(b.Addr(), a, 1, 1)
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if load != nil {
		wg.Add(1)
		go func() { defer wg.Done(); load(stop) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.write(stop, pace) }()
	time.Sleep(d)
	close(stop)
	wg.Wait()
	// A probe still in flight counts: wait for it (bounded) so that a stall is not hidden.
	for deadline := time.Now().Add(3 * time.Second); p.inFlight() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	p.c.Close()
	<-p.done
	lat := p.lat
	slices.Sort(lat)
	if len(lat) == 0 {
		return nil, errors.New("no probe message came back")
	}
	return lat, nil
}

// stormResult is one reconnect storm.
type stormResult struct {
	took    time.Duration // from the broker listening again to the last CONNACK
	cpu     time.Duration // broker CPU over the storm
	retries int
	ok      int
}

// reconnectStorm restarts b and has every agent connect at once (at most conc connects in flight, which
// keeps Mosquitto's listen backlog from overflowing into SYN retransmits that would measure the kernel,
// not the broker), retrying refused connects as a real agent would, until all are connected or timeout.
func reconnectStorm(b *harness.Broker, agents []Agent, conc int, timeout time.Duration) (stormResult, error) {
	b.Stop()
	if err := b.Start(); err != nil {
		return stormResult{}, err
	}
	m, err := startMeter(b.Pid())
	if err != nil {
		return stormResult{}, err
	}
	t0 := time.Now()
	deadline := t0.Add(timeout)
	conns := make([]*Conn, len(agents))
	var next, retries atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(agents) {
					return
				}
				o := agentOptions(agents[i])
				for time.Now().Before(deadline) {
					c, err := Dial(b.Addr(), o)
					if err == nil {
						conns[i] = c
						break
					}
					retries.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	r := stormResult{took: time.Since(t0), retries: int(retries.Load())}
	s, err := m.stop()
	r.cpu = s.cpu
	for _, c := range conns {
		if c != nil {
			r.ok++
			c.Close()
		}
	}
	if err != nil {
		return r, err
	}
	if r.ok != len(agents) {
		return r, fmt.Errorf("only %d of %d agents connected within %v", r.ok, len(agents), timeout)
	}
	return r, nil
}

// floodOptions makes a CONNECT a flood client sends: a username that looks like a device key but fails
// its checksum (even i) or random garbage (odd i), a random password and client id.
func floodOptions(i int) ConnectOptions {
	var raw [48]byte
	_, _ = rand.Read(raw[:])
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	enc := func(b []byte) string {
		out := make([]byte, len(b))
		for j, x := range b {
			out[j] = base62[int(x)%62]
		}
		return string(out)
	}
	var user string
	if i%2 == 0 {
		user = secret.APIKey.Prefix() + enc(raw[:38])
		if secret.Check(secret.APIKey, user) == nil { // 1 in 56 billion: make it fail
			user = user[:len(user)-1] + "!"
		}
	} else {
		user = enc(raw[:8+int(raw[47])%40])
	}
	return ConnectOptions{ClientID: "flood-" + enc(raw[8:20]), Username: user, Password: "iotmp_" + enc(raw[20:44]), KeepAlive: 60,
		CleanSession: true, Timeout: 5 * time.Second}
}

// forgedOptions is a CONNECT with a well-formed device API key (checksum and all) that no database holds.
func forgedOptions(i int) ConnectOptions {
	key, _ := secret.Generate(secret.APIKey)
	pw, _ := secret.Generate(secret.MQTTPassword)
	return ConnectOptions{ClientID: fmt.Sprintf("forged-%d", i), Username: key.Reveal(), Password: pw.Reveal(), KeepAlive: 60,
		CleanSession: true, Timeout: 5 * time.Second}
}

// connectLoopOf has workers send the CONNECTs options makes until stop, each expected to be refused; it
// returns how many were answered.
func connectLoopOf(addr string, workers int, options func(int) ConnectOptions, stop <-chan struct{}) int {
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := Dial(addr, options(i))
				if err == nil {
					c.Disconnect()
				} else if !errors.Is(err, ErrRefused) {
					time.Sleep(time.Millisecond)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// wrongPasswordLoop has workers connect with valid keys and wrong passwords until stop.
func wrongPasswordLoop(addr string, agents []Agent, workers int, stop <-chan struct{}) int {
	parts := make([][]ConnectOptions, workers)
	for w := range parts {
		for _, a := range agents[w*len(agents)/workers : (w+1)*len(agents)/workers] {
			o := agentOptions(a)
			pw, _ := secret.Generate(secret.MQTTPassword)
			o.Password = pw.Reveal()
			parts[w] = append(parts[w], o)
		}
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := Dial(addr, parts[w][k%len(parts[w])])
				if err == nil {
					c.Disconnect()
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// unknownKeyLoop has workers connect with well-formed keys that exist nowhere (a new one each time, so
// neither the positive nor the negative cache answers and every connect asks PostgreSQL) until stop.
func unknownKeyLoop(addr string, workers int, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k, _ := secret.Generate(secret.APIKey)
				pw, _ := secret.Generate(secret.MQTTPassword)
				c, err := Dial(addr, ConnectOptions{ClientID: "agent-unknown", Username: k.Reveal(), Password: pw.Reveal(),
					KeepAlive: 60, CleanSession: true, Timeout: 5 * time.Second})
				if err == nil {
					c.Disconnect()
				}
			}
		}()
	}
	wg.Wait()
}

// lookupStats is how many single-key credential lookups PostgreSQL has executed in the database at dsn
// and the execution time they took in all (pg_stat_statements; the query text is the store's
// LookupCredential).
func lookupStats(ctx context.Context, dsn string) (int64, time.Duration, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	var ms float64
	err = conn.QueryRow(ctx, `SELECT COALESCE(sum(calls), 0)::bigint, COALESCE(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query LIKE '%FROM api_keys k%' AND query LIKE '%k.digest = $1%'`).Scan(&n, &ms)
	return n, time.Duration(ms * float64(time.Millisecond)), err
}

// lookupCalls is the count of lookupStats.
func lookupCalls(ctx context.Context, dsn string) (int64, error) {
	n, _, err := lookupStats(ctx, dsn)
	return n, err
}

// preloadCalls is how many preload queries (the store's ActiveCredentials) have completed in the
// database at dsn.
func preloadCalls(ctx context.Context, dsn string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query LIKE '%FROM api_keys k%' AND query LIKE '%k.revoked_at IS NULL AND%'`).Scan(&n)
	return n, err
}

// lockTable holds an ACCESS EXCLUSIVE lock on api_keys for d: every credential lookup waits behind it.
func lockTable(ctx context.Context, dsn string, d time.Duration, locked chan<- struct{}) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"); err != nil {
		return err
	}
	close(locked)
	time.Sleep(d)
	return nil
}

// revocation connects every agent to every broker, revokes all their keys with one UPDATE and returns,
// per broker, how long after the UPDATE started each session was closed (and how many never were within
// wait).
func revocation(ctx context.Context, dsn string, brokers []*harness.Broker, agents []Agent, wait time.Duration) ([][]time.Duration, []int, error) {
	type watched struct {
		c      *Conn
		closed chan time.Time
	}
	var all [][]watched
	defer func() {
		for _, ws := range all {
			for _, w := range ws {
				w.c.Close()
			}
		}
	}()
	for _, b := range brokers {
		var ws []watched
		for _, a := range agents {
			c, err := Dial(b.Addr(), agentOptions(a))
			if err != nil {
				all = append(all, ws)
				return nil, nil, fmt.Errorf("connect before revoking: %w", err)
			}
			w := watched{c: c, closed: make(chan time.Time, 1)}
			go func() {
				for {
					if _, _, err := w.c.ReadPacket(); err != nil {
						w.closed <- time.Now()
						return
					}
				}
			}()
			ws = append(ws, w)
		}
		all = append(all, ws)
	}
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.UUID
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	time.Sleep(200 * time.Millisecond) // let the last sessions settle
	t0 := time.Now()
	for _, ws := range all {
		for _, w := range ws {
			_ = w.c.SetReadDeadline(t0.Add(wait))
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE agent_uuid = ANY($1::uuid[])`, ids); err != nil {
		return nil, nil, err
	}
	lat := make([][]time.Duration, len(all))
	missed := make([]int, len(all))
	for i, ws := range all {
		for _, w := range ws {
			at := <-w.closed
			if at.Sub(t0) >= wait {
				missed[i]++
				continue
			}
			lat[i] = append(lat[i], at.Sub(t0))
		}
		slices.Sort(lat[i])
	}
	return lat, missed, nil
}

// waitStableRSS samples pid's RSS until it changes by less than 0.5% over a second (or timeout) and
// returns the last sample.
func waitStableRSS(pid int, timeout time.Duration) (int64, error) {
	var hist []int64
	deadline := time.Now().Add(timeout)
	for {
		r, err := RSS(pid)
		if err != nil {
			return 0, err
		}
		hist = append(hist, r)
		if n := len(hist); n >= 5 {
			lo, hi := slices.Min(hist[n-5:]), slices.Max(hist[n-5:])
			if float64(hi-lo) < 0.005*float64(hi) {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			return r, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
}
