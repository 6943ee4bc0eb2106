package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus series, on a registry of its own (no package globals). Labels
// are route patterns and outcomes, never paths, ids or anything a client typed.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	logins    *prometheus.CounterVec
	provision *prometheus.CounterVec
	serve     http.Handler
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotauth_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "iotauth_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotauth_login_attempts_total", Help: "Login attempts by outcome (success, failure, throttled).",
		}, []string{"outcome"}),
		provision: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotauth_provisioning_redemptions_total", Help: "Agent self-registrations by outcome.",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.logins, m.provision,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.serve = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler { return m.serve }

// MetricsHandler serves the server's Prometheus metrics. It is not on the API's own route table:
// serve it on a listener of its own that only the monitoring system reaches (`iotauth serve` uses
// METRICS_ADDR, loopback by default), as the series describe traffic and load (docs/security.md, O2).
func (s *Server) MetricsHandler() http.Handler { return s.metrics.handler() }
