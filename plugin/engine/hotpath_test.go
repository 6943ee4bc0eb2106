package engine

import (
	"fmt"
	"testing"

	"github.com/iotauth/iotauth/plugin/logq"
	"github.com/iotauth/iotauth/plugin/session"
)

// connectLoop is a cached connect and its disconnect, the way the broker drives them in the connect
// benchmark (docs/benchmarks.md): agents reconnect with their own client ids, each time on a new client
// handle, started clean and ended by DISCONNECT. Every credential is in the cache after the first round.
type connectLoop struct {
	f      *fixture
	devs   []device
	pws    [][]byte
	ids    []string
	i      int
	handle uintptr
}

func newConnectLoop(tb testing.TB, agents int) *connectLoop {
	// At the default log level: debug lines format their arguments.
	l := &connectLoop{f: newFixtureWith(tb, func(c *Config, _ *fakeClock) {
		c.Log = logq.NewLogger(c.Logs, logq.ParseLevel("info"), c.Levels)
	})}
	for i := range agents {
		agent := fmt.Sprintf("6f1c2a9e-0d1b-4c3e-9f00-%012x", i)
		l.devs = append(l.devs, l.f.device(tb, agent))
		l.pws = append(l.pws, []byte(l.devs[i].password)) // the broker lends the password
		l.ids = append(l.ids, "agent-"+agent)
	}
	for range 2 * agents { // fill the cache and the session table's spare records
		l.round(tb)
	}
	return l
}

func (l *connectLoop) round(tb testing.TB) {
	n := l.i % len(l.devs)
	// Each connect on another handle than the agent's last one, the way the broker allocates a context
	// per connection; two handles per agent, so that the fake broker's records of names and marks settle.
	l.handle = uintptr(1 + n + len(l.devs)*(l.i/len(l.devs)%2))
	l.i++
	if r := l.f.e.BasicAuth(l.handle, l.devs[n].key, l.pws[n], l.ids[n]); r != OK {
		tb.Fatalf("connect %d refused: %v", l.i, r)
	}
	l.f.e.Disconnect(l.handle, true, 4, session.ToldNothing, 0)
}

// BenchmarkCachedConnect is the plugin's work on the broker thread for one cached connect and its
// disconnect, presence off (the client id copy made by the cgo export is not included).
func BenchmarkCachedConnect(b *testing.B) {
	l := newConnectLoop(b, 500)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l.round(b)
	}
}

// A cached connect and its disconnect allocate one thing on the broker thread: the session's name
// (Authorize), which the session keeps. The mark prefix is built in a reused buffer, and an agent
// reconnecting under its client id reuses its ended session's record.
func TestCachedConnectAllocatesOnlyTheName(t *testing.T) {
	l := newConnectLoop(t, 50)
	if n := testing.AllocsPerRun(500, func() { l.round(t) }); n > 1 {
		t.Errorf("a cached connect and disconnect allocate %v times", n)
	}
}
