package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/iotauth/iotauth/backend/secret"
)

// logQueue carries log lines from any goroutine to Mosquitto's log, which is written only from the
// main thread (TICK drains the queue): mosquitto_log_printf may publish to $SYS topics and is not safe
// from other threads. The queue is bounded and rate-limited so an outage yields a trickle, not a flood.
type logQueue struct {
	mu      sync.Mutex
	lines   []logLine
	dropped int
	limit   *rate.Limiter
}

type logLine struct {
	level int
	msg   string
}

const maxQueuedLines = 1000

func newLogQueue() *logQueue {
	return &logQueue{limit: rate.NewLimiter(rate.Limit(20), 100)}
}

func (q *logQueue) push(level int, msg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.lines) >= maxQueuedLines || !q.limit.Allow() {
		q.dropped++
		return
	}
	q.lines = append(q.lines, logLine{level, msg})
}

func (q *logQueue) drain() ([]logLine, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lines, dropped := q.lines, q.dropped
	q.lines, q.dropped = nil, 0
	return lines, dropped
}

// flushLogs writes queued lines; main thread only.
func (in *instance) flushLogs() {
	lines, dropped := in.logs.drain()
	for _, l := range lines {
		writeLog(l.level, l.msg)
	}
	if dropped > 0 {
		writeLog(levelWarning, fmt.Sprintf("%d log lines suppressed (rate limit)", dropped))
	}
}

// queueHandler is a slog.Handler that formats records as "message key=value ..." and queues them.
type queueHandler struct {
	q     *logQueue
	min   slog.Level
	attrs string
}

func (h *queueHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *queueHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, "", a)
		return true
	})
	level := levelInfo
	switch {
	case r.Level >= slog.LevelError:
		level = levelErr
	case r.Level >= slog.LevelWarn:
		level = levelWarning
	case r.Level >= slog.LevelInfo:
		level = levelNotice
	default:
		level = levelDebug
	}
	h.q.push(level, b.String())
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
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		s = strconv.Quote(s)
	}
	b.WriteString(s)
}

func (h *queueHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, "", a)
	}
	return &queueHandler{q: h.q, min: h.min, attrs: b.String()}
}

func (h *queueHandler) WithGroup(string) slog.Handler { return h }

func parseLevel(s string) slog.Level {
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
