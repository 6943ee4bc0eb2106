package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotauth/iotauth/plugin/engine"
	"github.com/iotauth/iotauth/plugin/presence"
)

// Engine returns m as the plugin engine's Metrics. The engine's principals are this package's, in the
// same order.
func (m *Metrics) Engine() engine.Metrics { return forEngine{m} }

type forEngine struct{ *Metrics }

func (f forEngine) Allowed(p engine.Principal) { f.Metrics.Allowed(Principal(p)) }

func (f forEngine) Refused(p engine.Principal, err error) {
	if err == engine.ErrReservedName {
		err = ErrReservedName
	}
	f.Metrics.Refused(Principal(p), err)
}

// PresenceLag registers the histogram of presence's write lag and returns what the recorder reports
// each written row's lag to (presence.Config.Lag). It does nothing on a nil *Metrics.
func (m *Metrics) PresenceLag() func(time.Duration) {
	if m == nil {
		return nil
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: Prefix + "presence_write_lag_seconds",
		Help: "Time from a session's start or end on this broker until PostgreSQL committed it (docs/presence.md).",
		// Finer between 250 ms (the longest a batch waits) and 1 s (the figure docs/presence.md promises).
		Buckets: []float64{.01, .025, .05, .1, .25, .3, .4, .5, .75, 1, 2.5, 5, 10, 30, 60},
	})
	m.reg.MustRegister(h)
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// PresenceDropped registers the counters of what the presence recorder could not queue, read from
// stats at scrape time. It does nothing on a nil *Metrics.
func (m *Metrics) PresenceDropped(stats func() presence.Stats) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: Prefix + "presence_dropped_total",
		Help: "Session starts and ends not queued for PostgreSQL (the queue was full); reconciled from the live sessions once PostgreSQL answers.",
	}, func() float64 { return float64(stats().Dropped) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: Prefix + "presence_events_dropped_total",
		Help: "Lifecycle events not published over MQTT (their queue was full).",
	}, func() float64 { return float64(stats().EventsDropped) }))
}
