package metrics

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listen opens the TCP listener for plugin_opt_metrics_listen. Called during plugin init, so that an
// address in use or not local fails the broker's start with a message saying so.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("plugin_opt_metrics_listen %s: cannot listen (%w); choose a free local address "+
			"like 127.0.0.1:9234, or remove the line to serve no metrics", addr, err)
	}
	return ln, nil
}

// Server returns the HTTP server for the metrics: GET /metrics and nothing else (404), every timeout
// set, at most two scrapes at once. errLog receives the server's own errors (nil: discarded by the
// caller's choice of logger).
func (m *Metrics) Server(errLog *log.Logger) *http.Server {
	mux := http.NewServeMux()
	opts := promhttp.HandlerOpts{MaxRequestsInFlight: 2, Timeout: 10 * time.Second}
	if errLog != nil {
		opts.ErrorLog = errLog // a nil *log.Logger in the interface would not compare equal to nil
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, opts))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errLog,
	}
}
