// Package logq carries the plugin's log lines from any goroutine to Mosquitto's log. Mosquitto's
// mosquitto_log_printf may publish to $SYS topics and is not safe from other threads, so lines are queued
// here and written by the broker's main thread on TICK. The queue is bounded and rate-limited, values that
// look like iotauth secrets are redacted, and values chosen by clients are quoted onto one line.
package logq

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/core/secret"
)

// Queue is a bounded, rate-limited queue of log lines.
type Queue struct {
	mu      sync.Mutex
	lines   []Line
	dropped int
	limit   *rate.Limiter
	notify  func()
}

// Line is one queued line with its Mosquitto log level.
type Line struct {
	Level int
	Msg   string
}

// Levels maps slog levels to Mosquitto's MOSQ_LOG_* values (given by the cgo side).
type Levels struct {
	Debug, Info, Warning, Error int
}

// MaxQueued bounds the lines waiting for the next TICK.
const MaxQueued = 1000

// New returns a queue that admits 20 lines a second after a burst of 100.
func New() *Queue {
	return &Queue{limit: rate.NewLimiter(rate.Limit(20), 100)}
}

// OnPush sets a function called (outside the queue's lock) when a Push leaves something to write where
// there was nothing since the last Drain: the first line, or the first dropped line. It tells the main
// thread to drain; the caller must ask for that before it drains, so that nothing is missed. Set it before
// the queue is shared.
func (q *Queue) OnPush(f func()) { q.notify = f }

// Push queues a line, or counts it as dropped when the queue is full or the rate is exceeded.
func (q *Queue) Push(level int, msg string) {
	if q.push(level, msg) && q.notify != nil {
		q.notify()
	}
}

// push reports whether the queue went from having nothing to write to having something.
func (q *Queue) push(level int, msg string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.lines) >= MaxQueued || !q.limit.Allow() {
		q.dropped++
		return q.dropped == 1
	}
	q.lines = append(q.lines, Line{level, msg})
	return len(q.lines) == 1
}

// Drain returns the queued lines and how many were dropped since the last Drain.
func (q *Queue) Drain() ([]Line, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lines, dropped := q.lines, q.dropped
	q.lines, q.dropped = nil, 0
	return lines, dropped
}

// NewLogger returns a slog.Logger whose records are formatted as "message key=value ..." and queued.
func NewLogger(q *Queue, min slog.Level, lv Levels) *slog.Logger {
	return slog.New(&handler{q: q, min: min, lv: lv})
}

type handler struct {
	q     *Queue
	min   slog.Level
	lv    Levels
	attrs string
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, "", a)
		return true
	})
	level := h.lv.Debug
	switch {
	case r.Level >= slog.LevelError:
		level = h.lv.Error
	case r.Level >= slog.LevelWarn:
		level = h.lv.Warning
	case r.Level >= slog.LevelInfo:
		level = h.lv.Info
	}
	h.q.Push(level, b.String())
	return nil
}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			appendAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	s := v.String()
	if v.Kind() == slog.KindDuration {
		s = v.Duration().Round(time.Microsecond).String()
	}
	// Last line of defence: a value that carries an iotauth secret is never written.
	if secret.LooksLikeAny(s) {
		s = "[redacted]"
	}
	b.WriteByte(' ')
	b.WriteString(prefix + a.Key)
	b.WriteByte('=')
	if needsQuote(s) {
		s = strconv.Quote(s)
	}
	b.WriteString(s)
}

// needsQuote reports whether a value must be quoted to stay on one unambiguous line: client ids are chosen
// by clients, and a newline in one must not forge a log line.
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '"' || c == '=' || c == 0x7f {
			return true
		}
	}
	return false
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, "", a)
	}
	return &handler{q: h.q, min: h.min, lv: h.lv, attrs: b.String()}
}

func (h *handler) WithGroup(string) slog.Handler { return h }

// ParseLevel maps plugin_opt_log_level to a slog level.
func ParseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
