package logq

import (
	"log/slog"
	"strings"
	"testing"
)

func TestQueueHandlerFormatsAndRedacts(t *testing.T) {
	q := New()
	log := NewLogger(q, slog.LevelInfo, Levels{Debug: 16, Info: 1, Warning: 4, Error: 8}).With("plugin", "iotauth")
	log.Info("connect refused", "client", "evil\nNew client connected", "reason", "x")
	log.Info("oops", "value", "iotsk_live_0123456789abcdefghijABCDEFGHIJ012345")
	log.Debug("hidden")
	lines, dropped := q.Drain()
	if dropped != 0 || len(lines) != 2 {
		t.Fatalf("got %d lines, %d dropped", len(lines), dropped)
	}
	if strings.Contains(lines[0].Msg, "\n") || !strings.Contains(lines[0].Msg, `client="evil\nNew client connected"`) {
		t.Fatalf("client id not quoted onto one line: %q", lines[0].Msg)
	}
	if !strings.HasPrefix(lines[0].Msg, "connect refused plugin=iotauth ") {
		t.Fatalf("unexpected format %q", lines[0].Msg)
	}
	if strings.Contains(lines[1].Msg, "0123456789") {
		t.Fatalf("secret-looking value logged: %q", lines[1].Msg)
	}

}

func TestLogQueueBounded(t *testing.T) {
	q := New()
	for i := 0; i < 5000; i++ {
		q.Push(1, "line")
	}
	lines, dropped := q.Drain()
	if len(lines) > 200 || dropped+len(lines) != 5000 {
		t.Fatalf("%d lines kept, %d dropped", len(lines), dropped)
	}
}

// The shim enters Go on TICK only when asked: a Push asks when it leaves something to write where there was
// nothing since the last Drain (the first line, and the first dropped line, whose count must be written
// too), and only then.
func TestPushNotifies(t *testing.T) {
	q := New()
	n := 0
	q.OnPush(func() { n++ })
	for i := 0; i < MaxQueued+10; i++ {
		q.Push(1, "line")
	}
	if n != 2 {
		t.Fatalf("notified %d times, want 2 (first line, first dropped line)", n)
	}
	if lines, dropped := q.Drain(); len(lines)+dropped != MaxQueued+10 || dropped == 0 {
		t.Fatalf("%d lines and %d dropped", len(lines), dropped)
	}
	q.Drain()
	q.Push(1, "after the drain") // may be dropped by the rate limit: it must ask either way
	if n != 3 {
		t.Fatalf("a push after a drain notified %d times in all, want 3", n)
	}
}
