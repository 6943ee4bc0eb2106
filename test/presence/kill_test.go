package presence_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/bench"
)

// summary is GET /api/v1/agents/summary.
type summary struct {
	Total    int            `json:"total"`
	Online   int            `json:"online"`
	ByBroker map[string]int `json:"byBroker"`
}

func (e *env) summary() summary {
	e.t.Helper()
	var s summary
	e.call("GET", "/api/v1/agents/summary", nil, 200, &s)
	return s
}

// summaryErr is summary for another goroutine than the test's: it reports a failure instead.
func (e *env) summaryErr() (summary, error) {
	var s summary
	req, _ := http.NewRequest("GET", e.http.URL+"/api/v1/agents/summary", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return s, fmt.Errorf("GET /api/v1/agents/summary: %s", res.Status)
	}
	return s, json.NewDecoder(res.Body).Decode(&s)
}

// connectAll connects every agent to addr with a few workers and keeps the connections open; it returns
// them with the time each CONNACK arrived. Every connection is closed at the test's end.
func connectAll(t *testing.T, addr string, agents []bench.Agent) ([]*bench.Conn, []time.Time) {
	t.Helper()
	const workers = 16
	conns := make([]*bench.Conn, len(agents))
	acked := make([]time.Time, len(agents))
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(agents); i += workers {
				a := agents[i]
				c, err := bench.Dial(addr, bench.ConnectOptions{ClientID: a.ClientID(), Username: a.Key, Password: a.Password,
					KeepAlive: 60, CleanSession: true, Timeout: 20 * time.Second})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("agent %s: %v", a.UUID, err))
					continue
				}
				conns[i], acked[i] = c, time.Now()
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d agents could not connect to %s; first: %v", n, len(agents), addr, firstErr.Load())
	}
	return conns, acked
}

// TestKillNineWithAThousandAgentsConverges: a broker holding 1,000 agents is killed with SIGKILL. Its
// sessions read offline with reason broker_lost within its presence_timeout + 10 s (docs/presence.md),
// and once the agents reconnect to another broker, each reads online there within 2 s of its CONNACK.
// The times measured are logged (go test -v): the assertions are the documented bounds only.
func TestKillNineWithAThousandAgentsConverges(t *testing.T) {
	const n = 1000
	const timeout = 3 * time.Second
	e := newEnv(t)
	var agents []bench.Agent
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bench.Populate(ctx, e.dsn, n, func(a bench.Agent) { agents = append(agents, a) }); err != nil {
		t.Fatal(err)
	}
	killed := e.broker("b-killed", timeout.String())
	other := e.broker("b-other", timeout.String())

	_, _ = connectAll(t, killed.Addr(), agents)
	deadline := time.Now().Add(30 * time.Second)
	for s := e.summary(); s.Online != n || s.ByBroker["b-killed"] != n; s = e.summary() {
		if time.Now().After(deadline) {
			t.Fatalf("%d agents connected but the summary reads %+v after 30 s", n, s)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// kill -9: the broker writes nothing more; its silence past its timeout is what ends its sessions.
	if err := killed.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	if !killed.Wait(10 * time.Second) {
		t.Fatal("the broker survived SIGKILL")
	}
	bound := timeout + 10*time.Second
	var offlineAfter time.Duration
	for {
		s := e.summary()
		if s.Online == 0 && s.ByBroker["b-killed"] == 0 {
			offlineAfter = time.Since(killedAt)
			break
		}
		if time.Since(killedAt) > bound {
			t.Fatalf("%v after the kill (bound: presence_timeout %v + 10 s) the summary still reads %+v", time.Since(killedAt), timeout, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if offlineAfter < timeout/2 {
		t.Fatalf("the agents read offline %v after the kill, before the broker's timeout could pass: something else ended them", offlineAfter)
	}
	for _, a := range []bench.Agent{agents[0], agents[n/2], agents[n-1]} {
		if p := e.presence(a.UUID); p.Online || reason(p) != "broker_lost" {
			t.Fatalf("agent %s after the kill: %+v", a.UUID, p)
		}
	}
	t.Logf("1,000 agents read offline (broker_lost) %v after the kill (presence_timeout %v; bound %v)", offlineAfter.Round(time.Millisecond), timeout, bound)

	// The agents reconnect to the other broker. A poller checks that every agent whose CONNACK came 2 s or
	// more before a summary's request is counted online on that broker in it.
	type poll struct {
		at     time.Time
		online int
	}
	var polls []poll
	stop := make(chan struct{})
	var pollErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			at := time.Now()
			s, err := e.summaryErr()
			if err != nil {
				pollErr = err
				return
			}
			polls = append(polls, poll{at, s.ByBroker["b-other"]})
			time.Sleep(100 * time.Millisecond)
		}
	}()
	_, times := connectAll(t, other.Addr(), agents)
	acked := slices.SortedFunc(slices.Values(times), func(a, b time.Time) int { return a.Compare(b) })
	firstAck, lastAck := acked[0], acked[len(acked)-1]
	var allOnlineAfter time.Duration
	for {
		s := e.summary()
		if s.Online == n && s.ByBroker["b-other"] == n {
			allOnlineAfter = time.Since(lastAck)
			break
		}
		if time.Since(lastAck) > 2*time.Second {
			t.Fatalf("2 s after the last agent's CONNACK on the other broker the summary reads %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	<-done
	if pollErr != nil {
		t.Fatal(pollErr)
	}
	for _, p := range polls {
		due := 0 // agents whose CONNACK is 2 s or more older than this poll
		for due < len(acked) && !acked[due].After(p.at.Add(-2*time.Second)) {
			due++
		}
		if p.online < due {
			t.Fatalf("%v into the reconnection, %d agents had their CONNACK 2 s earlier or more, but only %d read online on the other broker",
				p.at.Sub(firstAck).Round(time.Millisecond), due, p.online)
		}
	}
	for _, a := range []bench.Agent{agents[0], agents[n-1]} {
		if p := e.presence(a.UUID); !p.Online || len(p.Sessions) != 1 || p.Sessions[0].Broker != "b-other" {
			t.Fatalf("agent %s after reconnecting: %+v", a.UUID, p)
		}
	}
	t.Logf("1,000 agents reconnected to the other broker in %v; all read online there %v after the last CONNACK (%d summary polls checked the 2 s bound)",
		lastAck.Sub(firstAck).Round(time.Millisecond), allOnlineAfter.Round(time.Millisecond), len(polls))
}
